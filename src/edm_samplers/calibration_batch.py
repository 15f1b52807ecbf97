"""How large a calibration batch must be: the rule :func:`~edm_samplers.optimize_schedule` and
:func:`~edm_samplers.calibrate` apply to their own result.

Fitting parameters theta (schedule levels, solver coefficients) by minimising the batch mean of per-sample
errors e_b(theta) = ||r_b||^2 / d (r_b = sample - reference, d elements per sample) makes the calibration error
optimistic. To first order, the expected error on held-out samples exceeds it by

    gap = tr(H^-1 V) / B        (Takeuchi's information criterion, TIC)

with H = E[grad^2 e_b] (here its Gauss-Newton form 2 E[J_b^T J_b] / d) and V = Cov(grad e_b) =
Cov(2 J_b^T r_b / d), J_b the Jacobian of r_b in theta. Both are *population* quantities estimated from the
batch, independent of B, so the relative gap tr(H^-1 V) / (B E[e_b]) falls as 1/B and the smallest batch for
a tolerated relative gap g is

    B_min = tr(H^-1 V) / (g E[e_b]).

Check in the exact case: linear least squares with P parameters and Gaussian residuals of variance sigma^2 gives
tr(H^-1 V) = 2 P sigma^2 / d, i.e. the textbook optimism 2 P sigma^2 / (B d) (``tests/test_calibrate.py``
simulates it). What the rule captures that a parameter count does not: only samples whose error *moves* with
theta inform the fit. On the 64-point empirical denoiser a few trajectories switch between training points as
the schedule moves, so V is large and thousands of samples are needed (256 overfit there, 8192 did not); on
smooth problems a few dozen suffice. The Jacobian costs one sampling run per parameter (``calibrate`` has it
from its last Levenberg-Marquardt step; ``optimize_schedule`` spends P extra runs at the end).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from ._validate import check_float

__all__ = ["min_calibration_batch", "overfit_gap", "warn_if_small"]


def overfit_gap(residuals: Tensor, jacobian: Tensor) -> float:
    """The predicted relative excess of the held-out over the calibration error, tr(H^-1 V) / (B E[e_b]).

    Args:
        residuals: ``[B, d]``: sample - reference on the calibration batch, at the fitted parameters.
        jacobian: ``[B, d, P]``: d residuals / d parameters there (e.g. forward differences).
    """
    if not isinstance(residuals, Tensor) or residuals.ndim != 2 or residuals.shape[0] < 2:
        raise ValueError("residuals must be a [B, d] tensor with B >= 2 (sample - reference per calibration sample)")
    if not isinstance(jacobian, Tensor) or jacobian.ndim != 3 or jacobian.shape[:2] != residuals.shape:
        raise ValueError(f"jacobian must be [B, d, P] with [B, d] = {tuple(residuals.shape)}")
    r = residuals.detach().to(torch.float64)
    jac = jacobian.detach().to(torch.float64)
    b, d = r.shape
    mean_e = float((r**2).mean())
    if not mean_e > 0 or jac.shape[2] == 0:
        return 0.0
    grads = 2 * torch.einsum("bdp,bd->bp", jac, r) / d  # per-sample gradients of e_b
    hess = 2 * torch.einsum("bdp,bdq->pq", jac, jac) / (b * d)  # Gauss-Newton Hessian of the mean error
    cov = torch.cov(grads.T, correction=1).reshape(jac.shape[2], jac.shape[2])
    # pinv: directions the error does not see (e.g. the softmax's redundant one) carry no curvature and no
    # gradient variance; they must not count.
    tic = float(torch.trace(torch.linalg.pinv(hess, rtol=1e-10, hermitian=True) @ cov))
    return max(tic, 0.0) / (b * mean_e)


def min_calibration_batch(residuals: Tensor, jacobian: Tensor, max_gap: float = 0.1) -> int:
    """B_min = tr(H^-1 V) / (g E[e_b]): the smallest calibration batch overfitting by at most ``max_gap``.

    See :mod:`edm_samplers.calibration_batch` for the derivation; ``residuals`` ``[B, d]`` and ``jacobian``
    ``[B, d, P]`` as in :func:`overfit_gap` (the estimate holds for any B: the quantities are per sample).
    """
    g = check_float(max_gap, "max_gap", positive=True)
    return max(1, math.ceil(overfit_gap(residuals, jacobian) * residuals.shape[0] / g))


def warn_if_small(residuals: Tensor, jacobian: Tensor, max_gap: float, what: str) -> tuple[int, float]:
    """Apply the rule to a search's own batch; warn when it is too small. Returns (B_min, predicted gap)."""
    gap = overfit_gap(residuals, jacobian)
    need = min_calibration_batch(residuals, jacobian, max_gap)
    b = residuals.shape[0]
    if b < need:
        warnings.warn(
            f"{what}: the calibration batch ({b} samples) is too small for the {jacobian.shape[2]} search "
            f"parameters: the held-out error is predicted {gap:.0%} above the calibration error (tolerated: "
            f"{max_gap:.0%}); use at least {need} samples (min_calibration_batch), or fit fewer parameters",
            UserWarning,
            stacklevel=3,
        )
    return need, gap
