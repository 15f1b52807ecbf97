"""The one runtime every solver runs in: entry checks, the table cache, the denoiser check, progress and the
finite check.

A solver is a *builder* (registered in :mod:`.registry`): ``build(schedule, knobs, batch, dtype, device)``
does all host-side work once (float64 coefficients, one copy to the device) and returns a :class:`Program`,
whose ``run`` is straight-line tensor code with no host synchronisation. This module wraps every call the
same way::

    run(spec, denoiser, x, sigmas, knobs, cond=..., noise=..., ...)        # what each *_sample calls
      = checks (knobs, denoiser, x, sigmas, dtype, cond, callback, noise)   # once, may sync
      + prepare(): the Program from TABLES (built on a miss), bound to the checked denoiser
      + the loop (no syncs; progress bar optional)
      + the finite check (one reduction and one sync, after the loop)

The same :func:`prepare` feeds :class:`~edm_samplers.GraphedSampler` (which captures the loop) and
:func:`~edm_samplers.generate`. Gradient mode is the caller's: nothing here disables autograd.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from .._types import Callback, Denoiser, NoiseSource
from .._validate import (
    check_callback,
    check_cond,
    check_cond_batch,
    check_denoised_on,
    check_denoiser,
    check_flag,
    check_has_data,
    check_infinite_sigma,
    check_sigmas,
    check_sigmas_fit,
    check_x,
    state_dtype,
)
from ..afs import CallPlan, check_scales, closed_form
from ..noise import as_noise_source
from ..schedule_fit import warn_above_range

if TYPE_CHECKING:
    from .registry import SolverSpec

__all__ = [
    "RUN_OPTIONS",
    "TABLES",
    "Checked",
    "Prepared",
    "Program",
    "Schedule",
    "TableCache",
    "finite_or_raise",
    "prepare",
    "progress_range",
    "run",
    "schedule",
    "sigma_rows",
    "to_device",
]

_T = TypeVar("_T")

RUN_OPTIONS = (
    "cond", "noise", "callback", "dtype", "progress", "check_finite", "afs", "direction_scale", "sigma_scale",
)  # fmt: skip
"""The keyword arguments every sampler takes besides its knobs."""


class Schedule(NamedTuple):
    """A validated schedule: float64 CPU tensor (N + 1 levels) and the same values as Python floats."""

    sigmas: Tensor
    host: tuple[float, ...]

    @property
    def steps(self) -> int:
        return len(self.host) - 1


def schedule(sigmas: Tensor | Sequence[float], *, strict: bool = False) -> Schedule:
    """Check ``sigmas`` (see :func:`~edm_samplers._validate.check_sigmas`); ``strict``: no repeated levels."""
    check_has_data(sigmas, "sigmas")
    s = check_sigmas(sigmas, allow_inf_first=True)
    if strict:
        pos = s[s > 0]
        if bool((pos[1:] >= pos[:-1]).any()):
            i = int(torch.nonzero(pos[1:] >= pos[:-1])[0])
            raise ValueError(
                "sigmas must be strictly decreasing for multistep solvers (repeated levels make interpolation "
                f"nodes coincide), but sigmas[{i + 1}] = {pos[i + 1].item()} equals sigmas[{i}]; drop the repeats"
            )
    return Schedule(s, tuple(s.tolist()))


class Checked:
    """Wraps the user's denoiser: static shape check and dtype cast of its output (no device sync)."""

    __slots__ = ("dtype", "fn")

    def __init__(self, fn: Denoiser, dtype: torch.dtype) -> None:
        self.fn = fn
        self.dtype = dtype

    def __call__(self, x: Tensor, sigma: Tensor, /, **cond: Any) -> Tensor:
        out = check_denoised_on(self.fn(x, sigma, **cond), x)
        return out if out.dtype == self.dtype else out.to(self.dtype)


class Program(Protocol):
    """What a builder returns: a solver's device tables for one (schedule, knobs, batch, dtype, device).

    ``run`` samples from ``x`` at ``sigmas[0]`` with the checked denoiser ``den``, iterating over ``steps``
    (``range(N)``, or a progress bar over it). It must follow the capture rules of :mod:`.graph`: no host
    syncs, no host-to-device copies, randomness only from ``noise`` (None for deterministic programs), the
    same draws on every run, never writing ``x``. Programs are cached and shared: ``run`` must not mutate
    the program.
    """

    @property
    def stochastic(self) -> bool: ...

    def run(self, den: Denoiser, x: Tensor, cond: Mapping[str, Any], noise: NoiseSource | None,
            callback: Callback | None, steps: Iterable[int]) -> Tensor:  # fmt: skip
        """Sample from ``x`` at ``sigmas[0]`` (the protocol of every program)."""


