"""Every multistep / SDE / ancestral sampler against an independent float64 transcription, step by step.

The transcriptions below are written from the published algorithms, not from the library:

- DPM-Solver++(2M) SDE: Lu et al. 2022b, Sec. 5, in k-diffusion's published "midpoint" form
  (``sample_dpmpp_2m_sde``); Euler ancestral: k-diffusion's ``sample_euler_ancestral`` /
  ``get_ancestral_step``. k-diffusion is not a test dependency; these are re-typed from the algorithms.
- Exact k-step exponential integrators (DPM-Solver++(3M), its SDE variant with rate 1 + eta, order 4):
  the Lagrange polynomial through the past outputs, in lambda = -log sigma, expanded in monomials and
  integrated in closed form (phi-function recurrence, power series for small steps). The library integrates
  the basis polynomials by Gauss-Legendre quadrature instead.
- DEIS (Zhang & Chen 2023, tAB in log rho, rho = sigma for EDM's VE form): eps = (x - D) / sigma fitted by
  a polynomial in log sigma and integrated over sigma in closed form (int e^v v^m dv).
- LMS (polynomial in sigma, integrated exactly with numpy's polyint), iPNDM (equal-step Adams-Bashforth),
  DPM-Solver-2 and DPM-Solver++(2S) (Lu et al. 2022 Alg. 1 / 2022b Alg. 1 with r = 1/2), Heun/Euler
  (EDM Algorithm 1).

Each transcription returns the whole path x_1, ..., x_N, compared with ``StepInfo.x_next`` of every step,
so a wrong weight cannot hide behind a final step to 0 that returns D whatever came before. Noise is shared
through :class:`~edm_samplers.PrecomputedNoise`: the library draws one state-shaped tensor per step, after
the step's denoiser call, whatever eta / s_noise, also on the final step (checked below); step i uses draw i.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.polynomial import polynomial as npoly
from torch import Tensor

import edm_samplers as es
from strategies import schedules

F64 = torch.float64
Den = Callable[..., Tensor]


def at(x: Tensor, sigma: float) -> Tensor:
    return torch.full((x.shape[0],), sigma, dtype=x.dtype)


def lagrange_monomials(nodes: Sequence[float]) -> list[np.ndarray]:
    """Ascending monomial coefficients of each Lagrange basis polynomial L_j through ``nodes``."""
    out = []
    for j, tj in enumerate(nodes):
        others = [t for m, t in enumerate(nodes) if m != j]
        denom = math.prod(tj - t for t in others)
        out.append(npoly.polyfromroots(others) / denom if others else np.array([1.0]))
    return out


# ---- closed-form integrals -------------------------------------------------------------------------------


def exp_moments(big_h: float, kmax: int) -> list[float]:
    """I_m(H) = int_0^1 H e^{-H (1 - s)} s^m ds, m = 0..kmax.

    H >= 1: I_0 = 1 - e^{-H}, I_m = 1 - (m / H) I_{m-1} (integration by parts; amplifies errors by <= m!).
    H < 1: the series I_m = m! sum_k (-1)^k H^(k+1) / (k+m+1)! (alternating, terms below H^k / k!).
    """
    if big_h >= 1.0:
        out = [-math.expm1(-big_h)]
        for m in range(1, kmax + 1):
            out.append(1.0 - m / big_h * out[-1])
        return out
    return [
        math.factorial(m) * math.fsum((-1) ** k * big_h ** (k + 1) / math.factorial(k + m + 1) for k in range(40))
        for m in range(kmax + 1)
    ]


def log_moments(v: float, kmax: int) -> list[float]:
    """J_m(V) = int_0^V e^u u^m du, m = 0..kmax (V < 0 here).

    |V| >= 1: J_0 = e^V - 1, J_m = e^V V^m - m J_{m-1}; |V| < 1: the series sum_k V^(k+m+1) / (k! (k+m+1)).
    """
    if abs(v) >= 1.0:
        out = [math.expm1(v)]
        for m in range(1, kmax + 1):
            out.append(math.exp(v) * v**m - m * out[-1])
        return out
    return [math.fsum(v ** (k + m + 1) / (math.factorial(k) * (k + m + 1)) for k in range(40)) for m in range(kmax + 1)]


# ---- transcriptions (each returns [x_1, ..., x_N]) -----------------------------------------------------------


def ref_euler_heun(D: Den, x: Tensor, sig: list[float], heun: bool) -> list[Tensor]:
    """EDM Algorithm 1 (Euler when ``heun`` is False); Euler on the step to 0."""
    path = []
    for i in range(len(sig) - 1):
        d = (x - D(x, at(x, sig[i]))) / sig[i]
        x_next = x + (sig[i + 1] - sig[i]) * d
        if heun and sig[i + 1] != 0:
            d2 = (x_next - D(x_next, at(x, sig[i + 1]))) / sig[i + 1]
            x_next = x + (sig[i + 1] - sig[i]) * (d + d2) / 2
        path.append(x := x_next)
    return path


def ref_euler_ancestral(D: Den, x: Tensor, sig: list[float], eps: Tensor, eta: float, s_noise: float) -> list[Tensor]:
    """k-diffusion's sample_euler_ancestral: Euler to sigma_down, then noise of std sigma_up."""
    path = []
    for i in range(len(sig) - 1):
        den = D(x, at(x, sig[i]))
        s_from, s_to = sig[i], sig[i + 1]
        sigma_up = min(s_to, eta * (s_to**2 * (s_from**2 - s_to**2) / s_from**2) ** 0.5)
        sigma_down = (s_to**2 - sigma_up**2) ** 0.5
        d = (x - den) / s_from
        x = x + d * (sigma_down - s_from)
        if s_to > 0:
            x = x + eps[i] * s_noise * sigma_up
        path.append(x)
    return path


