"""Multistep / low-NFE solvers: convergence orders, independent transcriptions, noise contract, errors.

Orders are measured on Gaussian data N(mu, s^2 I), whose probability-flow ODE has the closed-form
solution :func:`edm_samplers.evaluation.gaussian_ode_solution`, integrating from sigma = 80 to sigma_min = 0.002
(no step to 0, so every step is a true step of the method) with 50..400 steps. The final step to 0 is
checked separately.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from decimal import Decimal, getcontext
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import integrate

import edm_samplers as es
from edm_samplers import (
    PerSampleNoise,
    StepInfo,
    deis_sample,
    dpm2_sample,
    dpmpp_2m_sample,
    dpmpp_2m_sde_sample,
    dpmpp_3m_sample,
    dpmpp_3m_sde_sample,
    euler_ancestral_sample,
    ipndm_sample,
    karras_sigmas,
    lms_sample,
    unipc_sample,
)
from edm_samplers.evaluation import GaussianMixture, PointMass, gaussian_ode_solution
from edm_samplers.solvers import multistep_plan
from strategies import schedules

F64 = torch.float64
CPU = torch.device("cpu")
DETERMINISTIC = [dpmpp_2m_sample, dpmpp_3m_sample, unipc_sample, deis_sample, lms_sample, ipndm_sample, dpm2_sample]
STOCHASTIC = [dpmpp_2m_sde_sample, dpmpp_3m_sde_sample, euler_ancestral_sample]
ALL = DETERMINISTIC + STOCHASTIC


def mixture(dim: int = 5, k: int = 4, seed: int = 0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, dim, generator=g, dtype=F64)
    stds = torch.rand(k, generator=g, dtype=F64) * 0.4 + 0.05
    return GaussianMixture(means, stds, torch.rand(k, generator=g, dtype=F64) + 0.2)


def x_init(batch: int = 6, dim: int = 5, scale: float = 80.0, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed), dtype=F64) * scale


# ---- empirical order of convergence ------------------------------------------------------------------

MU, S = 0.3, 0.5
ORDER_X0 = torch.randn(16, 4, generator=torch.Generator().manual_seed(0), dtype=F64) * 80.0
GAUSS = GaussianMixture(torch.full((1, 4), MU, dtype=F64), S)


def _slope(
    sample: Callable[[torch.Tensor], torch.Tensor],
    sig_of: Callable[[int], torch.Tensor],
    ns: list[int],
    x0: torch.Tensor = ORDER_X0,
) -> float:
    errs = []
    for n in ns:
        sig = sig_of(n)
        out = sample(sig)
        exact = gaussian_ode_solution(x0, float(sig[0]), float(sig[-1]), MU, S)
        errs.append(float((out - exact).abs().max()))
    return float(-np.polyfit(np.log(ns), np.log(errs), 1)[0])


ORDER_CASES: list[tuple[str, Any, dict[str, Any], float]] = [
    ("dpmpp_2m", dpmpp_2m_sample, {"order_rule": "full"}, 2.0),
    ("dpmpp_3m", dpmpp_3m_sample, {"order_rule": "full"}, 3.0),
    ("dpmpp_4m", dpmpp_3m_sample, {"order": 4, "order_rule": "full"}, 4.0),
    ("dpmpp_3m_sde_eta0", dpmpp_3m_sde_sample, {"eta": 0.0, "order_rule": "full"}, 3.0),
    ("unipc1", unipc_sample, {"order": 1, "order_rule": "full"}, 2.0),  # UniC raises the predictor's order by one
    ("unipc2", unipc_sample, {"order": 2, "order_rule": "full"}, 3.0),
    ("unipc3", unipc_sample, {"order": 3, "order_rule": "full"}, 4.0),
    ("deis2", deis_sample, {"order": 2, "order_rule": "full"}, 2.0),
    ("deis3", deis_sample, {"order": 3, "order_rule": "full"}, 3.0),
    ("lms3", lms_sample, {"order": 3, "order_rule": "full"}, 3.0),
    ("lms4", lms_sample, {"order": 4, "order_rule": "full"}, 4.0),
    (
        "ipndm4_karras",
        ipndm_sample,
        {"order": 4, "order_rule": "full"},
        2.0,
    ),  # fixed equal-step weights on a non-uniform grid
    ("dpm2_noise", dpm2_sample, {"form": "noise"}, 2.0),
    ("dpm2_data", dpm2_sample, {"form": "data"}, 2.0),
]


@pytest.mark.parametrize(("name", "sampler", "kw", "order"), ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_order_of_convergence_up_to_400_steps(name: str, sampler: Any, kw: dict[str, Any], order: float) -> None:
    def karras(n: int) -> torch.Tensor:
        return karras_sigmas(n, 0.002, 80.0)[:-1]

    slope = _slope(lambda sig: sampler(GAUSS, ORDER_X0, sig, **kw), karras, [50, 100, 200, 400])
    # diffrax-style acceptance; measured slopes are within 0.1 of the order (float64 coefficients keep the
    # 400-step errors, down to ~1e-8 for order 4, far above round-off). 0.25 absorbs the pre-asymptotic
    # curvature at 50 steps.
    assert abs(slope - order) < 0.25, f"{name}: slope {slope:.3f}, expected {order}"


@pytest.mark.parametrize("order", [2, 3, 4])
def test_ipndm_has_its_order_on_equal_steps(order: int) -> None:
    # iPNDM's weights are the equal-step Adams-Bashforth tables: full order on a grid uniform in sigma.
    x0 = ORDER_X0 / 16.0  # start at sigma = 5

    def uniform(n: int) -> torch.Tensor:
        return torch.linspace(5.0, 0.1, n, dtype=F64)

    slope = _slope(
        lambda sig: ipndm_sample(GAUSS, x0, sig, order=order, order_rule="full"), uniform, [200, 400, 800], x0
    )
    assert abs(slope - order) < 0.35, f"slope {slope:.3f}"  # measured 2.0 / 3.3 / 3.9: start-up transient


def test_final_step_to_zero() -> None:
    gm = mixture()
    x = x_init()
    sig = karras_sigmas(8)
    for sampler in [dpmpp_2m_sample, dpmpp_3m_sample, unipc_sample, deis_sample, dpm2_sample, *STOCHASTIC]:
        infos: list[StepInfo] = []
        kw: dict[str, Any] = {"noise": PerSampleNoise(range(6))} if sampler in STOCHASTIC else {}
        out = sampler(gm, x, sig, callback=infos.append, **kw)
        # The step to 0 is Euler written a x + b D with a = 0, b = 1: D of the last evaluation, bit for bit.
        assert torch.equal(out, infos[-1].denoised), sampler.__name__
        assert torch.equal(infos[-1].x_next, out)
    # LMS / iPNDM integrate to 0 at full order: on the Gaussian their result tends to the exact x(0).
    for sampler, order in [(lms_sample, 4), (ipndm_sample, 4)]:
        errs = []
        for n in (100, 200):
            sig = karras_sigmas(n, 0.002, 80.0)
            out = sampler(GAUSS, ORDER_X0, sig, order=order)
            errs.append(float((out - gaussian_ode_solution(ORDER_X0, 80.0, 0.0, MU, S)).abs().max()))
        assert errs[1] < errs[0] / 3  # at least second order including the final step


@pytest.mark.parametrize("sampler", ALL)
@given(sig=schedules(min_steps=1, max_steps=10), seed=st.integers(0, 100))
@settings(max_examples=15, deadline=None)
def test_point_mass_is_reached(sampler: Any, sig: torch.Tensor, seed: int) -> None:
    # Interpolation through levels a few ulps apart is ill-conditioned for any multistep method (weights
    # ~ 1 / gap); keep schedules whose consecutive levels differ by at least 0.1 %.
    pos = sig[sig > 0]
    assume(bool((pos[1:] < pos[:-1] * 0.999).all()))
    mu = torch.randn(3, generator=torch.Generator().manual_seed(seed), dtype=F64)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(seed + 1), dtype=F64) * float(sig[0])
    out = sampler(PointMass(mu), x, sig, noise=PerSampleNoise([seed, seed + 1]))
    # With D = mu every step is consistent (weights sum to 1 - a), so the result is mu up to round-off of
    # the O(sigma_max) state (at most e^4.5 ~ 90 here): 1e-12 absolute leaves ample margin.
    torch.testing.assert_close(out, mu.expand_as(out), rtol=0, atol=1e-12 * max(1.0, float(sig[0])))


# ---- independent transcriptions ------------------------------------------------------------------------


def _batch_sigma(x: torch.Tensor, s: float) -> torch.Tensor:
    return torch.full((x.shape[0],), s, dtype=x.dtype)


def ref_dpmpp_2m(D: Any, x: torch.Tensor, sig: Sequence[float]) -> torch.Tensor:
    """DPM-Solver++(2M), Lu et al. 2022b Algorithm 2 (alpha = 1, sigma_t = sigma in EDM's VE form)."""
    lam = [-math.log(s) if s > 0 else math.inf for s in sig]
    old = None
    for i in range(len(sig) - 1):
        d = D(x, _batch_sigma(x, sig[i]))
        if sig[i + 1] == 0:
            x = d
        else:
            h = lam[i + 1] - lam[i]
            if old is None:
                dd = d
            else:
                r = (lam[i] - lam[i - 1]) / h
                dd = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * old
            x = (sig[i + 1] / sig[i]) * x - math.expm1(-h) * dd
        old = d
    return x


def ref_ipndm(D: Any, x: torch.Tensor, sig: Sequence[float], order: int) -> torch.Tensor:
    """iPNDM: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) * AB_k(d_i, d_{i-1}, ...), equal-step AB tables."""
    tables = {1: [1], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}
    ds: list[torch.Tensor] = []
    for i in range(len(sig) - 1):
        ds.insert(0, (x - D(x, _batch_sigma(x, sig[i]))) / sig[i])
        k = min(order, i + 1)
        x = x + (sig[i + 1] - sig[i]) * sum(c * d for c, d in zip(tables[k], ds[:k], strict=False))
    return x


def _moments(h: float, n: int) -> list[float]:
    """E_k = h^-k int_0^h e^{tau - h} tau^k dtau, k = 0..n (UniPC's k! h phi_{k+1}(h) in data-prediction form).

    Integration by parts gives int e^{tau-h} tau^k = h^k - k int e^{tau-h} tau^{k-1}.
    """
    m = [-math.expm1(-h)]
    for k in range(1, n + 1):
        m.append(h**k - k * m[-1])
    return [m[k] / h**k for k in range(n + 1)]


def ref_unipc(D: Any, x: torch.Tensor, sig: Sequence[float], order: int) -> torch.Tensor:
    """UniPC-p with B(h) = 1 - e^{-h} (bh2), data prediction (Zhao et al. 2023, Alg. 2 / App. with x0-pred).

    UniP: x_t = (sigma_t/sigma_s) x_s + (1 - e^{-h}) m_s + B(h) sum_m a_m D_m / r_m, R a = g / B(h)
    with R_{km} = r_m^{k-1}, g_k = E_k (moments), D_m = m_{s_m} - m_s; for a single difference rho = 1/2.
    UniC: the same with the new output (r = 1) appended, and rho = 1/2 when it is the only difference.
    """
    n = len(sig) - 1
    lam = [-math.log(s) if s > 0 else math.inf for s in sig]
    ms: list[torch.Tensor] = []
    x_prev = x
    p_prev = 0

    def update(x_s: torch.Tensor, i: int, rs: list[float], dms: list[torch.Tensor], single: bool) -> torch.Tensor:
        h = lam[i + 1] - lam[i]
        big_b = -math.expm1(-h)
        out = (sig[i + 1] / sig[i]) * x_s + big_b * ms[-1 - (len(ms) - 1 - i)]
        if not rs:
            return out
        if single:
            a = [0.5]
        else:
            e = _moments(h, len(rs))
            g = [e[k] / big_b for k in range(1, len(rs) + 1)]
            big_r = [[r ** (k - 1) for r in rs] for k in range(1, len(rs) + 1)]
            a = list(np.linalg.solve(np.array(big_r), np.array(g)))
        return out + big_b * sum(am * dm / r for am, dm, r in zip(a, dms, rs, strict=True))

    for i in range(n):
        m_new = D(x, _batch_sigma(x, sig[i]))
        ms.append(m_new)
        if i > 0:  # UniC-p_prev on step i-1, with the new output at r = 1
            h = lam[i] - lam[i - 1]
            rs = [(lam[i - 1 - m] - lam[i - 1]) / h for m in range(1, p_prev)] + [1.0]
            dms = [ms[i - 1 - m] - ms[i - 1] for m in range(1, p_prev)] + [m_new - ms[i - 1]]
            x = update(x_prev, i - 1, rs, dms, single=(p_prev == 1))
        if sig[i + 1] == 0:
            return m_new
        p = min(order, i + 1)
        h = lam[i + 1] - lam[i]
        rs = [(lam[i - m] - lam[i]) / h for m in range(1, p)]
        dms = [ms[i - m] - ms[i] for m in range(1, p)]
        x_prev, p_prev = x, p
        x = update(x, i, rs, dms, single=(p == 2))
    return x


def ref_exact_3m(D: Any, x: torch.Tensor, sig: Sequence[float], order: int = 3) -> torch.Tensor:
    """Exact exponential integrator: b_j = int e^{-(h-tau)} L_j(tau) dtau by scipy's adaptive quad."""
    lam = [-math.log(s) if s > 0 else math.inf for s in sig]
    ds: list[torch.Tensor] = []
    for i in range(len(sig) - 1):
        ds.insert(0, D(x, _batch_sigma(x, sig[i])))
        if sig[i + 1] == 0:
            return ds[0]
        k = min(order, i + 1)
        h = lam[i + 1] - lam[i]
        nodes = [lam[i - j] - lam[i] for j in range(k)]

        def basis(t: float, j: int, nodes: list[float] = nodes) -> float:
            return math.prod((t - nodes[m]) / (nodes[j] - nodes[m]) for m in range(len(nodes)) if m != j)

        w = [
            integrate.quad(lambda t, j=j, h=h: math.exp(t - h) * basis(t, j), 0, h, epsabs=0, epsrel=1e-13)[0]
            for j in range(k)
        ]
        x = (sig[i + 1] / sig[i]) * x + sum(wj * d for wj, d in zip(w, ds, strict=False))
    return x


def ref_lms(D: Any, x: torch.Tensor, sig: Sequence[float], order: int) -> torch.Tensor:
    """k-diffusion-style LMS: c_j = int_{sigma_i}^{sigma_{i+1}} L_j(s) ds by scipy's quad."""
    ds: list[torch.Tensor] = []
    for i in range(len(sig) - 1):
        ds.insert(0, (x - D(x, _batch_sigma(x, sig[i]))) / sig[i])
        k = min(order, i + 1)
        nodes = [sig[i - j] for j in range(k)]

        def basis(t: float, j: int, nodes: list[float] = nodes) -> float:
            return math.prod((t - nodes[m]) / (nodes[j] - nodes[m]) for m in range(len(nodes)) if m != j)

        c = [integrate.quad(basis, sig[i], sig[i + 1], args=(j,), epsabs=0, epsrel=1e-13)[0] for j in range(k)]
        x = x + sum(cj * d for cj, d in zip(c, ds, strict=False))
    return x


REF_SCHEDULES = {
    "karras12": karras_sigmas(12),
    "loglinear9": es.loglinear_sigmas(9),
    "karras15_pos": karras_sigmas(15)[:-1],
}


@pytest.mark.parametrize("sched", list(REF_SCHEDULES))
def test_against_transcriptions(sched: str) -> None:
    gm = mixture()
    sig_t = REF_SCHEDULES[sched]
    sig = sig_t.tolist()
    x = x_init() * float(sig[0]) / 80.0
    pairs: list[tuple[str, torch.Tensor, torch.Tensor]] = [
        ("2m", dpmpp_2m_sample(gm, x, sig_t, order_rule="full"), ref_dpmpp_2m(gm, x, sig)),
        ("3m", dpmpp_3m_sample(gm, x, sig_t, order_rule="full"), ref_exact_3m(gm, x, sig)),
    ]
    for o in (1, 2, 3, 4):
        pairs.append((f"ipndm{o}", ipndm_sample(gm, x, sig_t, order=o, order_rule="full"), ref_ipndm(gm, x, sig, o)))
        pairs.append((f"lms{o}", lms_sample(gm, x, sig_t, order=o, order_rule="full"), ref_lms(gm, x, sig, o)))
    for o in (1, 2, 3):
        pairs.append((f"unipc{o}", unipc_sample(gm, x, sig_t, order=o, order_rule="full"), ref_unipc(gm, x, sig, o)))
    for name, got, ref in pairs:
        # float64 throughout; quadrature vs. scipy.quad (rel 1e-13) and algebraically rearranged updates over
        # <= 15 steps of an O(sigma_max) state: agreement to ~1e-12 relative to the state scale.
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12 * float(sig[0]), msg=name)


