"""Sample-quality metrics.

- :func:`frechet_distance`: the Frechet (2-Wasserstein) distance between Gaussians fitted to two sets
  of feature vectors, the statistic behind FID. For the built-in digits model the features are those of
  the shipped classifier, :func:`edm_samplers.models.digits_features` (or raw pixels).
- :func:`sliced_wasserstein` and :func:`mmd_rbf`: distances that see beyond the first two moments
  (the Frechet distance is blind to anything a Gaussian fit misses).
- :class:`FeatureStats`: running float64 sums of f and f f^T, mergeable across batches and reducible
  across processes with ``torch.distributed`` (bit-identical for any number of ranks), with
  :func:`frechet_distance_from_stats` and :func:`load_stats` for FID reference files.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "FeatureStats",
    "frechet_distance",
    "frechet_distance_from_stats",
    "gaussian_frechet_distance",
    "load_stats",
    "mmd_rbf",
    "sliced_wasserstein",
]


def _psd_sqrt(m: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix via eigh (negative round-off clipped)."""
    w, v = torch.linalg.eigh((m + m.T) / 2)
    out: Tensor = (v * w.clamp(min=0).sqrt()) @ v.T
    return out


def gaussian_frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """d^2 = ||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2), computed in float64.

    tr((C1 C2)^1/2) equals tr((C1^1/2 C2 C1^1/2)^1/2), whose argument is symmetric PSD, so both
    square roots come from ``eigh`` (stable, no complex round-off as with a general ``sqrtm``).
    """
    mu1, mu2 = mu1.to(torch.float64), mu2.to(torch.float64)
    c1, c2 = cov1.to(torch.float64), cov2.to(torch.float64)
    if mu1.shape != mu2.shape or mu1.ndim != 1 or c1.shape != (mu1.numel(),) * 2 or c2.shape != c1.shape:
        raise ValueError(
            f"expected means [F] and covariances [F, F] of one size, got {tuple(mu1.shape)}, {tuple(mu2.shape)}, "
            f"{tuple(c1.shape)}, {tuple(c2.shape)}"
        )
    s1 = _psd_sqrt(c1)
    cross = _psd_sqrt(s1 @ c2 @ s1)
    d2 = (mu1 - mu2).square().sum() + torch.trace(c1) + torch.trace(c2) - 2 * torch.trace(cross)
    return float(d2.clamp(min=0))


