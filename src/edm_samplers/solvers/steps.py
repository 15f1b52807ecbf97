"""Pure step functions of the EDM samplers, and the per-step coefficient table they read.

The probability-flow ODE in EDM's parameterization (sigma(t) = t, s(t) = 1) is

    dx/dsigma = (x - D(x; sigma)) / sigma.

A step moves the state from ``sigma`` (after optional churn: ``sigma_hat``) to ``sigma_next``. Every
scalar a step needs is precomputed once per schedule, in float64, by :func:`step_table`, and handed to
the step as a device tensor: the steps themselves are straight-line tensor programs with no host
synchronisation and no branching on tensor values, so ``torch.compile(fullgraph=True)`` and CUDA-graph
capture see the same code as eager mode. Which step runs (Heun or the final Euler step to 0) is
decided by the driver from the host copy of the schedule.

Buffer reuse. Each step also has a workspace form (``buffers=`` / ``out=``) that writes into
caller-owned state-sized tensors with ``out=`` / in-place kernels instead of allocating: the same
kernels in the same order as the functional form, so the results are bitwise identical. Rules that keep
it safe (step authors of later solvers follow the same ones):

- Only the driver's own buffers are written: never the caller's ``x``, never a denoiser output (the
  denoiser may return a cached tensor), never a tensor after it was last handed to the denoiser unless
  the denoiser is finished with it (a denoiser that returns its input aliases the buffer, which is why
  every write happens only after the last read of that step's outputs).
- ``out`` may be the step's own input ``x`` (an exact alias is safe for elementwise kernels).
- When autograd records (grad mode on and ``x`` or a denoiser output requires grad, a host-side flag,
  no device sync), the step falls back to the functional form: ``out=`` kernels do not support autograd
  and an in-place write would corrupt tensors saved for backward. Once the state requires grad it
  stays so, hence the buffers are never written again after a fallback.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .._types import Denoiser

__all__ = [
    "InfStart",
    "StepCoeffs",
    "churn",
    "churn_gammas",
    "churn_sigma_hat",
    "euler_step",
    "heun_step",
    "inf_start",
    "inf_step",
    "step_table",
    "unstack",
]


class StepCoeffs(NamedTuple):
    """Scalars of one step (or, from :func:`step_table`, of all steps stacked along dim 0).

    Attributes:
        sigma_hat: ``[batch]`` noise level the denoiser is evaluated at (sigma after churn).
        sigma_next: ``[batch]`` target noise level.
        noise_scale: s_noise sqrt(sigma_hat^2 - sigma^2), the churn noise std (0 without churn).
        ratio: sigma_next / sigma_hat; the Euler step is x_next = D + ratio (x - D).
        h_over_sigma: (sigma_next - sigma_hat) / sigma_hat; Heun's Euler predictor is x + h_over_sigma (x - D).
        heun_a: h / (2 sigma_hat), weight of (x - D) in Heun's corrector.
        heun_b: h / (2 sigma_next), weight of (x' - D') in Heun's corrector (0 when sigma_next = 0).
    """

    sigma_hat: Tensor
    sigma_next: Tensor
    noise_scale: Tensor
    ratio: Tensor
    h_over_sigma: Tensor
    heun_a: Tensor
    heun_b: Tensor


def churn_gammas(sigmas: Tensor, s_churn: float, s_tmin: float, s_tmax: float) -> Tensor:
    """EDM Algorithm 2's gamma_i = min(S_churn / N, sqrt(2) - 1) if S_tmin <= sigma_i <= S_tmax else 0.

    ``sigmas`` is the full schedule (N + 1 entries); returns N float64 values, vectorised (no loop).
    """
    s = sigmas[:-1].to(torch.float64)
    n = s.numel()
    g = min(s_churn / n, math.sqrt(2.0) - 1.0)
    inside = (s >= s_tmin) & (s <= s_tmax)
    return torch.where(inside, torch.full_like(s, g), torch.zeros_like(s))


def churn_sigma_hat(sigmas: Tensor, gammas: Tensor, round_sigma: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """sigma_hat_i = sigma_i + gamma_i sigma_i (the reference's order: gamma = 0 gives sigma_i bit for bit),
    optionally mapped by ``round_sigma`` onto levels a discrete model supports. float64, N values."""
    s = sigmas[:-1].to(torch.float64)
    hat = s + gammas * s
    return hat if round_sigma is None else round_sigma(hat)


def step_table(
    sigmas: Tensor,
    *,
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
    sigma_hat: Tensor | None = None,
    s_noise: float = 1.0,
) -> StepCoeffs:
    """Precompute every step's scalars in float64, then cast once to ``dtype`` on ``device``.

    Args:
        sigmas: validated float64 CPU schedule, N + 1 entries.
        batch: batch size; ``sigma_hat``/``sigma_next`` become ``[N, batch]`` rows for the denoiser.
        sigma_hat: the N noise levels after churn (see :func:`churn_sigma_hat`), or None for no churn.
        s_noise: churn noise inflation S_noise.

    Returns:
        A :class:`StepCoeffs` whose fields are stacked along dim 0 (index ``i`` for step i).
    """
    s = sigmas.to(torch.float64)
    sigma, sigma_next = s[:-1], s[1:]
    sigma_hat = sigma if sigma_hat is None else sigma_hat.to(torch.float64)
    # max(.., 0) guards rounding (round_sigma may move sigma_hat a hair below sigma).
    noise_scale = torch.sqrt((sigma_hat**2 - sigma**2).clamp_min(0)) * s_noise
    h = sigma_next - sigma_hat
    safe_next = torch.where(sigma_next > 0, sigma_next, torch.ones_like(sigma_next))
    heun_b = torch.where(sigma_next > 0, h / (2 * safe_next), torch.zeros_like(h))

    def rows(v: Tensor) -> Tensor:
        # The denoiser gets sigma as a contiguous [batch] tensor; build all rows once.
        return v.to(device=device, dtype=dtype)[:, None].expand(-1, batch).contiguous()

    def scal(v: Tensor) -> Tensor:
        return v.to(device=device, dtype=dtype)

    return StepCoeffs(
        sigma_hat=rows(sigma_hat),
        sigma_next=rows(sigma_next),
        noise_scale=scal(noise_scale),
        ratio=scal(sigma_next / sigma_hat),
        h_over_sigma=scal(h / sigma_hat),
        heun_a=scal(h / (2 * sigma_hat)),
        heun_b=scal(heun_b),
    )


def unstack(table: StepCoeffs) -> list[StepCoeffs]:
    """Split a stacked table into per-step records (views), once, outside the loop."""
    n = table.ratio.shape[0]
    return [StepCoeffs(*(field[i] for field in table)) for i in range(n)]


def _records(*ts: Tensor) -> bool:
    """True if autograd would record an op on ``ts`` (host flags only: no device sync)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in ts)


