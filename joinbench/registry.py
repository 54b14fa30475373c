"""Registries: one string names a method, dataset, metric or forward model.

Modelled on timm's ``register_model`` / ``create_model`` and pyiqa's ``create_metric``::

    @register_method("trivial", description="albedo = input, shading = 1")
    class Trivial(Method): ...

    method = create_method("trivial")
    list_methods("join*")

A registered entry is any callable (a class or a factory function) plus a one-line
description. ``create_*(name, **overrides)`` calls it with the overrides, so an ablation
variant is a registration of the same callable with different defaults, never a copy of
code. Prefix entries (``folder:PATH``) receive the text after the colon as ``arg``.
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import JoinbenchError, UnknownNameError


@dataclass
class Entry:
    name: str
    factory: Callable[..., Any]
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)
    prefix: bool = False  # "name:ARG" entries, e.g. folder:PATH

    def create(self, arg: str | None = None, **overrides: Any) -> Any:
        kwargs = {**self.defaults, **overrides}
        if self.prefix:
            return self.factory(arg, **kwargs)
        return self.factory(**kwargs)


class Registry:
    """A named collection of factories of one kind (``method``, ``dataset``, ...)."""

    def __init__(self, kind: str, plural: str | None = None):
        self.kind = kind
        self.plural = plural or kind + "s"
        self._entries: dict[str, Entry] = {}
        self._loaded = False
        self.loader: Callable[[], None] | None = None

    def _ensure_loaded(self) -> None:
        # Registration happens when the modules holding entries are imported; importing
        # them lazily keeps `import joinbench` cheap and avoids import cycles.
        if not self._loaded and self.loader is not None:
            self._loaded = True
            self.loader()

    def register(
        self,
        name: str,
        factory: Callable[..., Any] | None = None,
        *,
        description: str | None = None,
        prefix: bool = False,
        **defaults: Any,
    ):
        """Register ``factory`` under ``name``; usable as a decorator."""

        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries and self._entries[name].factory is not fn:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            desc = description
            if desc is None:
                doc = (getattr(fn, "__doc__", None) or "").strip()
                desc = doc.splitlines()[0] if doc else ""
            self._entries[name] = Entry(name, fn, desc, dict(defaults), prefix)
            return fn

        return add(factory) if factory is not None else add

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._entries)

    def _display_name(self, entry: Entry) -> str:
        return f"{entry.name}:PATH" if entry.prefix else entry.name

    def get(self, name: str) -> tuple[Entry, str | None]:
        """Resolve ``name`` (or ``prefix:ARG``) to its entry and argument."""
        self._ensure_loaded()
        if name in self._entries and not self._entries[name].prefix:
            return self._entries[name], None
        head, sep, arg = name.partition(":")
        if sep and head in self._entries and self._entries[head].prefix:
            return self._entries[head], arg
        raise UnknownNameError(self._unknown_message(name))

    def _unknown_message(self, name: str) -> str:
        shown = [self._display_name(e) for e in self._entries.values()]
        head, sep, _ = name.partition(":")
        query = head if sep else name  # "fodler:/long/path" -> compare "fodler"
        close = difflib.get_close_matches(query, list(self._entries), n=3, cutoff=0.5)
        close = [self._display_name(self._entries[c]) for c in close]
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return (
            f"Unknown {self.kind} {name!r}.{hint} Known {self.plural}: {', '.join(sorted(shown))} "
            f"(see `joinbench list {self.plural}`)."
        )

    def create(self, name: str, **overrides: Any) -> Any:
        entry, arg = self.get(name)
        obj = entry.create(arg, **overrides)
        if getattr(obj, "registry_name", None) in (None, ""):
            try:
                obj.registry_name = name
            except AttributeError:
                pass
        return obj

    def list(self, pattern: str = "*") -> list[str]:
        """Names matching a shell-style ``pattern`` (``"join*"``), sorted."""
        return [n for n in self.names() if fnmatch.fnmatch(n, pattern)]

    def describe(self, pattern: str = "*") -> list[tuple[str, str]]:
        return [(self._display_name(self._entries[n]), self._entries[n].description) for n in self.list(pattern)]

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except UnknownNameError:
            return False
        return True


BUILTIN_MODULES = (
    "joinbench.forward",
    "joinbench.datasets",
    "joinbench.metrics",
    "joinbench.benchmark_metrics",
    "joinbench.baselines",
    "joinbench.methods",
)


def _load_builtin_entries() -> None:
    """Import every module that registers built-in entries (once, for all registries)."""
    import importlib

    for reg in REGISTRIES.values():
        reg._loaded = True  # mark first: modules being imported may query registries
    for module in BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            # Every built-in module ships with the package: one that cannot be found means a
            # broken install (typically an editable install whose checkout moved), which would
            # otherwise surface later as "Unknown dataset 'materials'" with an empty list.
            raise JoinbenchError(
                f"{module} cannot be imported, so joinbench's install is broken or stale (an editable "
                f"install of a checkout that moved?); reinstall it: pip install -e <joinbench checkout>."
            ) from None


METHODS = Registry("method")
DATASETS = Registry("dataset")
METRICS = Registry("metric")
FORWARD_MODELS = Registry("forward model", plural="forward-models")
REGISTRIES = {r.plural: r for r in (METHODS, DATASETS, METRICS, FORWARD_MODELS)}
for _reg in REGISTRIES.values():
    _reg.loader = _load_builtin_entries

register_method = METHODS.register
register_dataset = DATASETS.register
register_metric = METRICS.register
register_forward_model = FORWARD_MODELS.register

create_method = METHODS.create
create_dataset = DATASETS.create
create_metric = METRICS.create
create_forward_model = FORWARD_MODELS.create

list_methods = METHODS.list
list_datasets = DATASETS.list
list_metrics = METRICS.list
list_forward_models = FORWARD_MODELS.list

__all__ = [
    "Registry", "Entry", "REGISTRIES",
    "register_method", "register_dataset", "register_metric", "register_forward_model",
    "create_method", "create_dataset", "create_metric", "create_forward_model",
    "list_methods", "list_datasets", "list_metrics", "list_forward_models",
]
