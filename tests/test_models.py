"""The U-Net, the shipped digits model and classifier, and the Frechet distance."""

from __future__ import annotations

import json
from typing import cast

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import edm_samplers as es
from edm_samplers.evaluation.metrics import gaussian_frechet_distance
from edm_samplers.models import UNet
from edm_samplers.models.digits import (
    CLASSIFIER_WEIGHTS,
    DIGITS_CONFIG,
    DIGITS_WEIGHTS,
    digits_classifier,
    digits_features,
    load_digits_images,
)

# ---- U-Net ------------------------------------------------------------------------------------


def test_unet_shapes_conditioning_and_zero_init() -> None:
    torch.manual_seed(0)
    net = UNet(3, 16, model_channels=16, channel_mult=(1, 2, 2), num_blocks=1, attn_resolutions=(8,), label_dim=5,
               augment_dim=10)  # fmt: skip
    x = torch.randn(4, 3, 16, 16)
    c = torch.randn(4)
    out = net(x, c)
    assert out.shape == x.shape
    assert not out.any()  # output conv starts at zero, so F = 0 and D = c_skip x at initialisation
    torch.nn.init.normal_(net.conv_out.weight)
    ids = torch.tensor([0, 1, 4, 2])
    a = net(x, c, class_labels=ids)
    b = net(x, c, class_labels=torch.nn.functional.one_hot(ids, 5).float())
    torch.testing.assert_close(a, b)  # integer ids are one-hot encoded
    # a scalar c_noise broadcasts over the batch
    torch.testing.assert_close(net(x, torch.tensor(0.3)), net(x, torch.full((4,), 0.3)))
    assert net(x, c, augment_labels=torch.zeros(4, 10)).shape == x.shape


def test_unet_errors() -> None:
    net = UNet(1, 8, model_channels=16, num_blocks=1)
    with pytest.raises(TypeError, match="label_dim=0"):
        net(torch.zeros(2, 1, 8, 8), torch.zeros(2), class_labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="augment_dim=0"):
        net(torch.zeros(2, 1, 8, 8), torch.zeros(2), augment_labels=torch.zeros(2, 10))
    with pytest.raises(ValueError, match="divisible"):
        UNet(1, 6, channel_mult=(1, 2, 2))


# ---- the shipped model -------------------------------------------------------------------------


def test_shipped_files_are_small_safetensors() -> None:
    for path in (DIGITS_WEIGHTS, CLASSIFIER_WEIGHTS):
        assert path.is_file() and path.stat().st_size < 5_000_000
        assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    cfg = json.loads(DIGITS_CONFIG.read_text())
    assert {"unet", "precond", "training"} <= cfg.keys()


