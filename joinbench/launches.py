"""Launch accounting: how many aten ops a piece of torch code dispatches, how many of them
force the host to wait for the device, how many FLOPs it does, and where they come from.

Why count instead of time: on a GPU a small model is bound by kernel launches and host
syncs, not by arithmetic, and both are properties of the code, not of the machine. Counted
on the CPU they are deterministic (the same number on any machine, under any load), so a
test can hold them to a committed figure; timings never can.

**Ops.** Every aten op that reaches the Python dispatcher (a :class:`TorchDispatchMode`) is
counted, as the H200 run saw them: each is about one kernel launch on CUDA. View ops
(``aten.view``, ``slice``, ``expand``, ``detach``, ... — ``OpOverload.is_view``) launch no
kernel, so the non-view count is reported next to the total. Composite ops are seen as what
they decompose into, as on CUDA.

**Host syncs.** An op that needs a device value on the host stops the CPU until the GPU has
caught up (and makes the step impossible to capture in a CUDA graph):

* ``aten._local_scalar_dense`` -- ``.item()``, ``float(t)``, ``int(t)``, ``bool(t)``,
  ``if t:``, ``t.is_nonzero()``, ``torch.allclose``;
* ``aten.nonzero``, ``aten.argwhere`` (via nonzero), ``aten.masked_select``,
  ``aten._unique``, ``aten._unique2``, ``aten.unique_dim``, ``aten.unique_consecutive``,
  ``aten.unique_dim_consecutive``, ``aten.repeat_interleave`` (without ``output_size``),
  ``aten.bincount``: outputs whose shape depends on the data;
* ``aten.index`` and ``aten.index_put_`` with a boolean mask (``x[mask]``,
  ``x[mask] = v``: a nonzero inside);
* ``aten.equal``;
* ``aten.copy_`` from a device tensor into a host tensor;
* at the Python level: ``Tensor.cpu()``, ``Tensor.to("cpu")``, ``Tensor.tolist()``,
  ``Tensor.numpy()`` and ``np.asarray(t)`` of a device tensor (each also counts one copy op).

**Placement is emulated.** On the CPU every tensor is a host tensor, yet the same code on
CUDA keeps most of them on the device, and only reads of device tensors sync. The profiled
code is therefore run with ``torch.device("cpu", 0)`` (:data:`DEVICE`) as its device: a
tensor is a *device* tensor when it was made with ``device=cpu:0`` (or with a device taken
from a tensor, ``device=x.device``), moved there with ``.to(cpu:0)``, or computed from a
device tensor (parameters, gradients and anything of unknown origin count as device
tensors); it is a *host* tensor when a factory made it without a device (e.g. draws from a
CPU ``torch.Generator``), with the string ``"cpu"``, or ``.cpu()`` moved it, or it was
computed from host tensors only. ``.to(cpu:0)`` of a device tensor in its own dtype is an
alias on CUDA and is not counted (on the CPU it copies).

**FLOPs** use the formulas of :mod:`torch.utils.flop_counter` (matrix products,
convolutions, attention; forward and backward), op by op as dispatched.

**Where they come from.** :func:`phase` (a context) and :func:`mark` (a statement: "from
here until the next mark or the end of the enclosing phase") name parts of the code under
test; both cost one global lookup when nothing is counted, and a ``phase`` also shows up in
``torch.profiler`` traces. While counting, ``loss.backward()`` and ``torch.autograd.grad``
run in a ``backward`` phase and every ``Optimizer.step`` in an ``optimizer`` phase
automatically. An op is attributed to the path of open phases and marks, e.g.
``albedo/G/backward``.

What this cannot see: kernels that CUDA libraries launch inside one op (cuDNN, cuBLAS
workspace set-up), allocator traffic, and CUDA graphs (a captured step replays all its
kernels with one launch; the counts here are what capture would remove, the syncs what
stands in its way).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

DEVICE = torch.device("cpu", 0)  # the device stand-in: profiled code runs "on" cpu:0 (see above)

# overload packets that read device data on the host (see the module docstring)
SYNC_OPS = frozenset({
    "_local_scalar_dense", "nonzero", "masked_select", "_unique", "_unique2", "unique_dim", "unique_consecutive",
    "unique_dim_consecutive", "equal", "bincount", "is_nonzero",
})
_MASK_INDEX_OPS = frozenset({"index", "index_put_", "index_put", "_index_put_impl_"})
_FACTORIES = frozenset({
    "tensor", "as_tensor", "from_numpy", "asarray", "zeros", "ones", "full", "empty", "empty_strided", "arange",
    "linspace", "logspace", "rand", "randn", "randint", "randperm", "eye", "scalar_tensor", "normal", "tril_indices",
    "triu_indices",
})
_HOST_READS = frozenset({"tolist", "numpy", "__array__"})

# -----------------------------------------------------------------------------------------
# phases: zero-cost marks in the code under test
# -----------------------------------------------------------------------------------------
_ACTIVE: list["LaunchCounter"] = []  # the counter in use (at most one)
_STACK: list[str] = []  # open phases
_MARKS: list[str | None] = [None]  # current mark per level (level 0: outside every phase)
_PATH: list[str | None] = [None]  # cached "a/b/c" of the above
_HOST: list[Any] = []  # [WeakIdKeyDictionary of host tensors], made by the first LaunchCounter


def _path() -> str:
    if _PATH[0] is None:
        parts: list[str] = []
        for i, m in enumerate(_MARKS):
            if i:
                parts.append(_STACK[i - 1])
            if m:
                parts.append(m)
        _PATH[0] = "/".join(parts) or "(unmarked)"
    return _PATH[0]


def _push(name: str) -> None:
    _STACK.append(name)
    _MARKS.append(None)
    _PATH[0] = None


def _pop() -> None:
    if _STACK:
        _STACK.pop()
        _MARKS.pop()
        _PATH[0] = None


class _Phase:
    __slots__ = ("name", "_rf")

    def __init__(self, name: str):
        self.name, self._rf = name, None

    def __enter__(self):
        if _ACTIVE:
            _push(self.name)
        if torch.autograd.profiler._is_profiler_enabled:
            self._rf = torch.autograd.profiler.record_function(self.name)
            self._rf.__enter__()
        return self

    def __exit__(self, *exc):
        if self._rf is not None:
            self._rf.__exit__(*exc)
            self._rf = None
        if _ACTIVE:
            _pop()
        return False


_NULL = contextlib.nullcontext()


def phase(name: str):
    """``with phase("G"):`` names the ops inside (nested phases make a path). Costs one check
    when neither a :class:`LaunchCounter` nor ``torch.profiler`` is running."""
    if not _ACTIVE and not torch.autograd.profiler._is_profiler_enabled:
        return _NULL
    return _Phase(name)


def mark(name: str) -> None:
    """Name the ops from here until the next ``mark`` or the end of the enclosing phase (a
    statement, so marking a long function needs no re-indentation). No-op unless counting."""
    if _ACTIVE:
        _MARKS[-1] = name
        _PATH[0] = None


@contextlib.contextmanager
def phases_of(functions: dict[str, str]) -> Iterator[list[str]]:
    """Run every call of the named functions in a phase, without touching their code:
    ``{"joinbench.join.losses:noise_regularisation": "noise regulariser"}`` (``module:qualname``;
    a method as ``Class.method``). A module-level function is replaced wherever a loaded
    ``joinbench`` module holds it (``from .losses import noise_regularisation`` too). Names that
    do not exist (code that changed) are skipped; yields the ones wrapped. A call inside a phase
    of the same name adds no level."""
    import functools
    import importlib
    import sys

    def wrap(fn, name):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if not _ACTIVE or (_STACK and _STACK[-1] == name):
                return fn(*args, **kwargs)
            _push(name)
            try:
                return fn(*args, **kwargs)
            finally:
                _pop()
        return wrapper

    undo, done = [], []
    try:
        for spec, name in functions.items():
            module_name, _, qualname = spec.partition(":")
            try:
                owner = importlib.import_module(module_name)
                *path, attr = qualname.split(".")
                for part in path:
                    owner = getattr(owner, part)
                fn = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
            except (ImportError, AttributeError, KeyError):
                continue
            holders = [owner] if isinstance(owner, type) else [
                m for k, m in list(sys.modules.items())
                if m is not None and (k == "joinbench" or k.startswith("joinbench.")) and getattr(m, attr, None) is fn]
            wrapped = wrap(fn, name)
            for h in holders:
                setattr(h, attr, wrapped)
                undo.append((h, attr, fn))
            done.append(spec)
        yield done
    finally:
        for h, attr, fn in reversed(undo):
            setattr(h, attr, fn)


# -----------------------------------------------------------------------------------------
# tallies
# -----------------------------------------------------------------------------------------
@dataclass
class Tally:
    """Counts of one region: totals, per op and per phase path. Arithmetic (``a - b``,
    ``a / n``) gives per-step figures from cumulative snapshots."""

    ops: float = 0
    nonview: float = 0
    syncs: float = 0
    flops: float = 0
    by_op: dict[str, list[float]] = field(default_factory=dict)  # op -> [ops, syncs, flops]
    by_phase: dict[str, list[float]] = field(default_factory=dict)  # path -> [ops, nonview, syncs, flops]
    sync_sites: dict[str, float] = field(default_factory=dict)  # "path: op" -> syncs
    views: set[str] = field(default_factory=set)  # op names that are views

    def copy(self) -> "Tally":
        return Tally(self.ops, self.nonview, self.syncs, self.flops, {k: list(v) for k, v in self.by_op.items()},
                     {k: list(v) for k, v in self.by_phase.items()}, dict(self.sync_sites), set(self.views))

    def __sub__(self, other: "Tally") -> "Tally":
        def sub(a: dict, b: dict) -> dict:
            out = {}
            for k, v in a.items():
                w = b.get(k)
                d = [x - y for x, y in zip(v, w or [0] * len(v))] if isinstance(v, list) else v - (w or 0)
                if any(d) if isinstance(d, list) else d:
                    out[k] = d
            return out

        return Tally(self.ops - other.ops, self.nonview - other.nonview, self.syncs - other.syncs,
                     self.flops - other.flops, sub(self.by_op, other.by_op), sub(self.by_phase, other.by_phase),
                     sub(self.sync_sites, other.sync_sites), self.views | other.views)

    def __truediv__(self, n: float) -> "Tally":
        div = lambda d: {k: ([x / n for x in v] if isinstance(v, list) else v / n) for k, v in d.items()}
        return Tally(self.ops / n, self.nonview / n, self.syncs / n, self.flops / n, div(self.by_op),
                     div(self.by_phase), div(self.sync_sites), set(self.views))

    def top_ops(self, n: int = 10, views: bool = False) -> list[tuple[str, float]]:
        rows = [(k, v[0]) for k, v in self.by_op.items() if views or k not in self.views]
        return sorted(rows, key=lambda kv: (-kv[1], kv[0]))[:n]

    def top_phases(self, n: int = 10, depth: int | None = None) -> list[tuple[str, list[float]]]:
        """Phases by non-view ops; ``depth`` folds paths to their first ``depth`` parts."""
        agg: dict[str, list[float]] = {}
        for k, v in self.by_phase.items():
            key = "/".join(k.split("/")[:depth]) if depth else k
            agg[key] = [a + b for a, b in zip(agg.get(key, [0, 0, 0, 0]), v)]
        return sorted(agg.items(), key=lambda kv: (-kv[1][1], kv[0]))[:n]

    def to_json(self, top: int = 25) -> dict[str, Any]:
        return {"ops": self.ops, "nonview_ops": self.nonview, "syncs": self.syncs, "flops": self.flops,
                "top_ops": [{"op": k, "ops": v, "view": k in self.views} for k, v in self.top_ops(top, views=True)],
                "phases": [{"phase": k, "ops": v[0], "nonview_ops": v[1], "syncs": v[2], "flops": v[3]}
                           for k, v in self.top_phases(10_000)],
                "sync_sites": dict(sorted(self.sync_sites.items(), key=lambda kv: (-kv[1], kv[0])))}


# -----------------------------------------------------------------------------------------
# the counter
# -----------------------------------------------------------------------------------------
def _tensors(args, kwargs=None) -> Iterator[torch.Tensor]:
    for a in args:
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            for b in a:
                if isinstance(b, torch.Tensor):
                    yield b
    if kwargs:
        yield from _tensors(kwargs.values())


def _factory_on_host(kwargs: dict) -> bool:
    """Placement of a tensor a factory makes (no tensor inputs): host unless a device is named."""
    dev = kwargs.get("device")
    if dev is None:
        return True
    if isinstance(dev, str):
        return torch.device(dev) == torch.device("cpu") and ":" not in dev
    # a device object: cpu:0 is the device; a bare cpu object is most often `x.device`, whose
    # placement is unknown here, so it counts as the device (what the CUDA path would do for x on GPU)
    return False


class LaunchCounter:
    """Count ops, host syncs and FLOPs of everything run inside ``with LaunchCounter() as c:``;
    ``c.snapshot()`` returns the cumulative :class:`Tally` so far (difference two snapshots
    for a region). One counter at a time."""

    def __init__(self, flops: bool = True):
        from torch.utils.weak import WeakIdKeyDictionary

        self.count_flops = flops
        self.tally = Tally()
        if not _HOST:  # tensors known to live on the host (see the module docstring), kept across counters
            _HOST.append(WeakIdKeyDictionary())
        self._host = _HOST[0]
        self._ctx_host = False  # placement of tensor-less ops inside the current Python-level call
        self._paused = False
        self._modes: list[Any] = []
        self._hooks: list[Any] = []

    # -- placement ----------------------------------------------------------------------
    def is_host(self, t: torch.Tensor) -> bool:
        return t in self._host

    def _set_host(self, out, host: bool) -> None:
        for t in (out if isinstance(out, (list, tuple)) else (out,)):
            if isinstance(t, torch.Tensor):
                if host:
                    self._host[t] = True
                else:
                    self._host.pop(t, None)

    # -- recording ----------------------------------------------------------------------
    def record(self, op: str, view: bool = False, sync: bool = False, flops: int = 0) -> None:
        if self._paused:
            return
        t, path = self.tally, _path()
        t.ops += 1
        t.nonview += not view
        t.syncs += sync
        t.flops += flops
        row = t.by_op.setdefault(op, [0, 0, 0])
        row[0] += 1
        row[1] += sync
        row[2] += flops
        if view:
            t.views.add(op)
        ph = t.by_phase.setdefault(path, [0, 0, 0, 0])
        ph[0] += 1
        ph[1] += not view
        ph[2] += sync
        ph[3] += flops
        if sync:
            key = f"{path}: {op}"
            t.sync_sites[key] = t.sync_sites.get(key, 0) + 1

    def snapshot(self) -> Tally:
        return self.tally.copy()

    @contextlib.contextmanager
    def paused(self):
        """Run something uncounted (set-up inside a counted region)."""
        was, self._paused = self._paused, True
        try:
            yield
        finally:
            self._paused = was

    # -- the two modes --------------------------------------------------------------------
    def _dispatch(self, func, args, kwargs):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        name = packet.__name__
        ins = list(_tensors(args, kwargs))
        out = func(*args, **kwargs)
        if self._paused or name.startswith("_record_function"):  # profiler bookkeeping, no kernel
            return out
        dev_in = [t for t in ins if not self.is_host(t)]
        if name == "_to_copy" and isinstance(kwargs.get("device"), torch.device) and kwargs["device"].index == 0:
            self._set_host(out, False)  # moved to the device
            if ins and dev_in and kwargs.get("dtype") in (None, ins[0].dtype):
                return out  # a device tensor .to(device): an alias on CUDA, no launch
        elif ins:
            self._set_host(out, not dev_in)
        else:
            self._set_host(out, self._ctx_host)
        sync = False
        if dev_in:
            if name in SYNC_OPS or (name == "repeat_interleave" and kwargs.get("output_size") is None):
                sync = True
            elif name in _MASK_INDEX_OPS:
                idx = args[1] if len(args) > 1 else kwargs.get("indices", ())
                sync = any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in (idx or ()))
            elif name == "copy_" and len(ins) >= 2 and self.is_host(ins[0]) and not self.is_host(ins[1]):
                sync = True
        fl = 0
        if self.count_flops:
            fl = op_flops(packet, args, kwargs, out)
        self.record(f"aten.{name}", view=func.is_view, sync=sync, flops=fl)
        return out

    def _function(self, func, args, kwargs):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in ("backward", "grad") and func in (torch.Tensor.backward, torch.autograd.grad):
            _push("backward")
            try:
                return func(*args, **kwargs)
            finally:
                _pop()
        src = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if src is not None and name in _HOST_READS and not self.is_host(src):
            self.record(f"Tensor.{name} (device->host copy)", sync=True)
            return func(*args, **kwargs)
        if src is not None and name in ("cpu", "to") and func in (torch.Tensor.cpu, torch.Tensor.to):
            # .cpu() and .to("cpu") move to the host; .to(<a device object>) is usually .to(x.device),
            # which on CUDA is the device (the same reading as for factories, see _factory_on_host)
            target = kwargs.get("device", next((a for a in args[1:] if isinstance(a, (str, torch.device))), None))
            to_host = name == "cpu" or (isinstance(target, str) and _factory_on_host({"device": target}))
            if to_host and not self.is_host(src):
                out = func(*args, **kwargs)
                if out is src:  # on the CPU an alias; on CUDA a copy: keep the two apart
                    with self.paused():
                        out = src.detach().clone().requires_grad_(src.requires_grad)
                self.record(f"Tensor.{name} (device->host copy)", sync=True)
                self._set_host(out, True)
                return out
        prev = self._ctx_host
        factory = name in _FACTORIES and not any(True for _ in _tensors(args))
        self._ctx_host = _factory_on_host(kwargs) if factory else all(self.is_host(t) for t in _tensors(args, kwargs))
        try:
            out = func(*args, **kwargs)
        finally:
            ctx, self._ctx_host = self._ctx_host, prev
        if factory:
            self._set_host(out, ctx)
        return out

    def __enter__(self) -> "LaunchCounter":
        from torch.overrides import TorchFunctionMode
        from torch.utils._python_dispatch import TorchDispatchMode

        if _ACTIVE:
            raise RuntimeError("a LaunchCounter is already counting")
        counter = self

        class _Dispatch(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                return counter._dispatch(func, args, kwargs)

        class _Function(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                return counter._function(func, args, kwargs)

        self._modes = [_Dispatch(), _Function()]
        for m in self._modes:
            m.__enter__()
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        self._hooks = [register_optimizer_step_pre_hook(lambda *a: _push("optimizer")),
                       register_optimizer_step_post_hook(lambda *a: _pop())]
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> bool:
        _ACTIVE.clear()
        for h in self._hooks:
            h.remove()
        for m in reversed(self._modes):
            m.__exit__(*exc)
        del _STACK[:]
        _MARKS[:] = [None]
        _PATH[0] = None
        return False


def count_launches(fn: Callable[[], Any], flops: bool = True) -> Tally:
    """The :class:`Tally` of one call of ``fn``."""
    with LaunchCounter(flops=flops) as c:
        fn()
    return c.snapshot()


# -----------------------------------------------------------------------------------------
# emulating the CUDA path on the CPU
# -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def cuda_optimizer_defaults() -> Iterator[None]:
    """Optimizers created inside pick what they would pick on CUDA: the multi-tensor
    (``foreach``) implementation unless told otherwise, instead of the CPU's per-parameter
    loop (about 10 ops per parameter and step). Explicit ``fused=True`` works on the CPU."""
    import torch.optim.optimizer as optimizer

    original = optimizer._get_foreach_kernels_supported_devices
    optimizer._get_foreach_kernels_supported_devices = lambda: [*original(), "cpu"]
    try:
        yield
    finally:
        optimizer._get_foreach_kernels_supported_devices = original


def refuse_optimizer(opt: torch.optim.Optimizer, **options: Any) -> torch.optim.Optimizer:
    """A fresh optimizer of the same class over the same parameter groups, with ``options``
    (e.g. ``fused=True``) changed: how the CUDA path's optimizer is emulated before any step."""
    groups = [{k: v for k, v in g.items() if k not in options} for g in opt.param_groups]
    return type(opt)(groups, **options)


