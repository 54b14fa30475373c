"""joinbench.baselines: every method that is not JoIN (classical, feed-forward, trivial).

Where a method lives (the one rule): JoIN, its ablation variants and adapters that bring in
outputs made elsewhere (``predictions:DIR``) live in :mod:`joinbench.methods`; every other
decomposition method -- one module per method family -- lives here. Installed as
``joinbench.baselines`` (never as a top-level ``baselines``: the design keeps that folder at the
top level and maps it into the namespace). Importing this package imports every module in it,
and each module registers its methods, so a new baseline is its module (and its tests): no list
to extend.
"""
import importlib as _importlib
import pkgutil as _pkgutil

for _info in sorted(_pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        _importlib.import_module(f"{__name__}.{_info.name}")
