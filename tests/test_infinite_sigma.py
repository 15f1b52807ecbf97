"""Schedules that start at sigma = inf (pure noise; issue 13, item 2).

The convention: with ``sigmas[0] = inf`` the state x is the unit-variance noise n (the limit of x / sigma), and the
denoiser is called at sigma = inf with that n. Every registry sampler then takes the exact limit of its first step
as sigma_0 -> inf with x_0 = sigma_0 n, or, where that limit cannot be computed from evaluations of D (Heun's
trapezoid diverges, DPM-Solver-2's noise form needs a derivative of D at infinity, Euler in t of the generalized
sampler diverges or ignores D), the first-order (DDIM) limit x_1 = D(n; inf) + sigma_1 n.

The tests compare the run from inf with runs from large finite sigma_0 (x_0 = sigma_0 n, the same noise), in
float64 with the exact denoiser of a Gaussian mixture, at the convergence rate each sampler's limit has:

- O(1 / sigma_0): the first step's coefficients (ratio sigma_1 / sigma_0) and D(sigma_0 n; sigma_0) - D(n; inf)
  (responsibilities and shrinkage of the mixture move by O(1 / sigma_0));
- O(1 / sqrt(sigma_0)): DPM-Solver++(2S) evaluates at the midpoint sqrt(sigma_0 sigma_1);
- O(1 / h_0), h_0 = ln(sigma_0 / sigma_1): multistep solvers whose polynomials live in lambda = -ln sigma weigh the
  output at lambda_0 by O(1 / h_0) in the next steps; the limit drops that node.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import edm_samplers as es
from edm_samplers import GraphedSampler, PerSampleNoise, PrecomputedNoise, StepInfo, count_nfe, karras_sigmas
from edm_samplers.adapters import ContinuousDenoiser, DDPMDenoiser
from edm_samplers.evaluation import GaussianMixture, PointMass, gaussian_ode_solution
from edm_samplers.solvers import registry
from edm_samplers.solvers.api import sampler_function
from edm_samplers.solvers.multistep import multistep_plan
from edm_samplers.solvers.plans import PLANS
from strategies import schedules
from test_graph_cpu_capture import FakeCuda, _replays_match_eager, fake_cuda, mixture  # noqa: F401  (fixture)

# The CFG++ samplers take a guided denoiser: their start from inf is tested in test_cfgpp.py.
PLAIN = sorted(n for n in registry.names() if not registry.get(n).guided)

INF = math.inf
F64 = torch.float64
BASE = [5.0, 2.0, 1.0, 0.5, 0.2, 0.05, 0.0]  # what follows sigma_0 (strictly decreasing, ends in 0)
B = 4


def gm() -> GaussianMixture:
    g = torch.Generator().manual_seed(0)
    return GaussianMixture(torch.randn(3, 4, generator=g, dtype=F64), torch.tensor([0.3, 0.5, 0.2], dtype=F64))


def unit(seed: int = 1, shape: tuple[int, ...] = (B, 4)) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def run(name: str, x: Tensor, sigmas: list[float], den: Any = None, **knobs: Any) -> Tensor:
    fn = sampler_function(name)
    out: Tensor = fn(gm() if den is None else den, x, sigmas, noise=PerSampleNoise(range(x.shape[0])), dtype=F64,
                     **knobs)  # fmt: skip
    return out


def err_from(name: str, sigma0: float, **knobs: Any) -> float:
    """|run from inf - run from sigma0 with x0 = sigma0 n|, the same n and noise seeds."""
    n = unit()
    a = run(name, n, [INF, *BASE], **knobs)
    b = run(name, n * sigma0, [sigma0, *BASE], **knobs)
    return float((a - b).abs().max())


# ---- the limit, sampler by sampler --------------------------------------------------------------------------

RATE_1 = [  # first step converges like 1 / sigma_0, later steps do not depend on sigma_0
    ("euler", {}),
    ("lms", {}),
    ("lms", {"order": 2, "order_rule": "full"}),
    ("ipndm", {}),  # d_0 = n stays in its history with the fixed weight -1/2 (then 5/12, ...)
    ("ipndm", {"order": 3, "order_rule": "full"}),
    ("euler_ancestral", {}),
    ("euler_ancestral", {"eta": 0.0}),
    ("euler_ancestral", {"eta": 0.5, "s_noise": 1.01}),
    ("stochastic", {"solver": "euler", "s_churn": 5.0}),  # churn at inf re-mixes n with eps
    ("stochastic", {"solver": "euler", "s_churn": 5.0, "s_noise": 1.007}),
    ("stochastic", {"solver": "euler", "s_churn": 5.0, "s_tmax": 3.0}),  # no churn at sigma_0
    ("generalized", {"solver": "euler", "s_churn": 3.0}),
    ("generalized", {"solver": "euler", "schedule": "linear"}),
]


@pytest.mark.parametrize(("name", "knobs"), RATE_1, ids=[f"{n}-{k}" for n, k in RATE_1])
def test_start_from_inf_is_the_limit_at_rate_one_over_sigma0(name: str, knobs: dict[str, Any]) -> None:
    e4, e6 = err_from(name, 1e4, **knobs), err_from(name, 1e6, **knobs)
    # The difference is C / sigma_0 + O(1 / sigma_0^2) with C = O(1) here (|mu|, |n| ~ 1, sigma_1 = 5): a bound of
    # 1e-3 at 1e4 with the ratio 100 between 1e4 and 1e6 (to 20 %: the O(1 / sigma_0^2) term and round-off of
    # x_0 = 1e6 n, ~1e-10) shows convergence to the run from inf; a wrong limit leaves an O(1) difference.
    assert e4 < 1e-3
    assert 80 < e4 / e6 < 125


@pytest.mark.parametrize("form", ["data"])
def test_dpm2_data_form_converges_like_one_over_sqrt_sigma0(form: str) -> None:
    # DPM-Solver++(2S) evaluates D at the midpoint sigma_m = sqrt(sigma_0 sigma_1): D_m - D(n; inf) = O(1 / sigma_m).
    e4, e8 = err_from("dpm2", 1e4, form=form), err_from("dpm2", 1e8, form=form)
    assert e4 < 1e-2 and 80 < e4 / e8 < 125


RATE_LOG = [  # polynomials in lambda = -ln sigma: the node at lambda_0 has weight O(1 / h_0) in the next steps
    ("dpmpp_2m", {}),
    ("dpmpp_2m", {"order_rule": "full"}),
    ("dpmpp_3m", {"order_rule": "full"}),
    ("dpmpp_3m", {"order": 4, "order_rule": "full"}),
    ("dpmpp_2m_sde", {}),
    ("dpmpp_2m_sde", {"eta": 0.5}),
    ("dpmpp_2m_sde", {"eta": 0.0}),
    ("dpmpp_3m_sde", {"order_rule": "full"}),
    ("deis", {}),
    ("deis", {"order": 3, "order_rule": "full"}),
    ("unipc", {}),
    ("unipc", {"order": 3, "order_rule": "full"}),
    ("unipc", {"order": 2, "order_rule": "full"}),
]


def gaussian() -> GaussianMixture:
    """Data N(mu, 0.5^2 I): a denoiser linear in x, so a sampler's output is linear in its coefficients."""
    return GaussianMixture(torch.tensor([[0.3, -0.5, 1.0, 0.2]], dtype=F64), 0.5)


