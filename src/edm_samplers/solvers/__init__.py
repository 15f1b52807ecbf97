"""Samplers (drivers) and their pure step functions."""

from .drivers import count_nfe, euler_sample, generate, heun_sample, initial_x, stochastic_sample
from .steps import StepCoeffs, churn, churn_gammas, euler_step, heun_step, step_table

__all__ = [
    "StepCoeffs",
    "churn",
    "churn_gammas",
    "count_nfe",
    "euler_sample",
    "euler_step",
    "generate",
    "heun_sample",
    "heun_step",
    "initial_x",
    "step_table",
    "stochastic_sample",
]
