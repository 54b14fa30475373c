"""joinbench.datasets: procedural synthetic datasets, real photos and folder loaders.

Installed as ``joinbench.datasets`` (never as a top-level ``datasets``). Importing this
package registers every built-in dataset.
"""
import importlib as _importlib

for _mod in ("materials", "faces", "real", "folder", "bank", "iiw", "maw", "arap"):
    try:
        _importlib.import_module(f"{__name__}.{_mod}")
    except ModuleNotFoundError as _exc:  # a dataset module still being written
        if _exc.name != f"{__name__}.{_mod}":
            raise