def warmup_order(order: int, i: int, n: int, lower_final: bool) -> int:
    """Orders 1, 2, ... while the history fills; with ``lower_final`` (diffusers' lower_order_final) at most the
    number of steps left, n - i."""
    return min(order, i + 1, n - i) if lower_final else min(order, i + 1)


def ref_dpmpp_2m_sde(
    D: Den, x: Tensor, sig: list[float], eps: Tensor, eta: float, s_noise: float, lower_final: bool = False
) -> list[Tensor]:
    """DPM-Solver++(2M) SDE, k-diffusion's midpoint form (t = -log sigma)."""
    path: list[Tensor] = []
    old: Tensor | None = None
    h_last = 0.0
    for i in range(len(sig) - 1):
        den = D(x, at(x, sig[i]))
        if sig[i + 1] == 0:
            x = den
        else:
            t, s = -math.log(sig[i]), -math.log(sig[i + 1])
            h = s - t
            eta_h = eta * h
            x = sig[i + 1] / sig[i] * math.exp(-eta_h) * x + (-math.expm1(-h - eta_h)) * den
            if old is not None and warmup_order(2, i, len(sig) - 1, lower_final) == 2:
                r = h_last / h
                x = x + 0.5 * (-math.expm1(-h - eta_h)) * (1 / r) * (den - old)
            if eta:
                x = x + eps[i] * sig[i + 1] * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise
            h_last = h
        old = den
        path.append(x)
    return path


