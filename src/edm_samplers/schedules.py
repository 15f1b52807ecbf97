"""Noise-level schedules (the time steps of EDM's Table 1), as decreasing tensors ending in sigma = 0.

Every builder returns ``num_steps`` positive noise levels followed by a final 0 (``num_steps + 1``
values), computed in float64 and then cast to ``dtype`` (float64 by default) on ``device``.

=================  =======================================================================  ========
builder            sigma_i for i = 0 .. N-1                                                 paper
=================  =======================================================================  ========
karras_sigmas      (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho Eq. 5
loglinear_sigmas   sigma_max (sigma_min/sigma_max)^(i/(N-1))  (uniform in log sigma)        -
ve_sigmas          sqrt(t_i), t_i = sigma_max^2 (sigma_min^2/sigma_max^2)^(i/(N-1))         Table 1
vp_sigmas          sigma_vp(t_i), t_i = 1 + i/(N-1) (eps_s - 1)                             Table 1
iddpm_sigmas       u_{floor(j0 + (M-1-j0) i/(N-1) + 1/2)} of the iDDPM cosine grid           Table 1
=================  =======================================================================  ========

With ``num_steps = 1`` the single level is ``sigma_max`` (the i/(N-1) fraction is taken as 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._validate import check_float, check_int, check_sigmas

__all__ = [
    "append_zero",
    "clamp_sigmas",
    "iddpm_grid",
    "iddpm_sigmas",
    "karras_sigmas",
    "loglinear_sigmas",
    "ve_sigmas",
    "vp_sigma",
    "vp_sigma_inv",
    "vp_sigmas",
]


def _fractions(num_steps: int) -> Tensor:
    # i/(N-1) computed directly (not by accumulation) so both ends are exact: 0 and 1.
    i = torch.arange(num_steps, dtype=torch.float64)
    return i / (num_steps - 1) if num_steps > 1 else i


def _finish(sig: Tensor, dtype: torch.dtype, device: torch.device | str | None) -> Tensor:
    out = torch.cat([sig, sig.new_zeros(1)])
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return out.to(device=device, dtype=dtype)


def _check_range(sigma_min: float, sigma_max: float) -> tuple[float, float]:
    lo = check_float(sigma_min, "sigma_min", positive=True)
    hi = check_float(sigma_max, "sigma_max", positive=True)
    if not lo < hi:
        raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={lo}, sigma_max={hi}")
    return lo, hi


def karras_sigmas(
    num_steps: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """EDM's polynomial schedule (paper Eq. 5), ``num_steps`` levels then 0.

    Args:
        num_steps: N >= 1, the number of sampling steps (positive noise levels).
        sigma_min: the last positive level, > 0.
        sigma_max: the first level, > sigma_min.
        rho: the polynomial exponent, > 0; rho = 7 is EDM's choice, rho = 1 is uniform in sigma.
        dtype, device: of the returned tensor.

    Returns:
        Tensor of shape ``[num_steps + 1]``: sigma_max ... sigma_min, 0.

    Raises:
        ValueError / TypeError: for num_steps < 1, sigma_min <= 0 or >= sigma_max, rho <= 0.
    """
    n = check_int(num_steps, "num_steps", minimum=1)
    lo, hi = _check_range(sigma_min, sigma_max)
    r = check_float(rho, "rho", positive=True)
    f = _fractions(n)
    a, b = hi ** (1 / r), lo ** (1 / r)
    sig = (a + f * (b - a)) ** r
    # Pin the endpoints: the power round trip may be off by an ulp, and users compare against them.
    sig[0] = hi
    if n > 1:
        sig[-1] = lo
    return _finish(sig, dtype, device)


def loglinear_sigmas(
    num_steps: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Levels uniform in log sigma (geometric; k-diffusion's "exponential" schedule), then 0.

    Uniform steps in log sigma are uniform steps in log-SNR, the natural grid of exponential
    integrators such as DPM-Solver++.
    """
    n = check_int(num_steps, "num_steps", minimum=1)
    lo, hi = _check_range(sigma_min, sigma_max)
    f = _fractions(n)
    sig = torch.exp(math.log(hi) + f * (math.log(lo) - math.log(hi)))
    sig[0] = hi
    if n > 1:
        sig[-1] = lo
    return _finish(sig, dtype, device)


