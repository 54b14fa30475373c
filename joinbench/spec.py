"""Ablation specs: the declarative TOML that names an ablation's variants.

A spec (see ``joinbench/specs/join.toml``; print one with ``joinbench ablate --print-spec``)
names variants -- a registered method plus optional ``set`` overrides, a ``group`` and a
``baseline`` to compare with -- and the metrics of the table. :func:`parse_spec` checks its
structure, :func:`check_spec` every name in it against the registries, so a typo in the
ninth variant fails before the first one runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import JoinbenchError, did_you_mean

DEFAULT_SPEC = "join"
SPEC_SUFFIX = ".toml"
SPEC_KEYS = ("title", "description", "baseline", "metrics", "variant")
VARIANT_KEYS = ("name", "method", "set", "group", "baseline", "description")
DEFAULT_TABLE_METRICS = ("mse", "ssim", "lpips")


@dataclass(frozen=True)
class Variant:
    """One row of an ablation: a registered method with setting overrides."""

    name: str
    method: str
    set: dict[str, str] = field(default_factory=dict)  # as `--set key=value` strings
    group: str = ""
    baseline: str | None = None  # the variant this one is compared with
    description: str = ""


@dataclass(frozen=True)
class AblationSpec:
    """A parsed spec: its variants in order, the metrics of the table and where it came from."""

    title: str
    variants: tuple[Variant, ...]
    metrics: tuple[str, ...] | None = None  # None: the dataset's default (plan.run_metrics over DEFAULT_TABLE_METRICS)
    description: str = ""
    source: str = ""  # file path, or "shipped spec NAME"
    stem: str = "ablation"  # names the default output folder
    text: str = ""  # the TOML as read

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)


def shipped_specs_dir() -> Path:
    """The specs shipped in the package (``joinbench/specs/*.toml``)."""
    from importlib.resources import files

    return Path(str(files("joinbench") / "specs"))


def shipped_specs() -> list[str]:
    return sorted(p.stem for p in shipped_specs_dir().glob(f"*{SPEC_SUFFIX}"))


def resolve_spec_path(spec: str | Path | None) -> tuple[Path, bool]:
    """``spec`` as a file (a path that exists) or a shipped spec's name; (path, shipped)."""
    if spec is None or str(spec) == "":
        spec = DEFAULT_SPEC
    path = Path(spec)
    if path.is_file():
        return path, False
    if path.exists():
        raise JoinbenchError(f"--spec {spec} is a folder; give a .toml file or a shipped spec ({', '.join(shipped_specs())}).")
    name = str(spec).removesuffix(SPEC_SUFFIX)
    shipped = shipped_specs_dir() / f"{name}{SPEC_SUFFIX}"
    if "/" not in name and shipped.is_file():
        return shipped, True
    names = shipped_specs()
    raise JoinbenchError(
        f"Spec {str(spec)!r} not found: no such file, and no shipped spec of that name.{did_you_mean(name, names)} "
        f"Shipped specs: {', '.join(names)} (print one with `joinbench ablate --spec NAME --print-spec > my.toml`).")


def load_spec(spec: str | Path | None = None) -> AblationSpec:
    """Read and check the structure of a spec (a path or a shipped name; None: the default).
    Names of methods, settings and metrics are checked by :func:`check_spec`."""
    path, shipped = resolve_spec_path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JoinbenchError(f"Cannot read spec {path}: {exc}.") from None
    return parse_spec(text, source=f"{path.stem} (shipped)" if shipped else str(path), stem=path.stem)


def _kind(value: Any) -> str:
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


def _setting_text(value: Any, where: str) -> str:
    """A TOML value as the ``--set`` text the method's config parses (so a spec is exactly
    ``joinbench run --set key=value``, with the same type checks)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return ",".join(_setting_text(v, where) for v in value)
    raise JoinbenchError(f"{where}: a setting must be a string, number, boolean or array of them, got {_kind(value)}.")


def _flatten_settings(table: dict[str, Any], where: str, prefix: str = "") -> dict[str, str]:
    """``{stage1 = {steps = 10}}`` -> ``{"stage1.steps": "10"}`` (dotted keys reach nested configs)."""
    out: dict[str, str] = {}
    for key, value in table.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten_settings(value, where, f"{full}."))
        else:
            out[full] = _setting_text(value, f"{where}, setting {full!r}")
    return out


def _unknown_key(key: str, valid, where: str) -> JoinbenchError:
    return JoinbenchError(f"{where}: unknown key {key!r}.{did_you_mean(key, valid)} Valid keys: {', '.join(valid)}.")


def parse_spec(text: str, source: str = "<spec>", stem: str = "ablation") -> AblationSpec:
    """Parse a spec's TOML text, checking its structure: known keys only, every variant with
    a name and a method, unique names, baselines that name a variant."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the same parser under its PyPI name
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise JoinbenchError("Reading ablation specs needs Python 3.11+ (tomllib) or `pip install tomli`.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise JoinbenchError(f"Spec {source} is not valid TOML: {exc}.") from None
    where = f"Spec {source}"
    for key in data:
        if key not in SPEC_KEYS:
            raise _unknown_key(key, SPEC_KEYS, where)
    for key in ("title", "description", "baseline"):
        if key in data and not isinstance(data[key], str):
            raise JoinbenchError(f"{where}: {key!r} must be a string, got {_kind(data[key])}.")
    metrics = data.get("metrics")  # absent: each dataset's default (WHDR on iiw:, else DEFAULT_TABLE_METRICS)
    if metrics is not None and (not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics)):
        raise JoinbenchError(f"{where}: 'metrics' must be a non-empty array of metric names, e.g. metrics = [\"mse\", \"ssim\", \"lpips\"].")
    twice = sorted({m for m in metrics or [] if metrics.count(m) > 1})
    if twice:
        raise JoinbenchError(f"{where}: 'metrics' lists {', '.join(map(repr, twice))} twice.")
    raw = data.get("variant")
    if raw is None or raw == []:
        raise JoinbenchError(f"{where} has no variants: add [[variant]] tables with name = \"...\" and method = \"...\".")
    if not isinstance(raw, list) or not all(isinstance(v, dict) for v in raw):
        raise JoinbenchError(f"{where}: 'variant' must be an array of tables, written [[variant]] (double brackets).")
    variants: list[Variant] = []
    seen: dict[str, int] = {}
    for k, v in enumerate(raw, start=1):
        label = f"{where}, variant #{k}" + (f" ({v['name']!r})" if isinstance(v.get("name"), str) else "")
        for key in v:
            if key not in VARIANT_KEYS:
                raise _unknown_key(key, VARIANT_KEYS, label)
        for key in ("name", "method"):
            if key not in v:
                raise JoinbenchError(f"{label}: missing {key!r} (every [[variant]] needs a name and a method).")
        for key in ("name", "method", "group", "baseline", "description"):
            if key in v and (not isinstance(v[key], str) or (key in ("name", "method") and not v[key].strip())):
                raise JoinbenchError(f"{label}: {key!r} must be a non-empty string, got {_kind(v[key])}.")
        name = v["name"].strip()
        if v.get("baseline") == name:
            raise JoinbenchError(f"{label}: it names itself as its baseline; name another variant, or drop the key to "
                                 "use the spec's baseline.")
        if name in seen:
            raise JoinbenchError(f"{where}: variant name {name!r} is used twice (#{seen[name]} and #{k}); names must be unique.")
        seen[name] = k
        settings = v.get("set", {})
        if not isinstance(settings, dict):
            raise JoinbenchError(f"{label}: 'set' must be a table, e.g. set = {{ regulariser = \"none\" }}, got {_kind(settings)}.")
        variants.append(Variant(name=name, method=v["method"].strip(), set=_flatten_settings(settings, label),
                                group=v.get("group", ""), baseline=v.get("baseline", data.get("baseline")),
                                description=v.get("description", "")))
    names = [v.name for v in variants]
    if "baseline" in data and data["baseline"] not in names:
        raise JoinbenchError(f"{where}: baseline {data['baseline']!r} is not a variant of this spec."
                             f"{did_you_mean(data['baseline'], names)} Variants: {', '.join(names)}.")
    fixed = []
    for v in variants:
        if v.baseline is not None and v.baseline not in names:
            raise JoinbenchError(f"{where}, variant {v.name!r}: baseline {v.baseline!r} is not a variant of this spec."
                                 f"{did_you_mean(v.baseline, names)} Variants: {', '.join(names)}.")
        # the spec-wide baseline is compared with every other variant, not with itself
        fixed.append(Variant(v.name, v.method, v.set, v.group, None if v.baseline == v.name else v.baseline, v.description))
    return AblationSpec(title=data.get("title", "Ablations"), variants=tuple(fixed), metrics=None if metrics is None else tuple(metrics),
                        description=data.get("description", ""), source=source, stem=stem, text=text)


def check_spec(spec: AblationSpec, overrides: dict[str, str] | None = None) -> None:
    """Check every name in ``spec`` against the registries: each variant's method is created
    with its settings (over ``overrides``, the command line's ``--set``), exactly as
    ``joinbench run`` would, so unknown methods, unknown setting keys and bad values fail
    here, before anything runs; and every metric exists."""
    from .registry import create_method, create_metric

    for v in spec.variants:
        try:
            create_method(v.method, **{**(overrides or {}), **v.set})
        except JoinbenchError as exc:
            raise JoinbenchError(f"Spec {spec.source}, variant {v.name!r}: {exc}") from None
    for m in spec.metrics or ():
        try:
            create_metric(m)
        except JoinbenchError as exc:
            raise JoinbenchError(f"Spec {spec.source}, metrics: {exc}") from None


__all__ = ["AblationSpec", "DEFAULT_SPEC", "DEFAULT_TABLE_METRICS", "Variant", "check_spec", "load_spec",
           "parse_spec", "resolve_spec_path", "shipped_specs", "shipped_specs_dir"]
