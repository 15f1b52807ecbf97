"""EDM's own samplers as one program: Euler, Heun (Algorithm 1) and the churn sampler (Algorithm 2).

The loop reads the per-step scalars of :func:`.steps.step_table` (float64 on the host, cast once to the
state dtype on x's device) and calls the pure steps of :mod:`.steps`; which step runs (Heun, or Euler on
the last step to sigma = 0) is decided on the host copy of the schedule, and so is which steps add churn noise
(``used``: gamma_i > 0 and S_noise > 0). Those steps read draw i of an indexed source
(:class:`~edm_samplers.CounterNoise`) and the others draw nothing; a stream (a generator) is drawn on every
step, so that its stream never depends on the churn settings. Settings that add no noise at all make the
program deterministic (it equals Heun / Euler and draws nothing).

A schedule may start at sigma = inf (pure noise; the state is then unit-variance noise n, the limit of
x / sigma): the first step is :func:`.steps.inf_step`, x_1 = D(n; inf) + sigma_1 n, the exact limit of the Euler
step as sigma_0 -> inf. Heun takes it too (its trapezoid correction has no finite limit, see :func:`.steps.inf_step`),
and the churn sampler churns the noise first (the limit of churn, see :func:`.steps.inf_start`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from .._types import Callback, Denoiser, NoiseSource, StepInfo
from .._validate import check_round_sigma
from ..noise import step_drawer
from .runtime import Schedule
from .steps import (
    InfStart,
    StepCoeffs,
    churn,
    churn_gammas,
    churn_sigma_hat,
    euler_step,
    heun_step,
    inf_start,
    inf_step,
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
        used: tuple[bool, ...], start: InfStart | None = None,
    ) -> None:  # fmt: skip
        self.used = used  # which steps add churn noise (host bools)
        self.stochastic = any(used)
        self.table = table  # with ``start`` (sigmas[0] = inf), table[0] is a placeholder: step 0 reads ``start``
        self.start = start
        self.host = host
        self.host_hat = host_hat
        self.method = method
        self.compiled_steps = False
        self._churn: Callable[..., Tensor] = churn
        self._euler: Callable[..., tuple[Tensor, Tensor]] = euler_step
        self._heun: Callable[..., tuple[Tensor, Tensor]] = heun_step

    def compiled(self) -> EDMProgram:
        start = None if self.start is None else InfStart(*(f.clone() for f in self.start))
        out = EDMProgram(self.table, self.host, self.host_hat, self.method, self.used, start)
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
            if i == 0 and self.start is not None:  # from sigma = inf: x is the unit noise n (decided on the host)
                eps = None if draw is None else draw(i, self.used[i], x.shape, sdt, device)
                x_next, x_hat, denoised = inf_step(den, x, eps, self.start, cond)
                del eps
                if callback is not None:
                    callback(StepInfo(i, host[i], self.host_hat[i], host[i + 1], x_hat, denoised, x_next))
                x = x_next
                continue
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
        gammas = None
        # From sigma = inf (host float), step 0 is inf_step: the table covers the finite steps 1.. only.
        first = 1 if math.isinf(s.host[0]) else 0
        if stochastic:
            gammas = churn_gammas(s.sigmas, knobs["s_churn"], knobs["s_tmin"], knobs["s_tmax"])
            sigma_hat = churn_sigma_hat(s.sigmas, gammas)
            if first:
                sigma_hat[0] = math.inf  # inf + gamma inf (0 inf is NaN when gamma = 0)
            if knobs["round_sigma"] is not None and sigma_hat.numel() > first:
                # An infinite level is never rounded: a discrete model's levels are finite.
                fin = sigma_hat[first:]
                sigma_hat = torch.cat([sigma_hat[:first], check_round_sigma(fin, knobs["round_sigma"](fin))])
        s_noise = knobs["s_noise"] if stochastic else 1.0
        rest = s.sigmas[first:]
        table = (
            unstack(
                step_table(rest, batch=batch, dtype=dtype, device=device,
                           sigma_hat=None if sigma_hat is None else sigma_hat[first:], s_noise=s_noise)
            )
            if rest.numel() > 1
            else []
        )  # fmt: skip
        start = None
        if first:
            g0 = 0.0 if gammas is None else float(gammas[0])
            start = inf_start(s.host[1], g0, s_noise, batch=batch, dtype=dtype, device=device)
            table = [table[0] if table else _placeholder(start), *table]
        host_hat = list(s.host[:-1]) if sigma_hat is None else sigma_hat.tolist()
        # Which steps add churn noise (noise_scale > 0); from sigma = inf, step 0 re-mixes the noise when gamma_0 > 0.
        used = tuple(
            s_noise > 0 and (h > v if math.isfinite(v) else gammas is not None and float(gammas[0]) > 0)
            for h, v in zip(host_hat, s.host[:-1], strict=True)
        )
        return EDMProgram(table, s.host, host_hat, knobs["solver"] if method is None else method, used, start)

    return build


def _placeholder(start: InfStart) -> StepCoeffs:
    """An unused table entry for step 0 of a schedule [inf, sigma_1] (step 0 reads the :class:`InfStart`)."""
    z = start.keep
    return StepCoeffs(start.sigma, start.sigma, z, z, z, z, z)
