"""Samplers (drivers) and their pure step functions."""

from .drivers import count_nfe, euler_sample, generate, heun_sample, initial_x, stochastic_sample
from .multistep import (
    deis_sample,
    dpm2_sample,
    dpmpp_2m_sample,
    dpmpp_2m_sde_sample,
    dpmpp_3m_sample,
    dpmpp_3m_sde_sample,
    euler_ancestral_sample,
    ipndm_sample,
    lms_sample,
    multistep_plan,
    unipc_sample,
)
from .steps import StepCoeffs, churn, churn_gammas, euler_step, heun_step, step_table

__all__ = [
    "StepCoeffs",
    "churn",
    "churn_gammas",
    "count_nfe",
    "deis_sample",
    "dpm2_sample",
    "dpmpp_2m_sample",
    "dpmpp_2m_sde_sample",
    "dpmpp_3m_sample",
    "dpmpp_3m_sde_sample",
    "euler_ancestral_sample",
    "euler_sample",
    "euler_step",
    "generate",
    "heun_sample",
    "heun_step",
    "initial_x",
    "ipndm_sample",
    "lms_sample",
    "multistep_plan",
    "step_table",
    "stochastic_sample",
    "unipc_sample",
]
