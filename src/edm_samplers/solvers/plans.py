"""Float64 plans of the linear multistep solvers: every step's scalars, computed once per schedule on the host.

**One linear update.** With lambda = -log sigma, the EDM ODE dx/dsigma = (x - D) / sigma has the exact
solution x_{i+1} = (sigma_{i+1} / sigma_i) x_i + sigma_{i+1} int_{lambda_i}^{lambda_{i+1}} e^lambda D dlambda.
Every multistep solver replaces D (or the derivative d = (x - D) / sigma) by a polynomial through past
model outputs, so each step is linear in the state and the stored outputs::

    x_{i+1} = a_i x_i + e_i D_i + sum_j b_{i,j} F_{i-j},   F = D ("data" family) or d ("derivative" family).

The scalars a, e, b (and the SDE noise scales) are computed once per schedule, in float64, on the host
(:mod:`.coefficients`), and cast once to the state dtype on x's device. The loop then runs straight-line
tensor code: no host synchronisation, no branching on tensor values; which columns a step uses
(lower orders while warming up, the final step to 0) is decided on Python ints, so the whole sampler
is capturable for a fixed schedule. The history is a ring of at most ``order`` (UniPC: ``order + 1``)
state-sized tensors of past F.

**Orders.** The order k of a multistep solver needs k past outputs, so the first steps use orders
1, 2, ..., k. Their local errors (O(h^2) for the first step) are multiplied by the derivative of D at
sigma_max, which is O(sigma_data^2 / sigma_max) for any data distribution; at sigma_max = 80 that
start-up error stays below the order-k error up to several hundred steps (the tests check 400).

**The final step to sigma = 0.** lambda = +inf there, where exponential integrators of order >= 2 would
extrapolate D to infinity; all data-family solvers and DEIS therefore take a first-order (Euler) step,
which returns D(x_{N-1}; sigma_{N-1}) exactly, like the core samplers. LMS and iPNDM, whose polynomials live
in sigma itself, integrate to 0 at full order (as in k-diffusion).

**Order rules** (the ``order_rule`` knob, decided on the host floats of the schedule when the plan is built,
so plans stay cached and capturable). ``"full"``: the orders above. ``"final"``: also at most the number of
steps left (diffusers' ``lower_order_final``). ``"auto"`` (the default): for the data-prediction solvers
(DPM-Solver++ 2M/kM and their SDE variants, UniPC) order 1 on every step landing on sigma <=
:data:`LOW_ORDER_SIGMA` = 0.1, order <= 2 with the published 2M weights where h = ln(sigma_i / sigma_{i+1}) >
:data:`MAX_LOG_STEP` = 1, the nominal order otherwise; for the derivative solvers (DEIS, LMS, iPNDM)
``"final"``. Below sigma ~ 0.1 (data scaled to about [-1, 1], sigma_data ~ 0.5) the denoiser output has
saturated, and a data-form integrator, which weights the end of the step, would extrapolate a trend that has
died out over rho = 7's longest log steps; Euler is nearly exact there (docs/multistep-defaults.md).

**A start at sigma = inf** (x = the unit noise n, docs/api.md). Step 0 takes the limit of its order-1 step as
sigma_0 -> inf with x_0 = sigma_0 n: x_1 = D_0 + sigma_1 n (ODE, and the derivative family), D_0 + sigma_1 eps for
SDE variants with eta > 0 (the weight of n, sigma_1 (sigma_1 / sigma_0)^eta, vanishes), and for Euler ancestral
D_0 + sigma_down n + sigma_up eps with sigma_up = min(1, eta) sigma_1. Later steps keep D_0 (at lambda = -inf) or
d_0 = lim (x_0 - D_0) / sigma_0 = n in their history: an interpolation node at infinity gets weight 0 in the limit
(its Lagrange basis is O(1 / |node|), see :func:`.coefficients.lagrange_basis`), so the polynomials in lambda (or
sigma, LMS) pass through the finite nodes only; DPM-Solver++(2M)'s ratio r = h_0 / h_1 is infinite, weight 0 on D_0;
UniPC's first corrector keeps its limit, the bh2 trapezoid sigma_1 n + (D_0 + D_1) / 2; iPNDM's fixed weights keep
d_0 = n. These limits are approached at rate 1 / ln(sigma_0) (lambda solvers) or 1 / sigma_0 (LMS, iPNDM).

Schedules must be strictly decreasing here (repeated levels would make interpolation nodes coincide).
The loop that runs a plan is :mod:`.linear`; the registry entries are in :mod:`.registry`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from .coefficients import ab_uniform, exp_lagrange_weights, logsigma_lagrange_weights, sigma_lagrange_weights

__all__ = ["LOW_ORDER_SIGMA", "MAX_LOG_STEP", "PLANS", "MultistepPlan", "OrderRule"]

F64 = NDArray[np.float64]

OrderRule = Literal["auto", "full", "final"]

LOW_ORDER_SIGMA = 0.1
"""``order_rule="auto"`` (data-prediction solvers): a step that lands on sigma <= this takes order 1.

