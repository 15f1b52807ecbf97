"""DPM-Solver-2 (Lu et al. 2022, Algorithm 1 with r = 1/2): Euler to the lambda midpoint, then the midpoint
update (``form="noise"``), or DPM-Solver++(2S) (``form="data"``). Two NFE per step, one on the step to 0.

From sigma_0 = inf (x = unit noise n) the first step is x_1 = D(n; inf) + sigma_1 n, one NFE. For the data form
that is the exact limit of its update (the midpoint sigma_m = sqrt(sigma_0 sigma_1) is infinite too, so D_m and D_0
both tend to D(n; inf), at rate O(1 / sigma_m)). The noise form has a finite limit, D(n; inf) + sigma_1 n + c / sigma_1,
but c = lim sigma (D(sigma n; sigma) - D(n; inf)) is a derivative of D at infinity that no evaluation gives; it takes
the first-order (DDIM) limit instead."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._types import Callback, Denoiser, NoiseSource, StepInfo
from .runtime import Schedule, sigma_rows, to_device

__all__ = ["Dpm2Program", "build_dpm2"]


class Dpm2Program(NamedTuple):
    rows: Tensor
    mid_rows: Tensor
    ratio_mid: list[Tensor]
    ratio: list[Tensor]
    h_over_mid: list[Tensor]
    noise_form: bool
    host: tuple[float, ...]
    stochastic: bool = False
    inf_start: bool = False  # sigmas[0] = inf: step 0 is x_1 = D(n; inf) + sigma_1 n (ratio[0] holds sigma_1)

    def run(self, den: Denoiser, x: Tensor, cond: Mapping[str, Any], noise: NoiseSource | None,
            callback: Callback | None, steps: Iterable[int]) -> Tensor:  # fmt: skip
        del noise  # deterministic
        host = self.host
        for i in steps:
            denoised = den(x, self.rows[i], **cond)
            if i == 0 and self.inf_start:  # from sigma = inf, x = n: the first-order limit, 1 NFE
                x_next = torch.addcmul(denoised, x, self.ratio[i])
            elif host[i + 1] == 0:  # last step to 0: Euler, 1 NFE, returns D exactly
                x_next = torch.lerp(denoised, x, self.ratio[i])
            else:
                u = torch.lerp(denoised, x, self.ratio_mid[i])  # Euler (= DPM-Solver-1) to the midpoint
                d_mid = den(u, self.mid_rows[i], **cond)
                if self.noise_form:
                    x_next = torch.addcmul(x, u - d_mid, self.h_over_mid[i])
                else:
                    x_next = torch.lerp(d_mid, x, self.ratio[i])
            if callback is not None:
                callback(StepInfo(i, host[i], host[i], host[i + 1], x, denoised, x_next))
            x = x_next
        return x


def build_dpm2(
    s: Schedule, knobs: Mapping[str, Any], batch: int, dtype: torch.dtype, device: torch.device
) -> Dpm2Program:
    f = s.sigmas.numpy().astype(np.float64)
    inf = math.isinf(s.host[0])
    g = f.copy()
    if inf:  # step 0 reads only sigma_0 = inf (the denoiser's row) and ratio[0] = sigma_1; the rest is unused
        g[0] = 2.0 * g[1] if g[1] > 0 else 1.0
    mid = np.sqrt(g[:-1] * g[1:])  # the lambda midpoint sigma_m = sqrt(sigma_i sigma_{i+1})
    # noise form: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (u - D_m) / sigma_m  (unused when mid = 0)
    h_over_mid = (g[1:] - g[:-1]) / np.where(mid > 0, mid, 1.0)
    ratio = g[1:] / g[:-1]
    if inf:
        ratio[0] = f[1]
    sig, mid_t, ratio_mid, ratio_t, hm = to_device([f[:-1], mid, mid / g[:-1], ratio, h_over_mid], dtype, device)
    return Dpm2Program(
        sigma_rows(sig, batch), sigma_rows(mid_t, batch), list(ratio_mid.unbind(0)), list(ratio_t.unbind(0)),
        list(hm.unbind(0)), knobs["form"] == "noise", s.host, inf_start=inf,
    )  # fmt: skip
