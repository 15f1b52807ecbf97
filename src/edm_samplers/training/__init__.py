"""Training: the losses of EDM's Table 1, the training sigma draws, augmentation and weight averaging.

- Losses (unreduced, per element): :class:`EDMLoss`, :class:`VPLoss`, :class:`VELoss`, the learned
  per-sigma uncertainty :class:`LearnedUncertainty`, and the weightings :func:`edm_weight`,
  :func:`inverse_square_weight`.
- Training sigma draws: :func:`lognormal_sigmas` (EDM), :func:`loguniform_sigmas` (VE),
  :func:`vp_training_sigmas` (VP).
- Augmentation: :class:`AugmentPipe` and the protocol a loss accepts, :class:`AugmentPipeProtocol`.
- Weight averaging: :class:`EMA` (fixed or ramped half-life) and :class:`PowerEMA` (power-function EMA).
"""

from ._sigmas import edm_weight as edm_weight
from ._sigmas import inverse_square_weight as inverse_square_weight
from ._sigmas import lognormal_sigmas as lognormal_sigmas
from ._sigmas import loguniform_sigmas as loguniform_sigmas
from ._sigmas import vp_training_sigmas as vp_training_sigmas
from .augment import AugmentPipe as AugmentPipe
from .augment import AugmentPipeProtocol as AugmentPipeProtocol
from .ema import EMA as EMA
from .ema import PowerEMA as PowerEMA
from .loss import EDMLoss as EDMLoss
from .loss import LearnedUncertainty as LearnedUncertainty
from .loss import VELoss as VELoss
from .loss import VPLoss as VPLoss

__all__ = [
    "EMA",
    "AugmentPipe",
    "AugmentPipeProtocol",
    "EDMLoss",
    "LearnedUncertainty",
    "PowerEMA",
    "VELoss",
    "VPLoss",
    "edm_weight",
    "inverse_square_weight",
    "lognormal_sigmas",
    "loguniform_sigmas",
    "vp_training_sigmas",
]