def ref_exact_multistep(
    D: Den,
    x: Tensor,
    sig: list[float],
    order: int,
    eps: Tensor | None = None,
    eta: float = 0.0,
    s_noise: float = 1.0,
    lower_final: bool = False,
) -> list[Tensor]:
    """Exact k-step exponential integrator in lambda (DPM-Solver++ kM; SDE drift rate 1 + eta).

    x_{i+1} = (sigma_{i+1}/sigma_i) e^{-eta h} x_i + int_0^h r e^{-r (h - tau)} P(tau) dtau
              + s_noise sigma_{i+1} sqrt(1 - e^{-2 eta h}) eps_i,   r = 1 + eta,
    P the polynomial through (lambda_{i-j} - lambda_i, D_{i-j}), j < k; with P = sum_m p_m tau^m the integral
    is sum_m p_m h^m I_m(r h). The step to 0 returns D.
    """
    lam = [-math.log(s) if s > 0 else math.inf for s in sig]
    hist: list[Tensor] = []
    path = []
    rate = 1.0 + eta
    for i in range(len(sig) - 1):
        hist.insert(0, D(x, at(x, sig[i])))
        if sig[i + 1] == 0:
            path.append(x := hist[0])
            continue
        h = lam[i + 1] - lam[i]
        k = warmup_order(order, i, len(sig) - 1, lower_final)
        moments = exp_moments(rate * h, k - 1)
        x_new = sig[i + 1] / sig[i] * math.exp(-eta * h) * x
        for j, coeffs in enumerate(lagrange_monomials([lam[i - j] - lam[i] for j in range(k)])):
            w = math.fsum(float(c) * h**m * moments[m] for m, c in enumerate(coeffs))
            x_new = x_new + w * hist[j]
        if eps is not None:
            x_new = x_new + s_noise * sig[i + 1] * math.sqrt(-math.expm1(-2 * eta * h)) * eps[i]
        path.append(x := x_new)
    return path


def ref_deis(D: Den, x: Tensor, sig: list[float], order: int, lower_final: bool = False) -> list[Tensor]:
    """DEIS tAB in log sigma: x_{i+1} = x_i + sum_j c_j eps_{i-j}, c_j = int_{sigma_i}^{sigma_{i+1}} L_j(log s) ds.

    With v = log(s / sigma_i): c_j = sigma_i int_0^V e^v L_j(v) dv, V = log(sigma_{i+1} / sigma_i), nodes
    v_j = log(sigma_{i-j} / sigma_i). The step to 0 (log 0 = -inf) is Euler and returns D.
    """
    hist: list[Tensor] = []
    path = []
    for i in range(len(sig) - 1):
        den = D(x, at(x, sig[i]))
        if sig[i + 1] == 0:
            path.append(x := den)
            continue
        hist.insert(0, (x - den) / sig[i])
        k = warmup_order(order, i, len(sig) - 1, lower_final)
        v = math.log(sig[i + 1] / sig[i])
        moments = log_moments(v, k - 1)
        x_new = x
        for j, coeffs in enumerate(lagrange_monomials([math.log(sig[i - j] / sig[i]) for j in range(k)])):
            c = sig[i] * math.fsum(float(cm) * moments[m] for m, cm in enumerate(coeffs))
            x_new = x_new + c * hist[j]
        path.append(x := x_new)
    return path


def ref_lms(D: Den, x: Tensor, sig: list[float], order: int, lower_final: bool = False) -> list[Tensor]:
    """Variable-step Adams-Bashforth in sigma: c_j = int_{sigma_i}^{sigma_{i+1}} L_j(s) ds (numpy polyint)."""
    hist: list[Tensor] = []
    path = []
    for i in range(len(sig) - 1):
        hist.insert(0, (x - D(x, at(x, sig[i]))) / sig[i])
        k = warmup_order(order, i, len(sig) - 1, lower_final)
        x_new = x
        for j, coeffs in enumerate(lagrange_monomials([sig[i - j] - sig[i] for j in range(k)])):
            anti = npoly.polyint(coeffs)
            x_new = x_new + float(npoly.polyval(sig[i + 1] - sig[i], anti)) * hist[j]
        path.append(x := x_new)
    return path


AB = {1: [1.0], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}


def ref_ipndm(D: Den, x: Tensor, sig: list[float], order: int, lower_final: bool = False) -> list[Tensor]:
    """iPNDM: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) sum_j AB_k[j] d_{i-j}, warm-up with lower AB orders."""
    hist: list[Tensor] = []
    path = []
    for i in range(len(sig) - 1):
        hist.insert(0, (x - D(x, at(x, sig[i]))) / sig[i])
        k = warmup_order(order, i, len(sig) - 1, lower_final)
        path.append(x := x + (sig[i + 1] - sig[i]) * sum(c * d for c, d in zip(AB[k], hist, strict=False)))
    return path


