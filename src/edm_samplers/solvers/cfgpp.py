"""CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance"): Euler (DDIM) and
DPM-Solver++(2M) that denoise with the guided estimate and renoise with the unconditional one.

In EDM coordinates, with D = D_u + lambda (D_c - D_u) (``guided(net, net, w=lambda, guide_cond=...)``) and the
guide's estimate D_u, one step of the library's data-prediction update
``x_{i+1} = a_i x_i + sum_j b_ij D_{i-j}`` becomes::

    x_{i+1} = a_i (x_i - D_u,i) + (a_i + b_i0) D_i + sum_{j >= 1} b_ij D_u,{i-j}

- **Euler / DDIM CFG++** (a = sigma_{i+1} / sigma_i, b_0 = 1 - a): x_{i+1} = D_i + (sigma_{i+1} / sigma_i)
  (x_i - D_u,i): Tweedie's estimate from the guided prediction, renoised along the unconditional noise
  eps_u = (x - D_u) / sigma (the paper's Algorithm 1, DDIM form; k-diffusion forks' ``sample_euler_cfg_pp``).
- **DPM-Solver++(2M) CFG++** (a = e^{-h}, b_0 = (1 - e^{-h})(1 + 1/(2r)), b_1 = -(1 - e^{-h}) / (2r),
  r = h_{i-1} / h_i): x_{i+1} = D_i + e^{-h} (x_i - D_u,i) + (1 - e^{-h}) / (2r) (D_i - D_u,{i-1}): the
  authors' reference implementation (``DPMpp2mCFGppSolver`` of CFGpp-diffusion/CFGpp) and ComfyUI's
  ``sample_dpmpp_2m_cfg_pp`` agree on this form: the history holds unconditional estimates. Its first step
  and the step to sigma = 0 are Euler CFG++; the ``order_rule`` knob chooses the order per step exactly as
  for ``dpmpp_2m`` (the coefficients are its plan's).

With D = D_u (lambda = 0, or a guide equal to the main model) both reduce to their plain samplers, and the
step to sigma = 0 returns D exactly. From sigma_0 = inf (x = unit noise n) the first step is the limit
D_0 + sigma_1 n of both: the unconditional estimate drops out there. Schedules must be strictly decreasing: at
a repeated level (a = 1, b = 0) a CFG++ step would still add D - D_u without moving sigma.

The denoiser must be a guided one (:func:`~edm_samplers.guided`: its ``both`` method returns D and D_u); a
plain denoiser raises ``TypeError`` before the first evaluation. One guided evaluation per step (two network
calls, or one of batch 2B for classifier-free guidance).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._types import Callback, Denoiser, NoiseSource, StepInfo
from .._validate import check_denoised_on
from ..afs import CallPlan
from .plans import PLANS
from .runtime import Builder, Checked, Schedule, sigma_rows, to_device

__all__ = ["CFGppProgram", "build_cfgpp", "guided_pair"]

Pair = Callable[..., tuple[Tensor, Tensor]]


def guided_pair(den: Denoiser, sampler: str) -> Pair:
    """``both(x, sigma, **cond) -> (D, D_u)`` of a guided denoiser (checked and cast like every output).

    Under ``afs=`` (the runtime's :class:`~edm_samplers.afs.CallPlan`) the first evaluation is the closed form,
    which knows the data statistics only, not the condition: it serves as both estimates (that first step is
    then the plain Euler / DDIM step). ``direction_scale`` / ``sigma_scale`` do not apply to CFG++.

    Raises ``TypeError`` for a denoiser that cannot give the unconditional estimate.
    """
    plan = den if isinstance(den, CallPlan) else None
    if plan is not None and (plan.scales is not None or plan.shifts is not None):
        raise TypeError(f"{sampler}_sample does not take direction_scale / sigma_scale (CFG++ renoises with D_u)")
    inner = plan.den if plan is not None else den
    fn = inner.fn if isinstance(inner, Checked) else inner
    dtype = inner.dtype if isinstance(inner, Checked) else None
    both = getattr(fn, "both", None)
    if not callable(both):
        raise TypeError(
            f"{sampler}_sample needs a guided denoiser (CFG++ renoises with the unconditional estimate), got "
            f"{type(fn).__name__}; wrap the model: guided(net, net, w, guide_cond=null_condition(net, cond)) "
            "with w = CFG++'s lambda, typically in [0, 1]"
        )

    def pair(x: Tensor, sigma: Tensor, /, **cond: Any) -> tuple[Tensor, Tensor]:
        if plan is not None:
            k = plan.calls
            plan.calls += 1
            if k == 0 and plan.first is not None:
                d0 = plan.first(x, sigma, **cond)
                return d0, d0
        out = both(x, sigma, **cond)
        if not isinstance(out, tuple) or len(out) != 2:
            raise TypeError(f"{type(fn).__name__}.both must return (D, D_unconditional), got {type(out).__name__}")
        d = check_denoised_on(out[0], x, "guided denoiser")
        u = check_denoised_on(out[1], x, "guided denoiser (unconditional estimate)")
        if dtype is not None:
            d, u = d.to(dtype), u.to(dtype)
        return d, u

    return pair


class CFGppProgram(NamedTuple):
    """Device tables of a CFG++ run (read-only, cached) and its loop.

    Step i: ``x_{i+1} = a_i (x_i - D_u,i) + c_i D_i + sum_{1 <= j < nb_i} b_ij D_u,{i-j}`` with c = a + b_0.
    """

    name: str
    rows: Tensor
    a: list[Tensor]
    c: list[Tensor]
    b: list[list[Tensor]]
    nb: tuple[int, ...]
    host: tuple[float, ...]
    stochastic: bool = False
    inf_start: bool = False  # sigma_0 = inf: x is unit noise n and step 0 is the limit D_0 + sigma_1 n

    def run(self, den: Denoiser, x: Tensor, cond: Mapping[str, Any], noise: NoiseSource | None,
            callback: Callback | None, steps: Iterable[int]) -> Tensor:  # fmt: skip
        del noise  # deterministic
        pair = guided_pair(den, self.name)
        keep = max(max(self.nb) - 1, 0)
        hist: list[Tensor] = []  # unconditional estimates D_u of the previous steps, newest first
        for i in steps:
            d, u = pair(x, self.rows[i], **cond)
            if i == 0 and self.inf_start:
                # a (x_0 - D_u) with x_0 = sigma_0 n, a = sigma_1 / sigma_0 tends to sigma_1 n: D_u drops out.
                x_next = torch.addcmul(d, x, self.a[0])
            else:
                x_next = torch.sub(x, u).mul_(self.a[i]).addcmul_(d, self.c[i])
            for j in range(1, self.nb[i]):
                x_next.addcmul_(hist[j - 1], self.b[i][j])
            if keep:
                hist.insert(0, u)
                del hist[keep:]
            if callback is not None:
                callback(StepInfo(i, self.host[i], self.host[i], self.host[i + 1], x, d, x_next))
            x = x_next
        return x


def _euler_tables(s: np.ndarray[Any, np.dtype[np.float64]]) -> tuple[Any, Any, Any, tuple[int, ...]]:
    a = s[1:] / s[:-1]
    if np.isinf(s[0]):
        a[0] = s[1]  # the coefficient of the unit noise n that x holds at sigma_0 = inf
    c = np.ones_like(a)  # a + b_0 = 1 exactly: x_{i+1} = D_i + a (x_i - D_u,i)
    return a, c, np.zeros((a.size, 1)), (1,) * a.size


def build_cfgpp(method: Literal["euler", "dpmpp_2m"]) -> Builder:
    """The builder of ``euler_cfgpp`` or ``dpmpp_2m_cfgpp`` (the latter reads the ``dpmpp_2m`` plan)."""

    def build(
        s: Schedule, knobs: Mapping[str, Any], batch: int, dtype: torch.dtype, device: torch.device
    ) -> CFGppProgram:
        f = s.sigmas.numpy().astype(np.float64)
        if method == "euler":
            a, c, b, nb = _euler_tables(f)
        else:
            plan = PLANS["dpmpp_2m"](f, knobs)
            a, b, nb = plan.a, plan.b, plan.nb
            c = a + b[:, 0] + plan.e  # every coefficient of the current D_i (e is 0 in the 2M plan)
        sig, a_t, c_t, b_t = to_device([f[:-1], a, c, b], dtype, device)
        return CFGppProgram(
            f"{method}_cfgpp", sigma_rows(sig, batch), list(a_t.unbind(0)), list(c_t.unbind(0)),
            [list(r.unbind(0)) for r in b_t], nb, s.host, inf_start=bool(np.isinf(f[0])),
        )  # fmt: skip

    return build