def churn(x: Tensor, eps: Tensor, noise_scale: Tensor, *, out: Tensor | None = None) -> Tensor:
    """EDM Algorithm 2 lines 5-6: x_hat = x + sqrt(sigma_hat^2 - sigma^2) S_noise eps.

    The samplers skip it on steps without churn (x_hat = x; adding noise_scale = 0 would give the same values).

    Args:
        out: optional state-sized buffer to write x_hat into (may be ``x`` itself); ignored when
            autograd records.
    """
    if out is None or _records(x, eps):
        return torch.addcmul(x, eps, noise_scale)
    return torch.addcmul(x, eps, noise_scale, out=out)


def euler_step(
    denoiser: Denoiser,
    x: Tensor,
    c: StepCoeffs,
    cond: Mapping[str, Any],
    *,
    out: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One Euler step of dx/dsigma = (x - D) / sigma from sigma_hat to sigma_next (1 NFE, order 1).

    Written as x_next = D + (sigma_next / sigma_hat) (x - D), which equals x + h (x - D) / sigma_hat and
    returns D exactly when sigma_next = 0 (the last step of every sampler).

    Args:
        out: optional state-sized buffer for x_next (may be ``x`` itself): one kernel, no allocation.
            Ignored (functional form) when autograd records.

    Returns:
        ``(x_next, denoised)``.
    """
    denoised = denoiser(x, c.sigma_hat, **cond)
    if out is None or _records(x, denoised):
        return torch.lerp(denoised, x, c.ratio), denoised
    return torch.lerp(denoised, x, c.ratio, out=out), denoised


def heun_step(
    denoiser: Denoiser,
    x: Tensor,
    c: StepCoeffs,
    cond: Mapping[str, Any],
    *,
    buffers: tuple[Tensor, Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """One Heun step (EDM Algorithm 1, trapezoidal rule; 2 NFE, order 2). Requires sigma_next > 0.

    d = (x - D(x; sigma_hat)) / sigma_hat, x' = x + h d, d' = (x' - D(x'; sigma_next)) / sigma_next,
    x_next = x + h (d + d') / 2, with h = sigma_next - sigma_hat; evaluated as
    x + a (x - D) + b (x' - D') with a = h / (2 sigma_hat), b = h / (2 sigma_next).

    Args:
        buffers: optional ``(out, diff, pred)`` state-sized workspace; ``out`` receives x_next and may be
            ``x`` itself, ``diff`` holds x - D, ``pred`` holds x' and then x' - D'. Same five kernels as
            the functional form, so bitwise equal results without allocations. Ignored when autograd
            records.

    Returns:
        ``(x_next, denoised)`` with denoised = D(x; sigma_hat).
    """
    denoised = denoiser(x, c.sigma_hat, **cond)
    if buffers is None or _records(x, denoised):
        diff = x - denoised
        x_pred = torch.addcmul(x, diff, c.h_over_sigma)
        diff_pred = x_pred - denoiser(x_pred, c.sigma_next, **cond)
        x_next = torch.addcmul(x, diff, c.heun_a)
        return x_next.addcmul_(diff_pred, c.heun_b), denoised
    out, diff, pred = buffers
    torch.sub(x, denoised, out=diff)
    torch.addcmul(x, diff, c.h_over_sigma, out=pred)
    denoised_pred = denoiser(pred, c.sigma_next, **cond)
    if _records(denoised_pred):
        # Autograd switched on mid-step (a denoiser output requires grad): finish functionally and never
        # touch ``pred`` again, the denoiser may have saved it for backward.
        x_next = torch.addcmul(x, diff, c.heun_a)
        return x_next.addcmul_(pred - denoised_pred, c.heun_b), denoised
    # x' is no longer needed once D' exists: overwrite it with x' - D' (an exact alias if the
    # denoiser returned its input, which is safe elementwise). Write ``out`` only now: it may be x.
    torch.sub(pred, denoised_pred, out=pred)
    torch.addcmul(x, diff, c.heun_a, out=out)
    return out.addcmul_(pred, c.heun_b), denoised


# ---- the first step from sigma = inf (pure noise) ------------------------------------------------------------


class InfStart(NamedTuple):
    """Scalars of a first step from sigma_0 = inf, where the state x is the unit-variance noise n = lim x_0 / sigma_0.

    Attributes:
        sigma: ``[batch]`` row of inf: the denoiser is called at sigma = inf with the (churned) noise as its x.
        sigma_next: sigma_1, the weight of the noise in x_1 = D(n_hat; inf) + sigma_1 n_hat.
        keep: 1 / (1 + gamma_0), the weight of n in the churned noise n_hat (1 without churn).
        noise_scale: S_noise sqrt((1 + gamma_0)^2 - 1) / (1 + gamma_0), the weight of eps in n_hat (0 without churn).
    """

    sigma: Tensor
    sigma_next: Tensor
    keep: Tensor
    noise_scale: Tensor


def inf_start(
    sigma_next: float, gamma: float, s_noise: float, *, batch: int, dtype: torch.dtype, device: torch.device
) -> InfStart:
    """The :class:`InfStart` of a step from inf to ``sigma_next`` with churn ``gamma`` (host floats, one transfer).

    Churn at sigma_0 raises the level to sigma_hat = (1 + gamma) sigma_0 and adds noise of std
    sqrt(sigma_hat^2 - sigma_0^2) S_noise; in units of sigma_hat the churned state is
    x_hat / sigma_hat = (n + S_noise sqrt((1 + gamma)^2 - 1) eps) / (1 + gamma) for every sigma_0, so its limit
    is that (finite) mix of n and eps: churn at an infinite level re-mixes the starting noise.
    """
    keep = 1.0 / (1.0 + gamma)
    scale = s_noise * math.sqrt(gamma * (2.0 + gamma)) * keep  # (1 + gamma)^2 - 1 without cancellation
    vals = torch.tensor([math.inf, sigma_next, keep, scale], dtype=torch.float64).to(device=device, dtype=dtype)
    return InfStart(vals[0].expand(batch).contiguous(), vals[1], vals[2], vals[3])


def inf_step(
    denoiser: Denoiser, x: Tensor, eps: Tensor | None, c: InfStart, cond: Mapping[str, Any]
) -> tuple[Tensor, Tensor, Tensor]:
    """The first step from sigma_0 = inf: the limit of every single-step sampler's first step (1 NFE).

    With x_0 = sigma_0 n, the Euler step x_1 = D_0 + (sigma_1 / sigma_0)(x_0 - D_0) tends to
    x_1 = D(n; inf) + sigma_1 n (DDIM's step from pure noise), at rate O(1 / sigma_0). Churn first re-mixes the
    noise (see :func:`inf_start`); ``eps`` is None for deterministic samplers. Heun's trapezoid has no finite
    limit there (its correction grows like sigma_0 (D_0 - D_1) / (2 sigma_1)), so every sampler takes this step.

    Returns:
        ``(x_next, x_hat, denoised)``: x_hat is the (churned) noise the denoiser saw.
    """
    x_hat = x if eps is None else torch.addcmul(x * c.keep, eps, c.noise_scale)
    denoised = denoiser(x_hat, c.sigma, **cond)
    return torch.addcmul(denoised, x_hat, c.sigma_next), x_hat, denoised
