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

from ._types import Denoiser
from ._validate import check_float, check_int, check_sigmas, check_x
from .schedules import karras_sigmas
from .solvers import heun_sample
from .solvers.api import sampler_function
from .solvers.registry import get

__all__ = ["ScheduleSearch", "load_schedule", "optimize_schedule", "save_schedule"]

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
    """

    sigmas: Tensor
    error: float
    initial_error: float
    evaluations: int
    history: list[float] = field(default_factory=list)


def _to_params(sigmas: Tensor, floor: float, pinned: bool) -> Tensor:
    # pinned: the last level is fixed (= floor), so there is no slack entry.
    pos = sigmas[sigmas > 0].to(torch.float64)
    logs = torch.log(pos)
    parts = logs[:-1] - logs[1:]
    if not pinned:
        parts = torch.cat([parts, (logs[-1] - math.log(floor)).reshape(1)])
    return torch.log(parts.clamp_min(1e-12))


def _to_sigmas(u: Tensor, sigma_max: float, floor: float, pinned: bool) -> Tensor:
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
    **knobs: Any,
) -> ScheduleSearch:
    """Find the ``num_steps``-level schedule that minimises ``sampler``'s error on a calibration batch.

    Args:
        denoiser: D(x, sigma, **cond).
        x: calibration batch at noise level ``sigma_max`` (e.g. ``sigma_max * randn`` from fixed seeds).
            A few dozen to a few hundred samples are enough; the schedule is a property of the model.
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
        max_evals: budget of sampling runs.
        step, min_step: initial and final compass step in the log-decrement parameters (phase 2).
        sweeps, grid_points: phase 1 makes up to ``sweeps`` passes over the levels, trying
            ``grid_points`` log-spaced values of each between its neighbours (at most half the budget).
        cond: denoiser conditioning.
        **knobs: the sampler's knobs (e.g. ``order=3`` for ``"unipc"``), checked before the search starts.

    Returns:
        A :class:`ScheduleSearch` with the best schedule found (never worse than ``init`` on the
        calibration batch).

    Raises:
        ValueError / TypeError: on invalid arguments.
    """
    check_x(x)
    n = check_int(num_steps, "num_steps", minimum=2)
    floor = check_float(sigma_floor, "sigma_floor", positive=True)
    max_evals = check_int(max_evals, "max_evals", minimum=1)
    sweeps = check_int(sweeps, "sweeps", minimum=0)
    grid_points = check_int(grid_points, "grid_points", minimum=1)
    step = check_float(step, "step", positive=True)
    min_step = check_float(min_step, "min_step", positive=True)
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
    if lo is not None:
        floor = lo
    elif not floor < float(init_s[-2]):
        raise ValueError(f"sigma_floor must be below the initial last level {float(init_s[-2])}, got {floor}")
    if isinstance(sampler, str):
        get(sampler).resolve(knobs)  # an unknown sampler or a bad knob fails now, not after the reference solution
    run = sampler_function(sampler)
    kw = dict(knobs)
    kw.setdefault("check_finite", False)
    if reference is None:
        with torch.no_grad():
            reference = heun_sample(denoiser, x, karras_sigmas(512, min(0.002, hi / 2), hi), cond=cond, dtype=x.dtype)
    elif not isinstance(reference, Tensor) or reference.shape != x.shape:
        raise ValueError("reference must be a tensor of x's shape (the converged samples for x)")
    ref = reference.detach()

    evals = 0

    def objective(s: Tensor) -> float:
        nonlocal evals
        evals += 1
        with torch.no_grad():
            out = run(denoiser, x, s, cond=cond, **kw)
        err = torch.mean((out.to(ref.dtype) - ref) ** 2)
        v = float(err)  # one sync per sampling run: the search is host-side by design
        return v if math.isfinite(v) else math.inf

    # Phase 1 (global along each coordinate): for each level sigma_i in turn, try a log-spaced grid of
    # values strictly between its neighbours and keep the best. This escapes the local minima that a
    # small-step search from a hand-made schedule falls into at very low NFE.
    pos = init_s[:-1].clone()
    best = objective(torch.cat([pos, pos.new_zeros(1)]))
    initial = best
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
        if not improved or evals >= max_evals // 2:
            break

    # Phase 2 (local): compass search in the log-decrement parameters, halving the step on failure,
    # from the phase-1 result and then from the initial schedule (two starts: at very low NFE they
    # often end in different basins); the remaining budget is split between them.
    best_sigmas = torch.cat([pos, pos.new_zeros(1)])
    starts = [best_sigmas, init_s]
    for k_start, start in enumerate(starts):
        budget = evals + (max_evals - evals) // (len(starts) - k_start)
        u = _to_params(start, floor, pinned)
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
                    cand_s = _to_sigmas(cand_u, hi, floor, pinned)
                    v = objective(cand_s)
                    if v < cur:
                        cur, u, improved = v, cand_u, True
                        if v < best:
                            best, best_sigmas = v, cand_s
                            history.append(v)
                        break
            if not improved:
                delta /= 2
    return ScheduleSearch(best_sigmas, best, initial, evals, history)


def save_schedule(path: str | os.PathLike[str], sigmas: Tensor, **meta: Any) -> None:
    """Write a schedule as JSON: ``{"sigmas": [...], **meta}`` (plain floats, loadable anywhere)."""
    s = check_sigmas(sigmas)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"sigmas": s.tolist(), **meta}, f, indent=1)


def load_schedule(path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float64) -> Tensor:
    """Read a schedule written by :func:`save_schedule` (or a bare JSON list of floats); validated."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    values = data["sigmas"] if isinstance(data, dict) else data
    return check_sigmas(values, name=f"sigmas in {os.fspath(path)}").to(dtype)
