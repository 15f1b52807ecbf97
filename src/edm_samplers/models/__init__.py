"""Networks and the built-in pretrained model.

- :class:`UNet`: a compact U-Net F(x_in, c_noise, **cond) for small images (wrap it in
  :class:`~edm_samplers.precond.EDMPrecond` to get a denoiser).
- :func:`digits`: the shipped denoiser for 1x8x8 digits in [-1, 1], trained with the EDM loss on
  scikit-learn's ``load_digits`` (see ``docs/training.md``); loads offline, no download.
- :func:`digits_schedule`: step schedules tuned for the digits model per solver and NFE.
- :func:`digits_features`: features of a small shipped digits classifier, the space in which
  :func:`~edm_samplers.evaluation.frechet_distance` compares generated and real digits.
"""

from .calibrations import digits_afs as digits_afs
from .calibrations import digits_calibration as digits_calibration
from .calibrations import digits_calibrations as digits_calibrations
from .digits import digits as digits
from .digits import digits_classifier as digits_classifier
from .digits import digits_features as digits_features
from .schedules import digits_schedule as digits_schedule
from .schedules import digits_schedules as digits_schedules
from .unet import FourierEmbedding as FourierEmbedding
from .unet import UNet as UNet

__all__ = [
    "FourierEmbedding",
    "UNet",
    "digits",
    "digits_afs",
    "digits_calibration",
    "digits_calibrations",
    "digits_classifier",
    "digits_features",
    "digits_schedule",
    "digits_schedules",
]
