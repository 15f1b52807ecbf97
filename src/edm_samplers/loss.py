"""Training losses of EDM's Table 1: the denoising score-matching objective and its weightings.

Every loss trains a denoiser D(x; sigma) (any :class:`~edm_samplers.Denoiser`, e.g. an
:class:`~edm_samplers.precond.EDMPrecond`-wrapped network) by

    L = lambda(sigma) ||D(y + n; sigma) - y||^2,   y ~ p_data,  n ~ N(0, sigma^2 I),  sigma ~ p_train,

and returns the **unreduced, per-element** loss (shape of the images), so the caller chooses the
reduction (EDM sums over elements and averages over the global batch; ``.mean()`` is the usual choice).

========  ===============================================  ===================================================
loss      training sigma                                   lambda(sigma)
========  ===============================================  ===================================================
EDMLoss   ln sigma ~ N(P_mean, P_std^2)                    (sigma^2 + sigma_data^2) / (sigma sigma_data)^2
VPLoss    sigma = sigma_vp(t), t ~ U(eps_t, 1)             1 / sigma^2
VELoss    ln sigma ~ U(ln sigma_min, ln sigma_max)         1 / sigma^2
========  ===============================================  ===================================================

The samplers are :func:`lognormal_sigmas`, :func:`vp_training_sigmas` and :func:`loguniform_sigmas`; the
weightings :func:`edm_weight` and :func:`inverse_square_weight`.

For each, lambda(sigma) c_out(sigma)^2 = 1 with the matching preconditioner, so the *network* F sees a
unit-weight regression target at every noise level.

Conditioning. The denoiser is called as ``denoiser(y + n, sigma, **cond)`` where ``cond`` holds
``class_labels=labels`` when ``labels`` is given and ``augment_labels=<pipe's labels>`` when an
``augment_pipe`` is given (keys whose value would be None are left out, so denoisers without
conditioning still work). These are the keyword names :class:`~edm_samplers.models.UNet` accepts.

Randomness: every loss takes ``generator=`` (a ``torch.Generator`` on the images' device), used for the
sigma draws, the augmentation pipe (if it accepts ``generator=``) and the noise, in that order.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch
from torch import Tensor, nn

from ._types import Denoiser
from ._validate import check_float, check_int
from .augment import AugmentPipeProtocol
from .schedules import vp_sigma

__all__ = [
    "EDMLoss",
    "LearnedUncertainty",
    "VELoss",
    "VPLoss",
    "edm_weight",
    "inverse_square_weight",
    "lognormal_sigmas",
    "loguniform_sigmas",
    "vp_training_sigmas",
]


# ---------------------------------------------------------------------------------------------
# Sigma samplers and weightings


def _check_draw(n: int, dtype: torch.dtype) -> int:
    n = check_int(n, "n", minimum=1)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return n


def lognormal_sigmas(
    n: int,
    *,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """EDM's training noise levels: ln sigma ~ N(P_mean, P_std^2), ``n`` draws of shape ``[n]``.

    Args:
        n: number of draws.
        p_mean, p_std: P_mean and P_std (EDM: -1.2, 1.2).
        generator: optional ``torch.Generator`` (on ``device``) for reproducible draws.
        device, dtype: where and in which floating dtype to draw.
    """
    n = _check_draw(n, dtype)
    p_mean = check_float(p_mean, "p_mean")
    p_std = check_float(p_std, "p_std", nonnegative=True)
    z = torch.randn(n, generator=generator, device=device, dtype=dtype)
    return (z * p_std + p_mean).exp()


def loguniform_sigmas(
    n: int,
    *,
    sigma_min: float = 0.02,
    sigma_max: float = 100.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """VE training noise levels: ln sigma ~ U(ln sigma_min, ln sigma_max) (EDM Table 1: 0.02, 100)."""
    n = _check_draw(n, dtype)
    lo = math.log(check_float(sigma_min, "sigma_min", positive=True))
    hi = math.log(check_float(sigma_max, "sigma_max", positive=True))
    if not lo < hi:
        raise ValueError(f"sigma_min must be < sigma_max, got {sigma_min} and {sigma_max}")
    u = torch.rand(n, generator=generator, device=device, dtype=dtype)
    return (lo + (hi - lo) * u).exp()


def vp_training_sigmas(
    n: int,
    *,
    beta_d: float = 19.9,
    beta_min: float = 0.1,
    eps_t: float = 1e-5,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """VP training noise levels: sigma = sigma_vp(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), t ~ U(eps_t, 1)."""
    n = _check_draw(n, dtype)
    eps_t = check_float(eps_t, "eps_t", positive=True)
    if not eps_t < 1:
        raise ValueError(f"eps_t must be in (0, 1), got {eps_t}")
    beta_d = check_float(beta_d, "beta_d", positive=True)
    beta_min = check_float(beta_min, "beta_min", nonnegative=True)
    u = torch.rand(n, generator=generator, device=device, dtype=dtype)
    return vp_sigma(eps_t + (1 - eps_t) * u, beta_d=beta_d, beta_min=beta_min)


def edm_weight(sigma: Tensor, sigma_data: float = 0.5) -> Tensor:
    """EDM's loss weight lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out(sigma)^2."""
    sigma_data = check_float(sigma_data, "sigma_data", positive=True)
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def inverse_square_weight(sigma: Tensor) -> Tensor:
    """The VP and VE loss weight lambda(sigma) = 1 / sigma^2 = 1 / c_out(sigma)^2."""
    return 1 / sigma**2


