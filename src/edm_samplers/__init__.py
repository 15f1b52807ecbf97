"""edm_samplers: the design space of EDM (Karras et al. 2022) in one small, fast, tested package.

The public API is exactly what this module exports; everything in ``_``-prefixed modules is private.
"""

from importlib.metadata import PackageNotFoundError, version

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
from .calibrate import Calibration as Calibration
from .calibrate import calibrate as calibrate
from .calibrate import load_calibration as load_calibration
from .calibrate import save_calibration as save_calibration
from .calibration_batch import min_calibration_batch as min_calibration_batch
from .diffusers_adapter import from_diffusers as from_diffusers
from .guidance import Guided as Guided
from .guidance import guided as guided
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
from .solvers import dpmpp_2m_sample as dpmpp_2m_sample
from .solvers import dpmpp_2m_sde_sample as dpmpp_2m_sde_sample
from .solvers import dpmpp_3m_sample as dpmpp_3m_sample
from .solvers import dpmpp_3m_sde_sample as dpmpp_3m_sde_sample
from .solvers import euler_ancestral_sample as euler_ancestral_sample
from .solvers import euler_sample as euler_sample
from .solvers import generalized_sample as generalized_sample
from .solvers import generate as generate
from .solvers import heun_sample as heun_sample
from .solvers import initial_x as initial_x
from .solvers import ipndm_sample as ipndm_sample
from .solvers import lms_sample as lms_sample
from .solvers import stochastic_sample as stochastic_sample
from .solvers import unipc_sample as unipc_sample

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
    "DDPMDenoiser",
    "Denoiser",
    "EDMPrecond",
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
    "dpmpp_2m_sample",
    "dpmpp_2m_sde_sample",
    "dpmpp_3m_sample",
    "dpmpp_3m_sde_sample",
    "edm_scalings",
    "euler_ancestral_sample",
    "euler_sample",
    "evaluation",
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
    "optimize_schedule",
    "save_calibration",
    "save_schedule",
    "sigmas_from_alphas_cumprod",
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
