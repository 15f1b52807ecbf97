"""EDM's own samplers as one program: Euler, Heun (Algorithm 1) and the churn sampler (Algorithm 2).

The loop reads the per-step scalars of :func:`.steps.step_table` (float64 on the host, cast once to the
state dtype on x's device) and calls the pure steps of :mod:`.steps`; which step runs (Heun, or Euler on
the last step to sigma = 0) is decided on the host copy of the schedule, and so is which steps add churn noise
(``used``: gamma_i > 0 and S_noise > 0). Those steps read draw i of an indexed source
(:class:`~edm_samplers.CounterNoise`) and the others draw nothing; a stream (a generator) is drawn on every
step, so that its stream never depends on the churn settings. Settings that add no noise at all make the
program deterministic (it equals Heun / Euler and draws nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from .._types import Callback, Denoiser, NoiseSource, StepInfo
from .._validate import check_round_sigma
from ..noise import step_drawer
from .runtime import Schedule
from .steps import (
    StepCoeffs,
    churn,
    churn_gammas,
    churn_sigma_hat,
    euler_step,
    heun_step,
    step_table,
    unstack,
)

__all__ = ["EDMProgram", "build_edm"]


class EDMProgram:
    """The Euler / Heun / churn loop over one step table (read-only once built; cached and shared).

    ``compiled()`` returns a copy whose steps run through ``torch.compile`` (the functional forms: inductor
    fuses and plans memory); the denoiser is traced inside the steps, graph breaks in it allowed.
    """

    def __init__(
        self, table: list[StepCoeffs], host: tuple[float, ...], host_hat: list[float], method: Literal["euler", "heun"],
        used: tuple[bool, ...],
    ) -> None:  # fmt: skip
        self.used = used  # which steps add churn noise (host bools)
        self.stochastic = any(used)
        self.table = table
        self.host = host
        self.host_hat = host_hat
        self.method = method
        self.compiled_steps = False
        self._churn: Callable[..., Tensor] = churn
        self._euler: Callable[..., tuple[Tensor, Tensor]] = euler_step
        self._heun: Callable[..., tuple[Tensor, Tensor]] = heun_step

    def compiled(self) -> EDMProgram:
        out = EDMProgram(self.table, self.host, self.host_hat, self.method, self.used)
        out.compiled_steps = True
        # Own, contiguous copies of the coefficients: the shared table rows are views at different storage
        # offsets, which would make the compiled steps re-specialise (recompile) per step.
        out.table = [StepCoeffs(*(f.clone() for f in c)) for c in self.table]
        out._churn = torch.compile(churn, dynamic=False)
        out._euler = torch.compile(euler_step, dynamic=False)
        out._heun = torch.compile(heun_step, dynamic=False)
        return out

    def num_buffers(self) -> int:
        """State-sized buffers the allocation-free loop keeps (beyond the denoiser's and noise outputs)."""
        return 3 if self.method == "heun" and any(h > 0 for h in self.host[1:]) else 1

    def run(self, den: Denoiser, x: Tensor, cond: Mapping[str, Any], noise: NoiseSource | None,
            callback: Callback | None, steps: Iterable[int]) -> Tensor:  # fmt: skip
        host, table = self.host, self.table
        sdt, device = x.dtype, x.device
        # Buffer reuse, decided once on the host: not when a callback may keep the step's tensors, nor when
        # autograd records through x (the steps also fall back by themselves if a denoiser output requires
        # grad). Buffers are private: the caller's x is only ever read.
        bufs: tuple[Tensor, Tensor, Tensor] | None = None
        out: Tensor | None = None
        if callback is None and not self.compiled_steps and not (torch.is_grad_enabled() and x.requires_grad):
            out = torch.empty(x.shape, dtype=sdt, device=device)
            if self.num_buffers() == 3:
                bufs = (out, torch.empty_like(out), torch.empty_like(out))
        draw = None if noise is None else step_drawer(noise)
        for i in steps:
            c: StepCoeffs = table[i]
            eps = None if draw is None else draw(i, self.used[i], x.shape, sdt, device)
            if eps is not None:
                x_hat = self._churn(x, eps, c.noise_scale, out=out)
                del eps  # free the draw before the next one: one noise tensor alive at a time
            else:
                x_hat = x
            if self.method == "heun" and host[i + 1] > 0:
                x_next, denoised = self._heun(den, x_hat, c, cond, buffers=bufs)
            else:
                x_next, denoised = self._euler(den, x_hat, c, cond, out=out)
            if callback is not None:
                callback(StepInfo(i, host[i], self.host_hat[i], host[i + 1], x_hat, denoised, x_next))
            x = x_next
        return x


def build_edm(
    method: Literal["euler", "heun"] | None, *, stochastic: bool
) -> Callable[[Schedule, Mapping[str, Any], int, torch.dtype, torch.device], EDMProgram]:
    """The builder of Euler / Heun (``method``) or of the churn sampler (``stochastic``: knob ``solver``)."""

    def build(
        s: Schedule, knobs: Mapping[str, Any], batch: int, dtype: torch.dtype, device: torch.device
    ) -> EDMProgram:
        sigma_hat = None
        if stochastic:
            gammas = churn_gammas(s.sigmas, knobs["s_churn"], knobs["s_tmin"], knobs["s_tmax"])
            sigma_hat = churn_sigma_hat(s.sigmas, gammas)
            if knobs["round_sigma"] is not None:
                sigma_hat = check_round_sigma(sigma_hat, knobs["round_sigma"](sigma_hat))
        s_noise = knobs["s_noise"] if stochastic else 1.0
        table = unstack(
            step_table(s.sigmas, batch=batch, dtype=dtype, device=device, sigma_hat=sigma_hat, s_noise=s_noise)
        )
        host_hat = list(s.host[:-1]) if sigma_hat is None else sigma_hat.tolist()
        used = tuple(s_noise > 0 and h > v for h, v in zip(host_hat, s.host[:-1], strict=True))  # noise_scale > 0
        return EDMProgram(table, s.host, host_hat, knobs["solver"] if method is None else method, used)

    return build
