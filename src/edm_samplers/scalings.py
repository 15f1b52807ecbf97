"""The preconditioning coefficients of EDM's Table 1 as plain functions of sigma (reused by training code).

D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)); see :mod:`.precond` for the
wrappers that apply them around a network.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

from ._network import SigmaLike, as_sigma
from ._validate import check_float, check_int
from .schedules import iddpm_grid, vp_sigma_inv

__all__ = ["Scalings", "edm_scalings", "iddpm_index", "iddpm_scalings", "ve_scalings", "vp_scalings"]


class Scalings(NamedTuple):
    """The four preconditioning coefficients of Table 1, each of sigma's shape.

    D(x; sigma) = c_skip x + c_out F(c_in x; c_noise).
    """

    c_skip: Tensor
    c_out: Tensor
    c_in: Tensor
    c_noise: Tensor


def edm_scalings(sigma: SigmaLike, sigma_data: float = 0.5) -> Scalings:
    """EDM's coefficients (Table 1, Section 5): unit-variance network input and training target.

    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2), c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
    c_in = 1 / sqrt(sigma^2 + sigma_data^2), c_noise = ln(sigma) / 4.

    Args:
        sigma: noise level(s), a tensor of any shape or a number (-> float64 0-d tensor).
        sigma_data: standard deviation of the data, > 0.
    """
    s = as_sigma(sigma)
    sd = check_float(sigma_data, "sigma_data", positive=True)
    var = s**2 + sd**2
    return Scalings(
        c_skip=sd**2 / var,
        c_out=s * sd * torch.rsqrt(var),
        c_in=torch.rsqrt(var),
        c_noise=torch.log(s) / 4,
    )


def vp_scalings(sigma: SigmaLike, beta_d: float = 19.9, beta_min: float = 0.1, M: int = 1000) -> Scalings:
    """VP (Song et al. 2021) as EDM coefficients: c_skip = 1, c_out = -sigma, c_in = 1/sqrt(sigma^2 + 1),
    c_noise = (M - 1) t with t = sigma^-1(sigma) = (sqrt(beta_min^2 + 2 beta_d ln(sigma^2 + 1)) - beta_min) / beta_d.

    F is an eps-predictor of the scaled input x / sqrt(1 + sigma^2): D = x - sigma eps.
    """
    s = as_sigma(sigma)
    bd = check_float(beta_d, "beta_d", positive=True)
    bm = check_float(beta_min, "beta_min", nonnegative=True)
    m = check_int(M, "M", minimum=2)
    return Scalings(
        c_skip=torch.ones_like(s),
        c_out=-s,
        c_in=torch.rsqrt(s**2 + 1),
        c_noise=(m - 1) * vp_sigma_inv(s, bd, bm),
    )


def ve_scalings(sigma: SigmaLike) -> Scalings:
    """VE (Song et al. 2021): c_skip = 1, c_out = sigma, c_in = 1, c_noise = ln(sigma / 2)."""
    s = as_sigma(sigma)
    return Scalings(c_skip=torch.ones_like(s), c_out=s, c_in=torch.ones_like(s), c_noise=torch.log(0.5 * s))


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
        sigma: noise level(s).
        c1, c2, M: the grid's constants (Table 1: 0.001, 0.008, 1000).
        grid: a precomputed ``iddpm_grid(...)`` (length M + 1) to skip rebuilding it (it is cached anyway).
    """
    s = as_sigma(sigma)
    m = check_int(M, "M", minimum=2)
    u = cached_iddpm_grid(float(c1), float(c2), m) if grid is None else grid
    if u.ndim != 1 or u.numel() != m + 1:
        raise ValueError(f"grid must be iddpm_grid(m=M) of length M + 1 = {m + 1}, got shape {tuple(u.shape)}")
    j = iddpm_index(s, u)
    return Scalings(
        c_skip=torch.ones_like(s),
        c_out=-s,
        c_in=torch.rsqrt(s**2 + 1),
        c_noise=(m - 1 - j).to(s.dtype),
    )
