"""preln: Transformers with the place of layer normalization as one switch.

The Python API (imported on first use, so that ``import preln`` and the CLI's ``--help`` stay fast)::

    from preln import Decoding, load_config, train, load_run, translate
    cfg = load_config("tiny-translation", ["train.max_updates=20"])   # a shipped preset, or a path
    train(cfg, "runs/demo")                                            # resumes if it holds a checkpoint
    cfg, model, tok = load_run("runs/demo")
    print(translate(model, tok, ["ein hund läuft im park ."], Decoding(beam=5)))
"""

__version__ = "0.2.0"

_API = {
    "RunConfig": ("config", "RunConfig"),
    "ModelConfig": ("config", "ModelConfig"),
    "ConfigError": ("config", "ConfigError"),
    "load_config": ("config", "load"),
    "override": ("config", "override"),
    "build_model": ("tasks", "build_model"),
    "Trainer": ("trainer", "Trainer"),
    "train": ("fit", "train"),
    "fit": ("fit", "fit"),
    "load_run": ("inference", "load_run"),
    "Decoding": ("decoding", "Decoding"),
    "translate": ("decode", "translate"),
    "translate_nbest": ("decode", "translate_nbest"),
    "generate": ("decode", "generate"),
    "evaluate_run": ("evaluate", "evaluate_run"),
    "bleu": ("scores", "bleu"),
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'preln' has no attribute {name!r}")
    import importlib

    module, attr = _API[name]
    value = getattr(importlib.import_module(f"preln.{module}"), attr)
    globals()[name] = value
    return value
