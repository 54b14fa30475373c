"""The method interface: ``decompose(images) -> Decomposition``, and the contract a run relies on.

A method takes a batch (B, 3, H, W) of display-space images in [0, 1] and returns linear
albedo, shading and specular (see :class:`joinbench.types.Decomposition`). Its
hyper-parameters live in a dataclass ``Config``; ``create_method(name, **overrides)`` and
the CLI's ``--set key=value`` override its fields, so an ablation is a configuration.

What the engines (runner, suite, timing, relight) need to know about a method is declared
here, never guessed from its name or probed for: its :attr:`Method.kind`, whether it
optimises (:attr:`Method.needs_grad`), which config field names the domain whose weights
it loads (:attr:`Method.domain_setting`), what a CPU run changes (:attr:`Method.cpu_settings`,
:attr:`Method.cpu_default_limit`), and the hooks :meth:`Method.prepare`,
:meth:`Method.device_settings` and :meth:`Method.decompose_batch`, each with a default that
suits a method without weights. One place plans a run with them: :mod:`joinbench.plan`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .errors import JoinbenchError
from .forward import ForwardModel
from .progress import ProgressCallback, report
from .registry import create_forward_model
from .types import Batch, Decomposition

if TYPE_CHECKING:  # pragma: no cover
    from joinbench.datasets.base import Dataset

# What kind of method it is: "classical" (a fixed algorithm, no weights), "feed-forward" (one
# pass of a trained network), "optimisation" (fits each image: JoIN), "adapter" (brings
# outputs made elsewhere, e.g. predictions:DIR). Timing and reports group methods by it.
METHOD_KINDS = ("classical", "feed-forward", "optimisation", "adapter")


ADDED = "added_setting"  # dataclass field metadata key, see added_setting


def added_setting(default: Any, why: str = "") -> Any:
    """A config field added after results were filed under the config without it (e.g. an
    execution switch such as ``cuda_graphs``). At its ``default`` -- which must reproduce the
    behaviour before the field existed -- it is left out of a run's identity (its reuse key,
    ``run.json``, the summary's config), so earlier runs are still found and resumed; set to
    anything else it is part of it. Without this, every new field would silently orphan every
    finished run and committed report (``--runs-from``)."""
    return dataclasses.field(default=default, metadata={ADDED: why or True})


def identity_config(config: Any) -> dict[str, Any]:
    """``config`` as a dict for a run's identity: every field, except :func:`added_setting`
    fields at their default (nested dataclass configs likewise)."""
    full, out = dataclasses.asdict(config), {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get(ADDED) and value == f.default:
            continue
        out[f.name] = identity_config(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) \
            else full[f.name]
    return out


@dataclass
class MethodConfig:
    """Fields every method has."""

    forward_model: str = "reinhard"


class Method:
    """Base class. Subclasses set ``Config`` (a dataclass) and ``kind``, and implement ``decompose``."""

    Config: ClassVar[type] = MethodConfig
    kind: ClassVar[str] = ""  # one of METHOD_KINDS; every registered method declares it
    needs_grad: ClassVar[bool] = False  # decompose optimises: the runner must not use inference_mode
    # The config field naming the domain (``materials``, ``faces``) whose trained weights the
    # method loads; :meth:`prepare` sets it from the dataset's declared domain unless it was set.
    domain_setting: ClassVar[str | None] = None
    # Per-image optimisation is slow on a CPU: such methods name how many test images a CPU
    # run scores when the user gives no --limit (the full split is for GPUs) ...
    cpu_default_limit: ClassVar[int | None] = None
    # ... and the quicker settings a CPU run uses for settings the user did not choose.
    cpu_settings: ClassVar[dict[str, Any]] = {}
    registry_name: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind not in METHOD_KINDS:
            raise TypeError(f"{cls.__name__}.kind must be one of {', '.join(METHOD_KINDS)}, got {cls.kind!r}.")

    def __init__(self, config: Any | None = None, **overrides: Any):
        base = config if config is not None else self.Config()
        self.config = apply_overrides(base, overrides)
        # settings the caller chose: the domain and CPU defaults never replace them
        self.explicit: frozenset[str] = frozenset(overrides)
        self.device = torch.device("cpu")
        # where long-running work reports joinbench.progress.Progress events; the runner sets
        # it, None reports nothing
        self.progress: ProgressCallback | None = None

    @property
    def forward_model(self) -> ForwardModel:
        return create_forward_model(self.config.forward_model)

    # -- preparing for a run ------------------------------------------------------------------
    def prepare(self, dataset: "Dataset | None", device: torch.device | str) -> dict[str, Any]:
        """Fit the method to a run on ``dataset`` and ``device`` before anything is loaded: the
        weights of the dataset's declared domain (:meth:`use_domain`) and the device's settings
        (:meth:`device_settings`). Returns the device settings it applied, for the caller to
        announce; loads nothing (``to(device)`` does)."""
        if dataset is not None:
            self.use_domain(dataset.domain)
        changes = self.device_settings(torch.device(device))
        if changes:
            self.configure(**changes)
        return changes

    def use_domain(self, domain: str | None) -> None:
        """Load the weights of ``domain`` (``faces`` for ``faces-shift``) unless the caller set
        :attr:`domain_setting` explicitly; a method without weights ignores it."""
        field = self.domain_setting
        if field and domain and field not in self.explicit and getattr(self.config, field) != domain:
            self.configure(**{field: domain})

    def device_settings(self, device: torch.device) -> dict[str, Any]:
        """The settings a run on ``device`` uses instead of the current ones: on a CPU,
        :attr:`cpu_settings` for every setting the caller did not choose. Pure: it changes
        nothing and prints nothing."""
        if device.type != "cpu":
            return {}
        return {k: v for k, v in self.cpu_settings.items()
                if k not in self.explicit and getattr(self.config, k) != v}

    def unused_settings(self) -> set[str]:
        """Config fields this configuration ignores (JoIN without PTI ignores ``pti_*``): a
        change to them is not worth announcing."""
        return set()

    def configure(self, **changes: Any) -> None:
        """Replace config fields (already typed) and forget anything loaded for the old ones."""
        self.config = dataclasses.replace(self.config, **changes)
        self.reset()

    def reset(self) -> None:
        """Drop weights loaded for an earlier config (they are loaded again when needed)."""

    def prior_source(self) -> dict[str, Any] | None:
        """The GAN bank the method inverts (``domain``, ``path``, ``joint``), if it inverts one;
        relighting samples new lightings from the same prior. None: no prior of its own."""
        return None

    def to(self, device: torch.device | str) -> "Method":
        self.device = torch.device(device)
        return self

    # -- decomposing --------------------------------------------------------------------------
    def decompose(self, images: Tensor) -> Decomposition:  # pragma: no cover - interface
        raise NotImplementedError

    def decompose_batch(self, batch: Batch) -> Decomposition:
        """The runner's entry: a batch with its sample ids. By default ``decompose`` of its
        images, reported as one finished batch step; methods that need the ids (saved
        predictions, per-image files) or report their own steps override it."""
        dec = self.decompose(batch.image)
        if self.kind != "optimisation":  # an optimisation reports its own steps as it goes
            report(self.progress, "batch", 1, 1, images=len(batch))
        return dec

    def describe(self) -> dict[str, Any]:
        """Name, class, kind and the config that identifies a run (:func:`identity_config`)."""
        return {"name": self.registry_name or type(self).__name__, "class": type(self).__name__,
                "kind": self.kind, "config": identity_config(self.config)}


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
