"""The loop of the linear multistep solvers: one program runs every plan of :mod:`.plans`.

Step i: optionally correct the state with the new output (UniPC), then
``x_{i+1} = a_i x_i + e_i D_i + sum_j b_ij F_{i-j} (+ noise_i eps_i)`` with F = D or (x - D) / sigma. The
plan's float64 scalars reach the device in one transfer; which columns a step uses is a Python int, so the
loop is straight-line tensor code (capturable, compilable with ``fullgraph=True``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._types import Callback, Denoiser, NoiseSource, StepInfo
from ..noise import step_drawer
from .plans import PLANS, MultistepPlan
from .runtime import Builder, Schedule, sigma_rows, to_device

__all__ = ["LinearProgram", "build_linear"]


class LinearProgram(NamedTuple):
    """A plan's device tables (read-only, cached) and the loop that applies them."""

    rows: Tensor
    a: list[Tensor]
    e: list[Tensor]
    nz: list[Tensor]
    b: list[list[Tensor]]
    corr: list[list[Tensor]]
    inv: list[Tensor]
    uses_e: list[bool]
    nb: tuple[int, ...]
    ncorr: tuple[int, ...]
    keep: int
    derivative: bool
    stochastic: bool  # some step adds noise
    host: tuple[float, ...]
    used: tuple[bool, ...]  # which steps add noise (noise scale != 0, host floats): the SDEs' last step does not
    inf_start: bool = False  # sigmas[0] = inf: x is the unit noise n, and d_0 = lim (x_0 - D_0) / sigma_0 = n

    @classmethod
    def from_plan(
        cls, s: Schedule, plan: MultistepPlan, batch: int, sdt: torch.dtype, dev: torch.device
    ) -> LinearProgram:
        f = s.sigmas.numpy()
        inv = np.where(f[:-1] > 0, 1.0 / np.where(f[:-1] > 0, f[:-1], 1.0), 0.0)
        sig, a, e, nz, b, corr, inv_t = to_device(
            [f[:-1], plan.a, plan.e, plan.noise, plan.b, plan.corr, inv], sdt, dev
        )
        return cls(
            sigma_rows(sig, batch), list(a.unbind(0)), list(e.unbind(0)), list(nz.unbind(0)),
            [list(r.unbind(0)) for r in b], [list(r.unbind(0)) for r in corr], list(inv_t.unbind(0)),
            [bool(v != 0) for v in plan.e], plan.nb, plan.ncorr, max(max(plan.nb), max(plan.ncorr), 1),
            plan.family == "derivative", plan.stochastic and bool(np.any(plan.noise != 0)), s.host,
            tuple(bool(v) for v in plan.noise != 0), math.isinf(s.host[0]),
        )  # fmt: skip

    def run(self, den: Denoiser, x: Tensor, cond: Mapping[str, Any], noise: NoiseSource | None,
            callback: Callback | None, steps: Iterable[int]) -> Tensor:  # fmt: skip
        host = self.host
        hist: list[Tensor] = []  # newest first; Python-level ring of at most `keep` tensors
        draw = None if noise is None else step_drawer(noise)
        for i in steps:
            denoised = den(x, self.rows[i], **cond)
            # From sigma = inf the derivative d_0 is x (= n) itself; hist entries are never written in place.
            d0 = i == 0 and self.inf_start
            f = (x if d0 else (x - denoised).mul_(self.inv[i])) if self.derivative else denoised
            hist.insert(0, f)
            del hist[self.keep :]
            x_eval = x
            for j in range(self.ncorr[i]):  # UniPC corrector (a new tensor: StepInfo keeps the evaluated x)
                x = torch.addcmul(x, hist[j], self.corr[i][j]) if j == 0 else x.addcmul_(hist[j], self.corr[i][j])
            x_next = torch.mul(x, self.a[i])
            if self.uses_e[i]:
                x_next.addcmul_(denoised, self.e[i])
            for j in range(self.nb[i]):
                x_next.addcmul_(hist[j], self.b[i][j])
            # Step i's draw where it adds noise (a stream is drawn on every step: see noise.step_drawer).
            eps = None if draw is None else draw(i, self.used[i], x.shape, x.dtype, x.device)
            if eps is not None:
                x_next.addcmul_(eps, self.nz[i])
            if callback is not None:
                callback(StepInfo(i, host[i], host[i], host[i + 1], x_eval, denoised, x_next))
            x = x_next
        return x


def build_linear(name: str) -> Builder:
    """The builder of registered solver ``name`` (a key of :data:`.plans.PLANS`)."""
    plan_of = PLANS[name]

    def build(
        s: Schedule, knobs: Mapping[str, Any], batch: int, dtype: torch.dtype, device: torch.device
    ) -> LinearProgram:
        plan = plan_of(s.sigmas.numpy().astype(np.float64), knobs)
        return LinearProgram.from_plan(s, plan, batch, dtype, device)

    return build