def _stats(feats: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if not isinstance(feats, Tensor) or feats.ndim != 2 or not feats.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor of features [N, F], got {getattr(feats, 'shape', feats)!r}")
    if feats.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples to estimate a covariance, got {feats.shape[0]}")
    f = feats.detach().to(device="cpu", dtype=torch.float64)
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Frechet distance between Gaussian fits of two feature sets ``a`` ``[N, F]`` and ``b`` ``[M, F]``.

    FD = ||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^1/2) with sample means and (unbiased)
    covariances, in float64 on the CPU (FID's convention: the squared 2-Wasserstein distance; not
    square-rooted). Finite-sample estimates are biased upwards, so compare distances computed from
    sets of equal sizes (e.g. generated vs real against real half vs real half).

    Raises:
        TypeError: if the inputs are not 2-D floating tensors.
        ValueError: on fewer than 2 rows or mismatched feature sizes.
    """
    mu_a, cov_a = _stats(a, "a")
    mu_b, cov_b = _stats(b, "b")
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"a and b must have the same feature size, got {a.shape[1]} and {b.shape[1]}")
    return gaussian_frechet_distance(mu_a, cov_a, mu_b, cov_b)


# ---- beyond two moments ------------------------------------------------------------------------


def _features(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise TypeError(f"{name} must be a floating tensor of samples [N, ...], got {getattr(x, 'shape', x)!r}")
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {x.shape[0]}")
    return x.detach().to(device="cpu", dtype=torch.float64).reshape(x.shape[0], -1)


def _pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    fa, fb = _features(a, "a"), _features(b, "b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"a and b must have the same sample size, got {fa.shape[1]} and {fb.shape[1]} numbers")
    return fa, fb


def _quantiles(v: Tensor, m: int) -> Tensor:
    """The empirical quantile function of each column of ``v`` ``[N, P]`` at the m mid-points (k + 1/2)/m."""
    s, _ = torch.sort(v, dim=0)
    n = s.shape[0]
    if n == m:
        return s
    # Inverse CDF of the empirical measure (a step function) at u: the order statistic floor(u n).
    u = (torch.arange(m, dtype=torch.float64) + 0.5) / m
    idx = torch.floor(u * n).long().clamp(0, n - 1)
    return s[idx]


def sliced_wasserstein(
    a: Tensor, b: Tensor, *, num_projections: int = 256, p: int = 2, seed: int = 0, resolution: int | None = None
) -> float:
    """Sliced p-Wasserstein distance between the empirical measures of ``a`` ``[N, ...]`` and ``b`` ``[M, ...]``.

    SW_p(a, b) = ( E_theta W_p^p(theta^T a, theta^T b) )^(1/p) with theta uniform on the unit sphere,
    estimated with ``num_projections`` directions drawn from ``seed`` (the same directions for every
    call with the same seed and dimension, so values are comparable across samplers). Each 1-D W_p is
    exact between the projected empirical measures: the integral over u in (0, 1) of
    |F_a^-1(u) - F_b^-1(u)|^p, evaluated on the common refinement of both step functions when
    ``resolution`` is None (N + M points) or at ``resolution`` mid-point quantiles. Unlike the Frechet
    distance it sees every moment: two sets with equal means and covariances but different shapes
    (e.g. a bimodal and a Gaussian set) are told apart. Computed in float64 on the CPU.

    Raises:
        TypeError / ValueError: for non-floating inputs, fewer than 2 samples, mismatched sizes or
            ``num_projections`` / ``p`` < 1.
    """
    fa, fb = _pair(a, b)
    if isinstance(num_projections, bool) or not isinstance(num_projections, int) or num_projections < 1:
        raise ValueError(f"num_projections must be an int >= 1, got {num_projections!r}")
    if isinstance(p, bool) or not isinstance(p, int) or p < 1:
        raise ValueError(f"p must be an int >= 1, got {p!r}")
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(fa.shape[1], num_projections, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    pa, pb = fa @ theta, fb @ theta
    if resolution is None:
        # Common refinement: quantile functions of both measures are constant between the breakpoints
        # k/N and l/M, so evaluating at the mid-points of the merged breakpoints integrates exactly.
        n, m = pa.shape[0], pb.shape[0]
        f64 = torch.float64
        brk = torch.unique(torch.cat([torch.arange(n + 1, dtype=f64) / n, torch.arange(m + 1, dtype=f64) / m]))
        mid, width = (brk[1:] + brk[:-1]) / 2, brk[1:] - brk[:-1]
        sa, _ = torch.sort(pa, dim=0)
        sb, _ = torch.sort(pb, dim=0)
        qa = sa[(torch.floor(mid * n)).long().clamp(0, n - 1)]
        qb = sb[(torch.floor(mid * m)).long().clamp(0, m - 1)]
        wp = ((qa - qb).abs() ** p * width[:, None]).sum(0)
    else:
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"resolution must be an int >= 1 or None, got {resolution!r}")
        wp = ((_quantiles(pa, resolution) - _quantiles(pb, resolution)).abs() ** p).mean(0)
    return float(wp.mean() ** (1.0 / p))


def mmd_rbf(a: Tensor, b: Tensor, *, bandwidth: float | None = None, unbiased: bool = True) -> float:
    """Squared maximum mean discrepancy with a Gaussian kernel k(x, y) = exp(-||x - y||^2 / (2 h^2)).

    MMD^2 = E k(a, a') + E k(b, b') - 2 E k(a, b); with ``unbiased=True`` the within-set means leave
    out the diagonal (the U-statistic, which can be slightly negative when the sets are alike). The
    kernel is characteristic, so MMD^2 = 0 only for equal distributions. ``bandwidth`` h defaults to
    the median pairwise distance of the pooled samples (median heuristic). Costs O((N + M)^2) memory
    and time: meant for a few thousand samples. float64 on the CPU.

    Raises:
        TypeError / ValueError: for non-floating inputs, fewer than 2 samples, mismatched sizes or a
            non-positive bandwidth.
    """
    fa, fb = _pair(a, b)
    pooled = torch.cat([fa, fb])
    d2 = torch.cdist(pooled, pooled, compute_mode="donot_use_mm_for_euclid_dist").square()
    if bandwidth is None:
        n = pooled.shape[0]
        off = d2[~torch.eye(n, dtype=torch.bool)]
        h2 = float(off.median()) / 2 if off.numel() else 1.0
        h2 = h2 if h2 > 0 else 1.0
    else:
        if not isinstance(bandwidth, (int, float)) or not bandwidth > 0 or bandwidth == float("inf"):
            raise ValueError(f"bandwidth must be a positive finite number or None, got {bandwidth!r}")
        h2 = float(bandwidth) ** 2
    k = torch.exp(-d2 / (2 * h2))
    na = fa.shape[0]
    kaa, kbb, kab = k[:na, :na], k[na:, na:], k[:na, na:]
    if unbiased:
        nb = fb.shape[0]
        eaa = (kaa.sum() - kaa.diagonal().sum()) / (na * (na - 1))
        ebb = (kbb.sum() - kbb.diagonal().sum()) / (nb * (nb - 1))
    else:
        eaa, ebb = kaa.mean(), kbb.mean()
    return float(eaa + ebb - 2 * kab.mean())


# ---- sharded statistics ------------------------------------------------------------------------

# Reproducible sums (the binned summation of ReproBLAS, Demmel & Nguyen): every value is split
# exactly into parts that are integer multiples of 2^(W b) for fixed bins b, and each bin is summed
# separately. Within a bin every partial sum is an integer multiple of the bin's quantum and stays
# below 2^53 quanta, so every float64 addition is exact: the bin sums, and hence the total, do not
# depend on the order of the additions, on how the data were split into batches, or on how many
# processes summed them (all_reduce included). Bits below 2^-60 of each added value are dropped
# (deterministically, before any sum), an absolute error of at most 2^-60 per value and entry.
_BIN_WIDTH = 30
_BIN_LOW = -60  # exponent of the smallest bin's quantum
_NUM_BINS = 5  # quanta 2^-60, 2^-30, 2^0, 2^30, 2^60: the top bin holds |v| up to 2^113 exactly
# Each bin but the top adds parts below 2^30 quanta, so 2^22 additions stay below 2^52 quanta: exact.
_MAX_ADDS = 2**22


def _split_bins(v: Tensor) -> Tensor:
    """Exact split of float64 ``v`` into ``[_NUM_BINS, *v.shape]`` parts, part b a multiple of 2^(-60 + 30 b)."""
    parts = []
    r = v
    for b in reversed(range(_NUM_BINS)):
        q = 2.0 ** (_BIN_LOW + _BIN_WIDTH * b)
        # r / q and * q are exact (powers of two); round() is exact; r - hi is exact because hi is
        # r rounded to a multiple of q >= ulp(r) (the difference is a multiple of ulp(r), below q/2).
        hi = torch.round(r / q) * q
        parts.append(hi)
        r = r - hi
    return torch.stack(parts[::-1])


class FeatureStats:
    """Running first and second moments of feature vectors, reproducible and reducible across processes.

    Holds n, sum_i f_i and sum_i f_i f_i^T in float64 (as exact binned sums), from which the mean
    mu = sum f / n and the unbiased covariance C = (sum f f^T - n mu mu^T) / (n - 1) follow: the inputs of
    the Frechet distance (FID). Each :meth:`update` rounds its batch's sums once; from there on all
    additions are exact (see the note above ``_split_bins``), so :meth:`merge` and :meth:`all_reduce`
    (``torch.distributed``, SUM over all ranks) give *bit-identical* results for any grouping of the same
    batches into processes and any order. Keep the batches themselves fixed (e.g. by global seed
    position, as ``edm-samplers generate`` does) and the statistics do not depend on the number of ranks.

    Args:
        dim: the feature size F.

    Example::

        stats = FeatureStats(64)
        for batch in batches:                 # this rank's share of the seeds
            stats.update(features(batch))
        stats.all_reduce()                    # under torchrun; a no-op without torch.distributed
        fd = frechet_distance_from_stats(stats, reference_stats)
    """

    def __init__(self, dim: int) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be an int >= 1 (the feature size), got {dim!r}")
        self.dim = dim
        self._n = torch.zeros(1, dtype=torch.float64)  # counts are exact in float64 below 2^53
        self._s1 = torch.zeros(_NUM_BINS, dim, dtype=torch.float64)
        self._s2 = torch.zeros(_NUM_BINS, dim, dim, dtype=torch.float64)
        self._adds = 0

    @property
    def n(self) -> int:
        """The number of feature vectors accumulated."""
        return int(self._n)

    def update(self, feats: Tensor) -> FeatureStats:
        """Add a batch of features ``[B, F]`` (any floating dtype/device; summed in float64 on the CPU)."""
        if not isinstance(feats, Tensor) or feats.ndim != 2 or not feats.is_floating_point():
            raise TypeError(f"feats must be a floating tensor [B, F], got {getattr(feats, 'shape', feats)!r}")
        if feats.shape[1] != self.dim:
            raise ValueError(f"feats must have {self.dim} features per row, got {feats.shape[1]}")
        f = feats.detach().to(device="cpu", dtype=torch.float64)
        if not bool(torch.isfinite(f).all()):
            raise ValueError("feats holds NaN or Inf; the statistics would be meaningless")
        # The batch's own sums are rounded once (they depend on the batch's rows, as the samples do);
        # from there on every addition is exact, so how batches are grouped and ordered cannot matter.
        self._s1 += _split_bins(f.sum(0))
        self._s2 += _split_bins(f.T @ f)
        self._n += f.shape[0]
        self._adds += 1
        if self._adds > _MAX_ADDS:
            raise OverflowError(f"FeatureStats got more than {_MAX_ADDS} batches; exact summation is not guaranteed")
        return self

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Add the statistics of a disjoint set of samples (in place; exact, order-independent)."""
        if not isinstance(other, FeatureStats) or other.dim != self.dim:
            raise ValueError("other must be a FeatureStats of the same dim")
        self._n += other._n
        self._s1 += other._s1
        self._s2 += other._s2
        self._adds += other._adds
        return self

    def all_reduce(self, group: object = None) -> FeatureStats:
        """Sum the statistics of all ranks in place (``torch.distributed``, SUM); a no-op when not initialised.

        Runs on the CPU tensors, so it needs a backend with CPU support (gloo; for nccl jobs create a
        gloo group with ``torch.distributed.new_group(backend="gloo")`` and pass it as ``group``).
        Every addition is exact, so the result is bit-identical for any number of ranks.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        flat = torch.cat([self._n, self._s1.flatten(), self._s2.flatten()])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        k = self._s1.numel()
        self._n = flat[:1].clone()
        self._s1 = flat[1 : 1 + k].reshape(self._s1.shape).clone()
        self._s2 = flat[1 + k :].reshape(self._s2.shape).clone()
        return self

    def sums(self) -> tuple[Tensor, Tensor]:
        """(sum f ``[F]``, sum f f^T ``[F, F]``) in float64, the exact bin sums added smallest first."""
        return self._s1.sum(0), self._s2.sum(0)

    def mean_cov(self) -> tuple[Tensor, Tensor]:
        """The mean ``[F]`` and unbiased covariance ``[F, F]`` (float64). Needs at least 2 samples."""
        n = self.n
        if n < 2:
            raise ValueError(f"at least 2 samples are needed for a covariance, got {n}")
        s1, s2 = self.sums()
        mu = s1 / n
        cov = (s2 - n * torch.outer(mu, mu)) / (n - 1)
        return mu, (cov + cov.T) / 2

    def save(self, path: str | object) -> None:
        """Write ``mu``, ``sigma`` (covariance) and ``n`` to an ``.npz`` file (the layout of FID statistics files)."""
        import numpy as np

        mu, cov = self.mean_cov()
        np.savez(str(path), mu=mu.numpy(), sigma=cov.numpy(), n=np.asarray(self.n))


def load_stats(path: str | object) -> tuple[Tensor, Tensor]:
    """Read ``(mu, sigma)`` as float64 tensors from an ``.npz`` statistics file (``mu``, ``sigma`` arrays).

    This is the layout of :meth:`FeatureStats.save` and of the reference files of pytorch-fid /
    torch-fidelity / clean-fid. Pickled objects are refused.
    """
    import numpy as np

    with np.load(str(path), allow_pickle=False) as f:
        if "mu" not in f or "sigma" not in f:
            raise ValueError(f"{path} must hold arrays 'mu' and 'sigma', found {sorted(f.keys())}")
        return torch.as_tensor(f["mu"], dtype=torch.float64), torch.as_tensor(f["sigma"], dtype=torch.float64)


def frechet_distance_from_stats(
    a: FeatureStats | tuple[Tensor, Tensor], b: FeatureStats | tuple[Tensor, Tensor]
) -> float:
    """Frechet distance between two sets of statistics (a :class:`FeatureStats` or a ``(mu, cov)`` pair)."""
    ma, ca = a.mean_cov() if isinstance(a, FeatureStats) else a
    mb, cb = b.mean_cov() if isinstance(b, FeatureStats) else b
    return gaussian_frechet_distance(ma, ca, mb, cb)