def test_digits_loads_offline_and_samples_deterministically() -> None:
    den = es.models.digits()
    assert isinstance(den, es.EDMPrecond) and not den.training
    # frozen for inference: no autograd graph through the network, but gradients to x still flow
    assert not any(p.requires_grad for p in den.parameters())
    assert not any(p.requires_grad for p in es.models.digits_classifier().parameters())
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    (g,) = torch.autograd.grad(es.heun_sample(den, x * 80, es.karras_sigmas(3)).sum(), x)
    assert bool(torch.isfinite(g).all())
    n_params = sum(p.numel() for p in den.parameters())
    assert 500_000 < n_params < 2_500_000
    sigmas = es.karras_sigmas(6, sigma_min=den.sigma_min, sigma_max=den.sigma_max)
    with torch.no_grad():
        a = es.generate(den, [3, 1, 4, 1], (1, 8, 8), sigmas)
        b = es.generate(den, [4, 1], (1, 8, 8), sigmas)
    assert a.shape == (4, 1, 8, 8) and torch.isfinite(a).all()
    # a sample depends on its seed only (per-seed generators); rows with equal seeds agree. The batch
    # shape changes the BLAS blocking, hence float32 round-off at the 1e-5 level over 11 NFE.
    torch.testing.assert_close(a[2], b[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a[1], a[3])
    assert (a[0] - a[1]).abs().max() > 0.1  # different seeds, different digits


def test_classifier_accuracy_and_features() -> None:
    x, y = cast(tuple[torch.Tensor, torch.Tensor], load_digits_images(return_labels=True))
    assert x.shape == (1797, 1, 8, 8) and x.min() == -1 and x.max() == 1
    clf = digits_classifier()
    with torch.no_grad():
        acc = (clf(x).argmax(1) == y).double().mean()
    assert acc > 0.97  # trained on 80 %, 98.9 % on the held-out 20 %
    f = digits_features(x[:10])
    assert f.shape == (10, 64) and f.dtype == torch.float64


# ---- Frechet distance --------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(0, 10_000))
def test_gaussian_frechet_matches_diagonal_closed_form(dim: int, seed: int) -> None:
    # For diagonal covariances, tr(C1 + C2 - 2 (C1 C2)^1/2) = sum_i (sqrt(a_i) - sqrt(b_i))^2.
    g = torch.Generator().manual_seed(seed)
    mu1, mu2 = torch.randn(dim, generator=g, dtype=torch.float64), torch.randn(dim, generator=g, dtype=torch.float64)
    a = torch.rand(dim, generator=g, dtype=torch.float64) * 3
    b = torch.rand(dim, generator=g, dtype=torch.float64) * 3
    expect = float((mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    # a random rotation Q leaves the distance invariant: use Q diag Q^T to exercise the full matrix path
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    got = gaussian_frechet_distance(q @ mu1, q @ torch.diag(a) @ q.T, q @ mu2, q @ torch.diag(b) @ q.T)
    assert got == pytest.approx(expect, rel=1e-9, abs=1e-9)  # eigh round-off on O(1) entries


def test_frechet_distance_of_samples() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40000, 3, generator=g, dtype=torch.float64)
    assert es.evaluation.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    b = torch.randn(40000, 3, generator=g, dtype=torch.float64) * 2 + 1
    # N(0, I) vs N(1, 4 I) in 3-d: 3 * 1 + 3 * (2 - 1)^2 = 6. The estimate's standard deviation is ~0.15 at
    # 4000 samples per side (measured over 1000 seeds: +-0.3 failed 39 of them); at 40000 it is ~0.05, so
    # +-0.3 is a 6-sigma margin (benchmarks/seed_robustness.py's replica measures it).
    assert es.evaluation.frechet_distance(a, b) == pytest.approx(6.0, abs=0.3)
    assert es.evaluation.frechet_distance(a, b) == pytest.approx(es.evaluation.frechet_distance(b, a), rel=1e-9)
    with pytest.raises(ValueError, match="same feature size"):
        es.evaluation.frechet_distance(a, b[:, :2])
    with pytest.raises(ValueError, match="at least 2 samples"):
        es.evaluation.frechet_distance(a[:1], b)


# ---- issue 11: tuned schedules under bad input --------------------------------------------------


def test_digits_schedule_rejects_non_int_nfe_and_bad_types() -> None:
    good = es.models.digits_schedule("heun", 5)
    assert good.dtype == torch.float64 and good[-1].item() == 0.0 and bool((good[1:] < good[:-1]).all())
    with pytest.raises(TypeError, match=r"nfe must be an int, got float 5\.7"):
        es.models.digits_schedule("heun", 5.7)  # type: ignore[arg-type]  # silently meant nfe=5
    with pytest.raises(TypeError, match=r"nfe must be an int, got bool"):
        es.models.digits_schedule("heun", True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"nfe must be >= 1"):
        es.models.digits_schedule("heun", 0)
    with pytest.raises(TypeError, match=r"sampler must be a registry name \(str\)"):  # solver= renamed (issue 12)
        es.models.digits_schedule(3, 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"dtype must be a floating torch\.dtype"):
        es.models.digits_schedule("heun", 5, dtype=torch.int64)
    with pytest.raises(KeyError, match=r"no tuned digits schedule for 'heun' at nfe=7"):
        es.models.digits_schedule("heun", 7)
    half = es.models.digits_schedule("heun", 5, dtype=torch.float16)
    torch.testing.assert_close(half.double(), good, rtol=1e-3, atol=0)  # float16 keeps 11 bits
