"""Joint calibration of a schedule and per-evaluation direction scales, and the calibration batch-size rule.

:func:`calibrate` extends :func:`~edm_samplers.optimize_schedule`: for one denoiser, sampler and NFE it fits
the schedule *and* one direction scale per denoiser evaluation (D_k -> x - s_k (x - D_k), the
``direction_scale=`` run option of every sampler: the per-step direction scale of AMED / PAS / S4S-style
solver calibration), optionally with the analytical first step (``afs=``), on a calibration batch against a
converged reference. Stage 1 is the schedule search of :func:`~edm_samplers.optimize_schedule`
(derivative-free, global along each level); stage 2 refines schedule and scales *jointly* by
Levenberg-Marquardt on the residual vector (sample - reference), its Jacobian taken by forward differences
(one sampling run per parameter). Every sampling run is counted and timed: the result reports the
calibration cost.

Beside it: the result and its JSON file (:mod:`edm_samplers.calibration_file`), the ``trajectory=`` objective's
converged paths (:mod:`edm_samplers.calibration_trajectory`), the batch-size rule
(:mod:`edm_samplers.calibration_batch`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from ._memo import CallMemo
from ._types import Denoiser
from ._validate import check_float, check_int, check_x
from .afs import afs_enabled, closed_form
from .calibration_batch import warn_if_small
from .calibration_file import Calibration, afs_json
from .calibration_trajectory import resolve as resolve_trajectory
from .schedule_opt import optimize_schedule, schedule_from_params, schedule_params
from .schedules import karras_sigmas
from .solvers import heun_sample
from .solvers.api import sampler_function
from .solvers.registry import get, label, parse_label

__all__ = ["calibrate"]

# rho of the further starts of ``calibrate(starts=...)``: after the usual 7, one flatter and one steeper
# schedule, then further out on either side (log-linear is rho -> infinity)
_START_RHOS = (3.0, 15.0, 1.5, 30.0, 5.0, 10.0, 2.0, 60.0)


def calibrate(
    denoiser: Denoiser,
    x: Tensor,
    nfe: int,
    *,
    sampler: str = "dpmpp_2m",
    afs: object = None,
    reference: Tensor | None = None,
    init: Tensor | None = None,
    sigma_max: float | None = None,
    sigma_min: float | None = None,
    fit_scales: bool = True,
    fit_shifts: bool = False,
    max_evals: int = 300,
    schedule_evals: int | None = None,
    max_gap: float = 0.1,
    starts: int = 1,
    features: Callable[[Tensor], Tensor] | None = None,
    moment_weight: float = 1.0,
    trajectory: bool | int | tuple[Tensor, Tensor] = False,
    trajectory_weight: float = 1.0,
    cond: Mapping[str, Any] | None = None,
    **knobs: Any,
) -> Calibration:
    """Fit the schedule (and per-evaluation direction scales) of ``sampler`` at ``nfe`` network evaluations.

    Args:
        denoiser: D(x, sigma, **cond).
        x: calibration batch at ``sigma_max`` (e.g. ``80 * randn`` from seeds never used for evaluation). How
            many samples: see :func:`min_calibration_batch` (checked here: a warning if too few).
        nfe: network evaluations per run (the number of steps follows from the sampler's NFE rule and ``afs``).
        sampler: a registry name (``"dpmpp_2m"``, ``"unipc"``, ...); ``**knobs`` its knobs.
        afs: the analytical first step (``afs=`` of every sampler): one more step for the same ``nfe``.
        reference: converged samples for ``x`` (default: Heun, 512 steps of ``karras_sigmas`` from sigma_max).
        init, sigma_max, sigma_min: as in :func:`~edm_samplers.optimize_schedule` (``sigma_min`` pins the
            last positive level).
        fit_scales: fit one direction scale per denoiser evaluation (``direction_scale=``).
        fit_shifts: also fit one sigma multiplier per denoiser evaluation (``sigma_scale=``).
        max_evals: total budget of sampling runs (stage 1 gets ``schedule_evals``, default 40 %).
        max_gap: tolerated relative overfitting for the batch-size rule.
        starts: multi-start: run the whole calibration from this many initial schedules (``init`` or rho = 7,
            then ``karras_sigmas`` with rho = 3, 15, 1.5, 30, ...; each with the full ``max_evals``) and keep
            the one with the lowest *calibration* error (the choice never sees evaluation samples). The
            searches stop in local optima on multi-modal data (the error is piecewise constant in which mode
            each trajectory ends at); a few starts find better ones. Cost: ``starts`` times one calibration
            (the reference is computed once); ``evaluations``, ``seconds`` and ``cpu_seconds`` are the totals.
        features: a feature map ``[B, ...] -> [B, F]`` (e.g. ``models.digits_features``): the joint stage then
            minimises ``mse / mean(ref**2) + moment_weight * (|mu - mu_ref|**2 / tr C_ref + |C - C_ref|_F**2 /
            |C_ref|_F**2)``, mean ``mu`` and covariance ``C`` of the features of the batch's samples against
            those of the reference on the same seeds: the two moments of a Frechet distance. At very low NFE the
            squared error alone rewards blurred samples (the mean of the plausible ones), whose feature
            statistics are wrong; the moment term penalises that. Stage 1 (the schedule search) still
            minimises the squared error; the batch-size rule is applied to the per-sample squared error.
            ``error`` stays the mean squared error; ``loss`` is the mixed objective.
        moment_weight: weight of the moment term (>= 0) when ``features`` is given.
        trajectory: also match the reference *trajectory* at every intermediate level the sampler lands on
            (AMED / EPD-style teacher matching), not only the end point: ``True`` (or a number of Heun steps,
            ``True`` = 64) computes the converged trajectory of ``x`` here (Heun on ``karras_sigmas`` from
            ``sigma_max``; its end point is the reference when ``reference`` is None); or pass ``(sigmas,
            states)``: decreasing positive levels ``[L]`` and the converged states ``[L, *x.shape]`` there (e.g.
            from an exact ODE solution). The state at a level between two of them is interpolated linearly in
            sigma. The state error at level sigma is weighted by ``s2 / (s2 + sigma**2)``, ``s2`` the mean
            square of the reference (per element): the factor by which the ODE of data of that scale carries
            an error at sigma to the end, so each term is an estimate of the final error it causes; the
            levels' terms are averaged and weighted by ``trajectory_weight``. Where the end point is a
            piecewise-constant function of the parameters (which mode of multi-modal data each sample ends at),
            the intermediate states still vary smoothly, which the joint stage's Jacobian needs. Stage 1 still
            minimises the end-point error; ``error`` stays that, ``loss`` is the mixed objective.
        trajectory_weight: weight of the trajectory term (>= 0).
        cond: denoiser conditioning.

    Returns:
        A :class:`Calibration` (never worse than the initial schedule on the calibration batch).

    Raises:
        ValueError / TypeError: invalid arguments (an NFE too small for two steps, unknown knobs, ...).
    """
    t0, c0 = time.perf_counter(), time.process_time()
    check_x(x)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x (the calibration batch) must be finite, got NaN/inf entries")
    nfe = check_int(nfe, "nfe", minimum=1)
    max_evals = check_int(max_evals, "max_evals", minimum=2)
    starts = check_int(starts, "starts", minimum=1)
    if features is not None and not callable(features):
        raise TypeError(f"features must be a callable [B, ...] -> [B, F] (or None), got {type(features).__name__}")
    moment_weight = check_float(moment_weight, "moment_weight", nonnegative=True)
    name, given = parse_label(sampler) if isinstance(sampler, str) else ("", {})
    if not name:
        raise TypeError(f"sampler must be a registry name such as 'dpmpp_2m', got {sampler!r}")
    spec = get(name)
    closed_form(afs, denoiser)  # checked here, against the denoiser itself (the runs see it wrapped)
    all_knobs = {**given, **knobs}
    values = spec.resolve(all_knobs)
    n = spec.steps_for(nfe, all_knobs, afs=afs)
    if n < 2:
        raise ValueError(f"nfe={nfe} gives {n} step(s) of {name} (afs={afs_enabled(afs)}); calibration needs >= 2")
    n_calls = spec.nfe(n, True, values)
    stage1 = max_evals * 2 // 5 if schedule_evals is None else check_int(schedule_evals, "schedule_evals", minimum=1)
    hi = 80.0 if sigma_max is None else check_float(sigma_max, "sigma_max", positive=True)
    if init is None:
        init = karras_sigmas(n, 0.002 if sigma_min is None else sigma_min, hi)
    run = sampler_function(name)
    opts: dict[str, Any] = {**all_knobs, "check_finite": False}
    if afs_enabled(afs):
        opts["afs"] = afs
    trajectory_weight = check_float(trajectory_weight, "trajectory_weight", nonnegative=True)
    traj, end = resolve_trajectory(trajectory, denoiser, x, hi, cond)
    if reference is None:
        if end is not None:
            reference = end  # the trajectory computed here ends in the converged sample
        else:
            with torch.no_grad():
                reference = heun_sample(
                    denoiser, x, karras_sigmas(512, min(0.002, hi / 2), hi), cond=cond, dtype=x.dtype,
                    check_finite=False,
                )  # fmt: skip
    ref = reference.detach()
    if starts > 1:
        lo = 0.002 if sigma_min is None else float(sigma_min)
        inits = [init] + [karras_sigmas(n, lo, hi, rho=r) for r in _START_RHOS[: starts - 1]]
        runs = []
        for i in inits:
            runs.append(calibrate(
                denoiser, x, nfe, sampler=name, afs=afs, reference=ref, init=i, sigma_max=sigma_max,
                sigma_min=sigma_min, fit_scales=fit_scales, fit_shifts=fit_shifts, max_evals=max_evals,
                schedule_evals=schedule_evals, max_gap=max_gap, features=features, moment_weight=moment_weight,
                trajectory=False if traj is None else traj.pair(), trajectory_weight=trajectory_weight, cond=cond,
                **all_knobs,
            ))  # fmt: skip
        win = min(runs, key=lambda c: c.loss)  # the calibration objective only
        return replace(
            win, initial_error=runs[0].initial_error, evaluations=sum(c.evaluations for c in runs),
            network_calls=sum(c.network_calls for c in runs), reused_calls=sum(c.reused_calls for c in runs),
            seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0,
        )  # fmt: skip
    with warnings.catch_warnings():  # stage 1's own batch check counts fewer parameters; the joint one is below
        warnings.simplefilter("ignore", UserWarning)
        search = optimize_schedule(
            denoiser, x, n, sampler=name, reference=ref, init=init, sigma_max=hi, sigma_min=sigma_min,
            max_evals=stage1, cond=cond, **opts,
        )  # fmt: skip
    evals = search.evaluations
    pinned = sigma_min is not None
    floor = float(sigma_min) if sigma_min is not None else min(5e-4, float(search.sigmas[-2]) / 2)
    u0 = schedule_params(search.sigmas, floor, pinned)
    m = u0.numel()
    h = 1e-4 if x.dtype == torch.float64 else 3e-3  # forward-difference step in the parameters (round-off vs bias)
    ns, nt = (n_calls if fit_scales else 0), (n_calls if fit_shifts else 0)
    theta = torch.cat([u0, torch.ones(ns, dtype=torch.float64), torch.zeros(nt, dtype=torch.float64)])

    def unpack(th: Tensor) -> tuple[Tensor, list[float] | None, list[float] | None]:
        s = schedule_from_params(th[:m], hi, floor, pinned)
        sc = th[m : m + ns].tolist() if fit_scales else None
        # log-parameterised (always positive), within a factor e^2 of the schedule's sigma
        sh = torch.exp(th[m + ns :].clamp(-2.0, 2.0)).tolist() if fit_shifts else None
        return s, sc, sh

    memo = CallMemo(denoiser)  # a Jacobian column re-uses the base run's calls before its parameter acts

    def outputs(th: Tensor) -> Tensor:
        nonlocal evals
        evals += 1
        s, sc, sh = unpack(th)
        extra: dict[str, Any] = {} if sc is None else {"direction_scale": sc}
        if sh is not None:
            extra["sigma_scale"] = sh
        memo.start()
        states: list[tuple[float, Tensor]] = []
        if traj is not None:
            # a copy: StepInfo does not promise that a later step leaves x_next's buffer alone
            extra["callback"] = lambda info: states.append((info.sigma_next, info.x_next.clone()))
        with torch.no_grad():
            out = run(memo, x, s, cond=cond, **opts, **extra)
        parts = [(out.to(ref.dtype) - ref).reshape(-1) * pix_scale]
        if traj is not None:
            inner = [(sig, st) for sig, st in states if sig > 0]  # the levels after sigma_max, but 0
            for sig, st in inner:
                w = math.sqrt(trajectory_weight * s2 / (s2 + sig * sig) / len(inner))
                parts.append((st.to(ref.dtype) - traj.at(sig)).reshape(-1) * (pix_scale * w))
        if features is not None:
            mu, cov = moments(out, features)
            parts += [(mu - mu_ref) * mu_scale, (cov - cov_ref).reshape(-1) * cov_scale]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def moments(y: Tensor, fn: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            fy = fn(y).to(torch.float64).reshape(y.shape[0], -1)
        mu = fy.mean(0)
        return mu, torch.cov(fy.T, correction=1).reshape(fy.shape[1], fy.shape[1])

    def objective(r: Tensor) -> float:
        v = float(torch.sum(r**2))
        return v if math.isfinite(v) else math.inf

    def pixel_mse(r: Tensor) -> float:
        v = float(torch.sum(r[:n_pix] ** 2)) / (pix_scale**2 * n_pix)
        return v if math.isfinite(v) else math.inf

    n_pix = ref.numel()
    pix_scale = 1 / math.sqrt(n_pix)
    s2 = max(float(torch.mean(ref.double() ** 2)), 1e-300)
    if features is not None:
        mu_ref, cov_ref = moments(ref, features)
        if not (bool(torch.isfinite(mu_ref).all()) and bool(torch.isfinite(cov_ref).all())):
            raise ValueError("features of the reference are not finite: check the features callable")
        pix_scale /= math.sqrt(max(float(torch.mean(ref.double() ** 2)), 1e-300))
        mu_scale = math.sqrt(moment_weight / max(float(torch.trace(cov_ref)), 1e-300))
        cov_scale = math.sqrt(moment_weight) / max(float(torch.linalg.matrix_norm(cov_ref)), 1e-300)

    r = outputs(theta)
    memo.keep()
    best = objective(r)
    history = [search.initial_error, best]
    lam = 1e-3

    def jacobian() -> Tensor:
        jac = torch.empty(r.numel(), theta.numel(), dtype=r.dtype)
        for j in range(theta.numel()):  # forward differences: one sampling run per parameter
            tj = theta.clone()
            tj[j] += h
            jac[:, j] = (outputs(tj) - r) / h
        return jac

    jac: Tensor | None = None
    while evals + theta.numel() + 1 <= max_evals:
        jac = jacobian()
        if not bool(torch.isfinite(jac).all()):
            break
        jtj = jac.T @ jac
        g = jac.T @ r
        improved = False
        while evals < max_evals:
            a = jtj + lam * torch.diag(torch.diag(jtj).clamp_min(1e-12))
            try:
                step = -torch.linalg.solve(a, g)
            except RuntimeError:
                lam *= 10
                continue
            cand = theta + step
            rc = outputs(cand)
            fc = objective(rc)
            if fc < best:
                improved = fc < best * (1 - 1e-4)
                theta, r, best, lam = cand, rc, fc, max(lam / 3, 1e-7)
                memo.keep()
                history.append(best)
                break
            lam *= 4
            if lam > 1e6:
                break
        if not improved:
            break
    sigmas, scales, shifts = unpack(theta)
    if jac is None or not bool(torch.isfinite(jac).all()):  # the rule needs the Jacobian (P more runs)
        jac = jacobian()
    b = x.shape[0]
    # the last Jacobian (before the last accepted step) with the final residuals: a first-order estimate
    need, gap = warn_if_small(r[:n_pix].reshape(b, -1), jac[:n_pix].reshape(b, -1, theta.numel()), max_gap, "calibrate")
    full_knobs = dict(parse_label(label(name, values, full=True))[1])
    return Calibration(
        name, full_knobs, sigmas, scales, shifts, afs_json(afs), spec.count(sigmas, values, afs=afs),
        pixel_mse(r), search.initial_error, evals, time.perf_counter() - t0, time.process_time() - c0, b, need, gap,
        history, best, search.network_calls + memo.calls, search.reused_calls + memo.hits,
    )  # fmt: skip
