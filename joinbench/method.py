"""The method interface: ``decompose(images) -> Decomposition``.

A method takes a batch (B, 3, H, W) of display-space images in [0, 1] and returns linear
albedo, shading and specular (see :class:`joinbench.types.Decomposition`). Its
hyper-parameters live in a dataclass ``Config``; ``create_method(name, **overrides)`` and
the CLI's ``--set key=value`` override its fields, so an ablation is a configuration.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from .errors import JoinbenchError
from .forward import ForwardModel
from .registry import create_forward_model
from .types import Decomposition


@dataclass
class MethodConfig:
    """Fields every method has."""

    forward_model: str = "reinhard"


class Method:
    """Base class. Subclasses set ``Config`` (a dataclass) and implement ``decompose``."""

    Config: ClassVar[type] = MethodConfig
    registry_name: str = ""
    trains: ClassVar[bool] = False  # methods that train implement fit(...) and load shipped weights
    # Per-image optimisation is slow on a CPU: such methods name how many test images a CPU
    # run scores when the user gives no --limit (the full split is for GPUs).
    cpu_default_limit: ClassVar[int | None] = None

    def __init__(self, config: Any | None = None, **overrides: Any):
        base = config if config is not None else self.Config()
        self.config = apply_overrides(base, overrides)
        self.device = torch.device("cpu")

    @property
    def forward_model(self) -> ForwardModel:
        return create_forward_model(self.config.forward_model)

    def to(self, device: torch.device | str) -> "Method":
        self.device = torch.device(device)
        return self

    def decompose(self, images: Tensor) -> Decomposition:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.registry_name or type(self).__name__, "class": type(self).__name__,
                "config": dataclasses.asdict(self.config)}


DOMAINS = ("faces", "materials")


def dataset_domain(dataset: Any) -> str | None:
    """The domain whose trained weights suit a dataset (a Dataset or its name):
    ``faces-shift`` and ``real-faces`` -> ``faces``; None for e.g. ``folder:PATH``."""
    name = dataset if isinstance(dataset, str) else getattr(dataset, "name", "")
    head = name.split(":")[0]
    return next((d for d in DOMAINS if d in head), None)


def _coerce(value: Any, current: Any, key: str) -> Any:
    """Convert a ``--set`` string to the type of the field it overrides."""
    if not isinstance(value, str) or isinstance(current, str) or current is None:
        return value
    try:
        if isinstance(current, bool):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            number = float(value)
            if not math.isfinite(number) and math.isfinite(current):  # nan / inf would run and score garbage
                raise JoinbenchError(f"Setting {key}={value!r}: expected a finite number.")
            return number
        if isinstance(current, (tuple, list)):
            items = [s for s in value.split(",") if s]
            if current:
                items = [_coerce(s, current[0], key) for s in items]
            return type(current)(items)
    except ValueError:
        kind = type(current).__name__
        raise JoinbenchError(f"Setting {key}={value!r}: expected {'an' if kind[0] in 'aeiou' else 'a'} {kind}.") from None
    return value


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """Return a copy of dataclass ``config`` with ``overrides`` applied (dotted keys reach
    nested dataclasses: ``stage1.steps=500``). Unknown keys are an error listing valid keys."""
    if not overrides:
        return config
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(config)}
    for key, value in overrides.items():
        head, dot, rest = key.partition(".")
        if head not in fields:
            import difflib

            close = difflib.get_close_matches(head, list(fields), n=2)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise JoinbenchError(
                f"Unknown setting {key!r} for {type(config).__name__}.{hint} Valid: {', '.join(sorted(fields))}."
            )
        if dot:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[head] = _coerce(value, getattr(config, head), key)
    for head, sub in nested.items():
        flat[head] = apply_overrides(getattr(config, head), sub)
    return dataclasses.replace(config, **flat)


def parse_set_options(items: list[str] | None) -> dict[str, str]:
    """``["a=1", "b.c=x"]`` -> {"a": "1", "b.c": "x"} with a clear error on bad items."""
    out: dict[str, str] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise JoinbenchError(f"--set expects key=value, got {item!r} (e.g. --set steps=500).")
        out[key.strip()] = value.strip()
    return out