def ref_dpmpp_2m(D: Den, x: Tensor, sig: list[float]) -> list[Tensor]:
    """DPM-Solver++(2M), Lu et al. 2022b Algorithm 2 (sigma_t = sigma, alpha_t = 1)."""
    return ref_dpmpp_2m_sde(D, x, sig, torch.zeros(0), 0.0, 1.0)


def ref_dpm2(D: Den, x: Tensor, sig: list[float], form: str) -> list[Tensor]:
    """DPM-Solver-2 (noise prediction) / DPM-Solver++(2S) (data prediction) with r = 1/2 in lambda."""
    path = []
    for i in range(len(sig) - 1):
        den = D(x, at(x, sig[i]))
        if sig[i + 1] == 0:
            path.append(x := den)
            continue
        s_mid = math.exp(-0.5 * (-math.log(sig[i]) - math.log(sig[i + 1])))  # lambda midpoint
        # First-order step to s_mid: u = x - (sigma_i - s_mid) eps_i = (s_mid / sigma_i) x + (1 - s_mid / sigma_i) D.
        u = x - (sig[i] - s_mid) * (x - den) / sig[i]
        d_mid = D(u, at(x, s_mid))
        if form == "noise":  # x_{i+1} = x_i - sigma_{i+1} (e^h - 1) eps(u, s_mid) = x_i + (sigma_{i+1} - sigma_i) eps
            x = x + (sig[i + 1] - sig[i]) * (u - d_mid) / s_mid
        else:  # x_{i+1} = (sigma_{i+1}/sigma_i) x_i - (e^{-h} - 1) D(u, s_mid)
            x = sig[i + 1] / sig[i] * x + (1 - sig[i + 1] / sig[i]) * d_mid
        path.append(x)
    return path


# ---- the cases --------------------------------------------------------------------------------------------

# name -> (library call, transcription, stochastic). The library call takes (D, x, sigmas, eps, callback), the
# transcription (D, x, sigmas as floats, eps) and returns the path.
LibCall = Callable[[Den, Tensor, Tensor, Tensor, Any], Tensor]
RefCall = Callable[[Den, Tensor, list[float], Tensor], list[Tensor]]
Case = tuple[LibCall, RefCall, bool]


def _lib(fn: Callable[..., Tensor], **kw: Any) -> LibCall:
    def call(D: Den, x: Tensor, sig: Tensor, eps: Tensor, callback: Any) -> Tensor:
        return fn(D, x, sig, noise=es.PrecomputedNoise(eps), callback=callback, **kw)

    return call


