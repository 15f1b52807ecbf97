"""Non-leaky augmentation: identity at p = 0, labels that decode the transform, preserved statistics."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edm_samplers import AugmentPipe, AugmentPipeProtocol

ALL_OFF = {"xflip": 0.0, "yflip": 0.0, "translate_int": 0.0, "translate_frac": 0.0, "scale": 0.0, "rotate": 0.0,
           "aniso": 0.0}  # fmt: skip


def _only(name: str, p: float = 1.0, **kw: float) -> AugmentPipe:
    return AugmentPipe(p=p, **{**ALL_OFF, name: 1.0}, **kw)


def _smooth_field(b: int, c: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Stationary, smooth random images (low-pass filtered noise): resampling barely changes their statistics."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64)
    k2 = (k[:, None] * k[None, :]) / 256
    x = torch.nn.functional.conv2d(
        torch.nn.functional.pad(x.reshape(b * c, 1, h, w), (2, 2, 2, 2), mode="circular"), k2[None, None]
    )
    return x.reshape(b, c, h, w)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 5), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(0, 1000))
def test_p_zero_is_identity_with_zero_labels(b: int, c: int, h: int, w: int, seed: int) -> None:
    x = torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))
    y, labels = AugmentPipe(p=0.0)(x, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(y, x)
    assert labels.shape == (b, AugmentPipe.label_dim) and not labels.any()


def test_zero_multipliers_are_identity_even_at_p_one() -> None:
    x = torch.randn(8, 2, 5, 7)
    y, labels = AugmentPipe(p=1.0, **ALL_OFF)(x)
    assert torch.equal(y, x) and not labels.any()


def test_xflip_labels_decode_exact_flips() -> None:
    x = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y, labels = _only("xflip")(x, generator=torch.Generator().manual_seed(1))
    flipped = labels[:, 0] == 1
    assert 10 < int(flipped.sum()) < 54  # a flip is a coin toss once applied: both cases occur
    assert torch.equal(y[flipped], x[flipped].flip(3))
    assert torch.equal(y[~flipped], x[~flipped])
    assert not labels[:, 1:].any()


def test_yflip_labels_decode_exact_flips() -> None:
    x = torch.randn(64, 1, 6, 5, generator=torch.Generator().manual_seed(0))
    y, labels = _only("yflip")(x, generator=torch.Generator().manual_seed(2))
    flipped = labels[:, 1] == 1
    assert torch.equal(y[flipped], x[flipped].flip(2)) and torch.equal(y[~flipped], x[~flipped])


def test_integer_translation_decodes_to_a_reflected_roll() -> None:
    x = torch.randn(64, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    y, labels = _only("translate_int", translate_int_max=0.25)(x, generator=torch.Generator().manual_seed(3))
    tx = (labels[:, 2] * 8).round().long()
    ty = (labels[:, 3] * 8).round().long()
    assert set(tx.tolist()) <= set(range(-2, 3)) and len(set(tx.tolist())) > 1
    for i in range(64):
        # independent transcription: out[r, c] = in[reflect(r - ty), reflect(c - tx)], reflect without edge repeat
        def refl(k: int, n: int) -> int:
            k = abs(k)
            return 2 * (n - 1) - k if k >= n else k

        expect = torch.empty_like(x[i])
        for r in range(8):
            for cc in range(8):
                expect[:, r, cc] = x[i, :, refl(r - int(ty[i]), 8), refl(cc - int(tx[i]), 8)]
        assert torch.equal(y[i], expect)


def test_rotation_by_quarter_turn_matches_rot90() -> None:
    # A rotation by exactly +-pi/2 maps pixel centres onto pixel centres, so the resampled image is a
    # rot90 of the input. Draw many rows and take the ones whose angle is closest to +-pi/2.
    x0 = torch.randn(1, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x0.expand(20000, 1, 6, 6).contiguous()
    y, labels = _only("rotate")(x, generator=torch.Generator().manual_seed(0))
    theta = torch.atan2(labels[:, 6], labels[:, 5] + 1)
    # y points down in image coordinates, so a positive angle turns the picture clockwise on screen
    for target, k in ((math.pi / 2, -1), (-math.pi / 2, 1)):
        i = int((theta - target).abs().argmin())
        dtheta = float((theta[i] - target).abs())
        assert dtheta < 2e-3  # 20000 uniform angles: the closest is ~1e-4 rad away
        # pixels (at most 3.6 px from the centre) move by < 3.6 * dtheta px; noise values change by
        # about |gradient| (< 5 per px here) times that
        err = float((y[i] - torch.rot90(x0, k=k, dims=(1, 2))).abs().max())
        assert err < 20 * dtheta + 1e-6


def test_rotation_labels_are_cos_minus_one_and_sin() -> None:
    x = torch.zeros(256, 1, 8, 8)
    _, labels = _only("rotate")(x, generator=torch.Generator().manual_seed(0))
    theta = torch.atan2(labels[:, 6], labels[:, 5] + 1)
    torch.testing.assert_close(labels[:, 5], torch.cos(theta) - 1)
    assert theta.abs().max() <= math.pi and theta.std() > 1.0  # ~U(-pi, pi): std pi/sqrt(3) = 1.81


@pytest.mark.parametrize("name", ["scale", "rotate", "aniso", "translate_frac", "translate_int", "xflip", "yflip"])
def test_geometric_transforms_preserve_statistics(name: str) -> None:
    x = _smooth_field(512, 1, 16, 16, seed=0)
    x = (x - x.mean()) / x.std()
    y, labels = _only(name)(x.float(), generator=torch.Generator().manual_seed(0))
    applied = labels.abs().sum(1) > 0
    assert applied.float().mean() > 0.4
    ya, xa = y[applied].double(), x[applied]
    # Stationary unit-variance fields: the mean over ~300 images of 256 pixels has std < 0.02 (pixels are
    # correlated over a few pixels); resampling a smooth field loses a little variance through bilinear
    # interpolation (a low-pass filter), measured < 10 % here, so std within 15 % and mean within 0.05.
    assert abs(float(ya.mean() - xa.mean())) < 0.05
    assert abs(float(ya.std() / xa.std()) - 1) < 0.15


def test_batch_invariant_given_generator_and_device_dtype() -> None:
    pipe = AugmentPipe(p=0.7)
    x = torch.randn(32, 1, 8, 8, dtype=torch.float64)
    y_all, l_all = pipe(x, generator=torch.Generator().manual_seed(5))
    y_few, l_few = pipe(x[:5], generator=torch.Generator().manual_seed(5))
    assert torch.equal(y_all[:5], y_few) and torch.equal(l_all[:5], l_few)
    assert y_all.dtype == torch.float64 and l_all.dtype == torch.float64
    assert isinstance(pipe, AugmentPipeProtocol)


def test_errors() -> None:
    with pytest.raises(ValueError, match="p must be a probability"):
        AugmentPipe(p=1.5)
    with pytest.raises(ValueError, match="rotate must be >= 0"):
        AugmentPipe(rotate=-1)
    with pytest.raises(TypeError, match="B, C, H, W"):
        AugmentPipe()(torch.zeros(3, 8, 8))


def _bilinear_reference(img: torch.Tensor, lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent transcription of the label semantics for one [H, W] image: the forward map about the
    image centre is p_out = T R(theta) A S p_in with S = 2^l4, A = diag(2^l7, 2^-l7), T = (l8 W, l9 H);
    each output pixel centre is pulled back and bilinearly interpolated. Returns (values, valid mask) where
    valid marks source points inside the pixel-centre hull (no padding involved)."""
    h, w = img.shape
    s, a = 2.0 ** float(lab[4]), 2.0 ** float(lab[7])
    th = math.atan2(float(lab[6]), float(lab[5]) + 1)
    tx, ty = float(lab[8]) * w, float(lab[9]) * h
    out = torch.zeros_like(img)
    valid = torch.zeros_like(img, dtype=torch.bool)
    for r in range(h):
        for c in range(w):
            px, py = c + 0.5 - w / 2 - tx, r + 0.5 - h / 2 - ty
            qx, qy = math.cos(th) * px + math.sin(th) * py, -math.sin(th) * px + math.cos(th) * py
            qx, qy = qx / (s * a), qy / (s / a)
            x, y = qx + w / 2 - 0.5, qy + h / 2 - 0.5
            if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                continue
            x0, y0 = min(math.floor(x), w - 2), min(math.floor(y), h - 2)
            fx, fy = x - x0, y - y0
            out[r, c] = (
                img[y0, x0] * (1 - fx) * (1 - fy)
                + img[y0, x0 + 1] * fx * (1 - fy)
                + img[y0 + 1, x0] * (1 - fx) * fy
                + img[y0 + 1, x0 + 1] * fx * fy
            )
            valid[r, c] = True
    return out, valid


def test_resampling_labels_decode_the_affine_map() -> None:
    x = torch.randn(12, 1, 10, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pipe = AugmentPipe(p=1.0, xflip=0, yflip=0, translate_int=0, scale_std=0.5, aniso_std=0.3)
    y, labels = pipe(x, generator=torch.Generator().manual_seed(4))
    checked = 0
    for i in range(12):
        ref, valid = _bilinear_reference(x[i, 0], labels[i])
        # float64 grid and interpolation on both sides: agreement to round-off
        torch.testing.assert_close(y[i, 0][valid], ref[valid], rtol=0, atol=1e-10)
        checked += int(valid.sum())
    assert checked > 300  # most pixels map inside the image for these strengths