def test_dpmpp_2m_and_unipc_match_diffusers() -> None:
    diffusers = pytest.importorskip("diffusers")  # a test extra; CI installs it

    gm = mixture()
    sig = karras_sigmas(16)
    x = x_init()
    for sched, ours in [
        (
            diffusers.DPMSolverMultistepScheduler(solver_order=2, prediction_type="sample"),
            dpmpp_2m_sample(gm, x, sig, order_rule="full"),
        ),
        (
            diffusers.UniPCMultistepScheduler(solver_order=2, solver_type="bh2", prediction_type="sample"),
            unipc_sample(gm, x, sig, order=2, order_rule="full"),
        ),
    ]:
        n = sig.numel() - 1
        sched.set_timesteps(n)
        sched.sigmas = sig.clone()  # drive diffusers through exactly our noise levels
        sched.timesteps = torch.arange(n - 1, -1, -1) * 10 + 1
        sample = x / math.sqrt(1 + float(sig[0]) ** 2)  # diffusers' VP-scaled state x_vp = x / sqrt(1 + sigma^2)
        for i, t in enumerate(sched.timesteps):
            s = float(sig[i])
            sample = sched.step(gm(sample * math.sqrt(1 + s**2), _batch_sigma(x, s)), t, sample).prev_sample
        # Same algorithm; diffusers computes part of its step scalars (lambda, h) in float32, which leaves
        # relative differences of ~4e-7 (measured); 1e-5 still separates any formula difference (>1e-3 here).
        torch.testing.assert_close(ours, sample, rtol=1e-5, atol=1e-5)


