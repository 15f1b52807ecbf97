"""The analytical first step (AFS) and per-evaluation direction scales: two run options every sampler takes.

**Analytical first step.** At the first level of a schedule (sigma_max = 80 for EDM) the noisy data are almost
pure noise and the ideal denoiser is almost that of a Gaussian with the data's mean and covariance. For data
y ~ N(mu, Sigma) and x = y + n, n ~ N(0, sigma^2 I), the posterior mean is (Gaussian conditioning)

    D(x; sigma) = E[y | x] = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu),

which for zero-mean data with isotropic variance sigma_data^2 (EDM's assumption) is
D = x sigma_data^2 / (sigma_data^2 + sigma^2): EDM's c_skip, the output of a preconditioned network whose
F returns 0. AMED, EPD and AdaSDE replace the first network evaluation by this closed form and give the saved
evaluation to one more step. ``afs=`` (every sampler, :func:`~edm_samplers.generate`,
:class:`~edm_samplers.GraphedSampler`, :func:`~edm_samplers.count_nfe`) takes a :class:`GaussianDenoiser`
(from data statistics), a float (sigma_data: zero mean, isotropic variance) or ``True`` (the denoiser's own
``sigma_data`` attribute, e.g. :class:`~edm_samplers.EDMPrecond`'s). The first denoiser call of each run then
returns the closed form; the network runs one time fewer (``count_nfe(..., afs=...)`` counts it).

**Direction scales.** ``direction_scale=[s_0, ..., s_{K-1}]`` rescales the k-th denoiser evaluation of a run
(in call order, the analytic one included; K = ``count_nfe(sigmas, sampler, **knobs)``) as
D'_k = x - s_k (x - D_k), i.e. the ODE direction (x - D)/sigma is multiplied by s_k. This is the per-step
direction scale of AMED/PAS/S4S-style calibration (and, for s_k = 1 / lambda_k, the "epsilon scaling" of
exposure-bias correction). ``sigma_scale=[t_k]`` evaluates the k-th call at sigma t_k instead of sigma (the
time-shift correction of exposure-bias work; AMED learns its intermediate time in the same spirit).
:func:`~edm_samplers.calibrate` fits both with the schedule.

Both work through the runtime's denoiser wrapper (a host-side call counter reset at each run): the sampling
programs are unchanged, and a captured graph records one run's call sequence, so graph replay is correct.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ._types import Denoiser
from ._validate import check_float

__all__ = ["GaussianDenoiser", "afs_enabled"]


class GaussianDenoiser:
    """The exact denoiser of Gaussian data N(mu, Sigma): D(x; sigma) = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu).

    Args:
        mean: mu: a number or a tensor of one sample's shape (default 0).
        var: a diagonal Sigma: a number (isotropic, e.g. ``sigma_data**2``) or a tensor of one sample's shape
            (e.g. per-pixel variances); default 1 unless ``cov`` is given.
        cov: a full ``[d, d]`` covariance over the flattened sample (d = number of elements of one sample),
            symmetric positive semi-definite; factorised once (eigendecomposition in float64), so a call costs
            two ``[B, d] x [d, d]`` products.

    Use :meth:`from_data` or :meth:`from_stats` (a :class:`~edm_samplers.evaluation.FeatureStats` of the
    training set) for moments estimated from data. Conditioning keywords are ignored (unconditional moments).
    """

    def __init__(self, mean: float | Tensor = 0.0, var: float | Tensor | None = None, *, cov: Tensor | None = None):
        if var is not None and cov is not None:
            raise ValueError("pass var (a diagonal covariance) or cov (a full [d, d] one), not both")
        self.mean = _moment(mean, "mean")
        self.var = _moment(1.0 if var is None and cov is None else var, "var") if cov is None else None
        if self.var is not None and bool((self.var < 0).any()):
            raise ValueError("var must be >= 0 (a variance)")
        self.eigvals: Tensor | None = None
        self.eigvecs: Tensor | None = None
        if cov is not None:
            if not isinstance(cov, Tensor) or cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
                raise ValueError(f"cov must be a square [d, d] tensor, got {getattr(cov, 'shape', type(cov))}")
            c = cov.detach().to(device="cpu", dtype=torch.float64)
            if not bool(torch.isfinite(c).all()) or not torch.allclose(c, c.T, rtol=1e-6, atol=1e-12):
                raise ValueError("cov must be finite and symmetric (a covariance matrix)")
            w, u = torch.linalg.eigh(c)
            if float(w.min()) < -1e-8 * max(float(w.max()), 1e-300):
                raise ValueError(f"cov must be positive semi-definite, its smallest eigenvalue is {float(w.min())}")
            self.eigvals, self.eigvecs = w.clamp_min(0.0), u

    @classmethod
    def from_data(cls, data: Tensor, *, full_cov: bool = False) -> GaussianDenoiser:
        """Moments of ``data`` ``[M, *sample_shape]``: per-element mean and variance, or the full covariance."""
        if not isinstance(data, Tensor) or not data.is_floating_point() or data.ndim < 2 or data.shape[0] < 2:
            raise ValueError("data must be a floating tensor [M, *sample_shape] with M >= 2 samples")
        if not full_cov:
            d = data.detach().to(dtype=torch.float64, device="cpu")
            return cls(d.mean(0), d.var(0))
        mean, cov = data_moments(data)
        return cls(mean, cov=cov)

    @classmethod
    def from_stats(cls, stats: Any, sample_shape: Sequence[int] | None = None) -> GaussianDenoiser:
        """From an object with ``mean_cov() -> (mean [d], cov [d, d])`` (e.g. ``FeatureStats`` of the data)."""
        if not callable(getattr(stats, "mean_cov", None)):
            raise TypeError(f"stats must have a mean_cov() method (e.g. FeatureStats), got {type(stats).__name__}")
        mean, cov = stats.mean_cov()
        mean = mean.to(torch.float64)
        if sample_shape is not None:
            mean = mean.reshape(tuple(sample_shape))
        return cls(mean, cov=cov)

    def bind(self, dtype: torch.dtype, device: torch.device) -> Denoiser:
        """This denoiser with its tables already in ``dtype`` on ``device`` (no host-to-device copy per call)."""
        mean = self.mean.to(device=device, dtype=dtype)
        var = None if self.var is None else self.var.to(device=device, dtype=dtype)
        w = None if self.eigvals is None else self.eigvals.to(device=device, dtype=dtype)
        u = None if self.eigvecs is None else self.eigvecs.to(device=device, dtype=dtype)

        def den(x: Tensor, sigma: Tensor, /, **cond: Any) -> Tensor:
            del cond
            s2 = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1))) ** 2
            y = x - mean
            if var is not None:
                return mean + y * (var / (var + s2))
            assert u is not None and w is not None  # cov given (internal invariant, not user input)
            z = y.reshape(x.shape[0], -1) @ u
            z = z * (w / (w + s2.reshape(-1, 1)))
            return mean + (z @ u.T).reshape(x.shape)

        return den

    def __call__(self, x: Tensor, sigma: Tensor, /, **cond: Any) -> Tensor:
        return self.bind(x.dtype, x.device)(x, sigma, **cond)


def data_moments(data: Tensor) -> tuple[Tensor, Tensor]:
    """float64 mean (one sample's shape) and full covariance ``[d, d]`` of ``data`` ``[M, *sample_shape]``:
    what ``GaussianDenoiser.from_data(data, full_cov=True)`` is built from (e.g. to store them)."""
    d = data.detach().to(dtype=torch.float64, device="cpu")
    mean = d.mean(0)
    flat = (d - mean).reshape(d.shape[0], -1)
    return mean, flat.T @ flat / (d.shape[0] - 1)


def _moment(v: object, name: str) -> Tensor:
    if isinstance(v, Tensor):
        if not v.is_floating_point() or not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name} must be a finite floating tensor (one sample's shape) or a number")
        return v.detach().to(device="cpu", dtype=torch.float64)
    return torch.tensor(check_float(v, name), dtype=torch.float64)


def afs_enabled(afs: object) -> bool:
    """Whether an ``afs=`` value turns the analytical first step on (anything but None / False)."""
    return afs is not None and afs is not False


def closed_form(afs: object, denoiser: object) -> Denoiser | None:
    """The closed-form first denoiser of an ``afs=`` value (checked), or None when it is off."""
    if not afs_enabled(afs):
        return None
    if afs is True:
        sd = getattr(denoiser, "sigma_data", None)
        if isinstance(sd, bool) or not isinstance(sd, (int, float)) or not sd > 0 or not math.isfinite(sd):
            raise ValueError(
                f"afs=True reads the denoiser's sigma_data attribute, but {type(denoiser).__name__} has "
                f"sigma_data={sd!r}; pass afs=<sigma_data as a float> or afs=GaussianDenoiser(mean, var)"
            )
        return GaussianDenoiser(0.0, float(sd) ** 2)
    if isinstance(afs, (int, float)) and not isinstance(afs, bool):
        sd = check_float(afs, "afs", positive=True)
        return GaussianDenoiser(0.0, sd**2)
    if callable(afs):
        return afs
    raise TypeError(
        f"afs must be None, True (the denoiser's sigma_data), a float (sigma_data) or a closed-form denoiser "
        f"such as GaussianDenoiser(mean, var), got {type(afs).__name__} {afs!r}"[:300]
    )


class CallPlan:
    """The runtime's per-run denoiser: the closed form on the first call (AFS), direction scales per call.

    A host-side counter (reset by the runtime at the start of every run) picks each call's behaviour; the
    device work is the same straight-line tensor code on every run, so it is capturable.
    """

    __slots__ = ("calls", "den", "first", "scales", "shifts")

    def __init__(
        self, den: Callable[..., Tensor], first: Callable[..., Tensor] | None, scales: list[Tensor] | None,
        shifts: list[Tensor] | None = None,
    ) -> None:  # fmt: skip
        self.den = den
        self.first = first
        self.scales = scales
        self.shifts = shifts
        self.calls = 0

    def reset(self) -> None:
        self.calls = 0

    def __call__(self, x: Tensor, sigma: Tensor, /, **cond: Any) -> Tensor:
        k = self.calls
        self.calls += 1
        n = max(len(self.scales or ()), len(self.shifts or ()))
        if n and k >= n:
            raise RuntimeError(
                f"direction_scale / sigma_scale have {n} entries but the sampler made a call #{k + 1}; give one "
                "per denoiser evaluation (count_nfe(sigmas, sampler, **knobs))"
            )
        if self.shifts is not None:
            sigma = sigma * self.shifts[k]
        out = self.first(x, sigma, **cond) if (k == 0 and self.first is not None) else self.den(x, sigma, **cond)
        if self.scales is None:
            return out
        return torch.lerp(x, out, self.scales[k])  # x - s (x - D) = lerp(x, D, s)


def check_scales(scales: object, n_calls: int, name: str = "direction_scale") -> list[float] | None:
    """``direction_scale=`` (or ``sigma_scale=``) checked: None, or ``n_calls`` finite floats (positive for
    ``sigma_scale``)."""
    if scales is None:
        return None
    if isinstance(scales, Tensor):
        scales = scales.detach().to("cpu", torch.float64).tolist()
    if not isinstance(scales, (list, tuple)) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in scales
    ):
        raise TypeError(f"{name} must be a list of finite floats (one per evaluation), got {scales!r}"[:300])
    if len(scales) != n_calls:
        raise ValueError(
            f"{name} must have one entry per denoiser evaluation of this run ({n_calls}: count_nfe("
            f"sigmas, sampler, **knobs)), got {len(scales)}"
        )
    if name == "sigma_scale" and not all(v > 0 for v in scales):
        raise ValueError(f"sigma_scale must be positive (it multiplies sigma), got {scales!r}"[:300])
    return [float(v) for v in scales]