def ve_sigmas(
    num_steps: int,
    sigma_min: float = 0.02,
    sigma_max: float = 100.0,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """The VE discretization of Table 1 (Song et al. 2021): geometric in sigma, defaults 0.02 .. 100.

    Table 1 writes it in t = sigma^2: t_i = sigma_max^2 (sigma_min^2 / sigma_max^2)^(i/(N-1)); its square
    root is geometric in sigma, so this equals :func:`loglinear_sigmas` with the VE defaults.
    """
    return loglinear_sigmas(num_steps, sigma_min, sigma_max, dtype=dtype, device=device)


def vp_sigma(t: Tensor, beta_d: float = 19.9, beta_min: float = 0.1) -> Tensor:
    """sigma(t) of the VP formulation: sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)."""
    return torch.sqrt(torch.expm1(0.5 * beta_d * t**2 + beta_min * t))


def vp_sigma_inv(sigma: Tensor, beta_d: float = 19.9, beta_min: float = 0.1) -> Tensor:
    """t(sigma), the inverse of :func:`vp_sigma`: (sqrt(beta_min^2 + 2 beta_d ln(sigma^2 + 1)) - beta_min) / beta_d."""
    return (torch.sqrt(beta_min**2 + 2 * beta_d * torch.log1p(sigma**2)) - beta_min) / beta_d


def vp_sigmas(
    num_steps: int,
    *,
    beta_d: float = 19.9,
    beta_min: float = 0.1,
    eps_s: float = 1e-3,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """The VP discretization of Table 1: t uniform from 1 to eps_s, sigma = vp_sigma(t), then 0.

    With the defaults, sigma runs from about 152 down to about 0.0105.
    """
    n = check_int(num_steps, "num_steps", minimum=1)
    bd = check_float(beta_d, "beta_d", positive=True)
    bm = check_float(beta_min, "beta_min", nonnegative=True)
    es = check_float(eps_s, "eps_s", positive=True)
    if not es < 1:
        raise ValueError(f"eps_s must be in (0, 1), got {es}")
    t = 1 + _fractions(n) * (es - 1)
    return _finish(vp_sigma(t, bd, bm), dtype, device)


def iddpm_grid(*, c1: float = 0.001, c2: float = 0.008, m: int = 1000) -> Tensor:
    """The iDDPM noise levels u_0 > u_1 > ... > u_M = 0 of Table 1 (float64, length M + 1).

    u_{j-1} = sqrt((u_j^2 + 1) / max(alphabar_{j-1} / alphabar_j, C1) - 1) with
    alphabar_j = sin^2(pi j / (2 M (C2 + 1))) (Nichol & Dhariwal's cosine schedule).
    """
    c1 = check_float(c1, "c1", positive=True)
    c2 = check_float(c2, "c2", nonnegative=True)
    m = check_int(m, "m", minimum=2)
    j = torch.arange(m + 1, dtype=torch.float64)
    abar = torch.sin(0.5 * math.pi * j / (m * (c2 + 1))) ** 2
    u = torch.zeros(m + 1, dtype=torch.float64)
    for k in range(m, 0, -1):  # a true recursion; 1000 scalar steps on the host, once per call
        ratio = max(float(abar[k - 1] / abar[k]), c1)
        u[k - 1] = math.sqrt((float(u[k]) ** 2 + 1) / ratio - 1)
    return u


def iddpm_sigmas(
    num_steps: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    *,
    c1: float = 0.001,
    c2: float = 0.008,
    m: int = 1000,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """The iDDPM discretization of Table 1: ``num_steps`` levels picked from the discrete grid, then 0.

    Takes the grid levels u_j within [sigma_min, sigma_max] (j0 .. j1) and picks
    u_{floor(j0 + (j1 - j0) i/(N-1) + 1/2)}, the paper's formula (there j1 = M - 1). These are the only
    levels an iDDPM network was trained on, so no rounding is needed.

    Raises:
        ValueError: if fewer than ``num_steps`` grid levels lie in [sigma_min, sigma_max].
    """
    n = check_int(num_steps, "num_steps", minimum=1)
    lo, hi = _check_range(sigma_min, sigma_max)
    u = iddpm_grid(c1=c1, c2=c2, m=m)
    inside = u[(u >= lo) & (u <= hi)]
    if inside.numel() < n:
        raise ValueError(
            f"only {inside.numel()} iDDPM grid levels lie in [sigma_min={lo}, sigma_max={hi}], fewer than "
            f"num_steps={n}; widen the range or use fewer steps"
        )
    idx = torch.floor((inside.numel() - 1) * _fractions(n) + 0.5).to(torch.int64)
    return _finish(inside[idx], dtype, device)


def append_zero(sigmas: Tensor) -> Tensor:
    """Append a final 0 to a 1-D schedule (keeps dtype and device)."""
    if not isinstance(sigmas, Tensor) or sigmas.ndim != 1:
        raise TypeError("sigmas must be a 1-D tensor")
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def clamp_sigmas(
    sigmas: Tensor | Sequence[float],
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    *,
    denoiser: object = None,
    round: bool = True,
) -> Tensor:
    """Fit a schedule to a denoiser: clamp its positive levels into the valid range, round them, drop repeats.

    The range is [``sigma_min``, ``sigma_max``] where given, else the ``denoiser``'s ``sigma_min`` /
    ``sigma_max`` attributes (every preconditioner, adapter and guided denoiser of the library has them),
    else unbounded. With ``round``, the denoiser's ``round_sigma`` (if any: discrete-time models) maps each
    level onto one the network was trained at. The final 0 stays 0; consecutive duplicates created by
    clamping or rounding are removed, so every step moves (a zero-length step would waste network
    evaluations). Runs once on the host, before sampling.

    Examples: ``clamp_sigmas(karras_sigmas(18), denoiser=den)``, ``clamp_sigmas(s, 0.01, 20.0)``.

    Returns:
        The fitted schedule, in ``sigmas``' dtype and on its device (float64 CPU for a sequence).
    """
    s = check_sigmas(sigmas)
    given = check_float(sigma_min, "sigma_min", positive=True) if sigma_min is not None else None
    lo = float(getattr(denoiser, "sigma_min", 0.0)) if given is None else given
    given = check_float(sigma_max, "sigma_max", positive=True, allow_inf=True) if sigma_max is not None else None
    hi = float(getattr(denoiser, "sigma_max", math.inf)) if given is None else given
    if math.isnan(lo) or math.isnan(hi) or not lo < hi:
        raise ValueError(
            f"sigma_min must be < sigma_max, got sigma_min={lo}, sigma_max={hi} (arguments first, else the denoiser's)"
        )
    pos = s[s > 0].clamp(lo, hi)
    rs = getattr(denoiser, "round_sigma", None)
    if round and rs is not None:
        if not callable(rs):
            raise TypeError("denoiser.round_sigma must be callable")
        pos = torch.as_tensor(rs(pos)).detach().to(device="cpu", dtype=torch.float64).reshape(pos.shape)
    keep = torch.ones_like(pos, dtype=torch.bool)
    keep[1:] = pos[1:] != pos[:-1]
    out = pos[keep]
    if s[-1] == 0:
        out = torch.cat([out, out.new_zeros(1)])
    if isinstance(sigmas, Tensor):
        return out.to(device=sigmas.device, dtype=sigmas.dtype)
    return out