# -----------------------------------------------------------------------------------------
# FLOPs
# -----------------------------------------------------------------------------------------
def op_flops(packet, args, kwargs, out) -> int:
    """FLOPs of one dispatched op by torch.utils.flop_counter's formula; 0 without one.

    One correction: torch's formula for the weight gradient of a *grouped* convolution
    (``aten.convolution_backward`` with ``groups`` > 1) counts every group against every
    other, ``groups`` times the true work (it ignores the argument). The fused bank runs
    its G networks as grouped convolutions, so uncorrected the bank's training and PTI steps
    read up to G times their FLOPs in the weight-gradient share. The weight-gradient term is
    counted alone and divided by ``groups`` here; the input gradient is right as it is.
    """
    from torch.utils.flop_counter import flop_registry

    formula = flop_registry.get(packet)
    if formula is None:
        return 0
    if packet is torch.ops.aten.convolution_backward:
        groups, mask = args[9], list(args[10])
        if groups > 1 and mask[1]:
            def part(m: list[bool]) -> int:
                return int(formula(*args[:10], m, *args[11:], **kwargs, out_val=out))
            return part([mask[0], False, False]) + part([False, True, False]) // groups
    return int(formula(*args, **kwargs, out_val=out))


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """FLOPs of ``fn()`` by the formulas of torch.utils.flop_counter (``flop_registry``:
    matrix products, convolutions and attention, forward and backward): the total and the
    count per aten op.

    This is FlopCounterMode's counting without its per-module attribution: that attribution
    (ModuleTracker) registers autograd hooks on module inputs and, in torch 2.14, raises
    "Expected gradient function to be set" on the no-grad render at the end of JoIN's
    inversion loop. Totals are the same (tested against FlopCounterMode on the U-Net).
    Unlike :class:`LaunchCounter`, an op without a formula is decomposed (as FlopCounterMode
    does) in case it hides ops with one, which changes what runs: never count launches here.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    counts: dict[Any, int] = {}

    class _Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            packet = func._overloadpacket
            if packet not in flop_registry:
                with self:  # an op without a formula may decompose into ops with one (as FlopCounterMode does)
                    r = func.decompose(*args, **kwargs)
                if r is not NotImplemented:
                    return r
                return func(*args, **kwargs)
            out = func(*args, **kwargs)
            counts[packet] = counts.get(packet, 0) + op_flops(packet, args, kwargs, out)
            return out

    with _Count():
        fn()
    per_op = {str(op).split(".")[-1]: n for op, n in counts.items()}
    return sum(counts.values()), per_op


__all__ = ["DEVICE", "SYNC_OPS", "LaunchCounter", "Tally", "count_flops", "count_launches", "cuda_optimizer_defaults",
           "mark", "op_flops", "phase", "phases_of", "refuse_optimizer"]
