"""Guidance combinator: formula, call counts, sigma interval (mask / host), CFG conditions, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from edm_samplers import heun_sample, karras_sigmas
from edm_samplers.evaluation import GaussianMixture
from edm_samplers.guidance import guided
from edm_samplers.precond import EDMPrecond
from edm_samplers.schedule_fit import clamp_sigmas


class Counting:
    """A denoiser D = scale * x + offset that counts its calls and records its cond."""

    def __init__(self, scale: float, offset: float) -> None:
        self.scale, self.offset = scale, offset
        self.calls = 0
        self.conds: list[dict[str, Any]] = []

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        self.calls += 1
        self.conds.append(cond)
        return self.scale * x + self.offset


@settings(max_examples=30, deadline=None)
@given(w=st.floats(min_value=-2.0, max_value=10.0))
def test_formula(w: float) -> None:
    main, guide = Counting(0.5, 1.0), Counting(0.25, -1.0)
    x = torch.randn(3, 4, dtype=torch.float64)
    d = guided(main, guide, w)(x, torch.ones(3, dtype=torch.float64))
    d_m, d_g = 0.5 * x + 1.0, 0.25 * x - 1.0
    # lerp vs the textbook form: a few ulps of |w (d_m - d_g)|.
    torch.testing.assert_close(d, d_g + w * (d_m - d_g), rtol=1e-14, atol=1e-13)


def test_w_one_costs_one_call() -> None:
    main, guide = Counting(1.0, 0.0), Counting(2.0, 0.0)
    g = guided(main, guide, 1.0)
    x = torch.randn(2, 3)
    torch.testing.assert_close(g(x, torch.ones(2)), x)
    assert (main.calls, guide.calls) == (1, 0)
    g0 = guided(main, guide, 0)
    torch.testing.assert_close(g0(x, torch.ones(2)), 2 * x)


def test_sigma_interval_mask_and_host() -> None:
    x = torch.randn(3, 2, dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    for mode in ("mask", "host", "auto"):
        main, guide = Counting(1.0, 0.0), Counting(0.0, 0.0)
        g = guided(main, guide, 3.0, sigma_interval=(0.5, 2.0), interval_check=mode)  # type: ignore[arg-type]
        d = g(x, sigma)
        # Row 1 is guided (D = 3 x); rows 0 and 2 are D_main = x.
        torch.testing.assert_close(d, torch.stack([x[0], 3 * x[1], x[2]]), rtol=0, atol=1e-15)
        # All rows outside: "host" and "auto" (eager) skip the guide network, "mask" still evaluates it.
        d_out = g(x, torch.full((3,), 50.0, dtype=torch.float64))
        torch.testing.assert_close(d_out, x, rtol=0, atol=0)
        assert guide.calls == (2 if mode == "mask" else 1)
        assert main.calls == 2
    # Interval ends are inclusive.
    main, guide = Counting(1.0, 0.0), Counting(0.0, 0.0)
    d = guided(main, guide, 2.0, sigma_interval=(0.5, 2.0))(x[:2], torch.tensor([0.5, 2.0], dtype=torch.float64))
    torch.testing.assert_close(d, 2 * x[:2])


def test_cfg_guide_cond_and_sampling() -> None:
    # CFG: the same network, the guide call overrides the condition.
    main = Counting(1.0, 0.0)
    g = guided(main, main, 2.0, guide_cond={"class_labels": None})
    g(torch.randn(2, 3), torch.ones(2), class_labels=torch.tensor([1, 2]), other=5)
    assert main.conds[0]["class_labels"] is not None and main.conds[1]["class_labels"] is None
    assert main.conds[1]["other"] == 5
    # Autoguidance with two exact denoisers of Gaussians: guiding with a wider Gaussian sharpens the samples.
    mu = torch.zeros(1, 2, dtype=torch.float64)
    sharp, wide = GaussianMixture(mu, 0.5), GaussianMixture(mu, 1.0)
    x = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80
    sig = karras_sigmas(32)
    plain = heun_sample(sharp, x, sig)
    auto = heun_sample(guided(sharp, wide, 2.0), x, sig)
    # The ODE maps N(0, 80^2) to N(0, 0.5^2) exactly for the sharp model; guidance must shrink the spread.
    assert float(plain.std()) == pytest.approx(0.5, rel=0.05)  # 4000 x 2 samples: std of std ~ 1%
    assert float(auto.std()) < 0.45


def test_guided_forwards_range_and_compiles() -> None:
    pre = EDMPrecond(lambda x_in, c: x_in, sigma_min=0.01, sigma_max=50.0)
    g = guided(pre, pre, 1.5, sigma_interval=(0.1, 5.0))
    assert (g.sigma_min, g.sigma_max) == (0.01, 50.0)
    assert float(clamp_sigmas(karras_sigmas(5), denoiser=g)[0]) == 50.0
    x = torch.randn(3, 4)
    sigma = torch.tensor([0.05, 1.0, 20.0])
    compiled = torch.compile(g, fullgraph=True, backend="eager")  # "mask" mode has no graph break
    torch.testing.assert_close(compiled(x, sigma), g(x, sigma), rtol=0, atol=0)


def test_errors() -> None:
    d = Counting(1.0, 0.0)
    with pytest.raises(TypeError, match="main must be a denoiser"):
        guided(3, d, 2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="guide must be a denoiser"):
        guided(d, None, 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="w must be finite"):
        guided(d, d, float("nan"))
    with pytest.raises(TypeError, match="w must be a real number"):
        guided(d, d, "2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma_interval must satisfy lo <= hi"):
        guided(d, d, 2.0, sigma_interval=(3.0, 1.0))
    with pytest.raises(TypeError, match="sigma_interval must be a pair"):
        guided(d, d, 2.0, sigma_interval=(1.0,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval_check must be 'auto', 'host' or 'mask'"):
        guided(d, d, 2.0, interval_check="always")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="guide_cond must be a mapping"):
        guided(d, d, 2.0, guide_cond=[1])  # type: ignore[arg-type]
