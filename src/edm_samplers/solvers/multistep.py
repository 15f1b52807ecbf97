"""High-order solvers for low NFE (5-20): linear multistep, UniPC, DPM-Solver-2 and ancestral sampling.

All samplers here share the core signature (see :mod:`.drivers`)::

    <name>_sample(denoiser, x, sigmas, *, <method knobs>, cond=None, noise=None, callback=None,
                  dtype=None, progress=False, check_finite=True) -> Tensor

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

Schedules must be strictly decreasing here (repeated levels would make interpolation nodes coincide).
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from .._types import Callback, Denoiser, NoiseSource, StepInfo
from .._validate import (
    check_callback,
    check_cond,
    check_cond_batch,
    check_denoiser,
    check_float,
    check_has_data,
    check_int,
    check_sigmas,
    check_sigmas_fit,
    check_x,
    state_dtype,
)
from ..noise import as_noise_source
from .coefficients import (
    ab_uniform,
    exp_lagrange_weights,
    logsigma_lagrange_weights,
    sigma_lagrange_weights,
)
from .drivers import TABLES, _Checked, _finite_or_raise, _progress

__all__ = [
    "MULTISTEP_SAMPLERS",
    "MultistepLoop",
    "deis_sample",
    "dpm2_sample",
    "dpmpp_2m_sample",
    "dpmpp_2m_sde_sample",
    "dpmpp_3m_sample",
    "dpmpp_3m_sde_sample",
    "euler_ancestral_sample",
    "ipndm_sample",
    "lms_sample",
    "multistep_plan",
    "prepare_multistep",
    "solver_options",
    "unipc_sample",
]

F64 = NDArray[np.float64]


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
    lower_final: bool = False,
) -> MultistepPlan:
    """Data-family plans: DPM-Solver++ (2M as published, kM exact), UniPC-bh2, SDE variants (eta)."""
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
        h = lam[i + 1] - lam[i]
        a[i] = s[i + 1] / s[i] * math.exp(-eta * h)
        big_b = -math.expm1(-rate * h)
        noise[i] = s[i + 1] * math.sqrt(-math.expm1(-2.0 * eta * h)) if stochastic else 0.0
        k = min(order, i + 1, n - i if lower_final else order)
        if k == 1:
            b[i, 0] = big_b
        elif variant == "2m" or (variant == "unipc" and k == 2):
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


def _plan_derivative(
    s: F64, *, order: int, variant: Literal["lms", "ipndm", "deis"], lower_final: bool = False
) -> MultistepPlan:
    """Derivative-family plans: x_{i+1} = x_i + sum_j c_j d_{i-j}, d = (x - D) / sigma."""
    n = s.shape[0] - 1
    lam = _lambdas(s)
    a, e, b, corr, noise = _empty(n, order)
    nb: list[int] = []
    for i in range(n):
        k = min(order, i + 1, n - i if lower_final else order)
        if variant == "deis" and s[i + 1] == 0:
            e[i] = 1.0  # final step to 0: x_N = D_{N-1} exactly (log sigma = -inf: no extrapolation)
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
        a[i] = down / sc
        b[i, 0] = 1.0 - down / sc
        noise[i] = up
    return MultistepPlan("data", a, e, b, (1,) * n, corr, (0,) * n, noise, True)


_Variant = Literal["dpmpp_2m", "dpmpp_3m", "unipc", "deis", "lms", "ipndm", "euler_ancestral"]


def multistep_plan(
    sigmas: Tensor | Sequence[float],
    method: _Variant,
    *,
    order: int = 2,
    eta: float = 0.0,
) -> MultistepPlan:
    """The float64 coefficient table a multistep sampler uses on ``sigmas`` (for inspection and tests).

    Args:
        sigmas: strictly decreasing schedule (a final 0 allowed).
        method: ``"dpmpp_2m"`` (published 2M, any ``order`` ignored), ``"dpmpp_3m"`` (exact Lagrange in
            lambda, ``order`` 1..4), ``"unipc"`` (bh2, 1..3), ``"deis"`` (1..3), ``"lms"`` (1..4),
            ``"ipndm"`` (1..4), ``"euler_ancestral"``.
        order: solver order (ignored by 2M and Euler ancestral).
        eta: SDE noise fraction (data family); 0 is the ODE.
    """
    check_has_data(sigmas, "sigmas")
    s = _strict_sigmas(sigmas)
    order, eta = check_int(order, "order", minimum=1), check_float(eta, "eta", nonnegative=True)
    st = eta > 0 or method == "euler_ancestral"
    if method == "dpmpp_2m":
        return _plan_data(s, order=2, variant="2m", eta=eta, stochastic=st)
    if method == "dpmpp_3m":
        return _plan_data(s, order=order, variant="exact", eta=eta, stochastic=st)
    if method == "unipc":
        return _plan_data(s, order=order, variant="unipc", eta=0.0, stochastic=False)
    if method in ("deis", "lms", "ipndm"):
        return _plan_derivative(s, order=order, variant=method)
    if method == "euler_ancestral":
        return _plan_ancestral(s, eta=eta)
    raise ValueError(
        f"method must be one of 'dpmpp_2m', 'dpmpp_3m', 'unipc', 'deis', 'lms', 'ipndm', 'euler_ancestral', "
        f"got {method!r}"
    )


# ---- validation ------------------------------------------------------------------------------------


def _check_lof(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"lower_order_final must be True or False, got {value!r}")
    return value


def _strict_sigmas(sigmas: Tensor | Sequence[float], name: str = "sigmas") -> F64:
    s = check_sigmas(sigmas, name=name)
    pos = s[s > 0]
    if bool((pos[1:] >= pos[:-1]).any()):
        i = int(torch.nonzero(pos[1:] >= pos[:-1])[0])
        raise ValueError(
            f"{name} must be strictly decreasing for multistep solvers (repeated levels make interpolation "
            f"nodes coincide), but {name}[{i + 1}] = {pos[i + 1].item()} equals {name}[{i}]; drop the repeats"
        )
    out: F64 = s.numpy().astype(np.float64)
    return out


def _check_order(order: object, lo: int, hi: int) -> int:
    o = check_int(order, "order", minimum=lo)
    if o > hi:
        raise ValueError(f"order must be between {lo} and {hi} for this solver, got {o}")
    return o


# ---- prepared samplers: validation and device tables once, then a capturable loop ---------------------


def _to_device(arrays: Sequence[F64], sdt: torch.dtype, device: torch.device) -> list[Tensor]:
    """All of a loop's float64 tables in one host-to-device transfer, cast once to the state dtype."""
    flat = np.concatenate([np.ravel(a) for a in arrays]).astype(np.float64)
    t = torch.from_numpy(flat).to(device=device, dtype=sdt)
    return [v.view(a.shape) for v, a in zip(torch.split(t, [a.size for a in arrays]), arrays, strict=True)]