CASES: dict[str, Case] = {
    "euler": (_lib(es.euler_sample), lambda D, x, s, e: ref_euler_heun(D, x, s, False), False),
    "heun": (_lib(es.heun_sample), lambda D, x, s, e: ref_euler_heun(D, x, s, True), False),
    "dpmpp_2m": (_lib(es.dpmpp_2m_sample, order_rule="full"), lambda D, x, s, e: ref_dpmpp_2m(D, x, s), False),
    "dpmpp_3m": (
        _lib(es.dpmpp_3m_sample, order_rule="full"),
        lambda D, x, s, e: ref_exact_multistep(D, x, s, 3),
        False,
    ),
    "dpmpp_4m": (
        _lib(es.dpmpp_3m_sample, order=4, order_rule="full"),
        lambda D, x, s, e: ref_exact_multistep(D, x, s, 4),
        False,
    ),
    "deis1": (_lib(es.deis_sample, order=1, order_rule="full"), lambda D, x, s, e: ref_deis(D, x, s, 1), False),
    "deis2": (_lib(es.deis_sample, order=2, order_rule="full"), lambda D, x, s, e: ref_deis(D, x, s, 2), False),
    "deis3": (_lib(es.deis_sample, order=3, order_rule="full"), lambda D, x, s, e: ref_deis(D, x, s, 3), False),
    "lms4": (_lib(es.lms_sample, order=4, order_rule="full"), lambda D, x, s, e: ref_lms(D, x, s, 4), False),
    "ipndm4": (_lib(es.ipndm_sample, order=4, order_rule="full"), lambda D, x, s, e: ref_ipndm(D, x, s, 4), False),
    "dpm2_noise": (_lib(es.dpm2_sample, form="noise"), lambda D, x, s, e: ref_dpm2(D, x, s, "noise"), False),
    "dpm2_data": (_lib(es.dpm2_sample, form="data"), lambda D, x, s, e: ref_dpm2(D, x, s, "data"), False),
    "2m_sde": (
        _lib(es.dpmpp_2m_sde_sample, eta=1.0, s_noise=1.0, order_rule="full"),
        lambda D, x, s, e: ref_dpmpp_2m_sde(D, x, s, e, 1.0, 1.0),
        True,
    ),
    "2m_sde_eta0.6": (
        _lib(es.dpmpp_2m_sde_sample, eta=0.6, s_noise=1.02, order_rule="full"),
        lambda D, x, s, e: ref_dpmpp_2m_sde(D, x, s, e, 0.6, 1.02),
        True,
    ),
    "3m_sde": (
        _lib(es.dpmpp_3m_sde_sample, eta=1.0, s_noise=1.0, order_rule="full"),
        lambda D, x, s, e: ref_exact_multistep(D, x, s, 3, e, 1.0, 1.0),
        True,
    ),
    "3m_sde_eta0.5": (
        _lib(es.dpmpp_3m_sde_sample, eta=0.5, s_noise=0.97, order_rule="full"),
        lambda D, x, s, e: ref_exact_multistep(D, x, s, 3, e, 0.5, 0.97),
        True,
    ),
    # order_rule="final" (diffusers' lower_order_final): the last steps use at most as many outputs as steps remain.
    "dpmpp_2m_lof": (
        _lib(es.dpmpp_2m_sample, order_rule="final"),
        lambda D, x, s, e: ref_dpmpp_2m_sde(D, x, s, torch.zeros(0), 0.0, 1.0, lower_final=True),
        False,
    ),
    "dpmpp_4m_lof": (
        _lib(es.dpmpp_3m_sample, order=4, order_rule="final"),
        lambda D, x, s, e: ref_exact_multistep(D, x, s, 4, lower_final=True),
        False,
    ),
    "3m_sde_lof": (
        _lib(es.dpmpp_3m_sde_sample, eta=0.8, order_rule="final"),
        lambda D, x, s, e: ref_exact_multistep(D, x, s, 3, e, 0.8, 1.0, lower_final=True),
        True,
    ),
    "deis3_lof": (
        _lib(es.deis_sample, order=3, order_rule="final"),
        lambda D, x, s, e: ref_deis(D, x, s, 3, lower_final=True),
        False,
    ),
    "lms4_lof": (
        _lib(es.lms_sample, order=4, order_rule="final"),
        lambda D, x, s, e: ref_lms(D, x, s, 4, lower_final=True),
        False,
    ),
    "ipndm4_lof": (
        _lib(es.ipndm_sample, order=4, order_rule="final"),
        lambda D, x, s, e: ref_ipndm(D, x, s, 4, lower_final=True),
        False,
    ),
    "euler_ancestral": (
        _lib(es.euler_ancestral_sample, eta=1.0, s_noise=1.0),
        lambda D, x, s, e: ref_euler_ancestral(D, x, s, e, 1.0, 1.0),
        True,
    ),
    "euler_ancestral_eta0.7": (
        _lib(es.euler_ancestral_sample, eta=0.7, s_noise=1.03),
        lambda D, x, s, e: ref_euler_ancestral(D, x, s, e, 0.7, 1.03),
        True,
    ),
}


