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

import torch
from torch import Tensor

from ._validate import (
    check_device,
    check_float,
    check_float_dtype,
    check_int,
    check_nonnegative_values,
    check_strict_schedule,
    first_bad,
    values_on_host,
)

__all__ = [
    "append_zero",
    "iddpm_grid",
    "iddpm_sigmas",
    "karras_sigmas",
    "loglinear_sigmas",
    "ve_sigmas",
    "vp_sigma",
    "vp_sigma_inv",
    "vp_sigmas",
]


# More levels than any sampler uses; a larger N is almost certainly a mistake, and would allocate N floats.
_MAX_STEPS = 10_000_000
# The iDDPM grid is a true recursion run on the host; M = 1000 in the paper, 4000 in some DDPM variants.
_MAX_M = 1_000_000


def _num_steps(num_steps: object) -> int:
    n = check_int(num_steps, "num_steps", minimum=1)
    if n > _MAX_STEPS:
        raise ValueError(f"num_steps must be <= {_MAX_STEPS}, got {n}")
    return n


def _fractions(num_steps: int) -> Tensor:
    # i/(N-1) computed directly (not by accumulation) so both ends are exact: 0 and 1.
    i = torch.arange(num_steps, dtype=torch.float64)
    return i / (num_steps - 1) if num_steps > 1 else i


def _finish(sig: Tensor, dtype: torch.dtype, device: torch.device | str | None, what: str) -> Tensor:
    """Append the final 0, check the float64 levels, cast, check again, move to ``device``.

    A low-precision ``dtype`` (float16, bfloat16) is checked after the cast: levels that collapse (equal
    neighbours), overflow to inf or underflow to 0 there raise, naming the dtype, rather than being returned.
    """
    out = torch.cat([sig, sig.new_zeros(1)])
    check_strict_schedule(out, what, fix="widen the range between the end levels or use fewer steps")
    cast = out.to(dtype)
    if dtype != torch.float64:
        check_strict_schedule(
            cast,
            f"{what} cast to dtype={dtype}",
            fix=f"{dtype} cannot hold these levels; build in torch.float32 or torch.float64 (or use fewer steps)",
        )
    return cast.to(device=device)


def _check_range(sigma_min: float, sigma_max: float) -> tuple[float, float]:
    lo = check_float(sigma_min, "sigma_min", positive=True)
    hi = check_float(sigma_max, "sigma_max", positive=True)
    if not lo < hi:
        raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={lo}, sigma_max={hi}")
    return lo, hi