Absolute, so it assumes data scaled to about [-1, 1] (sigma_data ~ 0.5, EDM's setting): below it the
denoiser output has saturated (D -> x(0) like sigma^2) and no polynomial in lambda through earlier outputs
extrapolates it over a long step (docs/multistep-defaults.md)."""

MAX_LOG_STEP = 1.0
"""``order_rule="auto"`` (data-prediction solvers): a step with h = ln(sigma_i / sigma_{i+1}) above this takes
order <= 2 with the published DPM-Solver++(2M) weights (docs/multistep-defaults.md)."""

# ---- plans: every step's scalars, float64, host ------------------------------------------------


class MultistepPlan(NamedTuple):
    """Float64 coefficient table of a linear multistep solver over one schedule (N steps).

    Step i: optionally correct the state with the new output (UniPC),
    ``x_i <- x_i + sum_{j < ncorr_i} corr[i, j] F_{i-j}``; then
    ``x_{i+1} = a[i] x_i + e[i] D_i + sum_{j < nb_i} b[i, j] F_{i-j} + noise[i] eps_i``.

    Attributes:
        family: ``"data"`` (F = D) or ``"derivative"`` (F = (x - D) / sigma).
        a, e, noise: ``[N]``.
        b: ``[N, K]`` weights, newest output first; ``nb[i]`` columns are used.
        corr: ``[N, K + 1]`` corrector weights (zeros except for UniPC); ``ncorr[i]`` columns are used.
        nb, ncorr: columns used per step (Python ints: the order actually applied).
        stochastic: whether the sampler draws noise (once per step, whatever ``noise`` holds).
    """

    family: Literal["data", "derivative"]
    a: F64
    e: F64
    b: F64
    nb: tuple[int, ...]
    corr: F64
    ncorr: tuple[int, ...]
    noise: F64
    stochastic: bool


def _lambdas(s: F64) -> F64:
    with np.errstate(divide="ignore"):
        out: F64 = -np.log(s)  # +inf at a final sigma = 0: handled explicitly by every builder
    return out


def _empty(n: int, k: int) -> tuple[F64, F64, F64, F64, F64]:
    z = np.zeros
    return z(n), z(n), z((n, max(k, 1))), z((n, max(k, 1) + 1)), z(n)


def _plan_data(
    s: F64,
    *,
    order: int,
    variant: Literal["exact", "2m", "unipc"],
    eta: float,
    stochastic: bool,
    rule: OrderRule = "full",
) -> MultistepPlan:
    """Data-family plans: DPM-Solver++ (2M as published, kM exact), UniPC-bh2, SDE variants (eta).

    ``rule``: ``"full"`` order ``min(order, i + 1)``; ``"final"`` also at most the steps left; ``"auto"``
    order 1 on steps landing on sigma <= :data:`LOW_ORDER_SIGMA`, order <= 2 where h > :data:`MAX_LOG_STEP`,
    and every order-2 step with the published 2M weights (also the exact kM's).
    """
    n = s.shape[0] - 1
    lam = _lambdas(s)
    rate = 1.0 + eta
    a, e, b, corr, noise = _empty(n, order)
    nb: list[int] = []
    ncorr = [0] * n
    for i in range(n):
        if s[i + 1] == 0:  # final step to 0: Euler, x_N = D_{N-1} exactly
            b[i, 0] = 1.0
            nb.append(1)
            continue
        if math.isinf(s[i]):  # from sigma = inf, x = n: the limit of the order-1 step (see _inf_first)
            a[i], b[i, 0], noise[i] = _inf_first(float(s[i + 1]), eta, stochastic)
            nb.append(1)
            continue
        h = lam[i + 1] - lam[i]
        a[i] = s[i + 1] / s[i] * math.exp(-eta * h)
        big_b = -math.expm1(-rate * h)
        noise[i] = s[i + 1] * math.sqrt(-math.expm1(-2.0 * eta * h)) if stochastic else 0.0
        k = min(order, i + 1, n - i if rule == "final" else order)
        if rule == "auto" and s[i + 1] <= LOW_ORDER_SIGMA:  # host floats of the schedule: no sync
            k = 1
        elif rule == "auto" and h > MAX_LOG_STEP:
            k = min(k, 2)
        if k == 1:
            b[i, 0] = big_b
        elif variant == "2m" or (k == 2 and (variant == "unipc" or rule == "auto")):
            # DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2): D' = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1},
            # r = h_{i-1} / h. UniPC-bh2 with one difference uses the same rho = 1/2 with B(h) = 1 - e^{-h}.
            r = (lam[i] - lam[i - 1]) / h
            b[i, 0] = big_b * (1.0 + 0.5 / r)
            b[i, 1] = -big_b * 0.5 / r
        else:
            b[i, :k] = exp_lagrange_weights(lam[i - np.arange(k)] - lam[i], h, rate)
        nb.append(k)
    if variant == "unipc":
        for i in range(1, n):
            # UniC at the start of step i corrects x_i with D_i = D(x_i^pred), reusing the evaluation the
            # next predictor needs anyway (Zhao et al. 2023, Alg. 1): order q + 1 after a q-th order predictor.
            q = nb[i - 1]
            hp = lam[i] - lam[i - 1]
            if q == 1:
                big = -math.expm1(-hp)  # bh2, UniC-1: rho = 1/2 on (D_i - D_{i-1})
                wc = np.array([0.5 * big, 0.5 * big])
            else:
                nodes = np.concatenate([[lam[i] - lam[i - 1]], lam[i - 1 - np.arange(q)] - lam[i - 1]])
                wc = exp_lagrange_weights(nodes, hp, 1.0)
            wc[1:] -= b[i - 1, :q]
            corr[i, : q + 1] = wc
            ncorr[i] = q + 1
    return MultistepPlan("data", a, e, b, tuple(nb), corr, tuple(ncorr), noise, stochastic)


def _inf_first(sigma_next: float, eta: float, stochastic: bool) -> tuple[float, float, float]:
    """(weight of x = n, weight of D_0, noise std) of the data-family order-1 step from sigma_0 = inf.

    The step x_1 = (sigma_1/sigma_0) e^{-eta h} x_0 + (1 - e^{-(1 + eta) h}) D_0 + sigma_1 sqrt(1 - e^{-2 eta h}) eps
    with x_0 = sigma_0 n and e^{-h} = sigma_1 / sigma_0 -> 0 tends to D_0 + sigma_1 n for eta = 0 (DDIM) and to
    D_0 + sigma_1 eps for eta > 0 (the weight of n, sigma_1 (sigma_1 / sigma_0)^eta, vanishes: the SDE forgets the
    start; slowly for small eta).
    """
    ode = eta == 0.0
    return (sigma_next if ode else 0.0), 1.0, (sigma_next if stochastic and not ode else 0.0)


def _plan_derivative(
    s: F64, *, order: int, variant: Literal["lms", "ipndm", "deis"], rule: OrderRule = "full"
) -> MultistepPlan:
    """Derivative-family plans: x_{i+1} = x_i + sum_j c_j d_{i-j}, d = (x - D) / sigma.

    ``rule``: ``"full"`` order ``min(order, i + 1)``; ``"final"`` and ``"auto"`` also at most the steps left.
    """
    n = s.shape[0] - 1
    lam = _lambdas(s)
    a, e, b, corr, noise = _empty(n, order)
    nb: list[int] = []
    for i in range(n):
        k = min(order, i + 1, order if rule == "full" else n - i)
        if variant == "deis" and s[i + 1] == 0:
            e[i] = 1.0  # final step to 0: x_N = D_{N-1} exactly (log sigma = -inf: no extrapolation)
            nb.append(0)
            continue
        if math.isinf(s[i]):
            # From sigma = inf, x = n: x_0 + (sigma_1 - sigma_0)(x_0 - D_0) / sigma_0 -> D_0 + sigma_1 n. The
            # history entry d_0 = (x_0 - D_0) / sigma_0 -> n (the loop stores x there); LMS and DEIS give it
            # weight 0 from then on (an infinite interpolation node, see lagrange_basis), iPNDM's fixed weights not.
            a[i], e[i] = s[i + 1], 1.0
            nb.append(0)
            continue
        a[i] = 1.0
        if variant == "ipndm":
            b[i, :k] = (s[i + 1] - s[i]) * np.asarray(ab_uniform(k))
        elif variant == "lms":
            b[i, :k] = sigma_lagrange_weights(s[i - np.arange(k)] - s[i], float(s[i]), float(s[i + 1]))
        else:
            b[i, :k] = logsigma_lagrange_weights(lam[i - np.arange(k)] - lam[i], float(s[i]), lam[i + 1] - lam[i])
        nb.append(k)
    return MultistepPlan("derivative", a, e, b, tuple(nb), corr, (0,) * n, noise, False)


def _plan_ancestral(s: F64, *, eta: float) -> MultistepPlan:
    """Euler ancestral (k-diffusion's sample_euler_ancestral): DDIM-like split into a deterministic step
    down to sigma_down and fresh noise of std sigma_up, sigma_down^2 + sigma_up^2 = sigma_{i+1}^2."""
    n = s.shape[0] - 1
    a, e, b, corr, noise = _empty(n, 1)
    for i in range(n):
        sc, sn = float(s[i]), float(s[i + 1])
        # In the ratio r = sn / sc <= 1: sigma_up^2 = eta^2 sn^2 (1 - r)(1 + r) and, unless sigma_up is clamped to
        # sn, sigma_down^2 = sn^2 - sigma_up^2 = sn^2 ((1 - eta^2) + eta^2 r^2). No level is squared, so none
        # overflows or underflows (Python floats raise OverflowError / ZeroDivisionError there), and for eta <= 1
        # nothing cancels (sn^2 - sigma_up^2 loses the digits of r^2 at eta = 1).
        r = sn / sc
        up = min(sn, eta * sn * math.sqrt((1.0 - r) * (1.0 + r)))
        down = 0.0 if up >= sn else sn * math.sqrt(max((1.0 - eta * eta) + eta * eta * r * r, 0.0))
        # From sigma = inf (r = 0), x = n: the weight of x_0 = sigma_0 n is down / sigma_0, i.e. down on n.
        a[i] = down if math.isinf(sc) else down / sc
        b[i, 0] = 1.0 - down / sc
        noise[i] = up
    return MultistepPlan("data", a, e, b, (1,) * n, corr, (0,) * n, noise, True)


# ---- each registered solver's knobs -> its plan (knobs already checked by the registry) ---------------


def _rule(k: Mapping[str, Any]) -> OrderRule:
    rule: OrderRule = k.get("order_rule", "full")
    return rule


def _sde(order: int, variant: Literal["exact", "2m"]) -> Callable[[F64, Mapping[str, Any]], MultistepPlan]:
    def plan(s: F64, k: Mapping[str, Any]) -> MultistepPlan:
        p = _plan_data(s, order=order, variant=variant, eta=k["eta"], stochastic=True, rule=_rule(k))
        return p._replace(noise=p.noise * k["s_noise"])

    return plan


def _ancestral(s: F64, k: Mapping[str, Any]) -> MultistepPlan:
    p = _plan_ancestral(s, eta=k["eta"])
    return p._replace(noise=p.noise * k["s_noise"])


def _data(variant: Literal["exact", "2m", "unipc"]) -> Callable[[F64, Mapping[str, Any]], MultistepPlan]:
    def plan(s: F64, k: Mapping[str, Any]) -> MultistepPlan:
        return _plan_data(s, order=k.get("order", 2), variant=variant, eta=0.0, stochastic=False, rule=_rule(k))

    return plan


def _derivative(variant: Literal["lms", "ipndm", "deis"]) -> Callable[[F64, Mapping[str, Any]], MultistepPlan]:
    def plan(s: F64, k: Mapping[str, Any]) -> MultistepPlan:
        return _plan_derivative(s, order=k["order"], variant=variant, rule=_rule(k))

    return plan


PLANS: dict[str, Callable[[F64, Mapping[str, Any]], MultistepPlan]] = {
    "dpmpp_2m": _data("2m"),
    "dpmpp_3m": _data("exact"),
    "dpmpp_2m_sde": _sde(2, "2m"),
    "dpmpp_3m_sde": _sde(3, "exact"),
    "deis": _derivative("deis"),
    "lms": _derivative("lms"),
    "ipndm": _derivative("ipndm"),
    "unipc": _data("unipc"),
    "euler_ancestral": _ancestral,
}
"""Registry name -> plan builder ``plan(sigmas, knobs)`` of every solver the linear loop runs."""
