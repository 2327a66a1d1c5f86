"""preln: Transformers with the place of layer normalization as one switch."""

__version__ = "0.1.0"
