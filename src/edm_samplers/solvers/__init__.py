"""Samplers: one registry of solvers (:mod:`.registry`), one runtime that runs them (:mod:`.runtime`), the
public ``*_sample`` functions (:mod:`.samplers`, :mod:`.multistep`), :func:`generate` and
:class:`GraphedSampler`. ``docs/architecture.md`` draws the layers and the path of one call."""

from .generate import generate, initial_x
from .graph import GraphedSampler
from .guided_samplers import dpmpp_2m_cfgpp_sample, euler_cfgpp_sample
from .multistep import (
    deis_sample,
    dpmpp_2m_sample,
    dpmpp_2m_sde_sample,
    dpmpp_3m_sample,
    dpmpp_3m_sde_sample,
    ipndm_sample,
    lms_sample,
    multistep_plan,
    unipc_sample,
)
from .registry import SolverSpec, count_nfe, register
from .samplers import (
    dpm2_sample,
    euler_ancestral_sample,
    euler_sample,
    generalized_sample,
    heun_sample,
    stochastic_sample,
)
from .steps import StepCoeffs, churn, churn_gammas, euler_step, heun_step, step_table

__all__ = [
    "GraphedSampler",
    "SolverSpec",
    "StepCoeffs",
    "churn",
    "churn_gammas",
    "count_nfe",
    "deis_sample",
    "dpm2_sample",
    "dpmpp_2m_cfgpp_sample",
    "dpmpp_2m_sample",
    "dpmpp_2m_sde_sample",
    "dpmpp_3m_sample",
    "dpmpp_3m_sde_sample",
    "euler_ancestral_sample",
    "euler_cfgpp_sample",
    "euler_sample",
    "euler_step",
    "generalized_sample",
    "generate",
    "heun_sample",
    "heun_step",
    "initial_x",
    "ipndm_sample",
    "lms_sample",
    "multistep_plan",
    "register",
    "step_table",
    "stochastic_sample",
    "unipc_sample",
]
