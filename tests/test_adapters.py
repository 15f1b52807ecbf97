"""Adapters for eps-, v- and x0-prediction models (continuous and discrete time)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from edm_samplers import euler_sample, karras_sigmas
from edm_samplers.adapters import ContinuousDenoiser, DDPMDenoiser, sigmas_from_alphas_cumprod
from edm_samplers.precond import VPPrecond
from edm_samplers.schedule_fit import clamp_sigmas

sigma_st = st.floats(min_value=1e-3, max_value=200.0)


def linear_abar(t: int = 1000) -> Tensor:
    betas = torch.linspace(1e-4, 0.02, t, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


class Oracle:
    """A model that knows the clean y and noise eps behind x = y + sigma eps, and predicts exactly."""

    def __init__(self, y: Tensor, eps: Tensor, kind: str, vp: bool) -> None:
        self.y, self.eps, self.kind, self.vp = y, eps, kind, vp
        self.calls: list[tuple[Tensor, Tensor]] = []
        self.sigma: Tensor | None = None

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        self.calls.append((x_t, t))
        assert self.sigma is not None
        s = self.sigma.reshape(-1, *[1] * (self.y.ndim - 1))
        if self.kind == "eps":
            return self.eps
        if self.kind == "x0":
            return self.y
        alpha, sigma_vp = 1 / torch.sqrt(1 + s**2), s / torch.sqrt(1 + s**2)
        return alpha * self.eps - sigma_vp * self.y


@settings(max_examples=30, deadline=None)
@given(s1=sigma_st, s2=sigma_st, kind=st.sampled_from(["eps", "v", "x0"]), vp=st.booleans())
def test_exact_prediction_recovers_clean_data(s1: float, s2: float, kind: str, vp: bool) -> None:
    assume(kind != "v" or vp)  # v-prediction is defined for the VP parameterisation only
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    sigma = torch.tensor([s1, s2], dtype=torch.float64)
    x = y + sigma[:, None, None] * eps
    oracle = Oracle(y, eps, kind, vp)
    oracle.sigma = sigma
    den = ContinuousDenoiser(oracle, prediction=kind, parameterization="vp" if vp else "ve")
    d = den(x, sigma)
    # D = x - sigma eps (eps), D = y (x0) or the v algebra: float64 cancellation x - sigma eps with
    # |x| up to ~200 |eps| leaves an absolute error ~ 200 * 1e-16 * few.
    torch.testing.assert_close(d, y, rtol=0, atol=1e-12)
    x_t, t = oracle.calls[0]
    s = sigma[:, None, None]
    torch.testing.assert_close(x_t, x / torch.sqrt(1 + s**2) if vp else x, rtol=1e-15, atol=0)
    expect_t = (torch.sqrt(0.1**2 + 2 * 19.9 * torch.log(1 + sigma**2)) - 0.1) / 19.9 if vp else sigma
    torch.testing.assert_close(t, expect_t, rtol=1e-14, atol=0)


@settings(max_examples=30, deadline=None)
@given(sigma=sigma_st)
def test_eps_adapters_satisfy_d_equals_x_minus_sigma_eps(sigma: float) -> None:
    x = torch.randn(3, 5, dtype=torch.float64)
    eps = torch.randn(3, 5, dtype=torch.float64)
    s = torch.full((3,), sigma, dtype=torch.float64)
    for den in (
        ContinuousDenoiser(lambda xt, t: eps, prediction="eps"),
        ContinuousDenoiser(lambda xt, t: eps, prediction="epsilon", parameterization="ve"),
        DDPMDenoiser(lambda xt, t: eps, linear_abar()),
        DDPMDenoiser(lambda xt, t: eps, linear_abar(), timestep="quantize"),
        VPPrecond(lambda xt, t: eps),
    ):
        torch.testing.assert_close(den(x, s), x - sigma * eps, rtol=1e-15, atol=1e-13)


def test_ddpm_timestep_mapping() -> None:
    abar = linear_abar()
    sig = torch.sqrt((1 - abar) / abar)
    den = DDPMDenoiser(lambda xt, t: xt, abar)
    assert den.sigma_min == float(sig[0]) and den.sigma_max == float(sig[-1])
    # Trained levels map to their integer steps.
    idx = torch.tensor([0, 1, 17, 500, 998, 999])
    torch.testing.assert_close(den.sigma_to_t(sig[idx]), idx.double(), rtol=0, atol=1e-9)
    # Between steps 500 and 501: linear in log sigma (independent computation).
    w = 0.3
    s = torch.exp((1 - w) * torch.log(sig[500]) + w * torch.log(sig[501]))
    assert float(den.sigma_to_t(s.reshape(1))) == pytest.approx(500.3, abs=1e-9)
    # Out of range: clamped to the end steps.
    torch.testing.assert_close(den.sigma_to_t(torch.tensor([1e-6, 1e6])), torch.tensor([0.0, 999.0]).double())
    # Quantized: the nearest trained step in log sigma; round_sigma returns that step's sigma.
    q = DDPMDenoiser(lambda xt, t: xt, abar, timestep="quantize")
    s2 = torch.exp(0.6 * torch.log(sig[500]) + 0.4 * torch.log(sig[501]))
    s3 = torch.exp(0.4 * torch.log(sig[500]) + 0.6 * torch.log(sig[501]))
    torch.testing.assert_close(q.sigma_to_t(torch.stack([s2, s3])), torch.tensor([500.0, 501.0]).double())
    torch.testing.assert_close(q.round_sigma(torch.stack([s2, s3])), sig[[500, 501]], rtol=0, atol=0)
    assert torch.equal(den.round_sigma(s2), s2)  # interpolating adapters take any sigma
    fitted = clamp_sigmas(karras_sigmas(10, 0.002, 500.0), denoiser=q)
    assert set(fitted[:-1].tolist()) <= set(sig.tolist()) and float(fitted[0]) == float(sig[-1])


def test_ddpm_abar_with_exact_one() -> None:
    # abar_0 = 1 means sigma_0 = 0: the mapping uses the positive levels only (steps >= 1).
    abar = torch.cat([torch.ones(1, dtype=torch.float64), linear_abar(10)])
    den = DDPMDenoiser(lambda xt, t: xt, abar)
    sig = sigmas_from_alphas_cumprod(abar)
    assert den.sigma_min == float(sig[1])
    torch.testing.assert_close(den.sigma_to_t(sig[1:4]), torch.tensor([1.0, 2.0, 3.0]).double())
    assert math.isfinite(float(den.sigma_to_t(torch.tensor([1e-9]))))


def test_v_prediction_ddpm_and_learned_variance() -> None:
    abar = linear_abar()
    y = torch.randn(2, 3, 4, dtype=torch.float64)
    eps = torch.randn(2, 3, 4, dtype=torch.float64)
    sigma = torch.tensor([0.3, 7.0], dtype=torch.float64)
    oracle = Oracle(y, eps, "v", True)
    oracle.sigma = sigma

    def with_var(xt: Tensor, t: Tensor) -> Tensor:
        return torch.cat([oracle(xt, t), torch.full_like(xt, 123.0)], dim=1)

    den = DDPMDenoiser(with_var, abar, prediction="v_prediction", learned_variance=True)
    # v algebra in float64: errors ~ 1e-15 relative to |x| ~ 7.
    torch.testing.assert_close(den(y + sigma[:, None, None] * eps, sigma), y, rtol=0, atol=1e-12)


class TinyEps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.lin(x) * torch.cos(t / 1000)[:, None]


def test_adapter_holds_module_compiles_and_samples() -> None:
    torch.manual_seed(0)
    net = TinyEps()
    den = DDPMDenoiser(net, linear_abar())
    assert den.model is net
    assert [id(p) for p in den.parameters()] == [id(p) for p in net.parameters()]
    assert set(den.state_dict()) == {"model.lin.weight", "model.lin.bias"}
    x = torch.randn(3, 4)
    sigma = torch.tensor([0.1, 1.0, 50.0])
    compiled = torch.compile(den, fullgraph=True, backend="eager")
    # The eager backend runs the same ops: identical results.
    torch.testing.assert_close(compiled(x, sigma), den(x, sigma), rtol=0, atol=0)
    sig = karras_sigmas(4, den.sigma_min, den.sigma_max)
    out = euler_sample(den, x * float(sig[0]), sig)
    assert out.shape == x.shape and out.dtype == torch.float32


def test_bf16_model_float32_result() -> None:
    net = TinyEps().to(torch.bfloat16)
    seen: list[Tensor] = []

    def f(x: Tensor, t: Tensor) -> Tensor:
        seen.append(t)
        return net(x, t)

    den = ContinuousDenoiser(f, net_dtype=torch.bfloat16)
    d = den(torch.randn(2, 4), torch.tensor([1.0, 2.0]))
    assert d.dtype == torch.float32 and seen[0].dtype == torch.float32


def test_adapter_errors() -> None:
    ok = linear_abar(10)
    with pytest.raises(ValueError, match="alphas_cumprod must be strictly decreasing"):
        DDPMDenoiser(lambda x, t: x, ok.flip(0))
    with pytest.raises(ValueError, match=r"alphas_cumprod must lie in \(0, 1\]"):
        DDPMDenoiser(lambda x, t: x, torch.cat([ok[:5], torch.zeros(1, dtype=torch.float64), ok[5:]]))
    with pytest.raises(ValueError, match=r"alphas_cumprod must lie in \(0, 1\]"):
        DDPMDenoiser(lambda x, t: x, ok + 0.5)
    with pytest.raises(ValueError, match="alphas_cumprod must be 1-D"):
        DDPMDenoiser(lambda x, t: x, ok.reshape(2, 5))
    with pytest.raises(TypeError, match="alphas_cumprod must be a 1-D tensor"):
        DDPMDenoiser(lambda x, t: x, "abc")
    with pytest.raises(ValueError, match="prediction must be one of"):
        DDPMDenoiser(lambda x, t: x, ok, prediction="score")
    with pytest.raises(ValueError, match="timestep must be 'interpolate', 'linear' or 'quantize'"):
        DDPMDenoiser(lambda x, t: x, ok, timestep="round")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prediction='v' needs a VP model"):
        ContinuousDenoiser(lambda x, t: x, prediction="v", parameterization="ve")
    with pytest.raises(ValueError, match="parameterization must be 'vp' or 've'"):
        ContinuousDenoiser(lambda x, t: x, parameterization="sub-vp")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model must be an nn"):
        ContinuousDenoiser(42)  # type: ignore[arg-type]
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="model returned shape"):
        ContinuousDenoiser(lambda xt, t: xt[:1])(x, 1.0)
    with pytest.raises(TypeError, match="model must return a floating-point tensor"):
        ContinuousDenoiser(lambda xt, t: xt.int())(x, 1.0)
    with pytest.raises(TypeError, match=r"model must return a torch\.Tensor"):
        ContinuousDenoiser(lambda xt, t: {"a": xt})(x, 1.0)
    with pytest.raises(ValueError, match="learned-variance model must return twice"):
        DDPMDenoiser(lambda xt, t: xt, ok, learned_variance=True)(x, 1.0)
    with pytest.raises(ValueError, match=r"sigma must have shape \[batch\]"):
        DDPMDenoiser(lambda xt, t: xt, ok)(x, torch.ones(5))


def test_sigmas_from_sequences_are_computed_in_float64() -> None:
    # Python floats and NumPy arrays go straight to float64 (through float32, abar = 1 - 1e-10 became 1, sigma 0).
    import numpy as np

    abar = [1 - 1e-10, 0.9, 0.5]
    ref = torch.tensor([math.sqrt((1 - a) / a) for a in abar], dtype=torch.float64)  # float64 closed form
    for given_as in (abar, tuple(abar), np.array(abar)):
        torch.testing.assert_close(sigmas_from_alphas_cumprod(given_as), ref, rtol=1e-15, atol=0)
    # A float32 tensor keeps its own (float32) values, widened exactly.
    f32 = torch.tensor(abar, dtype=torch.float32)
    torch.testing.assert_close(sigmas_from_alphas_cumprod(f32), torch.sqrt((1 - f32.double()) / f32.double()))
    with pytest.raises(TypeError, match="alphas_cumprod must be a 1-D tensor or sequence of numbers"):
        sigmas_from_alphas_cumprod(torch.tensor([0.9, 0.5], dtype=torch.complex64))
    with pytest.raises(TypeError, match="alphas_cumprod must be a 1-D tensor or sequence of numbers"):
        sigmas_from_alphas_cumprod(torch.tensor([True, False]))
    with pytest.raises(TypeError, match="alphas_cumprod must be a 1-D tensor or sequence of numbers"):
        sigmas_from_alphas_cumprod(torch.tensor([0.9, 0.5], device="meta"))


def test_learned_variance_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="learned_variance must be True or False, got str 'no'"):
        DDPMDenoiser(lambda x, t: x, linear_abar(10), learned_variance="no")  # type: ignore[arg-type]


def test_ddpm_zero_terminal_snr_and_linear_time() -> None:
    # abar_{T-1} = 0 (zero terminal SNR): sigma = inf is step T-1; finite sigmas above sigma_{T-2} map to T-2.
    abar = torch.cat([linear_abar(10)[:-1], torch.zeros(1, dtype=torch.float64)])
    den = DDPMDenoiser(lambda x, t: x, abar, prediction="v")
    assert den.sigma_max == math.inf and den.sigmas[-1] == math.inf
    s = torch.tensor([math.inf, 1e6, float(den.sigmas[4])], dtype=torch.float64)
    torch.testing.assert_close(den.sigma_to_t(s), torch.tensor([9.0, 8.0, 4.0], dtype=torch.float64))
    for mode in ("interpolate", "linear", "quantize"):  # inf is the last step in every mode, with or without 0
        for a in (abar, linear_abar(10)):
            t = DDPMDenoiser(lambda x, t: x, a, prediction="v", timestep=mode).sigma_to_t(torch.tensor([math.inf]))  # type: ignore[arg-type]
            assert t.item() == 9.0
    # "linear": t = k + (sigma - sigma_k) / (sigma_{k+1} - sigma_k), the inverse of np.interp(t, arange, sigmas).
    lin = DDPMDenoiser(lambda x, t: x, linear_abar(10), timestep="linear")
    sg = lin.sigmas
    mid = 0.25 * sg[3] + 0.75 * sg[4]
    torch.testing.assert_close(lin.sigma_to_t(mid.reshape(1)), torch.tensor([3.75], dtype=torch.float64))
