"""Losses, sigma samplers and weights under bad input (issue 11): a clear error, never a silent wrong loss.

The statistical tests of the losses live in test_loss.py; this file only checks inputs and the finite check.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor

from edm_samplers.training import (
    EDMLoss,
    LearnedUncertainty,
    VELoss,
    VPLoss,
    edm_weight,
    inverse_square_weight,
    lognormal_sigmas,
    loguniform_sigmas,
    vp_training_sigmas,
)

LOSSES = [EDMLoss, VPLoss, VELoss]


@pytest.fixture(autouse=True, scope="module")
def _keep_global_rng() -> Iterator[None]:
    # Calls without generator= draw from torch's global RNG; restore it so later tests see the same stream.
    with torch.random.fork_rng(devices=[]):
        yield


def _images(batch: int = 4) -> Tensor:
    return torch.randn(batch, 3, 2, generator=torch.Generator().manual_seed(0))


def _shrink(x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
    del cond
    return x / (1 + sigma.reshape(-1, 1, 1) ** 2)


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_denoiser_output_is_checked_statically(loss_cls) -> None:  # type: ignore[no-untyped-def]
    loss = loss_cls()
    x = _images()
    # An integer output turned the loss into a rounding error of the images, silently.
    with pytest.raises(TypeError, match=r"denoiser must return a floating-point tensor, got dtype torch\.int64"):
        loss(lambda y, s: (y * 10).long(), x)
    with pytest.raises(ValueError, match=r"denoiser returned shape \(4, 6\) .* must have the shape of x"):
        loss(lambda y, s: y.reshape(4, 6), x)
    with pytest.raises(TypeError, match=r"denoiser must return a torch\.Tensor, got list"):
        loss(lambda y, s: y.tolist(), x)
    with pytest.raises(ValueError, match=r"denoiser returned a tensor on meta for an input on cpu"):
        loss(lambda y, s: y.to("meta"), x)
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator or None, got int"):
        loss(_shrink, x, generator=0)
    out = loss(_shrink, x)
    assert out.shape == x.shape and out.dtype == x.dtype and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_non_finite_loss_raises_by_default(loss_cls) -> None:  # type: ignore[no-untyped-def]
    x = _images()

    def half_nan(y: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        out = _shrink(y, sigma)
        out[1] = float("nan")
        return out

    # It returned NaN silently.
    with pytest.raises(
        FloatingPointError,
        match=rf"{loss_cls.__name__}: the loss is not finite for 1 of 4 images \(rows \[1\]\): the denoiser returned "
        r"NaN/inf in rows \[1\] \(at sigma \[[0-9.e+-]+\]\)\. Pass check_finite=False",
    ):
        loss_cls()(half_nan, x)
    bad_images = x.clone()
    bad_images[2, 0, 0] = math.inf
    with pytest.raises(FloatingPointError, match=r"the images hold NaN/inf in rows \[2\]"):
        loss_cls()(_shrink, bad_images)
    raw = loss_cls(check_finite=False)(half_nan, x)  # the documented opt-out (e.g. under AMP's GradScaler)
    assert bool(raw[1].isnan().all()) and bool(torch.isfinite(raw[0]).all())
    with pytest.raises(TypeError, match=r"check_finite must be True or False, got int 1"):
        loss_cls(check_finite=1)


def test_finite_check_is_skipped_while_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    # No read-back is possible under torch.compile / CUDA-graph capture: the check steps aside there.
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    out = EDMLoss()(lambda y, s: y * float("nan"), _images())
    assert bool(out.isnan().all())


def test_loss_parameters_that_would_overflow_the_draws() -> None:
    # ln sigma ~ N(p_mean, p_std^2) drawn in float32: p_std = 1000 makes most draws 0 or inf (loss NaN).
    with pytest.raises(ValueError, match=r"p_mean=-1\.2, p_std=1000\.0 put ln sigma in .* beyond torch\.float32"):
        EDMLoss(p_std=1000.0)
    with pytest.raises(ValueError, match=r"beyond torch\.float16's range"):
        lognormal_sigmas(4, p_mean=5.0, p_std=1.2, dtype=torch.float16)  # e^12.2 > 65504
    with pytest.raises(ValueError, match=r"sigma_data=1e-30 makes lambda .* overflow torch\.float32"):
        EDMLoss(sigma_data=1e-30)
    with pytest.raises(ValueError, match=r"sigma_min=0\.02, sigma_max=1e\+300 must lie within torch\.float32"):
        VELoss(sigma_max=1e300)
    with pytest.raises(ValueError, match=r"beta_d=10000\.0, .* beyond torch\.float32's range"):
        VPLoss(beta_d=1e4)
    with pytest.raises(ValueError, match=r"eps_t=1e-300 give training sigmas from e\^"):
        vp_training_sigmas(4, eps_t=1e-300)  # sigma(eps_t) ~ 1e-151 is 0 in float32: lambda = inf
    with pytest.raises(ValueError, match=r"p_std must be >= 0"):
        EDMLoss(p_std=-1.0)
    with pytest.raises(TypeError, match=r"p_mean must be a real number, got str"):
        EDMLoss(p_mean="-1.2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"device must name a device"):
        loguniform_sigmas(4, device="gpu")
    with pytest.raises(TypeError, match=r"n must be an int, got float 4\.0"):
        lognormal_sigmas(4.0)  # type: ignore[arg-type]


def test_weights_reject_negative_sigma_and_stay_finite_for_extreme_sigma_data() -> None:
    s = torch.tensor([0.01, 0.5, 80.0], dtype=torch.float64)
    # 1/sigma^2 + 1/sigma_data^2 is (sigma^2 + sigma_data^2)/(sigma sigma_data)^2; a few ulps apart in float64.
    torch.testing.assert_close(edm_weight(s, 0.5), (s**2 + 0.25) / (s * 0.5) ** 2, rtol=1e-14, atol=0)
    # sigma_data = 1e200: the product form overflowed (Python raised OverflowError on sigma_data**2).
    torch.testing.assert_close(edm_weight(s, 1e200), 1 / s**2, rtol=1e-15, atol=0)
    for weight in (edm_weight, inverse_square_weight):
        with pytest.raises(ValueError, match=r"sigma must be finite and >= 0, got sigma\[0\] = -1\.0"):
            weight(torch.tensor([-1.0, 1.0]))  # gave a positive, finite weight
        with pytest.raises(TypeError, match=r"sigma must be a floating-point tensor, got dtype torch\.int64"):
            weight(torch.tensor([1, 2]))
        assert weight(torch.tensor([0.0])).item() == math.inf  # the limit lambda(0) = inf


def test_learned_uncertainty_checks_sigma() -> None:
    u = LearnedUncertainty(8)
    with pytest.raises(TypeError, match=r"sigma must be a 1-D floating tensor \[batch\]"):
        u(torch.ones(2, 1))
    with pytest.raises(ValueError, match=r"sigma must be finite and >= 0, got sigma\[1\] = nan"):
        u(torch.tensor([1.0, math.nan]))
    assert u(torch.tensor([0.5, 2.0])).shape == (2,)


def test_augment_pipe_output_is_checked() -> None:
    x = _images()
    with pytest.raises(TypeError, match=r"augment_pipe must return \(images, augment_labels\), got Tensor"):
        EDMLoss()(_shrink, x, augment_pipe=lambda y, generator=None: y)
    with pytest.raises(ValueError, match=r"augment_pipe must return floating images of shape \(4, 3, 2\)"):
        EDMLoss()(_shrink, x, augment_pipe=lambda y, generator=None: (y[:2], None))