@pytest.mark.parametrize(("name", "knobs"), RATE_LOG, ids=[f"{n}-{k}" for n, k in RATE_LOG])
def test_start_from_inf_is_the_limit_at_rate_one_over_log_sigma0(name: str, knobs: dict[str, Any]) -> None:
    # sigma_0 = sigma_1 e^{h_0}: the plan's coefficients are their limits + O(1 / h_0) (the weights of D_0, or d_0,
    # in the next steps), so with a linear denoiser the difference is e(h) = C / h + C2 / h^2 + ...: e * h settles,
    # its increments over h -> 2h -> 4h shrink like 1/2 (<= 0.65 allowing for the 1 / h^3 terms). Against another
    # limit, e would tend to a constant and e * h would grow: increments doubling. h_0 <= 100 keeps sigma_0 <= 1.3e44
    # in float64's range for squares; DEIS adds d = (x - D) / sigma to x_0 = sigma_0 n and loses sigma_0 * 1e-16
    # to cancellation, so it stops at h_0 = 16 (sigma_0 = 4e7). (With the mixture, the larger differences at these
    # h_0 are beyond the denoiser's linear range for the 3M SDE: test_multistep_plans_converge covers its plan.)
    hs = (4.0, 8.0, 16.0) if name == "deis" else (25.0, 50.0, 100.0)
    n = unit()
    at_inf = run(name, n, [INF, *BASE], den=gaussian(), **knobs)
    c = []
    for h in hs:
        s0 = BASE[0] * math.exp(h)
        c.append(float((run(name, n * s0, [s0, *BASE], den=gaussian(), **knobs) - at_inf).abs().max()) * h)
    assert c[0] / hs[0] < 0.1
    assert abs(c[2] - c[1]) <= 0.65 * abs(c[1] - c[0]) + 1e-3 * c[2]


