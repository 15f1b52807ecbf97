"""Training noise levels and loss weights of EDM's Table 1: the sigma draws of the EDM, VP and VE losses, the
weightings lambda(sigma), and the checks of their parameters that the losses share.

Public names are re-exported by :mod:`edm_samplers.training`; this module itself is private.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validate import check_device, check_float, check_float_dtype, check_int, check_nonnegative_values
from ..schedules import vp_sigma

# ---------------------------------------------------------------------------------------------
# Sigma samplers and weightings


def check_draw(n: int, dtype: torch.dtype, device: object = None) -> int:
    n = check_int(n, "n", minimum=1)
    check_float_dtype(dtype)
    check_device(device)
    return n


def log_range(dtype: torch.dtype) -> tuple[float, float]:
    """ln of the smallest normal and the largest finite value of ``dtype``: training sigmas must lie between."""
    fi = torch.finfo(dtype)
    return math.log(fi.tiny), math.log(fi.max)


# Draws beyond 6 standard deviations are about 2e-9 likely each; the loss's finite check catches the rest.
LOGNORMAL_SPAN = 6.0


def check_lognormal(p_mean: object, p_std: object, dtype: torch.dtype) -> tuple[float, float]:
    mean = check_float(p_mean, "p_mean")
    std = check_float(p_std, "p_std", nonnegative=True)
    lo, hi = mean - LOGNORMAL_SPAN * std, mean + LOGNORMAL_SPAN * std
    ln_tiny, ln_max = log_range(dtype)
    if not (ln_tiny <= lo and hi <= ln_max):
        raise ValueError(
            f"p_mean={mean}, p_std={std} put ln sigma in [{lo:.4g}, {hi:.4g}] (6 standard deviations), beyond "
            f"{dtype}'s range [{ln_tiny:.4g}, {ln_max:.4g}]: draws would be 0 or inf. EDM uses p_mean=-1.2, p_std=1.2"
        )
    return mean, std


def check_loguniform(sigma_min: object, sigma_max: object, dtype: torch.dtype) -> tuple[float, float]:
    lo = check_float(sigma_min, "sigma_min", positive=True)
    hi = check_float(sigma_max, "sigma_max", positive=True)
    if not lo < hi:
        raise ValueError(f"sigma_min must be < sigma_max, got {sigma_min} and {sigma_max}")
    fi = torch.finfo(dtype)
    if lo < fi.tiny or hi > fi.max:
        raise ValueError(
            f"sigma_min={lo}, sigma_max={hi} must lie within {dtype}'s normal range [{fi.tiny:.4g}, {fi.max:.4g}]"
        )
    return lo, hi


def check_vp_training(
    beta_d: object, beta_min: object, eps_t: object, dtype: torch.dtype
) -> tuple[float, float, float]:
    et = check_float(eps_t, "eps_t", positive=True)
    if not et < 1:
        raise ValueError(f"eps_t must be in (0, 1), got {eps_t}")
    bd = check_float(beta_d, "beta_d", positive=True)
    bm = check_float(beta_min, "beta_min", nonnegative=True)

    def ln_sigma(t: float) -> float:  # ln vp_sigma(t) = ln(expm1(z)) / 2, without overflow
        z = 0.5 * bd * t * t + bm * t
        if z <= 0:
            return -math.inf
        return 0.5 * (z + math.log(-math.expm1(-z))) if z > 1 else 0.5 * math.log(math.expm1(z))

    lo, hi = ln_sigma(et), ln_sigma(1.0)
    ln_tiny, ln_max = log_range(dtype)
    if not (ln_tiny <= lo and hi <= ln_max):
        raise ValueError(
            f"beta_d={bd}, beta_min={bm}, eps_t={et} give training sigmas from e^{lo:.4g} to e^{hi:.4g}, beyond "
            f"{dtype}'s range [e^{ln_tiny:.4g}, e^{ln_max:.4g}]: draws would be 0 or inf. Table 1 uses 19.9, 0.1, 1e-5"
        )
    return bd, bm, et


def lognormal_sigmas(
    n: int,
    *,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """EDM's training noise levels: ln sigma ~ N(P_mean, P_std^2), ``n`` draws of shape ``[n]``.

    Args:
        n: number of draws.
        p_mean, p_std: P_mean and P_std (EDM: -1.2, 1.2); P_mean +- 6 P_std must stay within ``dtype``'s
            range in log space (else draws would round to 0 or inf).
        generator: optional ``torch.Generator`` (on ``device``) for reproducible draws.
        device, dtype: where and in which floating dtype to draw.
    """
    n = check_draw(n, dtype, device)
    p_mean, p_std = check_lognormal(p_mean, p_std, dtype)
    z = torch.randn(n, generator=check_generator(generator), device=device, dtype=dtype)
    return (z * p_std + p_mean).exp()


def loguniform_sigmas(
    n: int,
    *,
    sigma_min: float = 0.02,
    sigma_max: float = 100.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """VE training noise levels: ln sigma ~ U(ln sigma_min, ln sigma_max) (EDM Table 1: 0.02, 100)."""
    n = check_draw(n, dtype, device)
    lo, hi = check_loguniform(sigma_min, sigma_max, dtype)
    u = torch.rand(n, generator=check_generator(generator), device=device, dtype=dtype)
    return (math.log(lo) + (math.log(hi) - math.log(lo)) * u).exp()


def vp_training_sigmas(
    n: int,
    *,
    beta_d: float = 19.9,
    beta_min: float = 0.1,
    eps_t: float = 1e-5,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """VP training noise levels: sigma = sigma_vp(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), t ~ U(eps_t, 1)."""
    n = check_draw(n, dtype, device)
    beta_d, beta_min, eps_t = check_vp_training(beta_d, beta_min, eps_t, dtype)
    u = torch.rand(n, generator=check_generator(generator), device=device, dtype=dtype)
    return vp_sigma(eps_t + (1 - eps_t) * u, beta_d=beta_d, beta_min=beta_min)


def as_sigma_tensor(sigma: object) -> Tensor:
    if isinstance(sigma, Tensor):
        if not sigma.is_floating_point():
            raise TypeError(f"sigma must be a floating-point tensor, got dtype {sigma.dtype}")
        return sigma
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma must be a floating-point tensor or a number, got {type(sigma).__name__} {sigma!r}")
    return torch.tensor(float(sigma), dtype=torch.float64)


WEIGHT_FIX = "training noise levels are finite and > 0 (lambda(0) is infinite)"


def edm_weight(sigma: Tensor, sigma_data: float = 0.5) -> Tensor:
    """EDM's loss weight lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out(sigma)^2.

    Evaluated as 1/sigma^2 + 1/sigma_data^2 (the same number, without the overflow of (sigma sigma_data)^2).
    A negative or NaN sigma is rejected where that is free to check (numbers, CPU tensors) and gives NaN
    elsewhere (no device sync); sigma = 0 gives the limit, inf.

    Raises:
        TypeError / ValueError: for a non-floating sigma, a bad sigma_data, one whose 1/sigma_data^2 overflows
            sigma's dtype, or (where checked) a negative or NaN sigma.
    """
    sd = check_float(sigma_data, "sigma_data", positive=True)
    s = check_nonnegative_values(as_sigma_tensor(sigma), "sigma", fix=WEIGHT_FIX)
    inv_sd = 1.0 / sd
    inv_sd2 = inv_sd * inv_sd  # a Python float: inf (not OverflowError) if it overflows
    if not inv_sd2 <= torch.finfo(s.dtype).max:
        raise ValueError(f"sigma_data={sd} makes lambda = 1/sigma^2 + 1/sigma_data^2 overflow {s.dtype}")
    return torch.reciprocal(s).square() + inv_sd2


def inverse_square_weight(sigma: Tensor) -> Tensor:
    """The VP and VE loss weight lambda(sigma) = 1 / sigma^2 = 1 / c_out(sigma)^2 (sigma checked as in
    :func:`edm_weight`)."""
    s = check_nonnegative_values(as_sigma_tensor(sigma), "sigma", fix=WEIGHT_FIX)
    return 1 / s**2


def check_generator(generator: object) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator
