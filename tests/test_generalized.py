"""Generalized sampler (EDM Algorithm 1 with sigma(t), s(t), alpha, churn)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from edm_samplers import (
    PerSampleNoise,
    PrecomputedNoise,
    StepInfo,
    euler_sample,
    generalized_sample,
    heun_sample,
    iddpm_sigmas,
    karras_sigmas,
    stochastic_sample,
    ve_sigmas,
    vp_sigmas,
)
from edm_samplers.evaluation import GaussianMixture, gaussian_ode_solution

MIX = GaussianMixture(
    torch.tensor([[1.0, 0.0], [-1.0, 2.0]], dtype=torch.float64), torch.tensor([0.3, 0.5], dtype=torch.float64)
)


def start(n: int = 6, sigma0: float = 80.0, seed: int = 0) -> Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * sigma0


@settings(max_examples=12, deadline=None)
@given(
    num_steps=st.integers(min_value=1, max_value=20),
    rho=st.floats(min_value=1.0, max_value=10.0),
    final_zero=st.booleans(),
)
def test_edm_coordinates_equal_core_samplers(num_steps: int, rho: float, final_zero: bool) -> None:
    sig = karras_sigmas(num_steps, 0.002, 80.0, rho)
    if not final_zero and num_steps > 1:
        sig = sig[:-1]
    x = start()
    # Same ODE, same steps, algebraically equal updates (d = x/t - D/t vs (x - D)/t): float64 round-off
    # relative to |x| <= ~300 over <= 25 steps.
    for solver, core in (("heun", heun_sample), ("euler", euler_sample)):
        ours = generalized_sample(MIX, x, sig, solver=solver)  # type: ignore[arg-type]
        torch.testing.assert_close(ours, core(MIX, x, sig), rtol=1e-12, atol=1e-12)
        lin = generalized_sample(MIX, x, sig, schedule="linear", solver=solver)  # type: ignore[arg-type]
        torch.testing.assert_close(lin, ours, rtol=0, atol=0)


def test_churn_equals_stochastic_sample() -> None:
    sig = karras_sigmas(12)
    x = start()
    draws = torch.randn(12, *x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    kw = {"s_churn": 30.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.007}
    for solver in ("heun", "euler"):
        ours = generalized_sample(MIX, x, sig, solver=solver, noise=PrecomputedNoise(draws), **kw)  # type: ignore[arg-type]
        ref = stochastic_sample(MIX, x, sig, solver=solver, noise=PrecomputedNoise(draws), **kw)  # type: ignore[arg-type]
        # Same noise, same churn formula; float64 round-off as above.
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("discretization", ["karras", "vp", "ve"])
def test_vp_ve_edm_converge_to_the_same_endpoint(discretization: str) -> None:
    builders = {
        "karras": lambda n: karras_sigmas(n),
        "vp": lambda n: vp_sigmas(n),
        "ve": lambda n: ve_sigmas(n, 0.002, 80.0),
    }
    build = builders[discretization]
    sigma0 = float(build(8)[0])
    x0 = start(4, sigma0)
    # Reference: the EDM ODE from the same start and sigma_0 to 0, with many Heun steps.
    ref = heun_sample(MIX, x0, karras_sigmas(512, 0.002, sigma0))
    for schedule, scaling in (("vp", "vp"), ("ve", "none"), ("edm", "none")):
        e = [
            float((generalized_sample(MIX, x0, build(n), schedule=schedule, scaling=scaling) - ref).abs().max())  # type: ignore[arg-type]
            for n in (8, 32, 128)
        ]
        # Errors shrink as N grows and end small: all three are one ODE in different coordinates. The bound
        # 0.02 (data scale ~1) covers the 128-step error and the end-level difference (vp_sigmas ends at 0.01).
        assert e[2] < e[1] < e[0], (schedule, e)
        assert e[2] < 0.02, (schedule, e)


def test_iddpm_discretization_converges_in_every_formulation() -> None:
    x0 = start(4, float(iddpm_sigmas(12)[0]))
    ref = heun_sample(MIX, x0, karras_sigmas(512, 0.002, float(iddpm_sigmas(12)[0])))
    for schedule, scaling in (("vp", "vp"), ("ve", "none"), ("edm", "none")):
        e = [
            float((generalized_sample(MIX, x0, iddpm_sigmas(n), schedule=schedule, scaling=scaling) - ref).abs().max())  # type: ignore[arg-type]
            for n in (12, 96)
        ]
        assert e[1] < e[0], (schedule, e)


def test_second_order_rules_on_exact_gaussian_solution() -> None:
    # Single Gaussian N(0.3, 0.5^2): exact ODE endpoint in closed form. Stop at sigma = 0.1 (no final jump).
    mu, s = 0.3, 0.5
    den = GaussianMixture(torch.full((1, 3), mu, dtype=torch.float64), s)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 20
    exact = gaussian_ode_solution(x, 20.0, 0.1, mu, s)

    def err(n: int, **kw: object) -> float:
        sig = karras_sigmas(n, 0.1, 20.0)[:-1]
        return float((generalized_sample(den, x, sig, **kw) - exact).abs().max())  # type: ignore[arg-type]

    for kw in (
        {"alpha": 1.0},
        {"alpha": 0.5},
        {"alpha": 0.5, "schedule": "vp", "scaling": "vp"},
        {"alpha": 0.8, "schedule": "ve"},
    ):
        e1, e2 = err(16, **kw), err(64, **kw)
        order = math.log(e1 / e2) / math.log(4)
        # At least 2nd order (diffrax-style slack). The EDM-coordinate midpoint measures ~3 on this linear ODE
        # (its leading error term cancels for a Gaussian); in VP coordinates it is 2.0, as expected.
        assert 1.7 < order < 3.4, (kw, e1, e2, order)
    e1, e2 = err(16, solver="euler"), err(64, solver="euler")
    assert 0.7 < math.log(e1 / e2) / math.log(4) < 1.4  # Euler: 1st order


def test_callback_nfe_and_unscaled_states() -> None:
    calls: list[float] = []

    def den(x: Tensor, sigma: Tensor) -> Tensor:
        calls.append(float(sigma[0]))
        return MIX(x, sigma)

    infos: list[StepInfo] = []
    sig = vp_sigmas(5)
    x = start(2, float(sig[0]))
    out = generalized_sample(den, x, sig, schedule="vp", scaling="vp", callback=infos.append)
    assert len(calls) == 2 * 5 - 1  # Heun: 2N - 1 NFE
    assert [i.i for i in infos] == list(range(5))
    torch.testing.assert_close(infos[0].x, x, rtol=1e-15, atol=1e-13)  # unscaled input to the first call
    torch.testing.assert_close(infos[-1].x_next, out, rtol=0, atol=0)
    assert infos[0].sigma == float(sig[0]) and infos[-1].sigma_next == 0.0


def test_round_sigma_and_float32() -> None:
    sig = karras_sigmas(6)
    x = start().float()
    r = generalized_sample(MIX, x.double(), sig, s_churn=5.0, round_sigma=lambda s: s, noise=torch.Generator())
    assert r.dtype == torch.float64
    assert generalized_sample(MIX, x, sig).dtype == torch.float32
    # A stream: one draw per step whatever the churn (and its range); none without churn (issue 15).
    for churn, drawn in ((0.0, 0), (3.0, 6)):
        src = PrecomputedNoise(torch.randn(6, *x.shape))
        generalized_sample(MIX, x, sig, s_churn=churn, s_tmin=1.0, noise=src)
        assert src.index == drawn
    # With a noise source, torch's global RNG is untouched.
    st0 = torch.random.get_rng_state()
    generalized_sample(MIX, x, sig, noise=PerSampleNoise(range(x.shape[0])))
    assert torch.equal(st0, torch.random.get_rng_state())


def test_errors() -> None:
    x, sig = start(), karras_sigmas(4)
    with pytest.raises(ValueError, match="schedule must be 'edm'"):
        generalized_sample(MIX, x, sig, schedule="cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scaling must be 'none' or 'vp'"):
        generalized_sample(MIX, x, sig, scaling="ve")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="solver must be 'heun' or 'euler'"):
        generalized_sample(MIX, x, sig, solver="rk4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\]"):
        generalized_sample(MIX, x, sig, alpha=1.5)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        generalized_sample(MIX, x, sig, alpha=0.0)
    with pytest.raises(ValueError, match="s_tmin must be <= s_tmax"):
        generalized_sample(MIX, x, sig, s_churn=1.0, s_tmin=2.0, s_tmax=1.0)
    with pytest.raises(ValueError, match="sigmas must be non-increasing"):
        generalized_sample(MIX, x, sig.flip(0))
    with pytest.raises(TypeError, match="denoiser must be callable"):
        generalized_sample(None, x, sig)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="returned shape"):
        generalized_sample(lambda x, s: x[:1], x, sig)
    with pytest.raises(FloatingPointError, match="non-finite"):
        generalized_sample(lambda x, s: x * float("nan"), x, sig)


@pytest.mark.parametrize("bad", [lambda s: s * 0, lambda s: -s, lambda s: s * float("nan")])
def test_round_sigma_output_is_checked_like_stochastic_sample(bad: object) -> None:
    # The same callable must get the same error from both samplers (it used to run here and return a wrong sample).
    x, sig = start(), karras_sigmas(4)
    match = "round_sigma returned non-positive or non-finite noise levels: it mapped sigma = "
    with pytest.raises(ValueError, match=match):
        generalized_sample(MIX, x, sig, s_churn=1.0, round_sigma=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        stochastic_sample(MIX, x, sig, s_churn=1.0, round_sigma=bad)  # type: ignore[arg-type]
    for wrong in (lambda s: s.tolist(), lambda s: s[:-1]):
        with pytest.raises(TypeError, match=r"round_sigma must map a \[N\] tensor"):
            generalized_sample(MIX, x, sig, round_sigma=wrong)  # type: ignore[arg-type]


def test_devices_cond_batch_and_range_are_named() -> None:
    x, sig = start(2), karras_sigmas(4)
    with pytest.raises(ValueError, match="x is a meta tensor"):
        generalized_sample(MIX, x.to("meta"), sig)
    with pytest.raises(ValueError, match="sigmas is a meta tensor"):
        generalized_sample(MIX, x, sig.to("meta"))
    with pytest.raises(ValueError, match="denoiser returned a tensor on meta for an input on cpu"):
        generalized_sample(lambda z, s: z.to("meta"), x, sig)
    with pytest.raises(ValueError, match=r"cond\['y'\] has shape \(3, 1\) but x has batch size 2"):
        generalized_sample(lambda z, s, y: z, x, sig, cond={"y": torch.ones(3, 1)})
    with pytest.raises(ValueError, match=r"sigmas\[0\] = 1e\+200 is out of the range"):
        generalized_sample(MIX, x, [1e200, 1.0, 0.0])
