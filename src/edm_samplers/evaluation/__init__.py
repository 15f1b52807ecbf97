"""Evaluation: sample-quality metrics, reference ODE solutions and exact denoisers.

- Metrics: :class:`FeatureStats` (streamed mean/covariance), :func:`frechet_distance`,
  :func:`frechet_distance_from_stats`, :func:`load_stats`, :func:`mmd_rbf`, :func:`sliced_wasserstein`.
- Reference solutions of the probability-flow ODE: :func:`ode_reference`, :func:`solve_ode` and their
  :class:`ReferenceInfo`.
- Exact (closed-form) denoisers: :class:`GaussianMixture`, :class:`PointMass`, :func:`empirical_denoiser`,
  and the closed-form ODE solution for Gaussian data, :func:`gaussian_ode_solution`.
"""

from .analytic import GaussianMixture as GaussianMixture
from .analytic import PointMass as PointMass
from .analytic import empirical_denoiser as empirical_denoiser
from .analytic import gaussian_ode_solution as gaussian_ode_solution
from .metrics import FeatureStats as FeatureStats
from .metrics import frechet_distance as frechet_distance
from .metrics import frechet_distance_from_stats as frechet_distance_from_stats
from .metrics import load_stats as load_stats
from .metrics import mmd_rbf as mmd_rbf
from .metrics import sliced_wasserstein as sliced_wasserstein
from .reference import ReferenceInfo as ReferenceInfo
from .reference import ode_reference as ode_reference
from .reference import solve_ode as solve_ode

__all__ = [
    "FeatureStats",
    "GaussianMixture",
    "PointMass",
    "ReferenceInfo",
    "empirical_denoiser",
    "frechet_distance",
    "frechet_distance_from_stats",
    "gaussian_ode_solution",
    "load_stats",
    "mmd_rbf",
    "ode_reference",
    "sliced_wasserstein",
    "solve_ode",
]
