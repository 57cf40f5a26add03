"""actexp: experiments on activations, initialization and regularization of MLPs.

`actexp.train(config)` runs one experiment; torch is imported on first use, not here.
"""

__version__ = "0.1.0"

from .config import Config, config_from_dict, load_config  # noqa: E402  (torch-free)


# The Python API beside the CLI, imported on first use: name -> module.
_LAZY = {
    "train": "training", "train_group": "training", "Run": "training", "evaluate": "training",
    "run_sweep": "sweep", "load_sweep": "sweep",
    "compare": "report", "plot": "plots", "list_runs": "report",
    "load_run": "evaluation", "evaluate_run": "evaluation",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'actexp' has no attribute {name!r}")


__all__ = ["Config", "Run", "compare", "config_from_dict", "evaluate_run", "list_runs", "load_config", "load_run", "load_sweep", "plot", "run_sweep",
           "train", "train_group"]
