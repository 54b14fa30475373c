"""joinbench.baselines: every non-JoIN method (trivial, classical, feed-forward).

Installed as ``joinbench.baselines`` (never as a top-level ``baselines``). Importing this
package registers every baseline.
"""
import importlib as _importlib

for _mod in ("trivial", "retinex", "unet"):
    try:
        _importlib.import_module(f"{__name__}.{_mod}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__name__}.{_mod}":
            raise