Builder = Callable[[Schedule, Mapping[str, Any], int, torch.dtype, torch.device], Program]
"""``build(schedule, knobs, batch, dtype, device) -> Program``: a solver's one piece of host-side work."""


def to_device(arrays: Sequence[NDArray[np.float64]], dtype: torch.dtype, device: torch.device) -> list[Tensor]:
    """All of a program's float64 tables in one host-to-device transfer, cast once to the state dtype."""
    flat = np.concatenate([np.ravel(a) for a in arrays]).astype(np.float64)
    t = torch.from_numpy(flat).to(device=device, dtype=dtype)
    return [v.view(a.shape) for v, a in zip(torch.split(t, [a.size for a in arrays]), arrays, strict=True)]


def sigma_rows(sig: Tensor, batch: int) -> Tensor:
    """``[N] -> [N, batch]``: each step's sigma as the ``[batch]`` row the denoiser takes (a device op)."""
    return sig[:, None].expand(-1, batch).contiguous()


def progress_range(n: int, enabled: bool, desc: str) -> Iterable[int]:
    """``range(n)``, or a tqdm bar over it (``progress=True``; tqdm is the ``cli`` extra)."""
    if not enabled:
        return range(n)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError("progress=True needs tqdm: pip install 'edm-samplers[cli]' (or pip install tqdm)") from None
    bar: Iterable[int] = tqdm(range(n), desc=desc, leave=False)
    return bar


def finite_or_raise(x: Tensor, name: str) -> None:
    """Raise ``FloatingPointError`` naming the rows of ``x`` that hold NaN/Inf (one sync, after the loop)."""
    if x.numel() == 0:
        return
    # One reduction pass and one sync, with no state-sized temporaries (isfinite would allocate four);
    # min and max propagate NaN and expose +-inf. Details only on failure.
    lo, hi = torch.aminmax(x.detach())
    if bool(torch.isfinite(lo) & torch.isfinite(hi)):
        return
    bad = ~torch.isfinite(x.detach()).reshape(x.shape[0], -1).all(dim=1)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()
        raise FloatingPointError(
            f"{name}: the result has non-finite values (NaN/Inf) in {len(rows)} of {x.shape[0]} samples "
            f"(rows {rows[:10]}{' ...' if len(rows) > 10 else ''}); the denoiser returned or produced "
            "non-finite values. Check the network and the schedule's range; pass check_finite=False "
            "to get the raw result anyway."
        )


class TableCache:
    """A small LRU of read-only programs (coefficient tables), keyed by everything they depend on.

    Building a solver's device tables costs small host ops and a host-to-device copy (a sync on CUDA); a
    repeat call with the same schedule, knobs, batch, dtype and device reuses them. Entries are never
    written after they are built.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._entries: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: tuple[Any, ...] | None, build: Callable[[], _T]) -> _T:
        """The entry for ``key``, built (and kept) on a miss; ``key=None`` or unhashable: built, not kept."""
        if key is None:
            return build()
        try:
            hit = self._entries.get(key)
        except TypeError:  # an unhashable part: built every time
            return build()
        if hit is not None:
            self._entries.move_to_end(key)
            value: _T = hit
            return value
        value = build()
        self._entries[key] = value
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()


TABLES = TableCache()


class Prepared:
    """A solver bound to one schedule, batch, dtype, device and denoiser: ``loop(x, cond, noise)`` samples.

    Everything host-side is done (checks, coefficients, their one copy to the device), so a call runs
    straight-line tensor code with no host synchronisation: the object is what
    :class:`~edm_samplers.GraphedSampler` captures, and what every ``*_sample`` function runs once.

    Attributes:
        name: the sampler's registry name, e.g. ``"dpmpp_2m"``.
        program: the cached device tables (shared between calls with equal keys).
        stochastic: whether the loop draws noise (one state-shaped draw per step).
        sigmas: the schedule as Python floats.
        batch, dtype, device: what x must have.
    """

    __slots__ = ("batch", "den", "device", "dtype", "name", "program", "sigmas", "stochastic")

    def __init__(
        self, name: str, program: Program, den: Checked | CallPlan, sched: Schedule, batch: int, dtype: torch.dtype,
        device: torch.device,
    ) -> None:  # fmt: skip
        self.name = name
        self.program = program
        self.den = den
        self.sigmas = sched.host
        self.batch = batch
        self.dtype = dtype
        self.device = device
        self.stochastic = program.stochastic

    def __call__(
        self,
        x: Tensor,
        cond: Mapping[str, Any],
        noise: NoiseSource | None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Sample from ``x`` at ``sigmas[0]``; ``noise`` is read by stochastic solvers only."""
        steps = progress_range(len(self.sigmas) - 1, progress, f"{self.name}_sample")
        if isinstance(self.den, CallPlan):  # afs / direction_scale: the per-run call counter starts again
            self.den.reset()
        src = noise if self.stochastic else None
        return self.program.run(self.den, x.to(self.dtype), cond, src, callback, steps)


