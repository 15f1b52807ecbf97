"""Metrics: sliced Wasserstein and MMD against independent transcriptions, and exact sharded statistics."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edm_samplers.metrics import (
    FeatureStats,
    _split_bins,
    frechet_distance,
    frechet_distance_from_stats,
    load_stats,
    mmd_rbf,
    sliced_wasserstein,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- sliced Wasserstein ------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 40), m=st.integers(2, 40), seed=st.integers(0, 10_000))
def test_sliced_w1_in_one_dimension_is_scipy_w1(n: int, m: int, seed: int) -> None:
    # In 1-D every unit direction is +-1 and |theta a - theta b| is the same for both signs, so SW_1 = W_1.
    g = _gen(seed)
    a, b = torch.randn(n, 1, generator=g, dtype=torch.float64), torch.rand(m, 1, generator=g, dtype=torch.float64)
    want = scipy.stats.wasserstein_distance(a.flatten().numpy(), b.flatten().numpy())
    got = sliced_wasserstein(a, b, p=1, num_projections=4)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-14)  # both exact; only summation order differs


def test_sliced_w2_equal_sizes_is_sorted_matching() -> None:
    # Equal sizes: W_2^2 between 1-D empirical measures = mean squared difference of sorted values.
    g = _gen(1)
    a, b = torch.randn(50, 1, generator=g, dtype=torch.float64), torch.randn(50, 1, generator=g) * 2 + 1
    want = math.sqrt(float(((a.flatten().sort()[0] - b.double().flatten().sort()[0]) ** 2).mean()))
    assert sliced_wasserstein(a, b, p=2) == pytest.approx(want, rel=1e-12)
    assert sliced_wasserstein(a, b, p=2, resolution=50) == pytest.approx(want, rel=1e-12)


def test_sliced_w_sees_beyond_two_moments() -> None:
    # A symmetric bimodal set and a Gaussian with the same mean (0) and covariance (I): Frechet barely
    # moves (sampling noise only), sliced W sees the shape.
    g = _gen(2)
    n, d = 8000, 2
    sign = torch.randint(0, 2, (n, 1), generator=g).double() * 2 - 1
    bimodal = sign * 0.95 + torch.randn(n, d, generator=g, dtype=torch.float64) * math.sqrt(1 - 0.95**2)
    bimodal[:, 1] = torch.randn(n, generator=g, dtype=torch.float64)
    gauss = torch.randn(n, d, generator=g, dtype=torch.float64)
    gauss2 = torch.randn(n, d, generator=g, dtype=torch.float64)
    assert frechet_distance(bimodal, gauss) < 0.02
    sw_diff, sw_same = sliced_wasserstein(bimodal, gauss), sliced_wasserstein(gauss2, gauss)
    assert sw_diff > 4 * sw_same
    assert mmd_rbf(bimodal[:800], gauss[:800]) > 5 * abs(mmd_rbf(gauss2[:800], gauss[:800]))


def test_sliced_w_errors() -> None:
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="same sample size"):
        sliced_wasserstein(x, torch.randn(5, 4))
    with pytest.raises(ValueError, match="num_projections"):
        sliced_wasserstein(x, x, num_projections=0)
    with pytest.raises(ValueError, match="p must be"):
        sliced_wasserstein(x, x, p=0)
    with pytest.raises(ValueError, match="at least 2"):
        sliced_wasserstein(x[:1], x)
    with pytest.raises(TypeError, match="floating"):
        sliced_wasserstein(torch.ones(5, 3, dtype=torch.int64), x)


# ---- MMD ---------------------------------------------------------------------------------------


def _mmd_loops(a: list[list[float]], b: list[list[float]], h: float) -> float:
    """Independent transcription: unbiased MMD^2 (Gretton et al. 2012, Eq. 3) with plain loops."""

    def k(x: list[float], y: list[float]) -> float:
        return math.exp(-sum((u - v) ** 2 for u, v in zip(x, y, strict=True)) / (2 * h * h))

    n, m = len(a), len(b)
    kaa = sum(k(a[i], a[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    kbb = sum(k(b[i], b[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    kab = sum(k(x, y) for x in a for y in b) / (n * m)
    return kaa + kbb - 2 * kab


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 9), m=st.integers(2, 9), h=st.floats(0.3, 3.0), seed=st.integers(0, 10_000))
def test_mmd_matches_loops(n: int, m: int, h: float, seed: int) -> None:
    g = _gen(seed)
    a, b = torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randn(m, 3, generator=g, dtype=torch.float64)
    want = _mmd_loops(a.tolist(), b.tolist(), h)
    assert mmd_rbf(a, b, bandwidth=h) == pytest.approx(want, rel=1e-10, abs=1e-13)  # summation order only


def test_mmd_biased_is_nonnegative_and_errors() -> None:
    g = _gen(3)
    a, b = torch.randn(30, 2, generator=g), torch.randn(30, 2, generator=g)
    assert mmd_rbf(a, b, unbiased=False) >= 0
    assert mmd_rbf(a, a, unbiased=False) == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match="bandwidth"):
        mmd_rbf(a, b, bandwidth=0.0)


# ---- exact sharded statistics ------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(v=st.floats(-1e30, 1e30, allow_nan=False))
def test_split_bins_is_exact(v: float) -> None:
    parts = _split_bins(torch.tensor([v], dtype=torch.float64))
    if abs(v) >= 2.0**-50:  # below that the dropped bits (< 2^-60) are a visible fraction of v
        assert math.fsum(parts.flatten().tolist()) == pytest.approx(v, rel=2.0**-50 / max(abs(v), 1.0) + 1e-300)
    total = 0.0
    for p in parts.flatten().tolist():
        total = total + p
    assert abs(total - v) <= 2.0**-60  # only bits below the smallest quantum are dropped


def test_feature_stats_moments_and_frechet() -> None:
    g = _gen(4)
    f = torch.randn(300, 6, generator=g) * torch.arange(1, 7) + 3
    s = FeatureStats(6).update(f[:100]).update(f[100:])
    mu, cov = s.mean_cov()
    assert s.n == 300
    assert torch.allclose(mu, f.double().mean(0), rtol=0, atol=1e-13)
    assert torch.allclose(cov, torch.cov(f.double().T), rtol=0, atol=1e-12)  # float64 rounding of sums ~ 1e-15 x 1e3
    h = torch.randn(200, 6, generator=g)
    assert frechet_distance_from_stats(s, FeatureStats(6).update(h)) == pytest.approx(frechet_distance(f, h), rel=1e-10)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), data=st.data())
def test_feature_stats_are_bit_identical_for_any_grouping(seed: int, data: st.DataObject) -> None:
    # Fixed batches, grouped into "ranks" in any way and merged in any order: exactly the same sums.
    g = _gen(seed)
    batches = [torch.randn(7, 4, generator=g) * 10 ** float(torch.randint(-3, 4, (1,), generator=g)) for _ in range(6)]
    ref = FeatureStats(4)
    for b in batches:
        ref.update(b)
    order = data.draw(st.permutations(range(6)))
    cut = data.draw(st.integers(0, 6))
    r0, r1 = FeatureStats(4), FeatureStats(4)
    for i in order[:cut]:
        r0.update(batches[i])
    for i in order[cut:]:
        r1.update(batches[i])
    merged = r1.merge(r0)
    for x, y in zip(ref.sums(), merged.sums(), strict=True):
        assert torch.equal(x, y)
    assert torch.equal(ref.mean_cov()[1], merged.mean_cov()[1])


def test_feature_stats_save_load_roundtrip(tmp_path: Path) -> None:
    f = torch.randn(50, 3, generator=_gen(5))
    s = FeatureStats(3).update(f)
    s.save(tmp_path / "stats.npz")
    mu, cov = load_stats(tmp_path / "stats.npz")
    assert torch.equal(mu, s.mean_cov()[0]) and torch.equal(cov, s.mean_cov()[1])
    np.savez(tmp_path / "bad.npz", m=np.zeros(3))
    with pytest.raises(ValueError, match="'mu' and 'sigma'"):
        load_stats(tmp_path / "bad.npz")


def test_feature_stats_errors_and_noop_reduce() -> None:
    with pytest.raises(ValueError, match="dim"):
        FeatureStats(0)
    s = FeatureStats(3)
    with pytest.raises(ValueError, match="3 features"):
        s.update(torch.zeros(2, 4))
    with pytest.raises(TypeError, match=r"\[B, F\]"):
        s.update(torch.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        s.update(torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match="at least 2"):
        s.mean_cov()
    assert s.all_reduce() is s  # no process group: a no-op
