"""A high-accuracy reference solution of the probability-flow ODE, to measure samplers' global error.

In log-sigma time u = ln sigma the EDM ODE dx/dsigma = (x - D(x; sigma)) / sigma becomes

    dx/du = x - D(x; e^u),

smooth over the whole range (the right-hand side stays bounded as sigma -> 0 where dx/dsigma would
need ever smaller steps). :func:`ode_reference` integrates it with the adaptive Dormand-Prince 5(4)
pair (Dormand & Prince 1980, the RK45 of MATLAB/SciPy; FSAL, 6 new evaluations per step) in float64
with a mixed relative/absolute error test at tight tolerance, from the first noise level of a
schedule to its last positive one, then, when the schedule ends in 0, takes the step to 0 that every
sampler of the library (and of k-diffusion and diffusers) takes: x_0 = D(x; sigma_last). The result is
the limit of every sampler on that schedule's range as its step count grows, so
``|sampler(x) - ode_reference(x)|`` is the sampler's global discretisation error alone.

Adaptive stepping is a different function family from the fixed-schedule samplers (see STYLE.md): the
step-size controller reads the error estimate on the host once per step, which is fine for a
reference computation and never happens in the samplers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .._types import Denoiser
from .._validate import check_cond, check_float, check_int, check_sigmas, check_x

__all__ = ["ReferenceInfo", "ode_reference", "solve_ode"]

# Dormand-Prince 5(4) tableau (Dormand & Prince 1980, Table 2; Hairer, Norsett & Wanner I, Table 5.2).
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A: tuple[tuple[float, ...], ...] = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
# 5th-order weights (= the last row of A: first same as last) and 4th-order embedded weights.
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_ERR = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4, strict=True))


class ReferenceInfo(NamedTuple):
    """Work done by :func:`solve_ode`: accepted and rejected steps and denoiser evaluations (NFE)."""

    accepted: int
    rejected: int
    nfe: int


def solve_ode(
    denoiser: Denoiser,
    x: Tensor,
    sigma_start: float,
    sigma_end: float,
    *,
    rtol: float = 1e-10,
    atol: float = 1e-10,
    cond: Mapping[str, Any] | None = None,
    max_steps: int = 100_000,
) -> tuple[Tensor, ReferenceInfo]:
    """Integrate dx/du = x - D(x; e^u), u = ln sigma, from ``sigma_start`` to ``sigma_end`` (both > 0).

    Dormand-Prince 5(4) with local extrapolation, in float64, one step size for the whole batch. A step
    is accepted when the RMS over each sample of e / (atol + rtol max(|x|, |x_new|)) is <= 1 for every
    sample (e the embedded error estimate); the next step is h * clip(0.9 err^(-1/5), 0.2, 5). The
    global error is then about the tolerance times a modest factor (checked against the closed-form
    Gaussian solution in the tests).

    Args:
        denoiser: D(x, sigma, **cond); called in float64.
        x: the state at ``sigma_start``, ``[batch, ...]``.
        sigma_start, sigma_end: positive noise levels (any order; usually start > end).
        rtol, atol: tolerances of the local error test.
        cond: keyword arguments for the denoiser.
        max_steps: give up (RuntimeError) after this many attempted steps.

    Returns:
        ``(x(sigma_end) in float64, ReferenceInfo)``.

    Raises:
        ValueError / TypeError: on invalid arguments. RuntimeError: if ``max_steps`` is exceeded or the
            step size underflows (a non-finite or discontinuous denoiser).
    """
    x = check_x(x)
    s0 = check_float(sigma_start, "sigma_start", positive=True)
    s1 = check_float(sigma_end, "sigma_end", positive=True)
    rtol = check_float(rtol, "rtol", positive=True)
    atol = check_float(atol, "atol", positive=True)
    max_steps = check_int(max_steps, "max_steps", minimum=1)
    cond_d = check_cond(cond)
    y = x.to(torch.float64)
    b = y.shape[0]
    u, u_end = math.log(s0), math.log(s1)
    span = u_end - u
    if span == 0:
        return y.clone(), ReferenceInfo(0, 0, 0)
    direction = 1.0 if span > 0 else -1.0
    nfe = 0

    def f(uu: float, yy: Tensor) -> Tensor:
        nonlocal nfe
        nfe += 1
        sig = torch.full((b,), math.exp(uu), dtype=torch.float64, device=yy.device)
        return yy - denoiser(yy, sig, **cond_d).to(torch.float64)

    k1 = f(u, y)
    # Initial step: a fraction of the interval scaled by the tolerance (order 5 -> tol^(1/5)).
    h = direction * min(abs(span), 0.1 * max(rtol, atol) ** 0.2)
    accepted = rejected = 0
    while direction * (u_end - u) > 0:
        if accepted + rejected >= max_steps:
            raise RuntimeError(f"solve_ode: more than max_steps={max_steps} steps; loosen rtol/atol or raise max_steps")
        last = direction * (u + h - u_end) >= 0
        if last:
            h = u_end - u
        ks = [k1]
        for i in range(1, 7):
            yi = y + h * sum(a * k for a, k in zip(_A[i], ks, strict=False) if a != 0.0)
            ks.append(f(u + _C[i] * h, yi))
        y_new = y + h * sum(w * k for w, k in zip(_B5, ks, strict=True) if w != 0.0)
        err = h * sum(e * k for e, k in zip(_ERR, ks, strict=True) if e != 0.0)
        scale = atol + rtol * torch.maximum(y.abs(), y_new.abs())
        ratio = float((err / scale).square().reshape(b, -1).mean(1).sqrt().max())  # one host sync per step
        if not math.isfinite(ratio):
            raise RuntimeError("solve_ode: the denoiser produced non-finite values")
        if ratio <= 1.0:
            accepted += 1
            u = u_end if last else u + h
            y, k1 = y_new, ks[6]  # first same as last: the 7th stage is f at the new point
        else:
            rejected += 1
        h = h * min(5.0, max(0.2, 0.9 * (ratio if ratio > 0 else 1e-10) ** -0.2))
        if abs(h) < 1e-14 * max(1.0, abs(u)):
            raise RuntimeError("solve_ode: step size underflow; is the denoiser continuous and finite?")
    return y, ReferenceInfo(accepted, rejected, nfe)


def ode_reference(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    rtol: float = 1e-10,
    atol: float = 1e-10,
    cond: Mapping[str, Any] | None = None,
) -> Tensor:
    """The exact-ODE limit of any sampler on schedule ``sigmas``' range, for the initial state ``x``.

    Integrates the probability-flow ODE from ``sigmas[0]`` to the last positive level with
    :func:`solve_ode` and, when ``sigmas`` ends in 0, applies the final step to 0 that every sampler
    takes, x_0 = D(x; sigma_last). Only the endpoints of ``sigmas`` matter: schedules with the same
    range share one reference.

    Args:
        denoiser: D(x, sigma, **cond).
        x: the initial state at noise level ``sigmas[0]`` (as passed to a sampler).
        sigmas: the schedule (decreasing, optionally ending in 0).
        rtol, atol: tolerances of :func:`solve_ode`.
        cond: keyword arguments for the denoiser.

    Returns:
        float64 tensor of x's shape.
    """
    s = check_sigmas(sigmas)
    pos = s[s > 0]
    if pos.numel() == 0:
        raise ValueError("sigmas must hold at least one positive noise level")
    lo, hi = float(pos[-1]), float(s[0])
    y, _ = solve_ode(denoiser, x, hi, lo, rtol=rtol, atol=atol, cond=cond)
    if float(s[-1]) == 0.0:
        sig = torch.full((y.shape[0],), lo, dtype=torch.float64, device=y.device)
        y = denoiser(y, sig, **check_cond(cond)).to(torch.float64)
    return y