def mixture(seed: int = 0, dim: int = 5) -> es.evaluation.GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    return es.evaluation.GaussianMixture(
        torch.randn(4, dim, generator=g, dtype=F64),
        torch.rand(4, generator=g, dtype=F64) * 0.4 + 0.05,
        torch.rand(4, generator=g, dtype=F64) + 0.2,
    )


PATH_SCHEDULES = {
    "karras10": es.karras_sigmas(10),  # ends in 0
    "loglinear8_pos": es.loglinear_sigmas(9, 0.01, 20.0)[:-1],  # uniform in lambda, no step to 0
    "karras7_rho3": es.karras_sigmas(7, 0.05, 30.0, 3.0),
}


@pytest.mark.parametrize("sched", list(PATH_SCHEDULES))
@pytest.mark.parametrize("name", list(CASES))
def test_path_matches_transcription(name: str, sched: str) -> None:
    lib, ref, stochastic = CASES[name]
    sig_t = PATH_SCHEDULES[sched]
    sig = sig_t.tolist()
    n = len(sig) - 1
    gm = mixture()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, generator=g, dtype=F64) * sig[0]
    eps = torch.randn(n, 6, 5, generator=g, dtype=F64)
    infos: list[es.StepInfo] = []
    noise_eps = eps.clone()
    out = lib(gm, x, sig_t, noise_eps, infos.append)
    want = ref(gm, x, sig, eps)
    assert len(infos) == n == len(want)
    # float64; the library's quadrature / rearranged updates vs closed forms, over <= 10 steps of an
    # O(sigma_max) state: ~1e-14 relative to the state scale; 1e-12 leaves margin.
    tol = 1e-12 * sig[0]
    for i, info in enumerate(infos):
        torch.testing.assert_close(info.x_next, want[i], rtol=1e-12, atol=tol, msg=f"{name}, step {i}")
    torch.testing.assert_close(out, want[-1], rtol=1e-12, atol=tol)
    del stochastic


@pytest.mark.parametrize("sampler", [es.dpmpp_2m_sde_sample, es.dpmpp_3m_sde_sample, es.euler_ancestral_sample])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_noise_draws_one_per_step_in_order(sampler: Callable[..., Tensor], eta: float) -> None:
    # From a stream: N draws, one per step after the step's denoiser call (also on the final step to 0, which adds
    # none), so the stream never depends on the settings; the transcription comparison above shows draw i is used
    # at step i. With eta = 0 the sampler adds no noise at all and draws nothing (issue 15).
    sig = es.karras_sigmas(6)
    src = es.PrecomputedNoise(torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(0), dtype=F64))
    seen: list[int] = []
    sampler(mixture(dim=3), torch.randn(2, 3, dtype=F64) * 80, sig, eta=eta, noise=src,
            callback=lambda info: seen.append(src.index))  # fmt: skip
    assert seen == ([1, 2, 3, 4, 5, 6] if eta > 0 else [0] * 6)


# ---- paths with exact solutions --------------------------------------------------------------------------

ODE_SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "euler": es.euler_sample,
    "heun": es.heun_sample,
    "stochastic_no_churn": lambda *a, **k: es.stochastic_sample(*a, s_churn=0.0, **k),
    "generalized_midpoint": lambda *a, **k: es.generalized_sample(*a, alpha=0.5, **k),
    "dpmpp_2m": es.dpmpp_2m_sample,
    "dpmpp_3m": es.dpmpp_3m_sample,
    "dpmpp_2m_sde_eta0": lambda *a, **k: es.dpmpp_2m_sde_sample(*a, eta=0.0, **k),
    "dpmpp_3m_sde_eta0": lambda *a, **k: es.dpmpp_3m_sde_sample(*a, eta=0.0, **k),
    "euler_ancestral_eta0": lambda *a, **k: es.euler_ancestral_sample(*a, eta=0.0, **k),
    "unipc3": es.unipc_sample,
    "deis3": es.deis_sample,
    "lms4": es.lms_sample,
    "ipndm4": es.ipndm_sample,
    "dpm2_noise": es.dpm2_sample,
    "dpm2_data": lambda *a, **k: es.dpm2_sample(*a, form="data", **k),
}