@pytest.mark.parametrize("name", sorted(PLANS))
def test_multistep_plans_converge(name: str) -> None:
    # From step 1 on, every coefficient of the plan from inf is the limit of the plan from sigma_0 = sigma_1 e^{h}:
    # the distance shrinks like 1 / h (halves, to 10 %, from h = 40 to 80; or is 0 already). Step 0 is written in
    # terms of n there (weight sigma_1 on x = n, not sigma_1 / sigma_0 on x_0): the sample tests cover it.
    knobs = {"order_rule": "full"} if "order_rule" in registry.get(name).knob_names else {}
    at_inf = multistep_plan([INF, *BASE], name, **knobs)
    fields = ("a", "e", "b", "corr", "noise")
    dist = []
    for h in (40.0, 80.0):
        p = multistep_plan([BASE[0] * math.exp(h), *BASE], name, **knobs)
        assert p.nb[1:] == at_inf.nb[1:] and p.ncorr == at_inf.ncorr  # the same columns are applied
        dist.append(max(float(np.abs(getattr(p, f)[1:] - getattr(at_inf, f)[1:]).max()) for f in fields))
    assert dist[0] < 0.05 and (dist[1] < 1e-12 or 0.45 < dist[1] / dist[0] < 0.55)


# ---- samplers whose first step has no computable limit: the first-order step, then the usual steps -----------


def first_order_then(
    name: str, n: Tensor, sig: list[float], draws: Tensor | None, keep: float = 1.0, scale: float = 0.0, **knobs: Any
) -> Tensor:
    """The reference: x_1 = D(n_hat; inf) + sigma_1 n_hat by hand (n_hat = keep n + scale eps_0), then the sampler
    on sigmas[1:] from x_1 with the remaining draws."""
    den = gm()
    n_hat = n if draws is None else keep * n + scale * draws[0]
    x1 = den(n_hat, torch.full((n.shape[0],), INF, dtype=F64)) + sig[1] * n_hat
    fn = sampler_function(name)
    rest = None if draws is None else PrecomputedNoise(draws[1:])
    out: Tensor = fn(den, x1, sig[1:], noise=rest, dtype=F64, **knobs)
    return out


def churn_keep_scale(s_churn: float, steps: int, s_noise: float = 1.0) -> tuple[float, float]:
    g = min(s_churn / steps, math.sqrt(2) - 1)  # EDM Algorithm 2's gamma_0 (S_tmin <= inf <= S_tmax)
    return 1 / (1 + g), s_noise * math.sqrt((1 + g) ** 2 - 1) / (1 + g)


FIRST_ORDER = [
    ("heun", {}),
    ("dpm2", {}),
    ("dpm2", {"form": "data"}),
    ("stochastic", {}),
    ("stochastic", {"s_churn": 10.0, "s_noise": 1.003}),  # gamma clamps to sqrt(2) - 1: the same in the rest run
    ("generalized", {}),
    ("generalized", {"schedule": "vp", "scaling": "vp", "alpha": 0.75}),
    ("generalized", {"schedule": "ve", "s_churn": 10.0, "solver": "euler"}),
    ("generalized", {"schedule": "vp", "solver": "euler"}),
]


