"""preln: Transformers with the place of layer normalization as one switch."""

__version__ = "0.2.0"