@pytest.mark.parametrize("name", list(ODE_SAMPLERS))
@given(sig=schedules(min_steps=2, max_steps=10), seed=st.integers(0, 100))
@settings(max_examples=10, deadline=None)
def test_point_mass_path_is_exact(name: str, sig: Tensor, seed: int) -> None:
    # D = mu: the ODE is dx/dsigma = (x - mu)/sigma, solved by x(sigma) = mu + (x_0 - mu) sigma / sigma_0, and
    # every consistent solver follows it exactly (the data is a constant; the derivative d is a constant).
    pos = sig[sig > 0]
    assume(bool((pos[1:] < pos[:-1] * 0.999).all()))  # interpolation through near-equal levels is ill-posed
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(3, generator=g, dtype=F64)
    x0 = torch.randn(2, 3, generator=g, dtype=F64) * float(sig[0])
    infos: list[es.StepInfo] = []
    ODE_SAMPLERS[name](
        es.evaluation.PointMass(mu), x0, sig, callback=infos.append, noise=es.PerSampleNoise([seed, seed + 1])
    )
    s = sig.tolist()
    # Round-off of an O(sigma_0) state over <= 10 steps (weights up to ~1/0.001 on the closest allowed
    # levels): 1e-11 sigma_0 absolute.
    tol = 1e-11 * max(1.0, s[0])
    for i, info in enumerate(infos):
        exact = mu + (x0 - mu) * (s[i + 1] / s[0])
        torch.testing.assert_close(info.x_next, exact, rtol=0, atol=tol, msg=f"{name}, step {i}")
        torch.testing.assert_close(info.x, mu + (x0 - mu) * (info.sigma_hat / s[0]), rtol=0, atol=tol)


# ---- error constants at a fixed N ----------------------------------------------------------------------------

MU, S = 0.3, 0.5
GAUSS = es.evaluation.GaussianMixture(torch.full((1, 4), MU, dtype=F64), S)
X0 = torch.randn(16, 4, generator=torch.Generator().manual_seed(0), dtype=F64) * 80.0
CONST_CASES = ["euler", "heun", "dpmpp_2m", "dpmpp_3m", "dpmpp_4m", "deis2", "deis3", "lms4", "ipndm4",
               "dpm2_noise", "dpm2_data"]  # fmt: skip


@pytest.mark.parametrize("name", CONST_CASES)
def test_error_constant_at_fixed_n(name: str) -> None:
    # The order tests (test_multistep.py, test_samplers.py) pin the slope of log error vs log N, not the
    # constant: a coefficient wrong by a factor keeps the order. Here the global error against the exact
    # Gaussian ODE solution at N = 40 (80 -> 0.002, no step to 0) must equal the transcription's error.
    lib, ref, _ = CASES[name]
    sig_t = es.karras_sigmas(40, 0.002, 80.0)[:-1]
    sig = sig_t.tolist()
    exact = es.evaluation.gaussian_ode_solution(X0, sig[0], sig[-1], MU, S)
    got = lib(GAUSS, X0, sig_t, torch.zeros(40, *X0.shape, dtype=F64), None)
    want = ref(GAUSS, X0, sig, torch.zeros(0))[-1]
    err_got = float((got - exact).abs().max())
    err_want = float((want - exact).abs().max())
    # Errors are 1e-9..1e-2 (orders 1..4 at N = 40); round-off ~1e-13 * 80. Equal to 1e-3 relative (or 1e-10
    # absolute for the high orders, whose error is closest to round-off).
    assert err_got == pytest.approx(err_want, rel=1e-3, abs=1e-10), (err_got, err_want)
    assert err_want > 1e-9  # a real truncation error, not round-off
