"""The public CFG++ samplers (Chung et al. 2024): Euler / DDIM and DPM-Solver++(2M) on a guided denoiser.

Build the denoiser with :func:`~edm_samplers.guided` (``w`` is CFG++'s lambda, typically in [0, 1]); the maths
and the reference implementations are in :mod:`.cfgpp`.
"""

from __future__ import annotations

from torch import Tensor

from .._types import Denoiser
from .api import RunOptions, Sigmas, Unpack, call, public
from .plans import OrderRule

__all__ = ["dpmpp_2m_cfgpp_sample", "euler_cfgpp_sample"]


@public("euler_cfgpp")
def euler_cfgpp_sample(denoiser: Denoiser, x: Tensor, sigmas: Sigmas, **run: Unpack[RunOptions]) -> Tensor:
    """Euler (DDIM) with CFG++: x_next = D + (sigma_next / sigma)(x - D_u), D the guided, D_u the guide's estimate.

    ``denoiser`` must come from :func:`~edm_samplers.guided` (e.g. ``guided(net, net, lam,
    guide_cond=null_condition(net, cond))``; a plain denoiser raises ``TypeError``). With lambda = w, D = D_u +
    lambda (D_c - D_u); lambda in [0, 1] interpolates between unconditional and conditional sampling (the
    paper's lambda ~ 0.6 plays the role of CFG's w ~ 7.5). Outside the guided denoiser's ``sigma_interval``
    it is plain Euler. Order 1, one guided evaluation per step (N of them); returns D exactly on the step to
    sigma = 0.
    """
    return call("euler_cfgpp", denoiser, x, sigmas, run)


@public("dpmpp_2m_cfgpp")
def dpmpp_2m_cfgpp_sample(denoiser: Denoiser, x: Tensor, sigmas: Sigmas, *, order_rule: OrderRule = "auto",
                          **run: Unpack[RunOptions]) -> Tensor:  # fmt: skip
    """DPM-Solver++(2M) with CFG++: x_next = D_i + e^{-h}(x_i - D_u,i) + (1 - e^{-h})/(2r) (D_i - D_u,{i-1}).

    h = ln(sigma_i / sigma_{i+1}), r = h_{i-1} / h; D the guided, D_u the guide's estimate (the form of the
    CFG++ authors' reference code and of ComfyUI's ``sample_dpmpp_2m_cfg_pp``). ``denoiser`` must come from
    :func:`~edm_samplers.guided` (a plain one raises ``TypeError``). First step and step to 0: Euler CFG++;
    ``order_rule`` picks each step's order as for :func:`~edm_samplers.dpmpp_2m_sample`, and with D = D_u this
    sampler computes what ``dpmpp_2m_sample`` computes. One guided evaluation per step.
    """
    return call("dpmpp_2m_cfgpp", denoiser, x, sigmas, run, order_rule=order_rule)