@pytest.mark.parametrize(("name", "knobs"), FIRST_ORDER, ids=[f"{n}-{k}" for n, k in FIRST_ORDER])
def test_samplers_without_a_limit_take_the_first_order_step(name: str, knobs: dict[str, Any]) -> None:
    n = unit(2)
    sig = [INF, *BASE]
    spec = registry.get(name)
    draws = torch.randn(len(sig) - 1, *n.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    keep, scale = churn_keep_scale(knobs.get("s_churn", 0.0), len(sig) - 1, knobs.get("s_noise", 1.0))
    got = sampler_function(name)(gm(), n, sig, noise=PrecomputedNoise(draws), dtype=F64, **knobs)
    want = first_order_then(name, n, sig, draws if spec.stochastic else None, keep, scale, **knobs)
    # The same operations up to the one rounding of the scaled state (generalized: x_1 s(t_1) vs x_1 / (1 / s)).
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)


def test_heun_has_no_limit_from_finite_sigma0() -> None:
    # Why heun takes the first-order step from inf: from a finite sigma_0 its trapezoid correction
    # h (d' - d) / 2 ~ sigma_0 (D_0 - D_1) / (2 sigma_1) grows linearly in sigma_0 (it would be a mutant to use it).
    e4, e6 = err_from("heun", 1e4), err_from("heun", 1e6)
    assert e4 > 1.0 and 80 < e6 / e4 < 125


def test_dpm2_noise_form_has_another_limit() -> None:
    # DPM-Solver-2 (noise form) tends to D(n; inf) + sigma_1 n + c / sigma_1 with c a derivative of D at infinity
    # (for one Gaussian N(mu, s^2): c = s^2 n), which no evaluation gives: the gap to the first-order step stays.
    e6, e8 = err_from("dpm2", 1e6), err_from("dpm2", 1e8)
    assert e8 > 1e-2 and abs(e6 / e8 - 1) < 0.05


# ---- exactness: point mass data, any schedule -------------------------------------------------------------

DETERMINISTIC = {  # knobs that make every registry sampler deterministic (noise still drawn where stochastic)
    "euler_ancestral": {"eta": 0.0},
    "dpmpp_2m_sde": {"eta": 0.0},
    "dpmpp_3m_sde": {"eta": 0.0},
}


@settings(max_examples=15, deadline=None)
@given(
    sig=st.one_of(schedules(min_steps=1, max_steps=6), schedules(min_steps=1, max_steps=6, final_zero=False)),
    seed=st.integers(0, 2**16),
    name=st.sampled_from(PLAIN),
)
def test_point_mass_from_inf_follows_mu_plus_sigma_n(sig: Tensor, seed: int, name: str) -> None:
    # For data at one point mu, D = mu everywhere (also at inf), and the exact trajectory from pure noise n is
    # x(sigma) = mu + sigma n; every sampler follows it exactly (its weights sum to the step's), so each state
    # equals mu + sigma_next n to round-off. Kills a first step that drops sigma_1 n, and a derivative history
    # entry other than d_0 = n (iPNDM weighs it). Tolerance: each step rounds terms of size sigma_i |n| a few
    # times (Heun: five kernels), over at most 6 steps: a few 1e-15 relative per step, 1e-11 with margin.
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    n = torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=F64)
    sigmas = [INF, *sig.tolist()]
    infos: list[StepInfo] = []
    fn = sampler_function(name)
    out = fn(PointMass(mu), n, sigmas, callback=infos.append, noise=PerSampleNoise([0, 1, 2]), dtype=F64,
             **DETERMINISTIC.get(name, {}))  # fmt: skip
    assert len(infos) == len(sigmas) - 1 and infos[0].sigma == INF and infos[0].sigma_hat == INF
    for info in infos:
        want = mu + info.sigma_next * n
        torch.testing.assert_close(info.x_next, want, rtol=1e-11, atol=1e-11 * (1 + info.sigma_next))
    torch.testing.assert_close(out, mu + sigmas[-1] * n, rtol=1e-11, atol=1e-11 * (1 + sigmas[-1]))