# ---------------------------------------------------------------------------------------------
# EDM2's learned uncertainty weighting


class LearnedUncertainty(nn.Module):
    """EDM2's learned per-sigma uncertainty u(sigma) (a log-variance), an opt-in for :class:`EDMLoss`.

    With it, the loss becomes lambda(sigma) ||D - y||^2 / exp(u(sigma)) + u(sigma) (Karras et al. 2024,
    Eq. 21), whose minimiser over u is the log of the expected weighted error at that sigma: every
    noise level then contributes equally, whatever its difficulty. u is a linear function of a
    sinusoidal embedding of c_noise = ln(sigma) / 4, initialised to 0 (plain EDM loss at the start).
    Add its parameters to the optimizer.

    Args:
        num_channels: embedding width.
    """

    freqs: Tensor

    def __init__(self, num_channels: int = 128) -> None:
        super().__init__()
        num_channels = check_int(num_channels, "num_channels", minimum=2)
        half = num_channels // 2
        freqs = torch.exp(torch.linspace(0.0, math.log(100.0), half, dtype=torch.float64)) / (2 * math.pi)
        self.register_buffer("freqs", freqs.to(torch.float32), persistent=False)
        self.linear = nn.Linear(2 * half, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, sigma: Tensor) -> Tensor:
        """u(sigma) for ``sigma`` of shape ``[B]``, returned as ``[B]`` (float32)."""
        arg = 2 * math.pi * (sigma.to(torch.float32).log() / 4)[:, None] * self.freqs[None, :]
        out: Tensor = self.linear(torch.cat([arg.cos(), arg.sin()], dim=1))
        return out.reshape(-1)


# ---------------------------------------------------------------------------------------------
# Losses


def _check_inputs(denoiser: object, images: object, labels: object, augment_pipe: object) -> Tensor:
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable as denoiser(x, sigma, **cond), got {type(denoiser).__name__}")
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise TypeError(f"images must be a floating torch.Tensor [batch, ...], got {type(images).__name__}")
    if images.ndim < 2 or images.shape[0] < 1:
        raise ValueError(f"images must have shape [batch, ...] with batch >= 1, got {tuple(images.shape)}")
    if labels is not None:
        if not isinstance(labels, Tensor):
            raise TypeError(f"labels must be a tensor (class ids [B] or one-hot [B, K]) or None, got {type(labels)}")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels has {labels.shape[0]} rows but images has {images.shape[0]}; pass one per image")
    if augment_pipe is not None and not callable(augment_pipe):
        raise TypeError("augment_pipe must be callable as augment_pipe(images) -> (images, augment_labels), or None")
    return images


def _bcast(v: Tensor, ndim: int) -> Tensor:
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def _denoising_loss(
    denoiser: Denoiser,
    images: Tensor,
    sigma: Tensor,
    weight: Tensor,
    labels: Tensor | None,
    augment_pipe: AugmentPipeProtocol | None,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """Shared body: augment, add noise, denoise; returns (weighted squared error, sigma)."""
    cond: dict[str, Any] = {}
    y = images
    if augment_pipe is not None:
        y, augment_labels = augment_pipe(images, generator=generator)
        cond["augment_labels"] = augment_labels
    if labels is not None:
        cond["class_labels"] = labels
    n = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype) * _bcast(sigma, y.ndim)
    denoised = denoiser(y + n, sigma, **cond)
    if not isinstance(denoised, Tensor) or denoised.shape != y.shape:
        raise ValueError(
            f"denoiser returned {getattr(denoised, 'shape', type(denoised).__name__)} for images of shape "
            f"{tuple(y.shape)}; D(x; sigma) must have the shape of x"
        )
    return _bcast(weight, y.ndim) * (denoised - y) ** 2, sigma


