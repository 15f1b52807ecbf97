"""The public multistep samplers for low NFE (5-20): DPM-Solver++ (2M, 3M, SDE), DEIS, LMS, iPNDM, UniPC.

Every one is a linear update of the state and past model outputs whose float64 coefficients are computed
once per schedule (:mod:`.plans`) and applied by one loop (:mod:`.linear`); see :mod:`.plans` for the
shared maths (orders, warm-up, the step to sigma = 0). Schedules must be strictly decreasing.

``order_rule`` says which order each step takes. ``"auto"`` (the default) keeps every sampler at least as
good as Euler at NFE 5-20 on rho = 7 schedules: the data-prediction solvers (DPM-Solver++, UniPC) take order
1 on every step landing on sigma <= :data:`~.plans.LOW_ORDER_SIGMA` (0.1; assumes data scaled to about
[-1, 1], sigma_data ~ 0.5) and order <= 2, with the published DPM-Solver++(2M) weights, where
ln(sigma_i / sigma_{i+1}) > :data:`~.plans.MAX_LOG_STEP` (1.0); the derivative solvers (DEIS, LMS, iPNDM)
take at most as many past outputs as steps remain. ``"final"`` is that last rule for every solver
(diffusers' ``lower_order_final``), ``"full"`` the nominal order on every step after the warm-up (the
old default, and what convergence-order studies want). Measurements: docs/multistep-defaults.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from .._types import Denoiser
from .api import RunOptions, Sigmas, Unpack, call, public
from .plans import PLANS, MultistepPlan, OrderRule
from .registry import get
from .runtime import schedule

__all__ = [
    "deis_sample",
    "dpmpp_2m_sample",
    "dpmpp_2m_sde_sample",
    "dpmpp_3m_sample",
    "dpmpp_3m_sde_sample",
    "ipndm_sample",
    "lms_sample",
    "multistep_plan",
    "unipc_sample",
]


def multistep_plan(sigmas: Sigmas, sampler: str, **knobs: Any) -> MultistepPlan:
    """The float64 coefficient table that ``sampler`` (a registry name) uses on ``sigmas``, for inspection.

    Args:
        sigmas: strictly decreasing schedule (a final 0 allowed).
        sampler: ``"dpmpp_2m"``, ``"dpmpp_3m"``, ``"dpmpp_2m_sde"``, ``"dpmpp_3m_sde"``, ``"deis"``, ``"lms"``,
            ``"ipndm"``, ``"unipc"`` or ``"euler_ancestral"``.
        **knobs: the sampler's knobs (``order``, ``eta``, ...), checked as the sampler checks them.
    """
    if sampler not in PLANS:
        raise ValueError(f"sampler must be one of {', '.join(map(repr, PLANS))}, got {sampler!r}")
    s = schedule(sigmas, strict=True).sigmas.numpy().astype(np.float64)
    return PLANS[sampler](s, get(sampler).resolve(knobs))


@public("dpmpp_2m")
def dpmpp_2m_sample(denoiser: Denoiser, x: Tensor, sigmas: Sigmas, *, order_rule: OrderRule = "auto",
                    **run: Unpack[RunOptions]) -> Tensor:  # fmt: skip
    """DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2), data prediction, steps in lambda = -log sigma.

    x_{i+1} = (sigma_{i+1}/sigma_i) x_i + (1 - e^{-h}) [(1 + 1/(2r)) D_i - 1/(2r) D_{i-1}], with
    h = lambda_{i+1} - lambda_i and r = h_{i-1} / h. Order 2, 1 NFE per step (N NFE). The first step is
    DPM-Solver-1 (= Euler); the step to a final 0 is Euler and returns D exactly.
    """
    return call("dpmpp_2m", denoiser, x, sigmas, run, order_rule=order_rule)


@public("dpmpp_3m")
def dpmpp_3m_sample(denoiser: Denoiser, x: Tensor, sigmas: Sigmas, *, order: int = 3, order_rule: OrderRule = "auto",
                    **run: Unpack[RunOptions]) -> Tensor:  # fmt: skip
    """Multistep DPM-Solver++ of order 3 (``order`` 1..4): exact exponential integrator in lambda.

    x_{i+1} = (sigma_{i+1}/sigma_i) x_i + sum_j b_j D_{i-j}, b_j = int_0^h e^{-(h - tau)} L_j(tau) dtau with
    L_j the Lagrange basis through lambda_i, ..., lambda_{i-k+1}. The weights are integrated exactly (in
    float64), so the order is really k; the published phi-function form of 3M weighs the second
    difference by half the required amount and converges at order 2. 1 NFE per step (N NFE); warm-up
    orders 1, 2, ...; the step to a final 0 is Euler (returns D exactly). ``order=1`` is DPM-Solver-1
    (= Euler), ``order=2`` the exact-integral variant of 2M.
    """
    return call("dpmpp_3m", denoiser, x, sigmas, run, order=order, order_rule=order_rule)


@public("dpmpp_2m_sde")
def dpmpp_2m_sde_sample(denoiser: Denoiser, x: Tensor, sigmas: Sigmas, *, eta: float = 1.0, s_noise: float = 1.0,
                        order_rule: OrderRule = "auto", **run: Unpack[RunOptions]) -> Tensor:  # fmt: skip
    """DPM-Solver++(2M) SDE (Lu et al. 2022b, Sec. 5 / k-diffusion's "midpoint" form), data prediction.

    With H = (1 + eta) h: x_{i+1} = (sigma_{i+1}/sigma_i) e^{-eta h} x_i
    + (1 - e^{-H}) [(1 + 1/(2r)) D_i - 1/(2r) D_{i-1}] + s_noise sigma_{i+1} sqrt(1 - e^{-2 eta h}) eps_i.
    eta = 1 is the reverse SDE, eta = 0 the ODE (then equal to :func:`dpmpp_2m_sample`). Strong order 1 for
    eta > 0 (weak order 2 for the drift); 1 NFE per step; draw i at step i (from a stream on every step; from
    ``CounterNoise`` not on the final step to 0, which is Euler and returns D exactly; nothing at eta = 0). With
    :class:`~edm_samplers.PerSampleNoise` each sample depends on its own seed only.
    """
    return call("dpmpp_2m_sde", denoiser, x, sigmas, run, eta=eta, s_noise=s_noise,
                order_rule=order_rule)  # fmt: skip


@public("dpmpp_3m_sde")
def dpmpp_3m_sde_sample(denoiser: Denoiser, x: Tensor, sigmas: Sigmas, *, eta: float = 1.0, s_noise: float = 1.0,
                        order_rule: OrderRule = "auto", **run: Unpack[RunOptions]) -> Tensor:  # fmt: skip
    """DPM-Solver++(3M) SDE: the drift integral int_0^h (1 + eta) e^{-(1 + eta)(h - tau)} D(tau) dtau taken
    exactly over the quadratic through the last three outputs, plus noise as in :func:`dpmpp_2m_sde_sample`.

    eta = 0 gives :func:`dpmpp_3m_sample` (order 3). 1 NFE per step; noise draws as in
    :func:`dpmpp_2m_sde_sample`; the final step to 0 is Euler (returns D exactly).
    """
    return call("dpmpp_3m_sde", denoiser, x, sigmas, run, eta=eta, s_noise=s_noise,
                order_rule=order_rule)  # fmt: skip


@public("deis")
def deis_sample(denoiser: Denoiser, x: Tensor, sigmas: Sigmas, *, order: int = 3, order_rule: OrderRule = "auto",
                **run: Unpack[RunOptions]) -> Tensor:  # fmt: skip
    """DEIS (Zhang & Chen 2023, "tAB" with log-rho steps): Adams-Bashforth on eps = (x - D)/sigma in log sigma.

    In EDM's form the noise-prediction ODE is dx/dsigma = eps(x, sigma) with no linear part; DEIS fits a
    polynomial in log sigma through the last k values of eps and integrates it exactly:
    x_{i+1} = x_i + sum_j c_j eps_{i-j}, c_j = int_{sigma_i}^{sigma_{i+1}} L_j(log s) ds. Order k = ``order``
    (1..3; diffusers' default "logrho" DEIS); 1 NFE per step; warm-up orders 1, 2, ...; the step to a final 0
    is Euler (a polynomial in log sigma cannot be extrapolated to -inf) and returns D exactly.
    """
    return call("deis", denoiser, x, sigmas, run, order=order, order_rule=order_rule)


@public("lms")
def lms_sample(denoiser: Denoiser, x: Tensor, sigmas: Sigmas, *, order: int = 4, order_rule: OrderRule = "auto",
               **run: Unpack[RunOptions]) -> Tensor:  # fmt: skip
    """Linear multistep (variable-step Adams-Bashforth in sigma; k-diffusion's ``sample_lms``).

    x_{i+1} = x_i + sum_j c_j d_{i-j}, d = (x - D)/sigma, c_j = int_{sigma_i}^{sigma_{i+1}} L_j(s) ds with
    L_j the Lagrange basis through sigma_i, ..., sigma_{i-k+1} (integrated exactly, no scipy). Order k =
    ``order`` (1..4) on any schedule; 1 NFE per step; warm-up orders 1, 2, ...; the step to a final 0 is a
    full-order step (the polynomial in sigma extends to 0), so the result is not exactly D.
    """
    return call("lms", denoiser, x, sigmas, run, order=order, order_rule=order_rule)


@public("ipndm")
def ipndm_sample(denoiser: Denoiser, x: Tensor, sigmas: Sigmas, *, order: int = 4, order_rule: OrderRule = "auto",
                 **run: Unpack[RunOptions]) -> Tensor:  # fmt: skip
    """iPNDM (Zhang & Chen 2023; Zhou et al. 2024): equal-step Adams-Bashforth weights on d = (x - D)/sigma.

    x_{i+1} = x_i + (sigma_{i+1} - sigma_i) sum_j beta_j d_{i-j} with beta = (55, -59, 37, -9)/24 for order 4
    and the lower-order AB tables (1), (3, -1)/2, (23, -16, 5)/12 while warming up. 1 NFE per step. The
    weights assume equal steps: order k = ``order`` on schedules uniform in sigma; on a non-uniform schedule
    such as ``karras_sigmas`` the mismatch between the step-size ratio and the fixed weights limits the
    global order to 2 (at low NFE it is still among the most accurate solvers; :func:`lms_sample` is the
    variable-step version). The step to a final 0 uses the same formula (not exactly D).
    """
    return call("ipndm", denoiser, x, sigmas, run, order=order, order_rule=order_rule)


@public("unipc")
def unipc_sample(denoiser: Denoiser, x: Tensor, sigmas: Sigmas, *, order: int = 3, order_rule: OrderRule = "auto",
                 **run: Unpack[RunOptions]) -> Tensor:  # fmt: skip
    """UniPC (Zhao et al. 2023) with B(h) = 1 - e^{-h} ("bh2"), data prediction, steps in lambda.

    Predictor UniP-p: the order-p multistep exponential integrator (p = ``order``, 1..3; for p = 2 UniPC's
    rho = 1/2, i.e. the DPM-Solver++(2M) weights). Corrector UniC: once D_{i+1} has been evaluated at the
    predicted state (the evaluation the next predictor needs anyway), x_{i+1} is recomputed from the
    polynomial through the p previous outputs and D_{i+1}, which raises the order to p + 1 at no extra NFE
    (UniC-1 is the bh2 trapezoid (1 - e^{-h})(D_i + D_{i+1})/2). 1 NFE per step; warm-up orders 1, 2, ...;
    the step to a final 0 is Euler (returns D of the last, corrected-from, evaluation exactly; no corrector
    follows it). ``StepInfo.x`` is the state the denoiser saw (the predictor).
    """
    return call("unipc", denoiser, x, sigmas, run, order=order, order_rule=order_rule)