def _rows(sig: Tensor, batch: int) -> Tensor:
    """``[N] -> [N, batch]``: each step's sigma as the ``[batch]`` row the denoiser takes (a device op)."""
    return sig[:, None].expand(-1, batch).contiguous()


class _PlanTables(NamedTuple):
    rows: Tensor
    a: list[Tensor]
    e: list[Tensor]
    nz: list[Tensor]
    b: list[list[Tensor]]
    corr: list[list[Tensor]]
    inv: list[Tensor]
    uses_e: list[bool]
    nb: tuple[int, ...]
    ncorr: tuple[int, ...]
    keep: int
    derivative: bool
    stochastic: bool

    @classmethod
    def build(cls, s: F64, plan: MultistepPlan, batch: int, sdt: torch.dtype, dev: torch.device) -> _PlanTables:
        inv = np.where(s[:-1] > 0, 1.0 / np.where(s[:-1] > 0, s[:-1], 1.0), 0.0)
        sig, a, e, nz, b, corr, inv_t = _to_device(
            [s[:-1], plan.a, plan.e, plan.noise, plan.b, plan.corr, inv], sdt, dev
        )
        return cls(
            _rows(sig, batch), list(a.unbind(0)), list(e.unbind(0)), list(nz.unbind(0)),
            [list(r.unbind(0)) for r in b], [list(r.unbind(0)) for r in corr], list(inv_t.unbind(0)),
            [bool(v != 0) for v in plan.e], plan.nb, plan.ncorr, max(max(plan.nb), max(plan.ncorr), 1),
            plan.family == "derivative", plan.stochastic,
        )  # fmt: skip


class _Dpm2Tables(NamedTuple):
    rows: Tensor
    mid_rows: Tensor
    ratio_mid: list[Tensor]
    ratio: list[Tensor]
    h_over_mid: list[Tensor]
    noise_form: bool

    @classmethod
    def build(
        cls, s: F64, form: Literal["noise", "data"], batch: int, sdt: torch.dtype, dev: torch.device
    ) -> _Dpm2Tables:
        mid = np.sqrt(s[:-1] * s[1:])  # the lambda midpoint sigma_m = sqrt(sigma_i sigma_{i+1})
        # noise form: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (u - D_m) / sigma_m  (unused when mid = 0)
        h_over_mid = (s[1:] - s[:-1]) / np.where(mid > 0, mid, 1.0)
        sig, mid_t, ratio_mid, ratio, hm = _to_device([s[:-1], mid, mid / s[:-1], s[1:] / s[:-1], h_over_mid], sdt, dev)
        return cls(
            _rows(sig, batch), _rows(mid_t, batch), list(ratio_mid.unbind(0)), list(ratio.unbind(0)),
            list(hm.unbind(0)), form == "noise",
        )  # fmt: skip