def test_gaussian_from_inf_converges_to_the_closed_form() -> None:
    # One Gaussian N(mu, s^2): the exact solution from pure noise is mu + n sqrt(s^2 + sigma^2)
    # (gaussian_ode_solution with sigma0 = inf). Heun from inf (first step D(n; inf) + sigma_1 n, error
    # n (sqrt(s^2 + sigma_1^2) - sigma_1) ~ 3e-4 n at sigma_1 = 400, contracted by s / sigma_1 on the way to 0)
    # converges at second order: the error quarters (3.3x .. 5x) with each doubling of the Karras steps.
    mu = torch.tensor([[0.3, -0.7]], dtype=F64)
    s = 0.5
    den = GaussianMixture(mu, s)
    n = unit(4, (8, 2))
    exact = gaussian_ode_solution(n, INF, 0.0, mu, s)
    errs = []
    for steps in (20, 40, 80):
        ks = karras_sigmas(steps, sigma_max=400.0, dtype=F64)
        out = es.heun_sample(den, n, [INF, *ks.tolist()], dtype=F64)
        errs.append(float((out - exact).abs().max()))
        # the start from the exact state at sigma_1 = 400 differs by the contracted first-step error only
        from_400 = es.heun_sample(den, gaussian_ode_solution(n, INF, 400.0, mu, s), ks, dtype=F64)
        assert float((out - from_400).abs().max()) < 1e-5 * float(n.abs().max())
    assert 3.3 < errs[0] / errs[1] < 5 and 3.3 < errs[1] / errs[2] < 5
    torch.testing.assert_close(gaussian_ode_solution(n, INF, 3.0, mu, s), mu + n * math.sqrt(s**2 + 9.0))


def test_mixture_denoiser_at_inf_is_its_limit() -> None:
    den = gm()
    n = unit(5)
    at_inf = den(n, torch.full((B,), INF, dtype=F64))
    torch.testing.assert_close(at_inf, (den.weights[:, None] * den.means).sum(0).expand_as(n))
    # The limit D(sigma n; sigma) -> D(n; inf) at rate 1 / sigma; mixed rows stay independent.
    for s in (1e6, 1e8):
        assert float((den(n * s, torch.full((B,), s, dtype=F64)) - at_inf).abs().max()) < 10 / s
    mixed = torch.tensor([INF, 2.0, INF, 0.5], dtype=F64)
    rows = den(n, mixed)
    torch.testing.assert_close(rows[1], den(n[1:2], mixed[1:2])[0], rtol=0, atol=0)
    torch.testing.assert_close(rows[2], at_inf[2], rtol=0, atol=0)


# ---- runtime: NFE, callbacks, dtypes, generate, graphs --------------------------------------------------------


class Counting:
    def __init__(self, inner: Any) -> None:
        self.inner, self.calls, self.sigmas = inner, 0, []

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        self.calls += 1
        self.sigmas.append(float(sigma[0]))
        out: Tensor = self.inner(x, sigma, **cond)
        return out


@pytest.mark.parametrize("name", PLAIN)
@pytest.mark.parametrize("tail", [[5.0, 1.0, 0.2, 0.0], [0.0], [1.0], [5.0, 1.0]])
def test_count_nfe_from_inf_counts_the_calls(name: str, tail: list[float]) -> None:
    sig = [INF, *tail]
    den = Counting(gm())
    run(name, unit(), sig, den=den)
    assert den.calls == count_nfe(sig, name)
    assert den.sigmas[0] == INF and all(math.isfinite(s) for s in den.sigmas[1:])
    assert registry.get(name).steps_for(count_nfe(sig, name), end_zero=tail[-1] == 0, start_inf=True) == len(tail)


def test_float32_state_from_inf_matches_float64() -> None:
    n = unit(6)
    for name in PLAIN:
        fn = sampler_function(name)
        lo = fn(gm(), n.float(), [INF, *BASE], noise=PerSampleNoise(range(B)))
        hi = fn(gm(), n, [INF, *BASE], noise=PerSampleNoise(range(B)), dtype=F64)
        assert lo.dtype == torch.float32
        torch.testing.assert_close(lo.double(), hi, rtol=1e-4, atol=1e-4)


