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

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._types import Callback, Denoiser, NoiseSource, StepInfo
from .._validate import check_round_sigma
from ..noise import step_drawer
from ..schedules import vp_sigma, vp_sigma_inv
from .runtime import Schedule, sigma_rows, to_device
from .steps import churn_gammas

__all__ = ["GeneralizedProgram", "build_generalized"]


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


class GeneralizedProgram(NamedTuple):
    """Per-step scalars (0-d tensors in the state dtype; ``sig_hat``/``sig_prime`` are ``[batch]`` rows)."""

    keep: list[Tensor]  # s(t_hat) / s(t_i)
    noise_scale: list[Tensor]  # s(t_hat) sqrt(sigma_hat^2 - sigma_i^2) S_noise
    inv_s_hat: list[Tensor]
    sig_hat: Tensor
    a_hat: list[Tensor]  # sigma'/sigma + s'/s at t_hat
    b_hat: list[Tensor]  # sigma' s / sigma at t_hat
    h: list[Tensor]
    alpha_h: list[Tensor]
    inv_s_prime: list[Tensor]
    sig_prime: Tensor
    a_prime: list[Tensor]
    b_prime: list[Tensor]
    w_cur: list[Tensor]  # 1 - 1/(2 alpha)
    w_prime: list[Tensor]  # 1/(2 alpha)
    inv_s_next: list[Tensor]
    s_first: float  # s(t_0): the state is integrated in scaled coordinates s(t) x
    s_last: float
    heun: bool
    host: tuple[float, ...]
    host_hat: list[float]
    used: tuple[bool, ...]  # which steps add churn noise (host bools)
    stochastic: bool  # some step does

    def run(self, den: Denoiser, x: Tensor, cond: Mapping[str, Any], noise: NoiseSource | None,
            callback: Callback | None, steps: Iterable[int]) -> Tensor:  # fmt: skip
        host = self.host
        xs = x * self.s_first  # scaled state s(t_0) x_0
        draw = None if noise is None else step_drawer(noise)
        for i in steps:
            # Step i's draw where it adds noise (a stream is drawn on every step: see noise.step_drawer).
            eps = None if draw is None else draw(i, self.used[i], xs.shape, xs.dtype, xs.device)
            x_hat = xs * self.keep[i] if eps is None else torch.addcmul(xs * self.keep[i], eps, self.noise_scale[i])
            x_hat_u = x_hat * self.inv_s_hat[i]
            denoised = den(x_hat_u, self.sig_hat[i], **cond)
            d = x_hat * self.a_hat[i] - denoised * self.b_hat[i]
            if self.heun and host[i + 1] > 0:
                x_p = torch.addcmul(x_hat, d, self.alpha_h[i])
                d_p = (
                    x_p * self.a_prime[i] - den(x_p * self.inv_s_prime[i], self.sig_prime[i], **cond) * self.b_prime[i]
                )
                x_next = x_hat + self.h[i] * (self.w_cur[i] * d + self.w_prime[i] * d_p)
            else:
                x_next = torch.addcmul(x_hat, d, self.h[i])
            if callback is not None:
                callback(
                    StepInfo(i, host[i], self.host_hat[i], host[i + 1], x_hat_u, denoised, x_next * self.inv_s_next[i])
                )
            xs = x_next
        return xs / self.s_last


def build_generalized(
    sched: Schedule, knobs: Mapping[str, Any], batch: int, dtype: torch.dtype, device: torch.device
) -> GeneralizedProgram:
    """All per-step scalars in float64 on the host, then one transfer to the state dtype on ``device``."""
    s = sched.sigmas
    coords = _coords(knobs["schedule"], knobs["beta_d"], knobs["beta_min"])
    scaling, alpha = knobs["scaling"], knobs["alpha"]
    gammas = churn_gammas(s, knobs["s_churn"], knobs["s_tmin"], knobs["s_tmax"])
    sig_cur, sig_next = s[:-1], s[1:]
    sig_hat = sig_cur + gammas * sig_cur  # as the core: gamma = 0 gives sigma_hat == sigma exactly
    if knobs["round_sigma"] is not None:
        sig_hat = check_round_sigma(sig_hat, knobs["round_sigma"](sig_hat))
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
    noise_scale = s_hat * torch.sqrt((sig_hat**2 - sig_cur**2).clamp_min(0)) * knobs["s_noise"]
    used = tuple(bool(v) for v in (noise_scale != 0).tolist())
    ones = torch.ones_like(h)
    columns = [
        s_hat / s_cur, noise_scale, 1 / s_hat, sig_hat, a_hat, b_hat, h, alpha * h, 1 / s_prime, sig_prime, a_p, b_p,
        ones * (1 - 1 / (2 * alpha)), ones * (1 / (2 * alpha)), 1 / s_next,
    ]  # fmt: skip
    dev = to_device([np.asarray(c.numpy(), dtype=np.float64) for c in columns], dtype, device)
    per_step = [list(c.unbind(0)) for c in dev]
    return GeneralizedProgram(
        per_step[0], per_step[1], per_step[2], sigma_rows(dev[3], batch), per_step[4], per_step[5], per_step[6],
        per_step[7], per_step[8], sigma_rows(dev[9], batch), per_step[10], per_step[11], per_step[12], per_step[13],
        per_step[14], float(s_cur[0]), float(s_next[-1]), knobs["solver"] == "heun", sched.host, sig_hat.tolist(),
        used, any(used),
    )  # fmt: skip