class _TableLoss(abc.ABC):
    """The call shared by the Table 1 losses: draw sigma, weight the squared denoising error by lambda(sigma)
    (and, with a :class:`LearnedUncertainty`, apply EDM2's per-sigma uncertainty)."""

    uncertainty: LearnedUncertainty | None = None

    @abc.abstractmethod
    def sample_sigmas(self, n: int, *, generator: torch.Generator | None = None, device: Any = None) -> Tensor:
        """``n`` training noise levels."""

    @abc.abstractmethod
    def weight(self, sigma: Tensor) -> Tensor:
        """lambda(sigma)."""

    def __call__(
        self,
        denoiser: Denoiser,
        images: Tensor,
        labels: Tensor | None = None,
        augment_pipe: AugmentPipeProtocol | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        images = _check_inputs(denoiser, images, labels, augment_pipe)
        sigma = self.sample_sigmas(images.shape[0], generator=generator, device=images.device).to(images.dtype)
        loss, sigma = _denoising_loss(denoiser, images, sigma, self.weight(sigma), labels, augment_pipe, generator)
        if self.uncertainty is not None:
            u = _bcast(self.uncertainty(sigma).to(loss.dtype), loss.ndim)
            loss = loss / u.exp() + u
        return loss


class _InverseSquareLoss(_TableLoss):
    """lambda = 1/sigma^2 (VP, VE); subclasses sample sigma."""

    def weight(self, sigma: Tensor) -> Tensor:
        return inverse_square_weight(sigma)


class EDMLoss(_TableLoss):
    """EDM's training loss (Karras et al. 2022, Sec. 5 and Table 1).

    ln sigma ~ N(P_mean, P_std^2); lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2;
    returns lambda(sigma) (D(y + n; sigma) - y)^2 per element.

    Args:
        p_mean, p_std: the log-normal sigma distribution (EDM: -1.2, 1.2).
        sigma_data: the data standard deviation (0.5 for images in [-1, 1]).
        uncertainty: optional :class:`LearnedUncertainty` (EDM2); then the loss is
            lambda ||D - y||^2 / exp(u(sigma)) + u(sigma). Train its parameters with the network's.

    Call: ``loss(denoiser, images, labels=None, augment_pipe=None, *, generator=None) -> Tensor`` of
    ``images.shape`` (see the module docstring for the conditioning keywords ``class_labels`` and
    ``augment_labels``).

    Example::

        loss_fn = EDMLoss()
        loss = loss_fn(EDMPrecond(net), images).mean()
        loss.backward()
    """

    def __init__(
        self,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        sigma_data: float = 0.5,
        *,
        uncertainty: LearnedUncertainty | None = None,
    ) -> None:
        self.p_mean = check_float(p_mean, "p_mean")
        self.p_std = check_float(p_std, "p_std", nonnegative=True)
        self.sigma_data = check_float(sigma_data, "sigma_data", positive=True)
        if uncertainty is not None and not isinstance(uncertainty, nn.Module):
            raise TypeError("uncertainty must be a LearnedUncertainty module (or None)")
        self.uncertainty = uncertainty

    def sample_sigmas(self, n: int, *, generator: torch.Generator | None = None, device: Any = None) -> Tensor:
        return lognormal_sigmas(n, p_mean=self.p_mean, p_std=self.p_std, generator=generator, device=device)

    def weight(self, sigma: Tensor) -> Tensor:
        return edm_weight(sigma, self.sigma_data)


class VPLoss(_InverseSquareLoss):
    """The VP loss of EDM Table 1 (Song et al. 2021): sigma = sigma_vp(t), t ~ U(eps_t, 1); lambda = 1/sigma^2.

    Args:
        beta_d, beta_min: the VP schedule (19.9, 0.1).
        eps_t: the smallest training t (1e-5).

    Call as :class:`EDMLoss`.
    """

    def __init__(self, beta_d: float = 19.9, beta_min: float = 0.1, eps_t: float = 1e-5) -> None:
        self.beta_d = check_float(beta_d, "beta_d", positive=True)
        self.beta_min = check_float(beta_min, "beta_min", nonnegative=True)
        self.eps_t = check_float(eps_t, "eps_t", positive=True)
        if not self.eps_t < 1:
            raise ValueError(f"eps_t must be in (0, 1), got {eps_t}")

    def sample_sigmas(self, n: int, *, generator: torch.Generator | None = None, device: Any = None) -> Tensor:
        return vp_training_sigmas(
            n, beta_d=self.beta_d, beta_min=self.beta_min, eps_t=self.eps_t, generator=generator, device=device
        )


class VELoss(_InverseSquareLoss):
    """The VE loss of EDM Table 1 (Song et al. 2021): ln sigma ~ U(ln sigma_min, ln sigma_max); lambda = 1/sigma^2.

    Args:
        sigma_min, sigma_max: the training range (0.02, 100).

    Call as :class:`EDMLoss`.
    """

    def __init__(self, sigma_min: float = 0.02, sigma_max: float = 100.0) -> None:
        self.sigma_min = check_float(sigma_min, "sigma_min", positive=True)
        self.sigma_max = check_float(sigma_max, "sigma_max", positive=True)
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"sigma_min must be < sigma_max, got {sigma_min} and {sigma_max}")

    def sample_sigmas(self, n: int, *, generator: torch.Generator | None = None, device: Any = None) -> Tensor:
        return loguniform_sigmas(
            n, sigma_min=self.sigma_min, sigma_max=self.sigma_max, generator=generator, device=device
        )