def _opts(dtype: object, device: object) -> tuple[torch.dtype, torch.device | None]:
    return check_float_dtype(dtype), check_device(device)


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

    Evaluated in log space as sigma_max exp(rho log1p(f expm1(ln(sigma_min/sigma_max) / rho))) with
    f = i/(N-1), which equals Eq. 5 but neither overflows nor underflows for extreme rho (the direct
    form raises sigma_max to the power 1/rho); for rho beyond 1e16 max(1, ln(sigma_max/sigma_min)^2) it is
    the rho -> inf limit, the log-linear schedule, to double precision.

    Args:
        num_steps: N >= 1, the number of sampling steps (positive noise levels), at most 10^7.
        sigma_min: the last positive level, > 0.
        sigma_max: the first level, > sigma_min.
        rho: the polynomial exponent, > 0; rho = 7 is EDM's choice, rho = 1 is uniform in sigma.
        dtype, device: of the returned tensor (a floating dtype).

    Returns:
        Tensor of shape ``[num_steps + 1]``: sigma_max ... sigma_min, 0, strictly decreasing.

    Raises:
        ValueError / TypeError: for num_steps < 1, sigma_min <= 0 or >= sigma_max, rho <= 0, a non-floating
            dtype, or levels that collapse (sigma_min and sigma_max too close for N distinct levels, in float64
            or after the cast to ``dtype``).
    """
    n = _num_steps(num_steps)
    lo, hi = _check_range(sigma_min, sigma_max)
    r = check_float(rho, "rho", positive=True)
    dt, dev = _opts(dtype, device)
    f = _fractions(n)
    log_ratio = math.log(lo) - math.log(hi)  # < 0
    if r > 1e16 * max(1.0, log_ratio * log_ratio):
        # rho log1p(f expm1(L/rho)) = f L + f (1 - f) L^2 / (2 rho) + ...: the correction is below an ulp.
        sig = hi * torch.exp(f * log_ratio)
    else:
        sig = hi * torch.exp(r * torch.log1p(f * math.expm1(log_ratio / r)))
    # Pin the endpoints: the round trip may be off by an ulp, and users compare against them.
    sig[0] = hi
    if n > 1:
        sig[-1] = lo
    return _finish(sig, dt, dev, f"karras_sigmas(num_steps={n}, sigma_min={lo}, sigma_max={hi}, rho={r})")


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

    Raises:
        ValueError / TypeError: as :func:`karras_sigmas`.
    """
    n = _num_steps(num_steps)
    lo, hi = _check_range(sigma_min, sigma_max)
    dt, dev = _opts(dtype, device)
    f = _fractions(n)
    sig = torch.exp(math.log(hi) + f * (math.log(lo) - math.log(hi)))
    sig[0] = hi
    if n > 1:
        sig[-1] = lo
    return _finish(sig, dt, dev, f"loglinear_sigmas(num_steps={n}, sigma_min={lo}, sigma_max={hi})")


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


def _as_values(v: object, name: str) -> Tensor:
    if isinstance(v, Tensor):
        if not v.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {v.dtype}")
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a floating-point tensor or a real number, got {type(v).__name__} {v!r}")
    return torch.tensor(float(v), dtype=torch.float64)


def _vp_constants(beta_d: object, beta_min: object) -> tuple[float, float]:
    return check_float(beta_d, "beta_d", positive=True), check_float(beta_min, "beta_min", nonnegative=True)


def vp_sigma(t: Tensor | float, beta_d: float = 19.9, beta_min: float = 0.1) -> Tensor:
    """sigma(t) of the VP formulation: sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), for t >= 0.

    Evaluated as exp(z/2) sqrt(1 - exp(-z)) for z = beta_d t^2 / 2 + beta_min t > 1, which does not
    overflow while sigma itself is representable (the direct form overflows at half the exponent).

    Args:
        t: VP time(s), a floating tensor of any shape or a number (-> float64 0-d tensor); t >= 0.
        beta_d, beta_min: the schedule's constants, beta_d > 0, beta_min >= 0.

    Raises:
        ValueError / TypeError: for a non-floating t, bad constants, and (for CPU tensors and numbers, where
            looking is free) a negative or non-finite t or a sigma that overflows t's dtype. On an accelerator
            no value is inspected (that would synchronise): a negative or NaN t gives NaN.
    """
    tt = _as_values(t, "t")
    bd, bm = _vp_constants(beta_d, beta_min)
    tt = check_nonnegative_values(tt, "t", fix="the VP time runs over t >= 0 (sampling uses [eps_s, 1])")
    z = 0.5 * bd * tt**2 + bm * tt
    # Both branches stay finite where they are not selected (the clamps), so gradients stay finite too.
    small = torch.sqrt(torch.expm1(z.clamp_max(1.0)))
    zb = z.clamp_min(1.0)
    big = torch.exp(0.5 * zb) * torch.sqrt(-torch.expm1(-zb))
    out = torch.where(z > 1.0, big, small)
    if values_on_host(out) and not bool(torch.isfinite(out).all()):
        raise ValueError(
            f"vp_sigma(t, beta_d={bd}, beta_min={bm}) overflows {out.dtype} at t{first_bad(tt, ~torch.isfinite(out))}; "
            "use smaller t or beta values, or a wider dtype"
        )
    return out


