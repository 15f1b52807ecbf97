"""Float64 coefficient tables of the linear multistep solvers (host side, computed once per schedule).

Every multistep solver of :mod:`.multistep` advances the EDM ODE dx/dsigma = (x - D) / sigma with an
update that is linear in the state and in past model outputs,

    x_{i+1} = a_i x_i + e_i D_i + sum_j b_{i,j} F_{i-j},

where F is either the denoiser output D ("data" family: DPM-Solver++, UniPC, Euler ancestral) or the
ODE derivative d = (x - D) / sigma ("derivative" family: LMS, iPNDM, DEIS). The weights b are integrals of
Lagrange basis polynomials through past nodes against a known weight, evaluated here exactly in
float64 by composite Gauss-Legendre quadrature (the integrand is a polynomial times an exponential, so
the quadrature error is at round-off level for any step length). Closed forms through phi functions
(phi_k(h) = (e^h - sum_{l<k} h^l / l!) / h^k) cancel catastrophically for small h, which is what makes
float32 peers stop converging at a few hundred steps; quadrature of the basis polynomials does not.

Notation: lambda = -log sigma (the half log-SNR of EDM's VE form), h = lambda_{i+1} - lambda_i > 0.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ab_uniform",
    "exp_lagrange_weights",
    "lagrange_basis",
    "logsigma_lagrange_weights",
    "sigma_lagrange_weights",
]

F64 = NDArray[np.float64]

# Nodes per quadrature panel and the panel length (in units of the exponential's rate): the integrand
# w(t) L(t) has degree <= 3 in t times exp(c t); 16 Gauss-Legendre nodes on a panel of rate-length <= 2
# integrate it to ~1e-30 relative (the error term is (c len / 2)^32 / 32!), far below float64 round-off.
_GL_NODES = 16
_PANEL = 2.0

# Adams-Bashforth weights for equal steps (oldest last): the classic tables used by iPNDM.
_AB = {
    1: (1.0,),
    2: (3.0 / 2.0, -1.0 / 2.0),
    3: (23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0),
    4: (55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0),
}


@lru_cache(maxsize=4)
def _gauss_legendre(n: int) -> tuple[F64, F64]:
    x, w = np.polynomial.legendre.leggauss(n)
    return x.astype(np.float64), w.astype(np.float64)


def lagrange_basis(nodes: F64, t: F64) -> F64:
    """L_j(t) = prod_{m != j} (t - t_m) / (t_j - t_m) for every node j: shape ``[len(nodes), len(t)]``.

    Nodes must be distinct (the samplers require strictly decreasing schedules). An infinite node (the level
    sigma = inf of a start from pure noise: lambda = -inf, or sigma itself) gets L_j = 0 and drops out of the
    others' products: that is the limit as the node goes to infinity (L_inf = O(1 / |node|), and each factor
    (t - node) / (t_j - node) -> 1), so the polynomial is the one through the finite nodes.
    """
    k = nodes.shape[0]
    out = np.ones((k, t.shape[0]), dtype=np.float64)
    finite = [bool(np.isfinite(v)) for v in nodes]
    for j in range(k):
        if not finite[j]:
            out[j] = 0.0
            continue
        for m in range(k):
            if m != j and finite[m]:
                out[j] *= (t - nodes[m]) / (nodes[j] - nodes[m])
    return out


def _quad_nodes(lo: float, hi: float, rate: float) -> tuple[F64, F64]:
    """Composite Gauss-Legendre nodes and weights on [lo, hi] (hi may be < lo: signed weights)."""
    length = hi - lo
    panels = max(1, math.ceil(abs(length) * max(rate, 1e-300) / _PANEL)) if rate > 0 else 1
    x, w = _gauss_legendre(_GL_NODES)
    edges = lo + length * np.arange(panels + 1, dtype=np.float64) / panels
    a, b = edges[:-1, None], edges[1:, None]
    t = (a + b) / 2 + (b - a) / 2 * x[None, :]
    wt = (b - a) / 2 * w[None, :]
    return t.reshape(-1), wt.reshape(-1)


def exp_lagrange_weights(nodes: F64, h: float, rate: float = 1.0) -> F64:
    """b_j = int_0^h rate exp(-rate (h - tau)) L_j(tau) dtau (exponential-integrator weights in lambda).

    ``nodes`` are tau_j = lambda_{i-j} - lambda_i (tau_0 = 0, the others < 0). With ``rate = 1`` these
    are the data-prediction weights of the exact solution
    x_{i+1} = (sigma_{i+1}/sigma_i) x_i + sigma_{i+1} int e^lambda D(lambda) dlambda with D replaced by its
    interpolating polynomial (DPM-Solver++ / DEIS in data form); ``rate = 1 + eta`` gives the SDE
    variant's drift weights. The weights sum to 1 - exp(-rate h).
    """
    t, w = _quad_nodes(0.0, h, rate)
    weight = rate * np.exp(-rate * (h - t))
    out: F64 = lagrange_basis(nodes, t) @ (w * weight)
    return out


def logsigma_lagrange_weights(nodes: F64, sigma: float, h: float) -> F64:
    """c_j = int_{sigma_i}^{sigma_{i+1}} L_j(lambda(s)) ds, Lagrange in lambda = -log sigma (DEIS).

    With s = sigma_i exp(-u), u = lambda - lambda_i in [0, h]: c_j = -sigma_i int_0^h e^{-u} L_j(u) du.
    ``nodes`` are u_j = lambda_{i-j} - lambda_i. The weights sum to sigma_{i+1} - sigma_i.
    """
    t, w = _quad_nodes(0.0, h, 1.0)
    out: F64 = -sigma * (lagrange_basis(nodes, t) @ (w * np.exp(-t)))
    return out


def sigma_lagrange_weights(nodes: F64, sigma: float, sigma_next: float) -> F64:
    """c_j = int_{sigma_i}^{sigma_{i+1}} L_j(s) ds, Lagrange in sigma itself (LMS, variable-step AB).

    ``nodes`` are offsets sigma_{i-j} - sigma_i (0 first, then positive). Exact for the polynomial
    integrand (Gauss-Legendre with 16 nodes integrates degree 31 exactly). Sums to sigma_{i+1} - sigma_i.
    """
    t, w = _quad_nodes(0.0, sigma_next - sigma, 0.0)
    out: F64 = lagrange_basis(nodes, t) @ w
    return out


def ab_uniform(order: int) -> tuple[float, ...]:
    """Equal-step Adams-Bashforth weights of ``order`` 1..4, newest first (used by iPNDM)."""
    return _AB[order]
