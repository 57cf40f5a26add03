"""actexp: experiments on activations, initialization and regularization of MLPs.

`actexp.train(config)` runs one experiment; torch is imported on first use, not here.
"""

__version__ = "0.1.0"

from .config import Config, config_from_dict, load_config  # noqa: E402  (torch-free)


def __getattr__(name):
    if name in ("train", "Run", "evaluate"):
        from . import training

        return getattr(training, name)
    raise AttributeError(f"module 'actexp' has no attribute {name!r}")


__all__ = ["Config", "Run", "config_from_dict", "load_config", "train"]
