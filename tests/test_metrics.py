"""Metrics: sliced Wasserstein and MMD against independent transcriptions, and exact sharded statistics."""

from __future__ import annotations

import functools
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edm_samplers.evaluation.metrics import (
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


# A ring of K Gaussian modes (K = 6 centres at radius R, spread s, exactly N / K points each) has the mean (0)
# and covariance ((R^2 / 2 + s^2) I = I) of N(0, I), so the Frechet distance barely moves while sliced W_1
# and MMD see the shape. The thresholds below are derived bounds, not tuned to a seed.
RING_N, RING_K, RING_S = 12_000, 6, 0.2
RING_R = math.sqrt(2 * (1 - RING_S**2))
RING_ALPHA = 1e-4  # allowed failure probability of each one-sided bound
RING_PROJECTIONS = 16
MMD_N, MMD_H = 600, 0.5


def _ring_data(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    angle = (torch.arange(RING_N) % RING_K).double() * (2 * math.pi / RING_K)
    centres = RING_R * torch.stack([angle.cos(), angle.sin()], dim=1)
    ring = centres + RING_S * torch.randn(RING_N, 2, generator=g, dtype=torch.float64)
    gauss = torch.randn(RING_N, 2, generator=g, dtype=torch.float64)
    gauss2 = torch.randn(RING_N, 2, generator=g, dtype=torch.float64)
    return ring, gauss, gauss2


@functools.cache
def _normal_c() -> float:
    """C = int sqrt(Phi(x) (1 - Phi(x))) dx = 1.6147: E W_1(empirical n-sample, N(m, v)) <= sqrt(v) C / sqrt(n)
    (Fubini and Jensen: E |F_n(x) - F(x)| <= sqrt(F (1 - F) / n))."""
    return float(scipy.integrate.quad(lambda x: math.sqrt(scipy.stats.norm.cdf(x) * scipy.stats.norm.sf(x)),
                                      -np.inf, np.inf)[0])  # fmt: skip


@functools.cache
def _ring_w1_min() -> float:
    """A lower bound on min over unit directions theta of W_1(theta^T ring, N(0, 1)), for the populations.

    By the ring's symmetry (rotation by 2 pi / K, reflection) the angles in [0, pi / K] cover all directions.
    W_1 is sqrt(2)-Lipschitz in the angle (E |<x, theta - theta'>| <= E ||x|| |theta - theta'|, E ||x|| <= sqrt(2)),
    so the minimum over a grid minus sqrt(2) times half its spacing bounds the minimum below (0.196 - 0.012).
    """
    angles = np.linspace(0.0, math.pi / RING_K, 31)
    modes = 2 * math.pi * np.arange(RING_K) / RING_K
    # W_1 = int |F - G| dx in 1-D, by the trapezoid rule on [-12, 12] (the tails beyond hold < 1e-30): the
    # integrand has slope <= 2, curvature <= 2 and kinks only where F = G: an error ~1e-5 (h = 0.002), and
    # 1e-4 is subtracted.
    x, dx = np.linspace(-12.0, 12.0, 12_001, retstep=True)
    gauss = scipy.special.ndtr(x)
    mu = RING_R * np.cos(angles[:, None] - modes[None, :])  # [angles, modes]
    ring = scipy.special.ndtr((x[None, None, :] - mu[:, :, None]) / RING_S).mean(1)  # [angles, x]
    w1 = scipy.integrate.trapezoid(np.abs(ring - gauss[None, :]), dx=dx, axis=1)
    return float(w1.min()) - math.sqrt(2) * float(angles[1] - angles[0]) / 2 - 1e-4


def _gauss_kernel_mean(m1: torch.Tensor, v1: float, m2: torch.Tensor, v2: float, h: float) -> float:
    """E exp(-|x - y|^2 / (2 h^2)) for x ~ N(m1, v1 I), y ~ N(m2, v2 I) in 2-D: a Gaussian integral."""
    t = h * h + v1 + v2
    return h * h / t * math.exp(-float((m1 - m2).square().sum()) / (2 * t))


def _ring_mmd2() -> float:
    """Population MMD^2 (Gaussian kernel, bandwidth MMD_H) between the ring and N(0, I), in closed form."""
    k = torch.arange(RING_K).double() * (2 * math.pi / RING_K)
    cs = RING_R * torch.stack([k.cos(), k.sin()], dim=1)
    z, v = torch.zeros(2, dtype=torch.float64), RING_S**2
    kaa = sum(_gauss_kernel_mean(a, v, b, v, MMD_H) for a in cs for b in cs) / RING_K**2
    kab = sum(_gauss_kernel_mean(a, v, z, 1.0, MMD_H) for a in cs) / RING_K
    return kaa + _gauss_kernel_mean(z, 1.0, z, 1.0, MMD_H) - 2 * kab


def check_two_moments_vs_shape(seed: int) -> dict[str, float]:
    ring, gauss, gauss2 = _ring_data(seed)
    n, c, s, log_a = RING_N, _normal_c(), RING_S, math.log(1 / RING_ALPHA)
    # Frechet: equal population moments, so only sampling noise: |mu_a - mu_b|^2 ~ (1 + s^2) / n chi^2_2
    # (0.0016 at the 1e-4 tail) plus the covariance term ~ |C_a - C_b|_F^2 / 4 (E ~ 3 / n, ~0.002 at the
    # tail; delta method). 0.02 is 5x their sum (over 1000 seeds: <= 0.0015).
    fd = frechet_distance(ring, gauss)
    assert fd < 0.02
    # Sliced W_1 with equal sample sizes is (1 / n) sum_i |a_(i) - b_(i)| per direction: (1 / sqrt(n))-Lipschitz
    # in each sample's Frobenius norm, so as a function of the underlying standard normals it is
    # L-Lipschitz with L^2 = 2 / n (two Gaussian sets) or (1 + s^2) / n (ring = centres + s Z, Gaussian).
    # Gaussian concentration (Tsirelson-Ibragimov-Sudakov): P(f > E f + t) <= exp(-t^2 / (2 L^2)).
    # Means: E SW_1(gauss2, gauss) <= 2 C / sqrt(n) (triangle inequality through N(0, I)), and
    # E SW_1(ring, gauss) >= min_theta W_1 - C (1 + s sqrt(K)) / sqrt(n) (the ring's modes are sampled
    # N / K each: W_1 of the mixture <= mean of the modes' W_1, each <= s C sqrt(K / n)).
    same_max = 2 * c / math.sqrt(n) + math.sqrt(4 * log_a / n)  # 0.085 (over 1000 seeds: <= 0.044)
    diff_min = (_ring_w1_min() - c * (1 + s * math.sqrt(RING_K)) / math.sqrt(n)
                - math.sqrt(2 * (1 + s * s) * log_a / n))  # fmt: skip  # 0.12 (over 1000 seeds: >= 0.207)
    assert same_max < diff_min  # the bounds are apart; each assertion below fails w.p. <= RING_ALPHA
    kw: dict[str, Any] = {"p": 1, "num_projections": RING_PROJECTIONS}
    sw_same, sw_diff = sliced_wasserstein(gauss2, gauss, **kw), sliced_wasserstein(ring, gauss, **kw)
    assert sw_same <= same_max
    assert sw_diff >= diff_min
    # MMD^2 (unbiased) on the first MMD_N rows (exactly MMD_N / K per mode) against its closed form 0.067.
    # The U-statistic's std is sqrt(4 zeta_1 / m) = 0.0054 for the pair (zeta_1 = Var of the kernel's
    # one-sample projection, by Monte Carlo) and ~0.0008 (measured) for two Gaussian sets (degenerate,
    # O(1 / m)): half the population value is 6.2 std of the first (Gaussian tail 1e-9) and 40 std of
    # the second (Chebyshev: <= 6e-4 whatever its shape). Over 1000 seeds: mmd_diff in [0.049, 0.085],
    # mmd_same in [-0.002, 0.0044], against the bounds [0.034, 0.101] and +-0.034.
    pop = _ring_mmd2()
    m = MMD_N
    mmd_diff, mmd_same = mmd_rbf(ring[:m], gauss[:m], bandwidth=MMD_H), mmd_rbf(gauss2[:m], gauss[:m], bandwidth=MMD_H)
    assert abs(mmd_diff - pop) < pop / 2
    assert abs(mmd_same) < pop / 2
    return {"frechet": fd, "sw_same": sw_same, "sw_diff": sw_diff, "mmd_diff": mmd_diff, "mmd_same": mmd_same}


@pytest.mark.parametrize("seed", [0, 1])
def test_sliced_w_sees_beyond_two_moments(seed: int) -> None:
    check_two_moments_vs_shape(seed)


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