def prepare(
    spec: SolverSpec,
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    knobs: Mapping[str, Any],
    *,
    dtype: torch.dtype | None = None,
    afs: object = None,
    direction_scale: object = None,
    sigma_scale: object = None,
) -> Prepared:
    """Check the knobs, denoiser, x, schedule and dtype once; build (or reuse) the program for states like ``x``.

    ``afs`` / ``direction_scale`` / ``sigma_scale``: the run options of :mod:`edm_samplers.afs` (the denoiser is
    wrapped; the program is unchanged). May synchronise (it looks at the schedule); the returned loop never does.
    """
    values = spec.resolve(knobs)
    check_denoiser(denoiser)
    check_has_data(x, "x")
    x = check_x(x)
    sched = schedule(sigmas, strict=spec.strict)
    if math.isinf(sched.host[0]):
        check_infinite_sigma(denoiser)
    warn_above_range(denoiser, sched.host, stacklevel=4)  # host floats: no sync
    sdt = state_dtype(x, dtype)
    check_sigmas_fit(sched.sigmas, sdt)
    batch, dev = x.shape[0], x.device

    def build() -> Program:
        return spec.build(sched, values, batch, sdt, dev)

    # A callable knob (round_sigma) may be anything: never cached. Knob values are checked (canonical
    # types) before the lookup, so an invalid value never meets a valid entry.
    cacheable = not any(callable(v) for v in values.values())
    key = (spec.name, sched.host, tuple(values.items()), batch, sdt, dev) if cacheable else None
    den: Checked | CallPlan = Checked(denoiser, sdt)
    first = closed_form(afs, denoiser)
    nfe_rule = spec.nfe_inf if spec.nfe_inf is not None and math.isinf(sched.host[0]) else spec.nfe
    n_calls = nfe_rule(sched.steps, sched.host[-1] == 0, values)
    scales = check_scales(direction_scale, n_calls)
    shifts = check_scales(sigma_scale, n_calls, "sigma_scale")
    if first is not None or scales is not None or shifts is not None:
        bind = getattr(first, "bind", None)
        first_den = None if first is None else Checked(bind(sdt, dev) if callable(bind) else first, sdt)
        scale_t = None if scales is None else list(torch.tensor(scales, dtype=sdt).to(dev).unbind(0))
        shift_t = None if shifts is None else list(torch.tensor(shifts, dtype=sdt).to(dev).unbind(0))
        den = CallPlan(den, first_den, scale_t, shift_t)
    return Prepared(spec.name, TABLES.get(key, build), den, sched, batch, sdt, dev)


def run(spec: SolverSpec, denoiser: Denoiser, x: Tensor, sigmas: Tensor | Sequence[float], knobs: Mapping[str, Any],
        options: Mapping[str, Any]) -> Tensor:  # fmt: skip
    """One sampling call: checks, :func:`prepare`, the loop and the finite check.

    ``options`` holds the run options (:data:`RUN_OPTIONS`: ``cond``, ``noise``, ``callback``, ``dtype``,
    ``progress``, ``check_finite``); an unknown key raises ``TypeError`` listing the valid ones.
    """
    unknown = sorted(set(options) - set(RUN_OPTIONS))
    if unknown:
        raise spec.unknown_knobs(unknown)
    loop = prepare(
        spec, denoiser, x, sigmas, knobs, dtype=options.get("dtype"), afs=options.get("afs"),
        direction_scale=options.get("direction_scale"), sigma_scale=options.get("sigma_scale"),
    )  # fmt: skip
    cond = check_cond(options.get("cond"))
    check_cond_batch(cond, loop.batch)
    callback = options.get("callback")
    check_callback(callback)
    src = as_noise_source(options.get("noise"))  # type-checked always; deterministic solvers draw nothing
    progress = check_flag(options.get("progress", False), "progress")
    check_finite = check_flag(options.get("check_finite", True), "check_finite")
    out = loop(x, cond, src, callback, progress)
    if check_finite:
        finite_or_raise(out, f"{spec.name}_sample")
    return out
