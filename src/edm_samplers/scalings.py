"""The preconditioning coefficients of EDM's Table 1 as plain functions of sigma (reused by training code).

D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)); see :mod:`.precond` for the
wrappers that apply them around a network. The ``*_coefficients`` functions are the same formulas without
the check of sigma, for callers that checked it already (the wrappers' forward pass).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

from ._network import SigmaLike, as_sigma
from ._validate import check_float, check_int, check_nonnegative_values
from .schedules import iddpm_grid, vp_sigma_inv

__all__ = ["Scalings", "edm_scalings", "iddpm_scalings", "ve_scalings", "vp_scalings"]


class Scalings(NamedTuple):
    """The four preconditioning coefficients of Table 1, each of sigma's shape.

    D(x; sigma) = c_skip x + c_out F(c_in x; c_noise).
    """

    c_skip: Tensor
    c_out: Tensor
    c_in: Tensor
    c_noise: Tensor


_SIGMA_FIX = "noise levels are finite and >= 0 (a sampler's schedule is checked once at its entry)"


def checked_sigma(sigma: SigmaLike) -> Tensor:
    """sigma as a tensor, rejected if negative, NaN or infinite where that is free to check.

    Numbers and CPU tensors in eager mode are checked on the host (a few microseconds, no device sync). On an
    accelerator, under ``torch.compile`` or while tracing, nothing is read back (that would synchronise inside
    every sampler step, or break the graph): a negative or NaN sigma becomes NaN instead, so D is NaN (the
    samplers' finite check reports it) rather than finite and wrong (VP and iDDPM would silently use
    |sigma|). The samplers validate their whole schedule once at entry anyway.
    """
    return check_nonnegative_values(as_sigma(sigma), "sigma", fix=_SIGMA_FIX)


# sqrt(sigma^2 + c^2) through hypot: sigma^2 alone overflows float32 at sigma = 1.8e19, where the direct
# forms gave c_in = 0 and c_out = 0, a finite and wrong D. sigma_data enters as a divisor or through hypot,
# never as a float32 constant it may not fit in (full_like(s, 1e300) raises).
def edm_coefficients(s: Tensor, sd: float) -> Scalings:
    r = torch.hypot(s / sd, torch.ones_like(s)).reciprocal()  # sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in = r / sd if sd >= 1.0 else torch.hypot(s, torch.full_like(s, sd)).reciprocal()
    return Scalings(c_skip=r * r, c_out=s * r, c_in=c_in, c_noise=torch.log(s) / 4)


def vp_c_in(s: Tensor) -> Tensor:
    return torch.hypot(s, torch.ones_like(s)).reciprocal()  # 1 / sqrt(sigma^2 + 1)


def vp_coefficients(s: Tensor, bd: float, bm: float, m: int) -> Scalings:
    return Scalings(
        c_skip=torch.ones_like(s),
        c_out=-s,
        c_in=vp_c_in(s),
        c_noise=(m - 1) * vp_sigma_inv(s, bd, bm),
    )


def ve_coefficients(s: Tensor) -> Scalings:
    return Scalings(c_skip=torch.ones_like(s), c_out=s, c_in=torch.ones_like(s), c_noise=torch.log(0.5 * s))


def iddpm_coefficients(s: Tensor, m: int, u: Tensor) -> Scalings:
    j = iddpm_index(s, u)
    return Scalings(
        c_skip=torch.ones_like(s),
        c_out=-s,
        c_in=vp_c_in(s),
        c_noise=(m - 1 - j).to(s.dtype),
    )


def edm_scalings(sigma: SigmaLike, sigma_data: float = 0.5) -> Scalings:
    """EDM's coefficients (Table 1, Section 5): unit-variance network input and training target.

    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2), c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
    c_in = 1 / sqrt(sigma^2 + sigma_data^2), c_noise = ln(sigma) / 4.

    Args:
        sigma: noise level(s) >= 0, a floating tensor of any shape or a number (-> float64 0-d tensor).
        sigma_data: standard deviation of the data, > 0.

    Raises:
        TypeError: for a non-floating sigma. ValueError: for a bad sigma_data, or a negative, NaN or infinite
            sigma given as a number or CPU tensor (elsewhere such entries give NaN coefficients; no sync).
    """
    sd = check_float(sigma_data, "sigma_data", positive=True)
    return edm_coefficients(checked_sigma(sigma), sd)


def vp_scalings(sigma: SigmaLike, beta_d: float = 19.9, beta_min: float = 0.1, M: int = 1000) -> Scalings:
    """VP (Song et al. 2021) as EDM coefficients: c_skip = 1, c_out = -sigma, c_in = 1/sqrt(sigma^2 + 1),
    c_noise = (M - 1) t with t = sigma^-1(sigma) = (sqrt(beta_min^2 + 2 beta_d ln(sigma^2 + 1)) - beta_min) / beta_d.

    F is an eps-predictor of the scaled input x / sqrt(1 + sigma^2): D = x - sigma eps. sigma is checked as in
    :func:`edm_scalings`.
    """
    bd = check_float(beta_d, "beta_d", positive=True)
    bm = check_float(beta_min, "beta_min", nonnegative=True)
    m = check_int(M, "M", minimum=2)
    return vp_coefficients(checked_sigma(sigma), bd, bm, m)


def ve_scalings(sigma: SigmaLike) -> Scalings:
    """VE (Song et al. 2021): c_skip = 1, c_out = sigma, c_in = 1, c_noise = ln(sigma / 2). sigma is checked as
    in :func:`edm_scalings`."""
    return ve_coefficients(checked_sigma(sigma))


@functools.lru_cache(maxsize=8)
def cached_iddpm_grid(c1: float, c2: float, m: int) -> Tensor:
    return iddpm_grid(c1=c1, c2=c2, m=m)


def iddpm_index(sigma: Tensor, u: Tensor) -> Tensor:
    # Index j in 0 .. M-1 of the trained level u_j nearest to sigma. u_M = 0 is no trained level
    # (it would give c_noise = -1), so only the first M entries take part.
    trained = u[:-1].to(device=sigma.device, dtype=torch.promote_types(sigma.dtype, torch.float32))
    return torch.argmin(torch.abs(sigma.unsqueeze(-1) - trained), dim=-1)


def iddpm_scalings(
    sigma: SigmaLike, *, c1: float = 0.001, c2: float = 0.008, M: int = 1000, grid: Tensor | None = None
) -> Scalings:
    """iDDPM (Nichol & Dhariwal 2021): c_skip = 1, c_out = -sigma, c_in = 1/sqrt(sigma^2 + 1),
    c_noise = M - 1 - argmin_j |u_j - sigma| over the trained levels u_0 > ... > u_{M-1} of
    :func:`~edm_samplers.iddpm_grid`.

    Args:
        sigma: noise level(s), checked as in :func:`edm_scalings`.
        c1, c2, M: the grid's constants (Table 1: 0.001, 0.008, 1000).
        grid: a precomputed ``iddpm_grid(...)`` (length M + 1) to skip rebuilding it (it is cached anyway).
    """
    m = check_int(M, "M", minimum=2)
    if grid is None:
        u = cached_iddpm_grid(check_float(c1, "c1", positive=True), check_float(c2, "c2", nonnegative=True), m)
    else:
        u = grid
        if not isinstance(u, Tensor) or not u.is_floating_point():
            raise TypeError(f"grid must be a floating tensor iddpm_grid(m=M), got {type(u).__name__}")
    if u.ndim != 1 or u.numel() != m + 1:
        raise ValueError(f"grid must be iddpm_grid(m=M) of length M + 1 = {m + 1}, got shape {tuple(u.shape)}")
    return iddpm_coefficients(checked_sigma(sigma), m, u)