def vp_sigma_inv(sigma: Tensor | float, beta_d: float = 19.9, beta_min: float = 0.1) -> Tensor:
    """t(sigma), the inverse of :func:`vp_sigma`: (sqrt(beta_min^2 + 2 beta_d ln(sigma^2 + 1)) - beta_min) / beta_d.

    Evaluated in the rationalised form 2 L / (sqrt(beta_min^2 + 2 beta_d L) + beta_min), L = ln(sigma^2 + 1),
    scaled by beta_min so that beta_min^2 never overflows: it does not cancel at small sigma (the direct form
    is off by 10% at sigma = 1e-8) and a huge beta_min gives its correctly rounded t.

    Raises:
        ValueError / TypeError: as :func:`vp_sigma`, for a negative or non-finite sigma, or one whose square
            overflows its dtype (sigma > 1.8e19 in float32; on an accelerator that gives NaN, no sync).
    """
    s = _as_values(sigma, "sigma")
    bd, bm = _vp_constants(beta_d, beta_min)
    fi = torch.finfo(s.dtype)
    s = check_nonnegative_values(
        s, "sigma", fix="noise levels are >= 0", maximum=math.sqrt(fi.max), too_large=f"sigma^2 overflows {s.dtype}"
    )
    log_var = torch.log1p(s * s)
    if bm == 0:
        return torch.sqrt(log_var * (2 / bd))
    c = 2 * bd / (bm * bm)  # Python floats: inf or 0 at the extremes, never an exception
    if c <= fi.max and 2 / bm <= fi.max:
        # t = (2 L / beta_min) / (sqrt(1 + c L) + 1), c = 2 beta_d / beta_min^2
        return log_var * (2 / bm) / (torch.sqrt(log_var * c + 1) + 1)
    # beta_min so small that the scale factors overflow: beta_min^2 underflows harmlessly in the plain form.
    return 2 * log_var / (torch.sqrt(log_var * (2 * bd) + bm * bm) + bm)


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

    Raises:
        ValueError / TypeError: for bad arguments, or constants whose levels overflow or underflow float64
            (e.g. beta_d = 1e4) or collapse (eps_s too close to 1, or after the cast to ``dtype``).
    """
    n = _num_steps(num_steps)
    bd, bm = _vp_constants(beta_d, beta_min)
    es = check_float(eps_s, "eps_s", positive=True)
    if not es < 1:
        raise ValueError(f"eps_s must be in (0, 1), got {es}")
    dt, dev = _opts(dtype, device)
    t = 1 + _fractions(n) * (es - 1)
    what = f"vp_sigmas(num_steps={n}, beta_d={bd}, beta_min={bm}, eps_s={es})"
    z = 0.5 * bd * t**2 + bm * t
    if not bool(z[0] < 2 * math.log(torch.finfo(torch.float64).max)):  # sigma = e^(z/2) would overflow
        raise ValueError(
            f"{what} gives sigma(t=1) = sqrt(exp({z[0].item():.4g}) - 1), beyond float64; use smaller betas"
        )
    return _finish(vp_sigma(t, bd, bm), dt, dev, what)


def iddpm_grid(*, c1: float = 0.001, c2: float = 0.008, m: int = 1000) -> Tensor:
    """The iDDPM noise levels u_0 > u_1 > ... > u_M = 0 of Table 1 (float64, length M + 1).

    u_{j-1} = sqrt((u_j^2 + 1) / max(alphabar_{j-1} / alphabar_j, C1) - 1) with
    alphabar_j = sin^2(pi j / (2 M (C2 + 1))) (Nichol & Dhariwal's cosine schedule).

    Args:
        c1: the clip C1 of the ratio alphabar_{j-1} / alphabar_j, in (0, 1) (C1 >= 1 would stop the levels
            from growing).
        c2: the cosine offset C2 >= 0.
        m: the number M of trained levels, 2 <= M <= 10^6 (the recursion runs on the host).

    Raises:
        ValueError / TypeError: for bad constants, or constants whose grid overflows float64 or is not
            strictly decreasing (e.g. a huge c2 makes alphabar underflow).
    """
    c1 = check_float(c1, "c1", positive=True)
    if not c1 < 1:
        raise ValueError(f"c1 must be in (0, 1), got {c1}; Table 1 uses C1 = 0.001")
    c2 = check_float(c2, "c2", nonnegative=True)
    m = check_int(m, "m", minimum=2)
    if m > _MAX_M:
        raise ValueError(f"m must be <= {_MAX_M}, got {m}")
    what = f"iddpm_grid(c1={c1}, c2={c2}, m={m})"
    j = torch.arange(m + 1, dtype=torch.float64)
    abar = torch.sin(0.5 * math.pi * j / (m * (c2 + 1))) ** 2
    ratios = (abar[:-1] / abar[1:]).clamp_min(c1)  # clamp_min propagates NaN, as max(nan, c1) did
    bad = ~((ratios < 1) & (ratios > 0))  # ratio >= 1 (or NaN) would stall or reverse the recursion
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0]) + 1
        raise ValueError(
            f"{what}: alphabar_{k - 1} / alphabar_{k} = {ratios[k - 1].item()!r} is not in (0, 1), so the grid "
            "cannot decrease strictly (alphabar underflows or stalls); use a smaller c2 or m"
        )
    r = ratios.tolist()
    u = [0.0] * (m + 1)
    for k in range(m, 0, -1):  # a true recursion in host floats (bitwise the tensor version), once per call
        u[k - 1] = math.sqrt((u[k] ** 2 + 1) / r[k - 1] - 1)
    out = torch.tensor(u, dtype=torch.float64)
    return check_strict_schedule(out, what, fix="use a larger c1 or a smaller m")


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
        ValueError: if fewer than ``num_steps`` grid levels lie in [sigma_min, sigma_max]; otherwise as
            :func:`karras_sigmas` and :func:`iddpm_grid`.
    """
    n = _num_steps(num_steps)
    lo, hi = _check_range(sigma_min, sigma_max)
    dt, dev = _opts(dtype, device)
    u = iddpm_grid(c1=c1, c2=c2, m=m)
    inside = u[(u >= lo) & (u <= hi)]
    if inside.numel() < n:
        raise ValueError(
            f"only {inside.numel()} iDDPM grid levels lie in [sigma_min={lo}, sigma_max={hi}], fewer than "
            f"num_steps={n}; widen the range or use fewer steps"
        )
    idx = torch.floor((inside.numel() - 1) * _fractions(n) + 0.5).to(torch.int64)
    return _finish(inside[idx], dt, dev, f"iddpm_sigmas(num_steps={n}, sigma_min={lo}, sigma_max={hi}, m={m})")


def append_zero(sigmas: Tensor) -> Tensor:
    """Append a final 0 to a 1-D schedule of positive, strictly decreasing levels (keeps dtype and device).

    Raises:
        TypeError: if ``sigmas`` is not a 1-D floating tensor.
        ValueError: if it is empty, already ends in 0, or is not finite, positive and strictly decreasing.
    """
    if not isinstance(sigmas, Tensor) or sigmas.ndim != 1:
        got = f"shape {tuple(sigmas.shape)}" if isinstance(sigmas, Tensor) else type(sigmas).__name__
        raise TypeError(f"sigmas must be a 1-D tensor of noise levels, got {got}")
    if not sigmas.is_floating_point():
        raise TypeError(f"sigmas must be a floating-point tensor, got dtype {sigmas.dtype}")
    check_strict_schedule(
        sigmas, "append_zero(sigmas)", final_zero=False, fix="pass positive, strictly decreasing levels without the 0"
    )
    return torch.cat([sigmas, sigmas.new_zeros(1)])