class MultistepLoop(ABC):
    """A sampler of this module bound to one schedule, batch size, dtype and device.

    Built by :func:`prepare_multistep`: everything host-side (validation, float64 coefficients, their
    one copy to the device) is done, so ``loop(x, cond, noise)`` runs straight-line tensor code with no
    host synchronisation or transfer. It follows the rules of :mod:`.graph`, hence
    ``GraphedSampler.from_loop(loop, shape, ...)`` (or ``GraphedSampler(..., sampler=name)``) captures it.

    Attributes:
        name: the public sampler's name, e.g. ``"dpmpp_2m_sample"``.
        stochastic: whether it draws noise (one state-shaped draw per step).
        sigmas: the schedule as Python floats.
        batch, dtype, device: what x must have.
    """

    def __init__(
        self, name: str, den: _Checked, s: list[float], batch: int, sdt: torch.dtype, dev: torch.device
    ) -> None:
        self.name = name
        self.den = den
        self.sigmas = s
        self.batch = batch
        self.dtype = sdt
        self.device = dev
        self.stochastic = False

    @abstractmethod
    def __call__(
        self,
        x: Tensor,
        cond: Mapping[str, Any],
        noise: NoiseSource | None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Sample from ``x`` at ``sigmas[0]``; ``noise`` is read by stochastic solvers only (one draw per step)."""


class _PlanLoop(MultistepLoop):
    """``x_{i+1} = a_i x_i + e_i D_i + sum_j b_ij F_{i-j} (+ noise_i eps_i)``, with the UniPC corrector."""

    def __init__(
        self, name: str, den: _Checked, s: list[float], t: _PlanTables, batch: int, sdt: torch.dtype, dev: torch.device
    ) -> None:
        super().__init__(name, den, s, batch, sdt, dev)
        self.t = t
        self.stochastic = t.stochastic

    def __call__(
        self,
        x: Tensor,
        cond: Mapping[str, Any],
        noise: NoiseSource | None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> Tensor:
        t, host = self.t, self.sigmas
        src = noise if t.stochastic else None
        hist: list[Tensor] = []  # newest first; Python-level ring of at most `keep` tensors
        for i in _progress(len(host) - 1, progress, self.name):
            denoised = self.den(x, t.rows[i], **cond)
            f = (x - denoised).mul_(t.inv[i]) if t.derivative else denoised
            hist.insert(0, f)
            del hist[t.keep :]
            x_eval = x
            for j in range(t.ncorr[i]):  # UniPC corrector (a new tensor: StepInfo keeps the evaluated x)
                x = torch.addcmul(x, hist[j], t.corr[i][j]) if j == 0 else x.addcmul_(hist[j], t.corr[i][j])
            x_next = torch.mul(x, t.a[i])
            if t.uses_e[i]:
                x_next.addcmul_(denoised, t.e[i])
            for j in range(t.nb[i]):
                x_next.addcmul_(hist[j], t.b[i][j])
            if src is not None:  # drawn on every step, whatever eta / s_noise (settings never shift the stream)
                eps = src.randn(x.shape, dtype=self.dtype, device=self.device)
                x_next.addcmul_(eps, t.nz[i])
            if callback is not None:
                callback(StepInfo(i, host[i], host[i], host[i + 1], x_eval, denoised, x_next))
            x = x_next
        return x


class _Dpm2Loop(MultistepLoop):
    """DPM-Solver-2 / DPM-Solver++(2S): Euler to the lambda midpoint, then the midpoint update."""

    def __init__(
        self, den: _Checked, s: list[float], t: _Dpm2Tables, batch: int, sdt: torch.dtype, dev: torch.device
    ) -> None:
        super().__init__("dpm2_sample", den, s, batch, sdt, dev)
        self.t = t

    def __call__(
        self,
        x: Tensor,
        cond: Mapping[str, Any],
        noise: NoiseSource | None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> Tensor:
        t, host = self.t, self.sigmas
        for i in _progress(len(host) - 1, progress, self.name):
            denoised = self.den(x, t.rows[i], **cond)
            if host[i + 1] == 0:  # last step to 0: Euler, 1 NFE, returns D exactly
                x_next = torch.lerp(denoised, x, t.ratio[i])
            else:
                u = torch.lerp(denoised, x, t.ratio_mid[i])  # Euler (= DPM-Solver-1) to the midpoint
                d_mid = self.den(u, t.mid_rows[i], **cond)
                if t.noise_form:
                    x_next = torch.addcmul(x, u - d_mid, t.h_over_mid[i])
                else:
                    x_next = torch.lerp(d_mid, x, t.ratio[i])
            if callback is not None:
                callback(StepInfo(i, host[i], host[i], host[i + 1], x, denoised, x_next))
            x = x_next
        return x


# Each solver's knobs (validated here) -> its plan. The public samplers and GraphedSampler share these.


def _p_dpmpp_2m(s: F64, *, lower_order_final: bool = False) -> MultistepPlan:
    return _plan_data(s, order=2, variant="2m", eta=0.0, stochastic=False, lower_final=_check_lof(lower_order_final))


def _p_dpmpp_3m(s: F64, *, order: int = 3, lower_order_final: bool = False) -> MultistepPlan:
    o = _check_order(order, 1, 4)
    return _plan_data(s, order=o, variant="exact", eta=0.0, stochastic=False, lower_final=_check_lof(lower_order_final))


def _data_sde(
    s: F64, order: int, variant: Literal["exact", "2m"], eta: float, s_noise: float, lower_order_final: bool
) -> MultistepPlan:
    eta, s_noise = _eta_noise(eta, s_noise)
    plan = _plan_data(
        s, order=order, variant=variant, eta=eta, stochastic=True, lower_final=_check_lof(lower_order_final)
    )
    return plan._replace(noise=plan.noise * s_noise)


def _p_dpmpp_2m_sde(
    s: F64, *, eta: float = 1.0, s_noise: float = 1.0, lower_order_final: bool = False
) -> MultistepPlan:
    return _data_sde(s, 2, "2m", eta, s_noise, lower_order_final)


def _p_dpmpp_3m_sde(
    s: F64, *, eta: float = 1.0, s_noise: float = 1.0, lower_order_final: bool = False
) -> MultistepPlan:
    return _data_sde(s, 3, "exact", eta, s_noise, lower_order_final)


def _p_deis(s: F64, *, order: int = 3, lower_order_final: bool = False) -> MultistepPlan:
    o = _check_order(order, 1, 3)
    return _plan_derivative(s, order=o, variant="deis", lower_final=_check_lof(lower_order_final))


def _p_lms(s: F64, *, order: int = 4, lower_order_final: bool = False) -> MultistepPlan:
    o = _check_order(order, 1, 4)
    return _plan_derivative(s, order=o, variant="lms", lower_final=_check_lof(lower_order_final))


def _p_ipndm(s: F64, *, order: int = 4, lower_order_final: bool = False) -> MultistepPlan:
    o = _check_order(order, 1, 4)
    return _plan_derivative(s, order=o, variant="ipndm", lower_final=_check_lof(lower_order_final))


def _p_unipc(s: F64, *, order: int = 3, lower_order_final: bool = False) -> MultistepPlan:
    o = _check_order(order, 1, 3)
    return _plan_data(s, order=o, variant="unipc", eta=0.0, stochastic=False, lower_final=_check_lof(lower_order_final))


def _p_euler_ancestral(s: F64, *, eta: float = 1.0, s_noise: float = 1.0) -> MultistepPlan:
    eta, s_noise = _eta_noise(eta, s_noise)
    plan = _plan_ancestral(s, eta=eta)
    return plan._replace(noise=plan.noise * s_noise)


def _p_dpm2(s: F64, *, form: str = "noise") -> Literal["noise", "data"]:
    if form not in ("noise", "data"):
        raise ValueError(f"form must be 'noise' (DPM-Solver-2) or 'data' (DPM-Solver++(2S)), got {form!r}")
    return "noise" if form == "noise" else "data"


_PLANS: dict[str, Callable[..., Any]] = {
    "dpmpp_2m": _p_dpmpp_2m,
    "dpmpp_3m": _p_dpmpp_3m,
    "dpmpp_2m_sde": _p_dpmpp_2m_sde,
    "dpmpp_3m_sde": _p_dpmpp_3m_sde,
    "deis": _p_deis,
    "lms": _p_lms,
    "ipndm": _p_ipndm,
    "unipc": _p_unipc,
    "euler_ancestral": _p_euler_ancestral,
    "dpm2": _p_dpm2,
}
MULTISTEP_SAMPLERS: tuple[str, ...] = tuple(_PLANS)
"""Names accepted by :func:`prepare_multistep` and ``GraphedSampler(sampler=...)``."""


def solver_options(name: str) -> tuple[str, ...]:
    """The knobs sampler ``name`` of this module accepts (e.g. ``("order", "lower_order_final")``)."""
    if name not in _PLANS:
        raise ValueError(f"unknown multistep sampler {name!r}; choose from {', '.join(MULTISTEP_SAMPLERS)}")
    return tuple(inspect.signature(_PLANS[name]).parameters)[1:]


def prepare_multistep(
    name: str,
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    dtype: torch.dtype | None = None,
    **options: Any,
) -> MultistepLoop:
    """Validate once and build the device tables of sampler ``name`` for states shaped like ``x``.

    Args:
        name: one of :data:`MULTISTEP_SAMPLERS` (``"dpmpp_2m"`` for :func:`dpmpp_2m_sample`, ...).
        denoiser: D(x, sigma, **cond).
        x: an example state: its batch size, device and (with ``dtype``) integration dtype are fixed.
        sigmas: strictly decreasing schedule.
        dtype: integration dtype (default: x's dtype promoted to at least float32).
        **options: the sampler's knobs (``order``, ``eta``, ``s_noise``, ``lower_order_final``, ``form``).

    Returns:
        A :class:`MultistepLoop`; ``loop(x, cond, noise)`` samples without host synchronisation.
    """
    allowed = solver_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"{name}_sample got unknown option(s) {', '.join(map(repr, unknown))}; it accepts "
            f"{', '.join(allowed) or 'none'}"
        )
    check_denoiser(denoiser)
    check_has_data(x, "x")
    check_has_data(sigmas, "sigmas")
    x = check_x(x)
    s = _strict_sigmas(sigmas)
    sdt = state_dtype(x, dtype)
    check_sigmas_fit(torch.from_numpy(s), sdt)
    den = _Checked(denoiser, sdt)
    host: list[float] = s.tolist()
    batch, dev = x.shape[0], x.device

    def build() -> _PlanTables | _Dpm2Tables:
        if name == "dpm2":
            return _Dpm2Tables.build(s, _p_dpm2(s, **options), batch, sdt, dev)
        return _PlanTables.build(s, _PLANS[name](s, **options), batch, sdt, dev)

    # Cached like the core drivers' tables. Option types are part of the key, so a value that validation
    # would reject (order=3.0, lower_order_final=1) never hits a valid entry.
    opts = tuple(sorted((k, type(v), v) for k, v in options.items()))
    tables = TABLES.get(("multistep", name, tuple(host), opts, batch, sdt, dev), build)
    if isinstance(tables, _Dpm2Tables):
        return _Dpm2Loop(den, host, tables, batch, sdt, dev)
    return _PlanLoop(f"{name}_sample", den, host, tables, batch, sdt, dev)


def _sample(
    name: str,
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    options: dict[str, Any],
    cond: Mapping[str, Any] | None,
    noise: NoiseSource | torch.Generator | None,
    callback: Callback | None,
    dtype: torch.dtype | None,
    progress: bool,
    check_finite: bool,
) -> Tensor:
    loop = prepare_multistep(name, denoiser, x, sigmas, dtype=dtype, **options)
    cond_d = check_cond(cond)
    check_cond_batch(cond_d, x.shape[0])
    check_callback(callback)
    src = as_noise_source(noise)  # type-checked always; deterministic samplers draw nothing
    out = loop(x.to(loop.dtype), cond_d, src, callback, progress)
    if check_finite:
        _finite_or_raise(out, loop.name)
    return out


# ---- public samplers ----------------------------------------------------------------------------------

_COMMON_ARGS = """
    Args:
        denoiser: D(x, sigma, **cond) with sigma of shape ``[batch]``.
        x: initial state at noise level ``sigmas[0]``, any shape ``[batch, ...]``.
        sigmas: strictly decreasing schedule, e.g. :func:`~edm_samplers.karras_sigmas`; zero only at the end.
        cond: keyword arguments passed to every denoiser call.
        noise: NoiseSource (e.g. :class:`~edm_samplers.PerSampleNoise`), ``torch.Generator`` or None
            (stochastic samplers draw one state-shaped tensor per step; deterministic ones draw nothing).
        callback: called with a :class:`~edm_samplers.StepInfo` after each step.
        dtype: integration dtype (default: x's dtype promoted to at least float32).
        progress: show a tqdm progress bar.
        check_finite: raise ``FloatingPointError`` if the result holds NaN/Inf (one sync at the end).

    Returns:
        The state at ``sigmas[-1]`` (the sample when it is 0), in the integration dtype.

    Raises:
        TypeError / ValueError: invalid arguments or denoiser output.
        FloatingPointError: if ``check_finite`` and the result is not finite.
"""


def _doc(text: str) -> str:
    return text + _COMMON_ARGS


def _eta_noise(eta: float, s_noise: float) -> tuple[float, float]:
    return check_float(eta, "eta", nonnegative=True), check_float(s_noise, "s_noise", nonnegative=True)


def dpmpp_2m_sample(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    lower_order_final: bool = False,
    cond: Mapping[str, Any] | None = None,
    noise: NoiseSource | torch.Generator | None = None,
    callback: Callback | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    return _sample(
        "dpmpp_2m",
        denoiser,
        x,
        sigmas,
        {"lower_order_final": lower_order_final},
        cond,
        noise,
        callback,
        dtype,
        progress,
        check_finite,
    )


dpmpp_2m_sample.__doc__ = _doc(
    """DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2), data prediction, steps in lambda = -log sigma.

    x_{i+1} = (sigma_{i+1}/sigma_i) x_i + (1 - e^{-h}) [(1 + 1/(2r)) D_i - 1/(2r) D_{i-1}], with
    h = lambda_{i+1} - lambda_i and r = h_{i-1} / h. Order 2, 1 NFE per step (N NFE). The first step is
    DPM-Solver-1 (= Euler); the step to a final 0 is Euler and returns D exactly.

    Args:
        lower_order_final: lower the order on the last steps to at most the number of steps left
            (diffusers' ``lower_order_final``). Off by default (full order, the tested convergence);
            recommended below ~15 steps on a learned model with a hand-made schedule, where high-order
            extrapolation over the last, longest log-sigma steps amplifies network error.
"""
)


def dpmpp_3m_sample(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    lower_order_final: bool = False,
    order: int = 3,
    cond: Mapping[str, Any] | None = None,
    noise: NoiseSource | torch.Generator | None = None,
    callback: Callback | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    return _sample(
        "dpmpp_3m",
        denoiser,
        x,
        sigmas,
        {"order": order, "lower_order_final": lower_order_final},
        cond,
        noise,
        callback,
        dtype,
        progress,
        check_finite,
    )


dpmpp_3m_sample.__doc__ = _doc(
    """Multistep DPM-Solver++ of order 3 (``order`` 1..4): exact exponential integrator in lambda.

    x_{i+1} = (sigma_{i+1}/sigma_i) x_i + sum_j b_j D_{i-j}, b_j = int_0^h e^{-(h - tau)} L_j(tau) dtau with
    L_j the Lagrange basis through lambda_i, ..., lambda_{i-k+1}. The weights are integrated exactly (in
    float64), so the order is really k; the published phi-function form of 3M weighs the second
    difference by half the required amount and converges at order 2. 1 NFE per step (N NFE); warm-up
    orders 1, 2, ...; the step to a final 0 is Euler (returns D exactly).

    Args:
        order: 1..4 (1: DPM-Solver-1 = Euler; 2: the exact-integral variant of 2M).
        lower_order_final: lower the order on the last steps to at most the number of steps left
            (diffusers' ``lower_order_final``). Off by default (full order, the tested convergence);
            recommended below ~15 steps on a learned model with a hand-made schedule, where high-order
            extrapolation over the last, longest log-sigma steps amplifies network error.
"""
)


def dpmpp_2m_sde_sample(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    lower_order_final: bool = False,
    eta: float = 1.0,
    s_noise: float = 1.0,
    cond: Mapping[str, Any] | None = None,
    noise: NoiseSource | torch.Generator | None = None,
    callback: Callback | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    return _sample(
        "dpmpp_2m_sde",
        denoiser,
        x,
        sigmas,
        {"eta": eta, "s_noise": s_noise, "lower_order_final": lower_order_final},
        cond,
        noise,
        callback,
        dtype,
        progress,
        check_finite,
    )


dpmpp_2m_sde_sample.__doc__ = _doc(
    """DPM-Solver++(2M) SDE (Lu et al. 2022b, Sec. 5 / k-diffusion's "midpoint" form), data prediction.

    With H = (1 + eta) h: x_{i+1} = (sigma_{i+1}/sigma_i) e^{-eta h} x_i
    + (1 - e^{-H}) [(1 + 1/(2r)) D_i - 1/(2r) D_{i-1}] + s_noise sigma_{i+1} sqrt(1 - e^{-2 eta h}) eps_i.
    eta = 1 is the reverse SDE, eta = 0 the ODE (then equal to :func:`dpmpp_2m_sample`). Strong order 1 for
    eta > 0 (weak order 2 for the drift); 1 NFE per step; one noise draw per step always (also at eta = 0 and
    on the final step to 0, which is Euler and returns D exactly). Noise only from ``noise``: with
    :class:`~edm_samplers.PerSampleNoise` each sample depends on its own seed only.

    Args:
        eta: noise fraction >= 0 (1: full SDE).
        s_noise: noise inflation >= 0.
        lower_order_final: lower the order on the last steps to at most the number of steps left
            (diffusers' ``lower_order_final``). Off by default (full order, the tested convergence);
            recommended below ~15 steps on a learned model with a hand-made schedule, where high-order
            extrapolation over the last, longest log-sigma steps amplifies network error.
"""
)


def dpmpp_3m_sde_sample(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    lower_order_final: bool = False,
    eta: float = 1.0,
    s_noise: float = 1.0,
    cond: Mapping[str, Any] | None = None,
    noise: NoiseSource | torch.Generator | None = None,
    callback: Callback | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    return _sample(
        "dpmpp_3m_sde",
        denoiser,
        x,
        sigmas,
        {"eta": eta, "s_noise": s_noise, "lower_order_final": lower_order_final},
        cond,
        noise,
        callback,
        dtype,
        progress,
        check_finite,
    )


dpmpp_3m_sde_sample.__doc__ = _doc(
    """DPM-Solver++(3M) SDE: the drift integral int_0^h (1 + eta) e^{-(1 + eta)(h - tau)} D(tau) dtau taken
    exactly over the quadratic through the last three outputs, plus noise as in :func:`dpmpp_2m_sde_sample`.

    eta = 0 gives :func:`dpmpp_3m_sample` (order 3). 1 NFE per step; one noise draw per step always; the
    final step to 0 is Euler (returns D exactly).

    Args:
        eta: noise fraction >= 0 (1: full SDE).
        s_noise: noise inflation >= 0.
        lower_order_final: lower the order on the last steps to at most the number of steps left
            (diffusers' ``lower_order_final``). Off by default (full order, the tested convergence);
            recommended below ~15 steps on a learned model with a hand-made schedule, where high-order
            extrapolation over the last, longest log-sigma steps amplifies network error.
"""
)


def deis_sample(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    lower_order_final: bool = False,
    order: int = 3,
    cond: Mapping[str, Any] | None = None,
    noise: NoiseSource | torch.Generator | None = None,
    callback: Callback | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    return _sample(
        "deis",
        denoiser,
        x,
        sigmas,
        {"order": order, "lower_order_final": lower_order_final},
        cond,
        noise,
        callback,
        dtype,
        progress,
        check_finite,
    )


deis_sample.__doc__ = _doc(
    """DEIS (Zhang & Chen 2023, "tAB" with log-rho steps): Adams-Bashforth on eps = (x - D)/sigma in log sigma.

    In EDM's form the noise-prediction ODE is dx/dsigma = eps(x, sigma) with no linear part; DEIS fits a
    polynomial in log sigma through the last k values of eps and integrates it exactly:
    x_{i+1} = x_i + sum_j c_j eps_{i-j}, c_j = int_{sigma_i}^{sigma_{i+1}} L_j(log s) ds. Order k = ``order``
    (1..3; diffusers' default "logrho" DEIS); 1 NFE per step; warm-up orders 1, 2, ...; the step to a final 0
    is Euler (a polynomial in log sigma cannot be extrapolated to -inf) and returns D exactly.

    Args:
        order: 1..3.
        lower_order_final: lower the order on the last steps to at most the number of steps left
            (diffusers' ``lower_order_final``). Off by default (full order, the tested convergence);
            recommended below ~15 steps on a learned model with a hand-made schedule, where high-order
            extrapolation over the last, longest log-sigma steps amplifies network error.
"""
)


def lms_sample(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    lower_order_final: bool = False,
    order: int = 4,
    cond: Mapping[str, Any] | None = None,
    noise: NoiseSource | torch.Generator | None = None,
    callback: Callback | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    return _sample(
        "lms",
        denoiser,
        x,
        sigmas,
        {"order": order, "lower_order_final": lower_order_final},
        cond,
        noise,
        callback,
        dtype,
        progress,
        check_finite,
    )


lms_sample.__doc__ = _doc(
    """Linear multistep (variable-step Adams-Bashforth in sigma; k-diffusion's ``sample_lms``).

    x_{i+1} = x_i + sum_j c_j d_{i-j}, d = (x - D)/sigma, c_j = int_{sigma_i}^{sigma_{i+1}} L_j(s) ds with
    L_j the Lagrange basis through sigma_i, ..., sigma_{i-k+1} (integrated exactly, no scipy). Order k =
    ``order`` (1..4) on any schedule; 1 NFE per step; warm-up orders 1, 2, ...; the step to a final 0 is a
    full-order step (the polynomial in sigma extends to 0), so the result is not exactly D.

    Args:
        order: 1..4.
        lower_order_final: lower the order on the last steps to at most the number of steps left
            (diffusers' ``lower_order_final``). Off by default (full order, the tested convergence);
            recommended below ~15 steps on a learned model with a hand-made schedule, where high-order
            extrapolation over the last, longest log-sigma steps amplifies network error.
"""
)


def ipndm_sample(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    lower_order_final: bool = False,
    order: int = 4,
    cond: Mapping[str, Any] | None = None,
    noise: NoiseSource | torch.Generator | None = None,
    callback: Callback | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    return _sample(
        "ipndm",
        denoiser,
        x,
        sigmas,
        {"order": order, "lower_order_final": lower_order_final},
        cond,
        noise,
        callback,
        dtype,
        progress,
        check_finite,
    )


ipndm_sample.__doc__ = _doc(
    """iPNDM (Zhang & Chen 2023; Zhou et al. 2024): equal-step Adams-Bashforth weights on d = (x - D)/sigma.

    x_{i+1} = x_i + (sigma_{i+1} - sigma_i) sum_j beta_j d_{i-j} with beta = (55, -59, 37, -9)/24 for order 4
    and the lower-order AB tables (1), (3, -1)/2, (23, -16, 5)/12 while warming up. 1 NFE per step. The
    weights assume equal steps: order k = ``order`` on schedules uniform in sigma; on a non-uniform schedule
    such as ``karras_sigmas`` the mismatch between the step-size ratio and the fixed weights limits the
    global order to 2 (at low NFE it is still among the most accurate solvers; :func:`lms_sample` is the
    variable-step version). The step to a final 0 uses the same formula (not exactly D).

    Args:
        order: 1..4.
        lower_order_final: lower the order on the last steps to at most the number of steps left
            (diffusers' ``lower_order_final``). Off by default (full order, the tested convergence);
            recommended below ~15 steps on a learned model with a hand-made schedule, where high-order
            extrapolation over the last, longest log-sigma steps amplifies network error.
"""
)


def unipc_sample(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    lower_order_final: bool = False,
    order: int = 3,
    cond: Mapping[str, Any] | None = None,
    noise: NoiseSource | torch.Generator | None = None,
    callback: Callback | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    return _sample(
        "unipc",
        denoiser,
        x,
        sigmas,
        {"order": order, "lower_order_final": lower_order_final},
        cond,
        noise,
        callback,
        dtype,
        progress,
        check_finite,
    )


unipc_sample.__doc__ = _doc(
    """UniPC (Zhao et al. 2023) with B(h) = 1 - e^{-h} ("bh2"), data prediction, steps in lambda.

    Predictor UniP-p: the order-p multistep exponential integrator (p = ``order``; for p = 2 UniPC's
    rho = 1/2, i.e. the DPM-Solver++(2M) weights). Corrector UniC: once D_{i+1} has been evaluated at the
    predicted state (the evaluation the next predictor needs anyway), x_{i+1} is recomputed from the
    polynomial through the p previous outputs and D_{i+1}, which raises the order to p + 1 at no extra NFE
    (UniC-1 is the bh2 trapezoid (1 - e^{-h})(D_i + D_{i+1})/2). 1 NFE per step; warm-up orders 1, 2, ...;
    the step to a final 0 is Euler (returns D of the last, corrected-from, evaluation exactly; no corrector
    follows it). ``StepInfo.x`` is the state the denoiser saw (the predictor).

    Args:
        order: predictor order 1..3.
        lower_order_final: lower the order on the last steps to at most the number of steps left
            (diffusers' ``lower_order_final``). Off by default (full order, the tested convergence);
            recommended below ~15 steps on a learned model with a hand-made schedule, where high-order
            extrapolation over the last, longest log-sigma steps amplifies network error.
"""
)


def euler_ancestral_sample(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
    cond: Mapping[str, Any] | None = None,
    noise: NoiseSource | torch.Generator | None = None,
    callback: Callback | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    return _sample(
        "euler_ancestral",
        denoiser,
        x,
        sigmas,
        {"eta": eta, "s_noise": s_noise},
        cond,
        noise,
        callback,
        dtype,
        progress,
        check_finite,
    )


euler_ancestral_sample.__doc__ = _doc(
    """Euler ancestral sampling (Ho et al. 2020 in EDM form; k-diffusion's ``sample_euler_ancestral``).

    sigma_up = min(sigma_{i+1}, eta sqrt(sigma_{i+1}^2 (sigma_i^2 - sigma_{i+1}^2) / sigma_i^2)),
    sigma_down = sqrt(sigma_{i+1}^2 - sigma_up^2); an Euler step to sigma_down, then
    x_{i+1} = x' + s_noise sigma_up eps_i. Order 1 (strong order 1/2 for eta > 0); 1 NFE per step; one noise
    draw per step always; the step to a final 0 has sigma_up = 0 and returns D exactly.

    Args:
        eta: ancestral noise fraction >= 0 (0: Euler).
        s_noise: noise inflation >= 0.
"""
)


def dpm2_sample(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    form: Literal["noise", "data"] = "noise",
    cond: Mapping[str, Any] | None = None,
    noise: NoiseSource | torch.Generator | None = None,
    callback: Callback | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    return _sample("dpm2", denoiser, x, sigmas, {"form": form}, cond, noise, callback, dtype, progress, check_finite)


dpm2_sample.__doc__ = _doc(
    """DPM-Solver-2 (Lu et al. 2022, Algorithm 1 with r = 1/2): single-step midpoint in lambda, 2 NFE per step.

    sigma_m = sqrt(sigma_i sigma_{i+1}); u = D_i + (sigma_m/sigma_i)(x_i - D_i) (DPM-Solver-1 to sigma_m);
    ``form="noise"`` (DPM-Solver-2, = k-diffusion's ``sample_dpm_2``): x_{i+1} = x_i + (sigma_{i+1} - sigma_i)
    (u - D(u; sigma_m)) / sigma_m; ``form="data"`` (DPM-Solver++(2S)): x_{i+1} = D_m + (sigma_{i+1}/sigma_i)
    (x_i - D_m). Order 2; the step to a final 0 is Euler (1 NFE, returns D exactly): 2N - 1 NFE.

    Args:
        form: ``"noise"`` or ``"data"`` prediction.
"""
)
