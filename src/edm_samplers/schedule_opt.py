"""Step schedules optimised for a given denoiser, solver and step count.

Hand-made schedules (rho = 7, log-linear) spread a fixed budget of steps without looking at the
model. At 5-20 NFE the placement of the steps matters as much as the solver, so
:func:`optimize_schedule` searches the schedule directly: it minimises the global error of the
*actual* sampler against a converged reference solution on a small calibration batch
(the objective of "optimal step" methods such as GITS, solved here by derivative-free search
rather than dynamic programming, so it works for any sampler of the library, multistep ones
included, without differentiating through the network).

Parameterisation: the N positive levels are sigma_0 = sigma_max > sigma_1 > ... > sigma_{N-1} >= sigma_floor,
written as log-decrements ``softmax(u) * (ln sigma_max - ln sigma_floor)`` (N - 1 decrements plus one slack
entry; with ``sigma_min`` given, the last level is pinned there and there is no slack), so every
candidate is a valid strictly decreasing schedule and the search is unconstrained.
The search has two deterministic phases, both monotone (never worse than the initial schedule):
coordinate-wise line searches on a log grid between each level's neighbours (global along each
coordinate: at 5 NFE the best schedule can be far from any rho-family schedule), then a compass
(pattern) search in ``u`` to refine. Each evaluation is one sampling run of the calibration batch.

Schedules are saved and loaded as plain JSON lists of floats (:func:`save_schedule`,
:func:`load_schedule`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ._memo import CallMemo
from ._safetensors import write_atomic
from ._types import Denoiser, StepInfo
from ._validate import check_float, check_float_dtype, check_int, check_path, check_sigmas, check_x
from .calibration_batch import warn_if_small
from .schedules import karras_sigmas
from .solvers import heun_sample
from .solvers.api import sampler_function
from .solvers.registry import get
from .solvers.runtime import RUN_OPTIONS

__all__ = [
    "ScheduleSearch",
    "load_schedule",
    "optimize_schedule",
    "save_schedule",
    "schedule_from_params",
    "schedule_params",
]

Sampler = Callable[..., Tensor]


@dataclass(frozen=True)
class ScheduleSearch:
    """Result of :func:`optimize_schedule`.

    Attributes:
        sigmas: the optimised schedule (N levels then 0, float64).
        error: its calibration objective (mean squared error per element vs the reference).
        initial_error: the objective of the initial schedule.
        evaluations: number of sampling runs spent.
        history: the objective after each accepted move.
        network_calls, reused_calls: denoiser calls made, and calls whose result was re-used from the best run
            (a candidate that moves level i repeats that run's calls above level i bitwise; they are not redone).
    """

    sigmas: Tensor
    error: float
    initial_error: float
    evaluations: int
    history: list[float] = field(default_factory=list)
    network_calls: int = 0
    reused_calls: int = 0


def schedule_params(sigmas: Tensor, floor: float, pinned: bool) -> Tensor:
    """The search's unconstrained parameters u of a schedule (log-decrements; see the module docstring).

    ``pinned``: the last level is fixed (= ``floor``), so there is no slack entry.
    """
    pos = sigmas[sigmas > 0].to(torch.float64)
    logs = torch.log(pos)
    parts = logs[:-1] - logs[1:]
    if not pinned:
        parts = torch.cat([parts, (logs[-1] - math.log(floor)).reshape(1)])
    return torch.log(parts.clamp_min(1e-12))


def schedule_from_params(u: Tensor, sigma_max: float, floor: float, pinned: bool) -> Tensor:
    """The schedule (levels then 0) of parameters ``u``: the inverse of :func:`schedule_params`."""
    total = math.log(sigma_max) - math.log(floor)
    # Each weight is kept above 1e-9 of the total so that no step has zero length (levels stay strictly
    # decreasing even where the search drives a decrement towards 0).
    w = (torch.softmax(u, 0) + 1e-9) / (1 + 1e-9 * u.numel())
    dec = (w if pinned else w[:-1]) * total
    logs = math.log(sigma_max) - torch.cat([dec.new_zeros(1), torch.cumsum(dec, 0)])
    s = torch.exp(logs)
    s[0] = sigma_max
    if pinned:
        s[-1] = floor
    return torch.cat([s, s.new_zeros(1)])


def _where_nonfinite(
    sampler: Sampler,
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    cond: Mapping[str, Any] | None,
    kw: Mapping[str, Any],
) -> str:
    """Rerun a failed sampling run with a callback and say where it first went non-finite (error path only)."""
    if not bool(torch.isfinite(x).all()):
        return "the calibration batch x itself holds NaN/inf"
    found: list[str] = []

    def callback(info: StepInfo) -> None:
        if found:
            return
        if not bool(torch.isfinite(info.denoised).all()):
            found.append(f"returned non-finite values at sigma={info.sigma_hat!r} (step {info.i})")
        elif not bool(torch.isfinite(info.x_next).all()):
            found.append(
                f"made the state non-finite within step {info.i}, from sigma={info.sigma_hat!r} to "
                f"sigma={info.sigma_next!r}"
            )

    opts = {**kw, "check_finite": False, "callback": callback}
    try:
        with torch.no_grad():
            sampler(denoiser, x, sigmas, cond=cond, **opts)
    except Exception as e:  # a custom sampler without callback=: report what is known
        return f"the result holds NaN/inf (no step-by-step diagnosis: {type(e).__name__}: {e})"
    name = getattr(denoiser, "__name__", type(denoiser).__name__)
    return f"denoiser {name} {found[0]}" if found else "the result holds NaN/inf although every step was finite"


def optimize_schedule(
    denoiser: Denoiser,
    x: Tensor,
    num_steps: int,
    *,
    sampler: str | Sampler = "heun",
    reference: Tensor | None = None,
    init: Tensor | None = None,
    sigma_max: float | None = None,
    sigma_min: float | None = None,
    sigma_floor: float = 5e-4,
    max_evals: int = 400,
    step: float = 0.5,
    min_step: float = 0.02,
    sweeps: int = 2,
    grid_points: int = 7,
    cond: Mapping[str, Any] | None = None,
    max_gap: float = 0.1,
    check_batch: bool = True,
    **knobs: Any,
) -> ScheduleSearch:
    """Find the ``num_steps``-level schedule that minimises ``sampler``'s error on a calibration batch.

    Args:
        denoiser: D(x, sigma, **cond).
        x: calibration batch at noise level ``sigma_max`` (e.g. ``sigma_max * randn`` from fixed seeds).
            How many depends on how strongly the per-sample errors react to the schedule: the search applies
            the rule of :func:`~edm_samplers.min_calibration_batch` to its result and warns when ``x`` is
            smaller. Smooth problems need a few dozen samples; ones whose error
            is a few trajectories ending at another mode need thousands (the 64-point empirical denoiser at
            10 NFE: 256 overfit, 8192 did not).
        num_steps: N >= 2 positive levels (Heun then costs 2N - 1 NFE; first-order and multistep
            solvers N NFE).
        sampler: a deterministic sampler: a registry name (``"heun"``, ``"unipc"``, ...) or a function with the
            signature of :func:`heun_sample`.
        reference: the converged final samples for ``x``; default: :func:`heun_sample` with 512 steps
            of :func:`karras_sigmas` from ``sigma_max``.
        init: initial schedule (N levels then 0); default ``karras_sigmas(N, 0.002, sigma_max)``.
        sigma_max: first level (default: ``init[0]`` or 80); it stays fixed.
        sigma_min: if given, the last positive level is fixed at this value as the first is at
            ``sigma_max`` (``init``, when given, must end there). Default: it moves freely down to
            ``sigma_floor``. Fix it when the schedule is to be compared with samplers that stop at a
            given sigma_min: under a mean-squared objective a free last level may settle high, where the
            final denoiser output is a blend of nearby modes, which lowers the error but blurs samples.
        sigma_floor: lower bound for the last positive level when it is free.
        max_evals: budget of sampling runs (including the batch-size check's, when it fits: see ``check_batch``).
        step, min_step: initial and final compass step in the log-decrement parameters (phase 2).
        sweeps, grid_points: phase 1 makes up to ``sweeps`` passes over the levels, trying
            ``grid_points`` log-spaced values of each between its neighbours (at most half the budget).
        cond: denoiser conditioning.
        max_gap, check_batch: the batch-size rule (:func:`~edm_samplers.min_calibration_batch`): with
            ``check_batch`` the search spends one more run per parameter at the end to apply it, and warns if
            ``x`` is too small for a held-out error within ``max_gap`` (relative) of the calibration error.
        **knobs: the sampler's knobs (e.g. ``order=3`` for ``"unipc"``), checked before the search starts, and
            run options (``afs=``, ``direction_scale=``) passed to every run.

    Returns:
        A :class:`ScheduleSearch` with the best schedule found (never worse than ``init`` on the
        calibration batch).

    Raises:
        ValueError / TypeError: on invalid arguments (including a non-finite ``x`` or ``reference``).
        FloatingPointError: if the denoiser makes the reference solution or the sampler's run on the initial
            schedule non-finite (the message names the first sigma where it happened; a search from there
            could only return ``init`` with error = inf). Non-finite candidates met later are just rejected.
    """
    check_x(x)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x (the calibration batch) must be finite, got NaN/inf entries")
    n = check_int(num_steps, "num_steps", minimum=2)
    floor = check_float(sigma_floor, "sigma_floor", positive=True)
    max_evals = check_int(max_evals, "max_evals", minimum=1)
    sweeps = check_int(sweeps, "sweeps", minimum=0)
    grid_points = check_int(grid_points, "grid_points", minimum=1)
    step = check_float(step, "step", positive=True)
    min_step = check_float(min_step, "min_step", positive=True)
    gap = check_float(max_gap, "max_gap", positive=True)
    lo = None if sigma_min is None else check_float(sigma_min, "sigma_min", positive=True)
    if init is None:
        hi = 80.0 if sigma_max is None else check_float(sigma_max, "sigma_max", positive=True)
        if lo is not None and not lo < hi:
            raise ValueError(f"sigma_min must be below sigma_max = {hi}, got {lo}")
        init_s = karras_sigmas(n, min(0.002, hi / 2) if lo is None else lo, hi)
    else:
        init_s = check_sigmas(init, name="init", final_zero=True)
        if init_s.numel() != n + 1:
            raise ValueError(f"init must have num_steps + 1 = {n + 1} entries, got {init_s.numel()}")
        hi = float(init_s[0]) if sigma_max is None else check_float(sigma_max, "sigma_max", positive=True)
        if abs(float(init_s[0]) - hi) > 1e-12 * hi:
            raise ValueError(f"init[0] = {float(init_s[0])} must equal sigma_max = {hi}")
        if lo is not None and abs(float(init_s[-2]) - lo) > 1e-12 * lo:
            raise ValueError(f"init's last positive level {float(init_s[-2])} must equal sigma_min = {lo}")
    pinned = lo is not None
    # The batch-size check at the end costs one run per search parameter plus one; it is reserved from the
    # budget when the budget is at least three times that, else skipped.
    n_check = (n - 1 if pinned else n) + 1
    check_batch = check_batch is True and max_evals >= 3 * n_check and x.shape[0] >= 2
    if check_batch:
        max_evals -= n_check
    if lo is not None:
        floor = lo
    elif not floor < float(init_s[-2]):
        raise ValueError(f"sigma_floor must be below the initial last level {float(init_s[-2])}, got {floor}")
    if isinstance(sampler, str):
        # an unknown sampler or a bad knob fails now, not after the reference solution
        get(sampler).resolve({k: v for k, v in knobs.items() if k not in RUN_OPTIONS})
    run = sampler_function(sampler)
    kw = dict(knobs)
    kw.setdefault("check_finite", False)
    if reference is None:
        ref_sigmas = karras_sigmas(512, min(0.002, hi / 2), hi)
        with torch.no_grad():
            reference = heun_sample(denoiser, x, ref_sigmas, cond=cond, dtype=x.dtype, check_finite=False)
        if not bool(torch.isfinite(reference).all()):  # one sync, once
            where = _where_nonfinite(heun_sample, denoiser, x, ref_sigmas, cond, {"dtype": x.dtype})
            raise FloatingPointError(
                f"optimize_schedule: the reference solution (heun_sample, 512 steps from sigma_max={hi}) is not "
                f"finite: {where}. Fix the denoiser (or pass a finite reference=)"
            )
    elif not isinstance(reference, Tensor) or reference.shape != x.shape:
        raise ValueError("reference must be a tensor of x's shape (the converged samples for x)")
    elif not reference.is_floating_point() or not bool(torch.isfinite(reference).all()):
        raise ValueError(
            f"reference must be a finite floating-point tensor (the converged samples for x), got dtype "
            f"{reference.dtype} with {int((~torch.isfinite(reference.double())).sum())} non-finite entries"
        )
    ref = reference.detach()

    evals = 0
    memo = CallMemo(denoiser)  # a candidate re-uses the best run's calls above the level it moves

    def residuals(s: Tensor) -> Tensor:
        nonlocal evals
        evals += 1
        memo.start()
        with torch.no_grad():
            out = run(memo, x, s, cond=cond, **kw)
        return (out.to(ref.dtype) - ref).reshape(x.shape[0], -1)

    def objective(s: Tensor) -> float:
        v = float(torch.mean(residuals(s) ** 2))  # one sync per sampling run: the search is host-side by design
        return v if math.isfinite(v) else math.inf

    # Phase 1 (global along each coordinate): for each level sigma_i in turn, try a log-spaced grid of
    # values strictly between its neighbours and keep the best. This escapes the local minima that a
    # small-step search from a hand-made schedule falls into at very low NFE.
    pos = init_s[:-1].clone()
    best = objective(torch.cat([pos, pos.new_zeros(1)]))
    memo.keep()
    initial = best
    if not math.isfinite(initial):
        # Every candidate would compare as inf: the search could only return init with error=inf.
        where = _where_nonfinite(run, denoiser, x, init_s, cond, kw)
        raise FloatingPointError(
            f"optimize_schedule: {getattr(run, '__name__', 'sampler')} on the initial schedule "
            f"{init_s.tolist()} gives a non-finite error: {where}. Fix the denoiser, or pass an init= whose "
            "levels it handles"
        )
    history = [best]
    for _ in range(sweeps):
        improved = False
        for i in range(1, n - 1 if pinned else n):
            lo_i = float(pos[i + 1]) if i + 1 < n else floor
            hi_i = float(pos[i - 1])
            grid = torch.exp(torch.linspace(math.log(lo_i), math.log(hi_i), grid_points + 2, dtype=torch.float64))
            for v in grid[1:-1].tolist():
                if evals >= max_evals // 2:
                    break
                cand = pos.clone()
                cand[i] = v
                e = objective(torch.cat([cand, cand.new_zeros(1)]))
                if e < best:
                    best, pos, improved = e, cand, True
                    history.append(e)
                    memo.keep()
        if not improved or evals >= max_evals // 2:
            break

    # Phase 2 (local): compass search in the log-decrement parameters, halving the step on failure,
    # from the phase-1 result and then from the initial schedule (two starts: at very low NFE they
    # often end in different basins); the remaining budget is split between them.
    best_sigmas = torch.cat([pos, pos.new_zeros(1)])
    starts = [best_sigmas, init_s]
    for k_start, start in enumerate(starts):
        budget = evals + (max_evals - evals) // (len(starts) - k_start)
        u = schedule_params(start, floor, pinned)
        cur = best if k_start == 0 else initial  # init_s was evaluated first of all
        delta = step
        while delta >= min_step and evals < budget:
            improved = False
            for k in range(u.numel()):
                for sign in (1.0, -1.0):
                    if evals >= budget:
                        break
                    cand_u = u.clone()
                    cand_u[k] += sign * delta
                    cand_s = schedule_from_params(cand_u, hi, floor, pinned)
                    v = objective(cand_s)
                    if v < cur:
                        cur, u, improved = v, cand_u, True
                        memo.keep()
                        if v < best:
                            best, best_sigmas = v, cand_s
                            history.append(v)
                        break
            if not improved:
                delta /= 2
    if check_batch and math.isfinite(best):
        # The batch-size rule at the result: its Jacobian in the search parameters, one run per parameter.
        u = schedule_params(best_sigmas, floor, pinned)
        r0 = residuals(best_sigmas)
        h = 1e-4 if x.dtype == torch.float64 else 3e-3
        cols = []
        for k in range(u.numel()):
            uk = u.clone()
            uk[k] += h
            cols.append((residuals(schedule_from_params(uk, hi, floor, pinned)) - r0) / h)
        jac = torch.stack(cols, -1)
        if bool(torch.isfinite(jac).all()):
            warn_if_small(r0, jac, gap, "optimize_schedule")
    return ScheduleSearch(best_sigmas, best, initial, evals, history, memo.calls, memo.hits)


def save_schedule(path: str | os.PathLike[str], sigmas: Tensor, **meta: Any) -> None:
    """Write a schedule as JSON: ``{"sigmas": [...], **meta}`` (plain floats, loadable anywhere).

    The file is written atomically (a temporary file in the same directory, then ``os.replace``): an
    error, e.g. metadata that JSON cannot hold, never leaves a truncated file or loses an existing one.

    Raises:
        TypeError: for a ``path`` that is not a str/PathLike, or ``meta`` that is not JSON-serialisable.
        ValueError: for an invalid schedule or non-finite floats in ``meta`` (strict JSON has no NaN).
    """
    check_path(path)
    s = check_sigmas(sigmas)
    try:
        text = json.dumps({"sigmas": s.tolist(), **meta}, indent=1, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise type(e)(
            f"save_schedule: the metadata {sorted(meta)} must be plain JSON (str, int, finite float, bool, None, "
            f"lists and dicts of them): {e}; nothing was written to {os.fspath(path)!r}"
        ) from None
    write_atomic(path, text.encode("utf-8"))


def load_schedule(path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float64) -> Tensor:
    """Read a schedule written by :func:`save_schedule` (or a bare JSON list of floats); validated.

    The values must be JSON numbers (not booleans or strings) forming a valid schedule (finite, >= 0,
    non-increasing, 0 only at the end); after the cast to ``dtype`` it must still be one, with no two
    distinct levels merged.

    Raises:
        TypeError: for a non-floating ``dtype`` or a ``path`` that is not a str/PathLike.
        ValueError: naming the file, for malformed JSON, a missing ``"sigmas"`` entry, non-numeric values,
            an invalid schedule, or levels that ``dtype`` cannot hold apart.
    """
    check_path(path)
    dt = check_float_dtype(dtype)
    name = f"sigmas in {os.fspath(path)!r}"
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{os.fspath(path)!r} is not a JSON schedule file: {e}") from None
    if isinstance(data, dict):
        if "sigmas" not in data:
            raise ValueError(f"{os.fspath(path)!r} holds a JSON object without a 'sigmas' entry (keys: {sorted(data)})")
        values = data["sigmas"]
    else:
        values = data
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{name} must be a JSON list of numbers, got {values!r}"[:400])
    s = check_sigmas(values, name=name)
    out = s.to(dt)
    if dt != torch.float64:
        back = out.to(torch.float64)
        merged = (back[1:] == back[:-1]) & (s[1:] != s[:-1])
        if not bool(torch.isfinite(back).all()) or bool((back[:-1] == 0).any()) or bool(merged.any()):
            raise ValueError(
                f"{name} cannot be held by dtype={dt}: the cast gives {back.tolist()}"[:400]
                + "; load it in torch.float32 or torch.float64"
            )
    return out
