"""edm_samplers: the design space of EDM (Karras et al. 2022) in one small, fast, tested package.

The public API is exactly what this module exports; everything in ``_``-prefixed modules is private.
Names that need an optional dependency are exported lazily (built on first access, so ``import
edm_samplers`` never imports it, and left out of ``__all__`` so that ``from edm_samplers import *`` works
without it): ``EDMSamplerScheduler`` (the diffusers extra).
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from . import evaluation as evaluation
from . import models as models
from . import training as training
from ._types import Callback as Callback
from ._types import Denoiser as Denoiser
from ._types import NoiseSource as NoiseSource
from ._types import StepInfo as StepInfo
from .adapters import ContinuousDenoiser as ContinuousDenoiser
from .adapters import DDPMDenoiser as DDPMDenoiser
from .adapters import sigmas_from_alphas_cumprod as sigmas_from_alphas_cumprod
from .afs import GaussianDenoiser as GaussianDenoiser
from .ays import AYS_SIGMAS as AYS_SIGMAS
from .ays import AYS_TIMESTEPS as AYS_TIMESTEPS
from .ays import ays_sigmas as ays_sigmas
from .ays import loglinear_interp as loglinear_interp
from .calibrate import calibrate as calibrate
from .calibration_batch import min_calibration_batch as min_calibration_batch
from .calibration_file import Calibration as Calibration
from .calibration_file import load_calibration as load_calibration
from .calibration_file import save_calibration as save_calibration
from .calibration_trajectory import reference_trajectory as reference_trajectory
from .diffusers_adapter import from_diffusers as from_diffusers
from .diffusers_adapter import scheduler_sigmas as scheduler_sigmas
from .diffusers_adapter import start_state as start_state
from .flow import FlowDenoiser as FlowDenoiser
from .flow import flow_initial_x as flow_initial_x
from .flow import flow_scheduler_sigmas as flow_scheduler_sigmas
from .flow import flow_shift_mu as flow_shift_mu
from .flow import flow_sigmas as flow_sigmas
from .guidance import Guided as Guided
from .guidance import guided as guided
from .guidance import null_condition as null_condition
from .noise import CounterNoise as CounterNoise
from .noise import GlobalNoise as GlobalNoise
from .noise import PerSampleNoise as PerSampleNoise
from .noise import PrecomputedNoise as PrecomputedNoise
from .precond import EDMPrecond as EDMPrecond
from .precond import Precond as Precond
from .precond import VEPrecond as VEPrecond
from .precond import VPPrecond as VPPrecond
from .precond import iDDPMPrecond as iDDPMPrecond
from .scalings import Scalings as Scalings
from .scalings import edm_scalings as edm_scalings
from .scalings import iddpm_scalings as iddpm_scalings
from .scalings import ve_scalings as ve_scalings
from .scalings import vp_scalings as vp_scalings
from .schedule_fit import clamp_sigmas as clamp_sigmas
from .schedule_opt import ScheduleSearch as ScheduleSearch
from .schedule_opt import load_schedule as load_schedule
from .schedule_opt import optimize_schedule as optimize_schedule
from .schedule_opt import save_schedule as save_schedule
from .schedules import append_zero as append_zero
from .schedules import iddpm_grid as iddpm_grid
from .schedules import iddpm_sigmas as iddpm_sigmas
from .schedules import karras_sigmas as karras_sigmas
from .schedules import loglinear_sigmas as loglinear_sigmas
from .schedules import ve_sigmas as ve_sigmas
from .schedules import vp_sigma as vp_sigma
from .schedules import vp_sigma_inv as vp_sigma_inv
from .schedules import vp_sigmas as vp_sigmas
from .solvers import GraphedSampler as GraphedSampler
from .solvers import count_nfe as count_nfe
from .solvers import deis_sample as deis_sample
from .solvers import dpm2_sample as dpm2_sample
from .solvers import dpmpp_2m_cfgpp_sample as dpmpp_2m_cfgpp_sample
from .solvers import dpmpp_2m_sample as dpmpp_2m_sample
from .solvers import dpmpp_2m_sde_sample as dpmpp_2m_sde_sample
from .solvers import dpmpp_3m_sample as dpmpp_3m_sample
from .solvers import dpmpp_3m_sde_sample as dpmpp_3m_sde_sample
from .solvers import euler_ancestral_sample as euler_ancestral_sample
from .solvers import euler_cfgpp_sample as euler_cfgpp_sample
from .solvers import euler_sample as euler_sample
from .solvers import generalized_sample as generalized_sample
from .solvers import generate as generate
from .solvers import heun_sample as heun_sample
from .solvers import initial_x as initial_x
from .solvers import ipndm_sample as ipndm_sample
from .solvers import lms_sample as lms_sample
from .solvers import stochastic_sample as stochastic_sample
from .solvers import unipc_sample as unipc_sample

if TYPE_CHECKING:
    from .diffusers_scheduler import EDMSamplerScheduler as EDMSamplerScheduler

_LAZY = {"EDMSamplerScheduler": "diffusers_scheduler"}
"""Lazily exported name -> the module that builds it (on first access; it imports an optional dependency)."""

if not TYPE_CHECKING:  # a module __getattr__ seen by mypy would make every attribute of the package valid

    def __getattr__(name: str) -> Any:
        if name in _LAZY:
            import importlib

            return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*globals(), *_LAZY})


try:
    __version__ = version("edm-samplers")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = [
    "AYS_SIGMAS",
    "AYS_TIMESTEPS",
    "Calibration",
    "Callback",
    "ContinuousDenoiser",
    "CounterNoise",
    "DDPMDenoiser",
    "Denoiser",
    "EDMPrecond",
    "FlowDenoiser",
    "GaussianDenoiser",
    "GlobalNoise",
    "GraphedSampler",
    "Guided",
    "NoiseSource",
    "PerSampleNoise",
    "PrecomputedNoise",
    "Precond",
    "Scalings",
    "ScheduleSearch",
    "StepInfo",
    "VEPrecond",
    "VPPrecond",
    "__version__",
    "append_zero",
    "ays_sigmas",
    "calibrate",
    "clamp_sigmas",
    "count_nfe",
    "deis_sample",
    "dpm2_sample",
    "dpmpp_2m_cfgpp_sample",
    "dpmpp_2m_sample",
    "dpmpp_2m_sde_sample",
    "dpmpp_3m_sample",
    "dpmpp_3m_sde_sample",
    "edm_scalings",
    "euler_ancestral_sample",
    "euler_cfgpp_sample",
    "euler_sample",
    "evaluation",
    "flow_initial_x",
    "flow_scheduler_sigmas",
    "flow_shift_mu",
    "flow_sigmas",
    "from_diffusers",
    "generalized_sample",
    "generate",
    "guided",
    "heun_sample",
    "iDDPMPrecond",
    "iddpm_grid",
    "iddpm_scalings",
    "iddpm_sigmas",
    "initial_x",
    "ipndm_sample",
    "karras_sigmas",
    "lms_sample",
    "load_calibration",
    "load_schedule",
    "loglinear_interp",
    "loglinear_sigmas",
    "min_calibration_batch",
    "models",
    "null_condition",
    "optimize_schedule",
    "reference_trajectory",
    "save_calibration",
    "save_schedule",
    "scheduler_sigmas",
    "sigmas_from_alphas_cumprod",
    "start_state",
    "stochastic_sample",
    "training",
    "unipc_sample",
    "ve_scalings",
    "ve_sigmas",
    "vp_scalings",
    "vp_sigma",
    "vp_sigma_inv",
    "vp_sigmas",
]