def test_generate_and_initial_x_keep_unit_noise() -> None:
    sig = [INF, *BASE]
    latents = PerSampleNoise([3, 4]).randn((2, 4), dtype=F64, device=torch.device("cpu"))
    assert torch.equal(es.initial_x(latents, sig), latents)
    assert torch.equal(es.initial_x(latents.float(), sig), latents.float())
    out = es.generate(gm(), [3, 4], (4,), sig, sampler="unipc", dtype=F64)
    assert torch.equal(out, es.unipc_sample(gm(), latents, sig, dtype=F64))


@pytest.mark.parametrize(
    ("name", "knobs"),
    [
        ("euler", {}),
        ("heun", {}),
        ("stochastic", {"s_churn": 20.0, "s_noise": 1.003}),
        ("unipc", {}),
        ("ipndm", {}),
        ("dpmpp_2m_sde", {}),
        ("euler_ancestral", {}),
        ("dpm2", {}),
        ("generalized", {"schedule": "vp", "scaling": "vp", "s_churn": 20.0}),
    ],
)
def test_graph_capture_from_inf_replays_eager(fake_cuda: FakeCuda, name: str, knobs: dict[str, Any]) -> None:  # noqa: F811
    sig = [INF, *karras_sigmas(4).tolist()]
    gs = GraphedSampler(mixture(), sig, (4, 2, 4), sampler=name, **knobs)
    eager = sampler_function(name)
    _replays_match_eager(fake_cuda, gs, lambda x, noise: eager(mixture(), x, sig, noise=noise, **knobs))


# ---- what is refused --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sigmas", "match"),
    [
        ([8.0, INF, 0.0], r"may be inf only at index 0.*sigmas\[1\] = inf"),
        ([INF, INF], r"may be inf only at index 0"),
        ([INF, 2.0, INF], r"may be inf only at index 0.*sigmas\[2\]"),
        ([-INF, 1.0, 0.0], r"must be finite"),
        ([math.nan, 1.0, 0.0], r"must be finite"),
    ],
)
def test_inf_elsewhere_is_rejected(sigmas: list[float], match: str) -> None:
    for name in ("euler", "unipc"):
        with pytest.raises(ValueError, match=match):
            run(name, unit(), sigmas)
    with pytest.raises(ValueError, match=match):
        count_nfe(sigmas, "heun")


def test_paths_without_inf_support_say_so(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"sigmas\[0\] = inf .* is not supported here, only by the samplers"):
        es.save_schedule(tmp_path / "s.json", torch.tensor([INF, 1.0, 0.0], dtype=F64))


def test_denoisers_refuse_or_accept_inf_at_the_sampler_entry() -> None:
    net = torch.nn.Linear(4, 4).double()
    sig = [INF, 2.0, 0.0]
    for pre in (es.EDMPrecond(net), es.VPPrecond(net), es.VEPrecond(net), es.iDDPMPrecond(net)):
        with pytest.raises(ValueError, match=rf"{type(pre).__name__} does not support .*c_noise"):
            es.heun_sample(pre, unit(), sig)
    ac = torch.linspace(0.999, 0.01, 50, dtype=F64)
    eps = DDPMDenoiser(lambda x, t: torch.tanh(x), ac)
    with pytest.raises(ValueError, match=r"DDPMDenoiser does not support .*eps-prediction"):
        es.euler_sample(eps, unit(), sig)
    with pytest.raises(ValueError, match=r"sigma must be finite"):  # a direct call at inf: also refused
        eps(unit(), torch.full((B,), INF))
    ve = ContinuousDenoiser(lambda x, t: x, prediction="x0", parameterization="ve")
    with pytest.raises(ValueError, match=r"VE model sees x itself"):
        es.unipc_sample(ve, unit(), sig)
    vp_default_time = ContinuousDenoiser(lambda x, t: x, prediction="v")
    with pytest.raises(ValueError, match=r"pass time_fn"):
        es.unipc_sample(vp_default_time, unit(), sig)

    class Refuses:
        supports_infinite_sigma = False

        def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
            return x

    with pytest.raises(ValueError, match=r"Refuses does not support"):
        es.dpmpp_2m_sample(Refuses(), unit(), sig)
    # A plain callable is trusted with the convention; finite schedules never ask.
    assert torch.isfinite(es.euler_sample(lambda x, s: x * 0, unit(), sig)).all()
    assert torch.isfinite(es.euler_sample(eps, unit(), [2.0, 0.0])).all()


