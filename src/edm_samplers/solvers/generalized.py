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

From sigma_0 = inf (x = unit noise n; t_0 = inf for every sigma(t) above) the first step is
:func:`.steps.inf_step`, x_1 = D(n_hat; inf) + sigma_1 n_hat with n_hat the churned noise (n without churn),
whatever ``schedule``, ``scaling``, ``solver`` and ``alpha``. An Euler step in t from t_0 = inf has no useful
limit: it diverges for "ve" (x_1 -> (x_0 + D_0) / 2) and for "vp" without scaling, and with the VP scaling it
tends to x_1 = sqrt(1 + sigma_1^2) n, which ignores D; for "edm" and "linear" it is exactly this step. So the
step taken is the first-order step that is exact for a D frozen over the step (the same in every sigma(t), s(t),
since the ODE in x and sigma does not depend on them), the limit of Euler in sigma and of DDIM.
"""

from __future__ import annotations

import math
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
from .steps import InfStart, churn_gammas, inf_start, inf_step

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
    start: InfStart | None = None  # sigmas[0] = inf: step 0 is inf_step (the table's row 0 is then unused)

    def run(self, den: Denoiser, x: Tensor, cond: Mapping[str, Any], noise: NoiseSource | None,
            callback: Callback | None, steps: Iterable[int]) -> Tensor:  # fmt: skip
        host = self.host
        xs = x * self.s_first  # scaled state s(t_0) x_0 (from sigma = inf: x, the unit noise, s_first = 1)
        draw = None if noise is None else step_drawer(noise)
        for i in steps:
            # Step i's draw where it adds noise (a stream is drawn on every step: see noise.step_drawer).
            eps = None if draw is None else draw(i, self.used[i], xs.shape, xs.dtype, xs.device)
            if i == 0 and self.start is not None:  # from sigma = inf (decided on the host)
                x_next_u, x_hat_u, denoised = inf_step(den, xs, eps, self.start, cond)
                if callback is not None:
                    callback(StepInfo(i, host[i], self.host_hat[i], host[i + 1], x_hat_u, denoised, x_next_u))
                xs = x_next_u / self.inv_s_next[i]  # the scaled state s(t_1) x_1
                continue
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
    first = 1 if math.isinf(sched.host[0]) else 0
    if first:  # row 0 is computed at a finite stand-in level and unused: step 0 reads the InfStart
        s = s.clone()
        s[0] = 2.0 * s[1] if s[1] > 0 else 1.0
    sig_cur, sig_next = s[:-1], s[1:]
    sig_hat = sig_cur + gammas * sig_cur  # as the core: gamma = 0 gives sigma_hat == sigma exactly
    if knobs["round_sigma"] is not None and sig_hat.numel() > first:
        fin = sig_hat[first:]  # an infinite level is never rounded
        sig_hat = torch.cat([sig_hat[:first], check_round_sigma(fin, knobs["round_sigma"](fin))])
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
    start = None
    host_hat = sig_hat.tolist()
    s_first = float(s_cur[0])
    if first:
        start = inf_start(sched.host[1], float(gammas[0]), knobs["s_noise"], batch=batch, dtype=dtype, device=device)
        host_hat[0], s_first = math.inf, 1.0
    return GeneralizedProgram(
        per_step[0], per_step[1], per_step[2], sigma_rows(dev[3], batch), per_step[4], per_step[5], per_step[6],
        per_step[7], per_step[8], sigma_rows(dev[9], batch), per_step[10], per_step[11], per_step[12], per_step[13],
        per_step[14], s_first, float(s_next[-1]), knobs["solver"] == "heun", sched.host, host_hat, used, any(used),
        start,
    )  # fmt: skip
