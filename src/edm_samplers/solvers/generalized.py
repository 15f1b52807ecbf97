"""The generalized deterministic/stochastic sampler of EDM (Algorithm 1 with arbitrary sigma(t), s(t), plus churn).

The probability-flow ODE for a noise schedule sigma(t) and a scaling s(t) (EDM Eq. 4) is

    dx/dt = (sigma'(t)/sigma(t) + s'(t)/s(t)) x - (sigma'(t) s(t) / sigma(t)) D(x / s(t); sigma(t)).

It spans the paper's Table 1 / Figure 2 design space:

============  =====================================  ======================================
schedule      sigma(t)                               t(sigma)
============  =====================================  ======================================
"edm"         t  (also "linear")                     sigma
"ve"          sqrt(t)                                sigma^2
"vp"          sqrt(exp(beta_d t^2/2 + beta_min t) - 1)  (sqrt(beta_min^2 + 2 beta_d ln(1+sigma^2)) - beta_min)/beta_d
============  =====================================  ======================================

and ``scaling`` "none" (s = 1) or "vp" (s(t) = 1 / sqrt(1 + sigma(t)^2)). The time steps are the
given ``sigmas`` mapped through t(sigma), so any of the four discretizations (``karras_sigmas``,
``vp_sigmas``, ``ve_sigmas``, ``iddpm_sigmas``) combines with any sigma(t) and s(t).

The 2nd-order rule with parameter alpha (Appendix, "generalized Heun") evaluates the slope again at
t' = t_hat + alpha h and steps with (1 - 1/(2 alpha)) d + 1/(2 alpha) d': alpha = 1 is Heun (Algorithm 1),
alpha = 1/2 the explicit midpoint method. Churn (Algorithm 2) raises sigma by gamma_i before each step:
x_hat = (s(t_hat)/s(t_i)) x_i + s(t_hat) sqrt(sigma(t_hat)^2 - sigma(t_i)^2) S_noise eps_i.

The state is integrated in scaled coordinates (s(t) x); input and output are in EDM's unscaled coordinates
like every sampler of the library (x at noise level ``sigmas[0]``; the result at ``sigmas[-1]`` divided by
its s). All per-step scalars are precomputed on the host in float64 and the loop is straight-line tensor code
(no syncs); the step to sigma = 0 is an Euler step (the derivative is evaluated at sigma > 0 only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from .._types import Callback, Denoiser, NoiseSource, StepInfo
from .._validate import (
    check_callback,
    check_cond,
    check_cond_batch,
    check_denoised_on,
    check_denoiser,
    check_float,
    check_has_data,
    check_round_sigma,
    check_sigmas,
    check_sigmas_fit,
    check_x,
    state_dtype,
)
from ..noise import as_noise_source
from ..schedules import vp_sigma, vp_sigma_inv
from .steps import churn_gammas

__all__ = ["generalized_sample"]

ScheduleName = Literal["edm", "linear", "vp", "ve"]
ScalingName = Literal["none", "vp"]


class _Coords(NamedTuple):
    sigma: Callable[[Tensor], Tensor]
    sigma_deriv: Callable[[Tensor], Tensor]
    sigma_inv: Callable[[Tensor], Tensor]


def _coords(schedule: str, beta_d: float, beta_min: float) -> _Coords:
    if schedule in ("edm", "linear"):
        return _Coords(lambda t: t, torch.ones_like, lambda s: s)
    if schedule == "ve":
        return _Coords(torch.sqrt, lambda t: 0.5 / torch.sqrt(t), lambda s: s**2)

    def vp_deriv(t: Tensor) -> Tensor:
        sig = vp_sigma(t, beta_d, beta_min)
        return 0.5 * (beta_min + beta_d * t) * (sig + 1 / sig)

    return _Coords(lambda t: vp_sigma(t, beta_d, beta_min), vp_deriv, lambda s: vp_sigma_inv(s, beta_d, beta_min))


class _Step(NamedTuple):
    """Scalars of one step (0-d tensors in the state dtype; ``sig_hat``/``sig_prime`` are [batch] rows)."""

    keep: Tensor  # s(t_hat) / s(t_i)
    noise_scale: Tensor  # s(t_hat) sqrt(sigma_hat^2 - sigma_i^2) S_noise
    inv_s_hat: Tensor
    sig_hat: Tensor
    a_hat: Tensor  # sigma'/sigma + s'/s at t_hat
    b_hat: Tensor  # sigma' s / sigma at t_hat
    h: Tensor
    alpha_h: Tensor
    inv_s_prime: Tensor
    sig_prime: Tensor
    a_prime: Tensor
    b_prime: Tensor
    w_cur: Tensor  # 1 - 1/(2 alpha)
    w_prime: Tensor  # 1/(2 alpha)
    inv_s_next: Tensor


def _table(
    s: Tensor,
    coords: _Coords,
    scaling: str,
    gammas: Tensor,
    s_noise: float,
    alpha: float,
    round_sigma: Callable[[Tensor], Tensor] | None,
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[list[_Step], list[float], Tensor, Tensor]:
    sig_cur, sig_next = s[:-1], s[1:]
    sig_hat = sig_cur + gammas * sig_cur  # as the core: gamma = 0 gives sigma_hat == sigma exactly
    if round_sigma is not None:
        sig_hat = check_round_sigma(sig_hat, round_sigma(sig_hat))
    t_hat, t_next = coords.sigma_inv(sig_hat), coords.sigma_inv(sig_next)
    h = t_next - t_hat
    t_prime = t_hat + alpha * h
    # sigma at the evaluation times: the exact given levels where t maps back to them (EDM, alpha = 1).
    sig_prime = sig_next if alpha == 1.0 else coords.sigma(t_prime)

    def scale(sig: Tensor) -> Tensor:
        return torch.ones_like(sig) if scaling == "none" else torch.rsqrt(1 + sig**2)

    def slope_coeffs(t: Tensor, sig: Tensor) -> tuple[Tensor, Tensor]:
        # Only evaluated where sigma > 0 is used; guard the division elsewhere (the final step's t' = 0).
        pos = sig > 0
        safe_t = torch.where(pos, t, torch.ones_like(t))
        safe_sig = torch.where(pos, sig, torch.ones_like(sig))
        ds = coords.sigma_deriv(safe_t)
        sc = scale(safe_sig)
        # s'/s = -sigma sigma' s^2 for s = 1/sqrt(1 + sigma^2); 0 for s = 1.
        s_ratio = torch.zeros_like(sig) if scaling == "none" else -safe_sig * ds * sc**2
        a = torch.where(pos, ds / safe_sig + s_ratio, torch.zeros_like(sig))
        b = torch.where(pos, ds * sc / safe_sig, torch.zeros_like(sig))
        return a, b

    a_hat, b_hat = slope_coeffs(t_hat, sig_hat)
    a_p, b_p = slope_coeffs(t_prime, sig_prime)
    s_cur, s_hat, s_prime, s_next = scale(sig_cur), scale(sig_hat), scale(sig_prime), scale(sig_next)
    noise_scale = s_hat * torch.sqrt((sig_hat**2 - sig_cur**2).clamp_min(0)) * s_noise

    def sc0(v: Tensor | float) -> Tensor:
        return torch.as_tensor(v, dtype=torch.float64).to(device=device, dtype=dtype)

    def rows(v: Tensor) -> Tensor:
        return v.to(device=device, dtype=dtype).reshape(1).expand(batch).contiguous()

    steps = [
        _Step(
            keep=sc0(s_hat[i] / s_cur[i]),
            noise_scale=sc0(noise_scale[i]),
            inv_s_hat=sc0(1 / s_hat[i]),
            sig_hat=rows(sig_hat[i]),
            a_hat=sc0(a_hat[i]),
            b_hat=sc0(b_hat[i]),
            h=sc0(h[i]),
            alpha_h=sc0(alpha * h[i]),
            inv_s_prime=sc0(1 / s_prime[i]),
            sig_prime=rows(sig_prime[i]),
            a_prime=sc0(a_p[i]),
            b_prime=sc0(b_p[i]),
            w_cur=sc0(1 - 1 / (2 * alpha)),
            w_prime=sc0(1 / (2 * alpha)),
            inv_s_next=sc0(1 / s_next[i]),
        )
        for i in range(s.numel() - 1)
    ]
    return steps, sig_hat.tolist(), s_cur[:1], s_next[-1:]


def _progress(n: int, enabled: bool) -> Iterable[int]:
    if not enabled:
        return range(n)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError("progress=True needs tqdm: pip install 'edm-samplers[cli]' (or pip install tqdm)") from None
    bar: Iterable[int] = tqdm(range(n), desc="generalized_sample", leave=False)
    return bar


def generalized_sample(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    schedule: ScheduleName = "edm",
    scaling: ScalingName = "none",
    solver: Literal["heun", "euler"] = "heun",
    alpha: float = 1.0,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    round_sigma: Callable[[Tensor], Tensor] | None = None,
    beta_d: float = 19.9,
    beta_min: float = 0.1,
    cond: Mapping[str, Any] | None = None,
    noise: NoiseSource | torch.Generator | None = None,
    callback: Callback | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    """EDM's generalized sampler: Algorithm 1 for any sigma(t), s(t), 1st/2nd-order rule, optional churn.

    Order 1 (``solver="euler"``, N NFE) or 2 (``"heun"``: 2 NFE per step, Euler on the step to 0, 2N - 1
    NFE). With ``schedule="edm"``, ``scaling="none"``, ``alpha=1`` it computes what :func:`heun_sample` /
    :func:`euler_sample` (and, with churn, :func:`stochastic_sample`) compute, up to round-off.

    Args:
        denoiser: D(x, sigma, **cond), sigma of shape ``[batch]``.
        x: initial state at noise level ``sigmas[0]`` (unscaled: x = y + sigmas[0] n).
        sigmas: non-increasing noise levels (any discretization); t_i = t(sigma_i).
        schedule: sigma(t): "edm" / "linear" (t), "ve" (sqrt t) or "vp" (see the module table).
        scaling: s(t): "none" (1) or "vp" (1 / sqrt(1 + sigma(t)^2)).
        solver: "heun" (2nd-order rule with parameter ``alpha``) or "euler".
        alpha: in (0, 1]; 1 = Heun (trapezoidal), 0.5 = midpoint. Only used by the 2nd-order rule.
        s_churn, s_tmin, s_tmax, s_noise: Algorithm 2's churn. Noise is drawn once per step whatever
            these settings (like :func:`stochastic_sample` and the paper's code), so sweeping ``s_churn``
            never shifts the random stream; ``s_churn = 0`` gives the deterministic result. Pass
            ``noise=`` (e.g. :class:`~edm_samplers.PerSampleNoise`) to keep torch's global RNG untouched.
        round_sigma: optional map of sigma_hat onto levels a discrete model supports.
        beta_d, beta_min: constants of the VP sigma(t).
        cond, noise, callback, dtype, progress, check_finite: as in :func:`euler_sample`. ``callback``
            receives unscaled states.

    Returns:
        The state at ``sigmas[-1]`` in unscaled coordinates, in the integration dtype.

    Raises:
        TypeError / ValueError: for invalid arguments (named), or a denoiser output of the wrong shape.
        FloatingPointError: if ``check_finite`` and the result is not finite.
    """
    check_denoiser(denoiser)
    check_has_data(x, "x")
    check_has_data(sigmas, "sigmas")
    x = check_x(x)
    s = check_sigmas(sigmas)
    cond_d = check_cond(cond)
    sdt = state_dtype(x, dtype)
    check_sigmas_fit(s, sdt)
    check_cond_batch(cond_d, x.shape[0])
    if schedule not in ("edm", "linear", "vp", "ve"):
        raise ValueError(f"schedule must be 'edm' (alias 'linear'), 'vp' or 've', got {schedule!r}")
    if scaling not in ("none", "vp"):
        raise ValueError(f"scaling must be 'none' or 'vp', got {scaling!r}")
    if solver not in ("heun", "euler"):
        raise ValueError(f"solver must be 'heun' or 'euler', got {solver!r}")
    a = check_float(alpha, "alpha", positive=True)
    if a > 1:
        raise ValueError(f"alpha must be in (0, 1] (1 = Heun, 0.5 = midpoint), got {a}")
    s_churn = check_float(s_churn, "s_churn", nonnegative=True)
    s_tmin = check_float(s_tmin, "s_tmin", nonnegative=True)
    s_tmax = check_float(s_tmax, "s_tmax", nonnegative=True, allow_inf=True)
    s_noise = check_float(s_noise, "s_noise", nonnegative=True)
    if s_tmin > s_tmax:
        raise ValueError(f"s_tmin must be <= s_tmax, got s_tmin={s_tmin}, s_tmax={s_tmax}")
    bd = check_float(beta_d, "beta_d", positive=True)
    bm = check_float(beta_min, "beta_min", nonnegative=True)
    if round_sigma is not None and not callable(round_sigma):
        raise TypeError("round_sigma must be a callable mapping a tensor of sigmas to supported sigmas")
    check_callback(callback)
    src = as_noise_source(noise)

    n = s.numel() - 1
    gammas = churn_gammas(s, s_churn, s_tmin, s_tmax)
    coords = _coords(schedule, bd, bm)
    table, host_hat, s_first, s_last = _table(
        s, coords, scaling, gammas, s_noise, a, round_sigma, x.shape[0], sdt, x.device
    )
    if not all(math.isfinite(v) for v in host_hat):
        raise ValueError("round_sigma returned non-finite noise levels")
    host = s.tolist()

    def den(z: Tensor, sig: Tensor) -> Tensor:
        out = check_denoised_on(denoiser(z, sig, **cond_d), z)
        return out if out.dtype == sdt else out.to(sdt)

    xs = x.to(sdt) * float(s_first)  # scaled state s(t_0) x_0
    for i in _progress(n, progress):
        c = table[i]
        # Drawn on every step, also with zero churn (then noise_scale = 0 and keep = 1 exactly).
        eps = src.randn(xs.shape, dtype=sdt, device=x.device)
        x_hat = torch.addcmul(xs * c.keep, eps, c.noise_scale)
        x_hat_u = x_hat * c.inv_s_hat
        denoised = den(x_hat_u, c.sig_hat)
        d = x_hat * c.a_hat - denoised * c.b_hat
        if solver == "heun" and host[i + 1] > 0:
            x_p = torch.addcmul(x_hat, d, c.alpha_h)
            d_p = x_p * c.a_prime - den(x_p * c.inv_s_prime, c.sig_prime) * c.b_prime
            x_next = x_hat + c.h * (c.w_cur * d + c.w_prime * d_p)
        else:
            x_next = torch.addcmul(x_hat, d, c.h)
        if callback is not None:
            callback(StepInfo(i, host[i], host_hat[i], host[i + 1], x_hat_u, denoised, x_next * c.inv_s_next))
        xs = x_next

    out = xs / float(s_last)
    if check_finite:
        bad = ~torch.isfinite(out.detach()).reshape(out.shape[0], -1).all(dim=1)
        if bool(bad.any()):  # one sync, after the loop
            rows = torch.nonzero(bad).flatten().tolist()
            raise FloatingPointError(
                f"generalized_sample: non-finite values (NaN/Inf) in {len(rows)} of {out.shape[0]} samples "
                f"(rows {rows[:10]}); check the denoiser and the schedule's range, or pass check_finite=False"
            )
    return out