def _model(x: Tensor, t: Tensor) -> Tensor:
    """A smooth stand-in network of x_t and the timestep."""
    return torch.tanh(x) * (1 + t.reshape(-1, *[1] * (x.ndim - 1)) / 100)


@pytest.mark.parametrize("prediction", ["v", "x0"])
@pytest.mark.parametrize("timestep", ["interpolate", "quantize"])
def test_vp_adapters_at_inf_are_their_limit(prediction: str, timestep: str) -> None:
    ac = torch.linspace(0.999, 0.01, 50, dtype=F64)
    den = DDPMDenoiser(_model, ac, prediction=prediction, timestep=timestep)  # type: ignore[arg-type]
    assert den.supports_infinite_sigma
    n = unit(7)
    at_inf = den(n, torch.full((B,), INF, dtype=F64))
    assert torch.equal(den.sigma_to_t(torch.tensor([INF], dtype=F64)), torch.tensor([49.0], dtype=F64))
    # model input n, D = -v (v) or the output (x0), at the last trained step
    want = -_model(n, torch.full((B,), 49.0, dtype=F64)) if prediction == "v" else _model(n, torch.full((B,), 49.0))
    torch.testing.assert_close(at_inf, want.to(F64))
    for s in (1e4, 1e6):  # the input x / sqrt(1 + s^2) and the v weights converge at rate 1 / s
        assert float((den(n * s, torch.full((B,), s, dtype=F64)) - at_inf).abs().max()) < 10 / s
    cont = ContinuousDenoiser(_model, prediction=prediction, time_fn=lambda s: torch.ones_like(s))
    assert cont.supports_infinite_sigma
    torch.testing.assert_close(cont(n, torch.full((B,), INF, dtype=F64)), cont(n * 1e9, torch.full((B,), 1e9)),
                               rtol=1e-7, atol=1e-7)  # fmt: skip
    # sampling through the adapter from inf is finite and equals the limit of the runs from large sigma_0
    out = es.dpmpp_2m_sample(den, n, [INF, 5.0, 1.0, 0.0], dtype=F64)
    assert torch.isfinite(out).all()


def test_finite_schedules_are_unchanged_by_the_inf_branches() -> None:
    # The inf code paths are chosen on host floats; a finite schedule runs the old code. A transcription of the
    # Euler loop (EDM Algorithm 1 without the correction) matches bitwise, and the adapters' where() picks the
    # old values (test_golden.py holds the stored results of every sampler).
    den, x = gm(), unit(8) * 5
    sig = torch.tensor(BASE, dtype=F64)
    want = x.clone()
    for i in range(len(sig) - 1):
        d = den(want, sig[i].expand(B))
        want = torch.lerp(d, want, sig[i + 1] / sig[i])
    assert torch.equal(es.euler_sample(den, x, sig, dtype=F64), want)


def test_clamp_sigmas_keeps_or_clamps_an_infinite_start() -> None:
    s = [INF, 20.0, 2.0, 0.0]
    assert es.clamp_sigmas(s).tolist() == s  # no range: inf stays
    assert es.clamp_sigmas(torch.tensor(s), sigma_max=10.0).tolist() == [10.0, 2.0, 0.0]  # repeats dropped
    ac = torch.linspace(0.999, 0.01, 50, dtype=F64)
    ddpm = DDPMDenoiser(_model, ac, prediction="v", timestep="quantize")
    fitted = es.clamp_sigmas(s, denoiser=ddpm)  # a finite sigma_max: a finite (rounded) start
    assert fitted[0] == ddpm.sigma_max and torch.isfinite(fitted).all()
    kept = es.clamp_sigmas(s, sigma_max=INF, denoiser=ddpm)  # inf allowed: kept and never rounded
    assert kept[0] == INF and bool((kept[1:-1] == ddpm.round_sigma(kept[1:-1])).all())
    with pytest.raises(ValueError, match=r"may be inf only at index 0"):
        es.clamp_sigmas([20.0, INF, 0.0])