# ---- coefficients, noise, contract -----------------------------------------------------------------------


def test_plans_are_consistent() -> None:
    sig = karras_sigmas(20)
    s = sig.numpy()
    for method, order in [("dpmpp_3m", 3), ("dpmpp_3m", 4), ("unipc", 3)]:
        p = multistep_plan(sig, method, order=order)  # type: ignore[arg-type]
        # Consistency: with D constant the exact step is a x + (1 - a) D, so the weights sum to 1 - a.
        np.testing.assert_allclose(p.b.sum(1) + p.e, 1 - p.a, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(p.corr.sum(1), 0.0, atol=1e-15)  # corrector only redistributes weight
        assert p.nb[:4] == tuple(min(order, i + 1) for i in range(4)) and p.nb[-1] == 1
    for method in ("lms", "ipndm", "deis"):
        p = multistep_plan(sig, method, order=3)  # type: ignore[arg-type]
        np.testing.assert_allclose(p.b[:-1].sum(1), s[1:-1] - s[:-2], rtol=1e-13)


def test_sde_with_eta_zero_is_the_ode_and_draws_nothing() -> None:
    gm = mixture()
    sig = karras_sigmas(7)
    x = x_init()

    class Counting:
        def __init__(self) -> None:
            self.calls = 0

        def randn(self, shape: Sequence[int], *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
            self.calls += 1
            return torch.randn(tuple(shape), dtype=dtype, device=device)

    for sde, ode in [(dpmpp_2m_sde_sample, dpmpp_2m_sample), (dpmpp_3m_sde_sample, dpmpp_3m_sample)]:
        c = Counting()
        torch.testing.assert_close(sde(gm, x, sig, eta=0.0, noise=c), ode(gm, x, sig), rtol=1e-13, atol=1e-12)
        assert c.calls == 0  # no step adds noise: a deterministic program, nothing drawn (issue 15)
        c = Counting()
        sde(gm, x, sig, eta=0.5, noise=c)
        assert c.calls == 7  # a stream: one draw per step, also on the last step, which adds none
    c = Counting()
    euler_ancestral_sample(gm, x, sig, eta=0.0, s_noise=0.0, noise=c)
    assert c.calls == 0
    torch.testing.assert_close(
        euler_ancestral_sample(gm, x, sig, eta=0.0), es.euler_sample(gm, x, sig), rtol=1e-13, atol=1e-12
    )


@pytest.mark.parametrize("sampler", STOCHASTIC)
@given(seeds=st.lists(st.integers(0, 2**31), min_size=2, max_size=4, unique=True), pick=st.integers(0, 3))
@settings(max_examples=10, deadline=None)
def test_batch_invariance_per_seed(sampler: Any, seeds: list[int], pick: int) -> None:
    pick %= len(seeds)
    gm = mixture()
    sig = karras_sigmas(6)
    x = PerSampleNoise(seeds).randn((len(seeds), 5), dtype=F64, device=CPU) * 80
    full = sampler(gm, x, sig, noise=PerSampleNoise(seeds))
    one = sampler(gm, x[pick : pick + 1], sig, noise=PerSampleNoise([seeds[pick]]))
    # Row-wise denoiser and per-seed noise: the row does not depend on the batch (up to BLAS reassociation).
    torch.testing.assert_close(full[pick : pick + 1], one, rtol=1e-13, atol=1e-12)


def test_nfe_and_float32() -> None:
    calls = 0

    def den(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        assert sigma.shape == (x.shape[0],) and sigma.dtype == x.dtype
        return torch.zeros_like(x)

    sig = karras_sigmas(9)
    for sampler, nfe in [(s, 9) for s in ALL if s is not dpm2_sample] + [(dpm2_sample, 17)]:
        calls = 0
        out = sampler(den, torch.randn(2, 3), sig)
        assert calls == nfe and out.dtype == torch.float32, sampler.__name__


def test_float32_close_to_float64() -> None:
    gm = mixture()
    sig = karras_sigmas(10)
    x = x_init()
    for sampler in DETERMINISTIC:
        ref = sampler(gm, x, sig)
        got = sampler(gm, x.float(), sig)
        # float32 state started at sigma = 80: errors of order 80 * 1e-7 per step over <= 19 NFE.
        torch.testing.assert_close(got.double(), ref, rtol=0, atol=5e-4, msg=sampler.__name__)


def test_gradients_flow() -> None:
    gm = mixture()
    x = x_init().requires_grad_(True)
    dpmpp_3m_sample(gm, x, karras_sigmas(5)).sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


@pytest.mark.parametrize("sampler", ALL)
def test_bad_inputs(sampler: Any) -> None:
    den = PointMass(torch.zeros(3))
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sampler(den, x, torch.tensor([2.0, 1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="non-increasing"):
        sampler(den, x, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(TypeError, match="denoiser must be callable"):
        sampler(3, x, karras_sigmas(3))
    with pytest.raises(ValueError, match=r"denoiser returned shape \(2, 1\)"):
        sampler(lambda x, s: x[:, :1], x, karras_sigmas(3))
    with pytest.raises(TypeError, match="noise must be a NoiseSource"):
        sampler(den, x, karras_sigmas(3), noise="seed")
    with pytest.raises(TypeError, match="callback must be callable"):
        sampler(den, x, karras_sigmas(3), callback=1)


def test_bad_knobs() -> None:
    den = PointMass(torch.zeros(3))
    x = torch.randn(2, 3)
    sig = karras_sigmas(3)
    with pytest.raises(ValueError, match="order must be between 1 and 3"):
        unipc_sample(den, x, sig, order=4)
    with pytest.raises(ValueError, match="order must be >= 1"):
        lms_sample(den, x, sig, order=0)
    with pytest.raises(TypeError, match="order must be an int"):
        deis_sample(den, x, sig, order=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eta must be >= 0"):
        dpmpp_2m_sde_sample(den, x, sig, eta=-1.0)
    with pytest.raises(ValueError, match="s_noise must be finite"):
        euler_ancestral_sample(den, x, sig, s_noise=float("nan"))
    with pytest.raises(ValueError, match="form must be 'noise'"):
        dpm2_sample(den, x, sig, form="eps")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sampler must be one of"):
        multistep_plan(sig, "rk4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one seed per batch row"):
        dpmpp_2m_sde_sample(den, x, sig, noise=PerSampleNoise([1]))


def test_nan_is_reported() -> None:
    def bad(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        out[1] = float("nan")
        return out

    for sampler in ALL:
        with pytest.raises(FloatingPointError, match="in 1 of 2 samples"):
            sampler(bad, torch.randn(2, 3), karras_sigmas(4))


def test_order_rule_final_option() -> None:
    # order_rule="final" (diffusers' lower_order_final): the last steps use at most as many past outputs as
    # steps remain.
    sig = karras_sigmas(6)
    full = multistep_plan(sig, "dpmpp_3m", order=3, order_rule="full")
    low = multistep_plan(sig, "dpmpp_3m", order=3, order_rule="final")
    assert full.nb == (1, 2, 3, 3, 3, 1) and low.nb == (1, 2, 3, 3, 2, 1)
    gm, x = mixture(), x_init()
    out = dpmpp_3m_sample(gm, x, karras_sigmas(6), order_rule="final")
    full_out = dpmpp_3m_sample(gm, x, karras_sigmas(6), order_rule="full")
    assert torch.isfinite(out).all() and not torch.equal(out, full_out)
    with pytest.raises(ValueError, match="order_rule must be 'auto', 'full' or 'final', got 1"):
        dpmpp_3m_sample(gm, x, karras_sigmas(6), order_rule=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("sampler", ALL)
def test_devices_cond_batch_and_range_are_named(sampler: Any) -> None:
    den = PointMass(torch.zeros(3))
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="x is a meta tensor"):
        sampler(den, x.to("meta"), karras_sigmas(3))
    with pytest.raises(ValueError, match="sigmas is a meta tensor"):
        sampler(den, x, karras_sigmas(3).to("meta"))
    with pytest.raises(ValueError, match="denoiser returned a tensor on meta for an input on cpu"):
        sampler(lambda z, s: z.to("meta"), x, karras_sigmas(3))
    with pytest.raises(ValueError, match=r"cond\['y'\] has shape \(5,\) but x has batch size 2"):
        sampler(lambda z, s, y: z, x, karras_sigmas(3), cond={"y": torch.ones(5)})
    # Python floats raised OverflowError / ZeroDivisionError here (euler_ancestral) on squared extreme levels.
    for sig in ([1e300, 1e200, 0.0], [1e-300, 1e-301, 0.0], [1.0, 1e-300, 0.0]):
        with pytest.raises(ValueError, match=r"sigmas\[\d\] = 1e[-+]\d+ is out of the range"):
            sampler(den, x, sig, dtype=F64)


@pytest.mark.parametrize("eta", [0.5, 1.0, 3.0])
def test_ancestral_coefficients_at_any_scale(eta: float) -> None:
    # k-diffusion's get_ancestral_step, transcribed in 40-digit decimals: sigma_up = min(sn, eta sqrt(sn^2 (sc^2 -
    # sn^2) / sc^2)), sigma_down = sqrt(sn^2 - sigma_up^2). The plan computes it in float64 ratios, so it must
    # agree to a few ulp (rtol 1e-14) at any scale: 1e-300 and 1e300 levels squared over/underflowed before.
    getcontext().prec = 40
    s = karras_sigmas(6).numpy()
    ref_a, ref_noise = [], []
    for sc_f, sn_f in itertools.pairwise(s):
        sc, sn, e = Decimal(float(sc_f)), Decimal(float(sn_f)), Decimal(eta)
        up = min(sn, e * (sn**2 * (sc**2 - sn**2) / sc**2).sqrt())
        down = (sn**2 - up**2).sqrt()
        ref_a.append(float(down / sc))
        ref_noise.append(float(up))
    for scale in (1.0, 1e-300, 1e300 / 80):
        plan = multistep_plan(torch.from_numpy(s * scale), "euler_ancestral", eta=eta)
        np.testing.assert_allclose(plan.a, ref_a, rtol=1e-14, atol=0)
        np.testing.assert_allclose(plan.b[:, 0], 1 - np.array(ref_a), rtol=1e-14, atol=0)
        np.testing.assert_allclose(plan.noise / scale, ref_noise, rtol=1e-14, atol=0)


def test_multistep_plan_checks_its_arguments() -> None:
    sig = karras_sigmas(3)
    with pytest.raises(ValueError, match="eta must be >= 0"):  # was math.sqrt's "math domain error"
        multistep_plan(sig, "dpmpp_2m_sde", eta=-1.0)
    with pytest.raises(TypeError, match="eta must be a real number"):
        multistep_plan(sig, "dpmpp_2m_sde", eta="1")
    with pytest.raises(TypeError, match=r"dpmpp_2m_sample got unknown option.*'eta'"):  # 2M has no eta (issue 12)
        multistep_plan(sig, "dpmpp_2m", eta=0.5)
    with pytest.raises(TypeError, match="order must be an int"):
        multistep_plan(sig, "lms", order=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigmas is a meta tensor"):
        multistep_plan(sig.to("meta"), "lms")
