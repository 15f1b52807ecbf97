"""Preconditioning (EDM, Karras et al. 2022, Table 1 and Section 5): any network F becomes a denoiser D.

A preconditioner wraps a raw network F and returns

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)),

with the coefficient sets of Table 1 (``sigma`` is EDM's noise level; ``x = y + sigma n``):

- VP:    c_skip = 1, c_out = -sigma, c_in = 1 / sqrt(sigma^2 + 1), c_noise = (M - 1) sigma^-1(sigma)
- VE:    c_skip = 1, c_out = sigma, c_in = 1, c_noise = ln(sigma / 2)
- iDDPM: c_skip = 1, c_out = -sigma, c_in = 1 / sqrt(sigma^2 + 1), c_noise = M - 1 - argmin_j |u_j - sigma|
- EDM:   c_skip = sigma_data^2 / (sigma^2 + sigma_data^2), c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
         c_in = 1 / sqrt(sigma^2 + sigma_data^2), c_noise = ln(sigma) / 4

The coefficients are plain functions of sigma (:func:`edm_scalings`, :func:`vp_scalings`,
:func:`ve_scalings`, :func:`iddpm_scalings`) so training code can reuse them; the module wrappers
(:class:`EDMPrecond`, :class:`VPPrecond`, :class:`VEPrecond`, :class:`iDDPMPrecond`) *hold the user's
network itself* (never a copy: ``precond.parameters()`` are the network's parameter objects and
``precond.net.load_state_dict(...)`` keeps working) and know their valid sigma range.

Numerics: the coefficient arithmetic and the returned D use x's dtype promoted to at least float32
(float64 stays float64). F itself runs in ``net_dtype`` (e.g. ``torch.bfloat16``) or, by default, in the
dtype of its parameters: its input c_in x is cast to that dtype and its output cast back up, as the
paper's code does (so ``heun_sample(..., dtype=torch.float64)`` works with an ordinary float32 network).
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ._validate import check_float, check_int, check_nonnegative_values, check_sigmas, check_strict_schedule
from .schedules import iddpm_grid, vp_sigma, vp_sigma_inv

__all__ = [
    "EDMPrecond",
    "Precond",
    "Scalings",
    "VEPrecond",
    "VPPrecond",
    "clamp_to",
    "edm_scalings",
    "iDDPMPrecond",
    "iddpm_scalings",
    "ve_scalings",
    "vp_scalings",
]

SigmaLike = Tensor | float


class Scalings(NamedTuple):
    """The four preconditioning coefficients of Table 1, each of sigma's shape.

    D(x; sigma) = c_skip x + c_out F(c_in x; c_noise).
    """

    c_skip: Tensor
    c_out: Tensor
    c_in: Tensor
    c_noise: Tensor


def _as_sigma(sigma: SigmaLike) -> Tensor:
    if isinstance(sigma, Tensor):
        if not sigma.is_floating_point():
            raise TypeError(f"sigma must be a floating-point tensor, got dtype {sigma.dtype}")
        return sigma
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma must be a tensor or a real number, got {type(sigma).__name__} {sigma!r}")
    return torch.tensor(float(sigma), dtype=torch.float64)


_SIGMA_FIX = "noise levels are finite and >= 0 (a sampler's schedule is checked once at its entry)"
_FORWARD_FIX = (
    "a denoiser is evaluated at sigma > 0 only (D(x; 0) = x needs no network: the samplers' last step to 0 "
    "does not call it)"
)


def _checked_sigma(sigma: SigmaLike) -> Tensor:
    """sigma as a tensor, rejected if negative, NaN or infinite where that is free to check.

    Numbers and CPU tensors in eager mode are checked on the host (a few microseconds, no device sync). On an
    accelerator, under ``torch.compile`` or while tracing, nothing is read back (that would synchronise inside
    every sampler step, or break the graph): a negative or NaN sigma becomes NaN instead, so D is NaN (the
    samplers' finite check reports it) rather than finite and wrong (VP and iDDPM would silently use
    |sigma|). The samplers validate their whole schedule once at entry anyway.
    """
    return check_nonnegative_values(_as_sigma(sigma), "sigma", fix=_SIGMA_FIX)


# sqrt(sigma^2 + c^2) through hypot: sigma^2 alone overflows float32 at sigma = 1.8e19, where the direct
# forms gave c_in = 0 and c_out = 0, a finite and wrong D. sigma_data enters as a divisor or through hypot,
# never as a float32 constant it may not fit in (full_like(s, 1e300) raises).
def _edm(s: Tensor, sd: float) -> Scalings:
    r = torch.hypot(s / sd, torch.ones_like(s)).reciprocal()  # sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in = r / sd if sd >= 1.0 else torch.hypot(s, torch.full_like(s, sd)).reciprocal()
    return Scalings(c_skip=r * r, c_out=s * r, c_in=c_in, c_noise=torch.log(s) / 4)


def _vp_c_in(s: Tensor) -> Tensor:
    return torch.hypot(s, torch.ones_like(s)).reciprocal()  # 1 / sqrt(sigma^2 + 1)


def _vp(s: Tensor, bd: float, bm: float, m: int) -> Scalings:
    return Scalings(
        c_skip=torch.ones_like(s),
        c_out=-s,
        c_in=_vp_c_in(s),
        c_noise=(m - 1) * vp_sigma_inv(s, bd, bm),
    )


def _ve(s: Tensor) -> Scalings:
    return Scalings(c_skip=torch.ones_like(s), c_out=s, c_in=torch.ones_like(s), c_noise=torch.log(0.5 * s))


def _iddpm(s: Tensor, m: int, u: Tensor) -> Scalings:
    j = _iddpm_index(s, u)
    return Scalings(
        c_skip=torch.ones_like(s),
        c_out=-s,
        c_in=_vp_c_in(s),
        c_noise=(m - 1 - j).to(s.dtype),
    )


def edm_scalings(sigma: SigmaLike, sigma_data: float = 0.5) -> Scalings:
    """EDM's coefficients (Table 1, Section 5): unit-variance network input and training target.

    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2), c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
    c_in = 1 / sqrt(sigma^2 + sigma_data^2), c_noise = ln(sigma) / 4.

    Args:
        sigma: noise level(s) >= 0, a floating tensor of any shape or a number (-> float64 0-d tensor).
        sigma_data: standard deviation of the data, > 0.

    Raises:
        TypeError: for a non-floating sigma. ValueError: for a bad sigma_data, or a negative, NaN or infinite
            sigma given as a number or CPU tensor (elsewhere such entries give NaN coefficients; no sync).
    """
    sd = check_float(sigma_data, "sigma_data", positive=True)
    return _edm(_checked_sigma(sigma), sd)


def vp_scalings(sigma: SigmaLike, beta_d: float = 19.9, beta_min: float = 0.1, M: int = 1000) -> Scalings:
    """VP (Song et al. 2021) as EDM coefficients: c_skip = 1, c_out = -sigma, c_in = 1/sqrt(sigma^2 + 1),
    c_noise = (M - 1) t with t = sigma^-1(sigma) = (sqrt(beta_min^2 + 2 beta_d ln(sigma^2 + 1)) - beta_min) / beta_d.

    F is an eps-predictor of the scaled input x / sqrt(1 + sigma^2): D = x - sigma eps. sigma is checked as in
    :func:`edm_scalings`.
    """
    bd = check_float(beta_d, "beta_d", positive=True)
    bm = check_float(beta_min, "beta_min", nonnegative=True)
    m = check_int(M, "M", minimum=2)
    return _vp(_checked_sigma(sigma), bd, bm, m)


def ve_scalings(sigma: SigmaLike) -> Scalings:
    """VE (Song et al. 2021): c_skip = 1, c_out = sigma, c_in = 1, c_noise = ln(sigma / 2). sigma is checked as
    in :func:`edm_scalings`."""
    return _ve(_checked_sigma(sigma))


@functools.lru_cache(maxsize=8)
def _cached_grid(c1: float, c2: float, m: int) -> Tensor:
    return iddpm_grid(c1=c1, c2=c2, m=m)


def _iddpm_index(sigma: Tensor, u: Tensor) -> Tensor:
    # Index j in 0 .. M-1 of the trained level u_j nearest to sigma. u_M = 0 is no trained level
    # (it would give c_noise = -1), so only the first M entries take part.
    trained = u[:-1].to(device=sigma.device, dtype=torch.promote_types(sigma.dtype, torch.float32))
    return torch.argmin(torch.abs(sigma.unsqueeze(-1) - trained), dim=-1)


def iddpm_scalings(
    sigma: SigmaLike, *, c1: float = 0.001, c2: float = 0.008, M: int = 1000, grid: Tensor | None = None
) -> Scalings:
    """iDDPM (Nichol & Dhariwal 2021): c_skip = 1, c_out = -sigma, c_in = 1/sqrt(sigma^2 + 1),
    c_noise = M - 1 - argmin_j |u_j - sigma| over the trained levels u_0 > ... > u_{M-1} of
    :func:`~edm_samplers.iddpm_grid`.

    Args:
        sigma: noise level(s), checked as in :func:`edm_scalings`.
        c1, c2, M: the grid's constants (Table 1: 0.001, 0.008, 1000).
        grid: a precomputed ``iddpm_grid(...)`` (length M + 1) to skip rebuilding it (it is cached anyway).
    """
    m = check_int(M, "M", minimum=2)
    if grid is None:
        u = _cached_grid(check_float(c1, "c1", positive=True), check_float(c2, "c2", nonnegative=True), m)
    else:
        u = grid
        if not isinstance(u, Tensor) or not u.is_floating_point():
            raise TypeError(f"grid must be a floating tensor iddpm_grid(m=M), got {type(u).__name__}")
    if u.ndim != 1 or u.numel() != m + 1:
        raise ValueError(f"grid must be iddpm_grid(m=M) of length M + 1 = {m + 1}, got shape {tuple(u.shape)}")
    return _iddpm(_checked_sigma(sigma), m, u)


# ----------------------------------------------------------------------------------------------
# Module wrappers


def _check_net_dtype(net_dtype: object) -> torch.dtype | None:
    if net_dtype is None:
        return None
    if not isinstance(net_dtype, torch.dtype) or not net_dtype.is_floating_point:
        raise TypeError(f"net_dtype must be None or a floating torch.dtype such as torch.bfloat16, got {net_dtype!r}")
    return net_dtype


def _net_dtype(net: object, net_dtype: torch.dtype | None) -> torch.dtype | None:
    """The dtype F runs in: ``net_dtype`` if given, else the dtype of an ``nn.Module``'s first floating
    parameter (so float64 sampling feeds a float32 network float32 inputs, as the paper's code does),
    else None (F runs in the compute dtype)."""
    if net_dtype is not None:
        return net_dtype
    if isinstance(net, nn.Module):
        for p in net.parameters():
            if p.is_floating_point():
                return p.dtype
    return None


def _compute_dtype_and_sigma(x: object, sigma: SigmaLike) -> tuple[torch.dtype, Tensor]:
    """Shared entry of every wrapper: x's dtype promoted to >= float32, and sigma as a ``[batch]`` tensor in it.

    A sigma tensor must live on x's device (a 0-d CPU tensor is accepted, as torch accepts CPU scalars): a
    silent copy would be a host-device transfer per call, and a meta/other-device sigma failed deep in torch.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1:
        got = f"dtype {x.dtype}, shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"x must be a floating-point tensor of shape [batch, ...], got {got}")
    if isinstance(sigma, Tensor) and sigma.device != x.device and not (sigma.ndim == 0 and sigma.device.type == "cpu"):
        raise ValueError(
            f"sigma is on {sigma.device} but x is on {x.device}; move it with sigma.to(x.device) (only a 0-d CPU "
            "tensor or a number may accompany x on another device)"
        )
    cdt = torch.promote_types(x.dtype, torch.float32)
    # Checked in the compute dtype (a float64 1e-50 is 0 in float32) but before the move to x's device, so a
    # number or 0-d CPU sigma is checked on the host even for an x on an accelerator.
    s = check_nonnegative_values(_as_sigma(sigma).to(dtype=cdt), "sigma", fix=_FORWARD_FIX, positive=True)
    s = s.to(device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    elif s.shape != (x.shape[0],):
        raise ValueError(f"sigma must have shape [batch] = [{x.shape[0]}] or be a scalar, got shape {tuple(s.shape)}")
    return cdt, s


def _append_dims(v: Tensor, ndim: int) -> Tensor:
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


class Precond(nn.Module, metaclass=abc.ABCMeta):
    """Base of the preconditioning wrappers: D(x; sigma) = c_skip x + c_out F(c_in x, c_noise, **cond).

    Subclasses define :meth:`scalings`. The wrapped ``net`` is stored as ``self.net`` (a registered
    submodule when it is an ``nn.Module``, so ``parameters()``, ``state_dict()`` (keys ``net.*``),
    ``.to()`` and ``torch.compile`` see it; any other callable is kept as a plain attribute).

    Args:
        net: F(x_in, c_noise, **cond) -> Tensor of x's shape; ``c_noise`` has shape ``[batch]``.
        sigma_min, sigma_max: the valid noise-level range, used by :func:`clamp_to`.
        net_dtype: dtype F runs in (e.g. ``torch.bfloat16``), or None: the dtype of ``net``'s parameters
            (for an ``nn.Module``), else the compute dtype. Only F's
            input and output are cast; coefficients and D stay in at least float32.
    """

    net: Callable[..., Any]

    def __init__(
        self,
        net: Callable[..., Any],
        *,
        sigma_min: float,
        sigma_max: float,
        net_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not callable(net):
            raise TypeError(
                f"net must be an nn.Module or a callable F(x_in, c_noise, **cond), got {type(net).__name__}"
            )
        lo = check_float(sigma_min, "sigma_min", nonnegative=True)
        hi = check_float(sigma_max, "sigma_max", positive=True, allow_inf=True)
        if not lo < hi:
            raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={lo}, sigma_max={hi}")
        self.net = net
        self.sigma_min = lo
        self.sigma_max = hi
        self.net_dtype = _check_net_dtype(net_dtype)

    @abc.abstractmethod
    def scalings(self, sigma: Tensor) -> Scalings:
        """The coefficients (c_skip, c_out, c_in, c_noise) at noise levels ``sigma``."""

    def _scalings_checked_sigma(self, s: Tensor) -> Scalings:
        # forward has already checked s (once per call); the built-in wrappers skip a second check here.
        return self.scalings(s)

    def round_sigma(self, sigma: SigmaLike) -> Tensor:
        """Map sigma to a level the network supports: the identity for continuous-time models."""
        return _checked_sigma(sigma)

    def forward(self, x: Tensor, sigma: SigmaLike, **cond: Any) -> Tensor:
        """D(x; sigma) for ``x`` of shape ``[batch, ...]`` (any rank) and sigma ``[batch]`` or a scalar.

        sigma must be finite, > 0 and on x's device (see :func:`edm_scalings` for how it is checked without a
        sync; at sigma = 0, c_noise = ln(sigma)/4 would be -inf for the network, while D(x; 0) = x needs none).
        """
        cdt, s = _compute_dtype_and_sigma(x, sigma)
        sc = self._scalings_checked_sigma(s)
        xc = x.to(cdt)
        x_in = _append_dims(sc.c_in, x.ndim) * xc
        c_noise = sc.c_noise
        ndt = _net_dtype(self.net, self.net_dtype)
        if ndt is not None and ndt != cdt:
            x_in = x_in.to(ndt)
            # c_noise stays at least float32 (float16 cannot even represent an iDDPM time such as 999.5).
            c_noise = c_noise.to(torch.promote_types(ndt, torch.float32))
        f = self._call_net(x_in, c_noise, cond)
        if not isinstance(f, Tensor):
            raise TypeError(f"net must return a torch.Tensor, got {type(f).__name__}")
        if f.shape != x.shape:
            raise ValueError(
                f"net returned shape {tuple(f.shape)} for an input of shape {tuple(x.shape)}; F must return a tensor "
                "of x's shape (for a learned-variance model, use learned_variance=True to drop the extra channels)"
            )
        if not f.is_floating_point():
            raise TypeError(f"net must return a floating-point tensor, got dtype {f.dtype}")
        if f.device != x.device:
            raise ValueError(f"net returned a tensor on {f.device} for an input on {x.device}; return it on x's device")
        return _append_dims(sc.c_skip, x.ndim) * xc + _append_dims(sc.c_out, x.ndim) * f.to(cdt)

    def _call_net(self, x_in: Tensor, c_noise: Tensor, cond: dict[str, Any]) -> Any:
        return self.net(x_in, c_noise, **cond)


class EDMPrecond(Precond):
    """EDM preconditioning (Table 1, right column; Section 5) around a user network F.

    D(x; sigma) = c_skip x + c_out F(c_in x, ln(sigma)/4) with c_skip = sigma_data^2/(sigma^2+sigma_data^2),
    c_out = sigma sigma_data/sqrt(sigma^2+sigma_data^2), c_in = 1/sqrt(sigma^2+sigma_data^2).

    Args:
        net: F(x_in, c_noise, **cond), an ``nn.Module`` (held itself, not copied) or any callable.
        sigma_data: standard deviation of the training data (0.5 for images in [-1, 1]).
        sigma_min, sigma_max: valid range (default: all of (0, inf)).
        net_dtype: run F in this dtype (e.g. ``torch.float16``/``torch.bfloat16``); D stays float32+.
    """

    def __init__(
        self,
        net: Callable[..., Any],
        *,
        sigma_data: float = 0.5,
        sigma_min: float = 0.0,
        sigma_max: float = float("inf"),
        net_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(net, sigma_min=sigma_min, sigma_max=sigma_max, net_dtype=net_dtype)
        self.sigma_data = check_float(sigma_data, "sigma_data", positive=True)

    def scalings(self, sigma: Tensor) -> Scalings:
        return edm_scalings(sigma, self.sigma_data)

    def _scalings_checked_sigma(self, s: Tensor) -> Scalings:
        return _edm(s, self.sigma_data)


class VPPrecond(Precond):
    """VP preconditioning (Table 1, "VP" column; Song et al. 2021's DDPM++).

    F predicts eps from x / sqrt(1 + sigma^2) and the time (M - 1) t, t = sigma^-1(sigma).
    The default range is sigma(epsilon_t) .. sigma(1) (about 0.0032 .. 152 for the defaults).

    Args:
        net: F(x_in, c_noise, **cond).
        beta_d, beta_min, M: the VP schedule's constants (19.9, 0.1, 1000).
        epsilon_t: smallest training time t (1e-5); sets ``sigma_min = vp_sigma(epsilon_t)``.
        net_dtype: as in :class:`EDMPrecond`.
    """

    def __init__(
        self,
        net: Callable[..., Any],
        *,
        beta_d: float = 19.9,
        beta_min: float = 0.1,
        M: int = 1000,
        epsilon_t: float = 1e-5,
        net_dtype: torch.dtype | None = None,
    ) -> None:
        self.beta_d = check_float(beta_d, "beta_d", positive=True)
        self.beta_min = check_float(beta_min, "beta_min", nonnegative=True)
        self.M = check_int(M, "M", minimum=2)
        et = check_float(epsilon_t, "epsilon_t", positive=True)
        if not et < 1:
            raise ValueError(f"epsilon_t must be in (0, 1), got {et}")
        lo = float(vp_sigma(torch.tensor(et, dtype=torch.float64), self.beta_d, self.beta_min))
        hi = float(vp_sigma(torch.tensor(1.0, dtype=torch.float64), self.beta_d, self.beta_min))
        super().__init__(net, sigma_min=lo, sigma_max=hi, net_dtype=net_dtype)

    def scalings(self, sigma: Tensor) -> Scalings:
        return vp_scalings(sigma, self.beta_d, self.beta_min, self.M)

    def _scalings_checked_sigma(self, s: Tensor) -> Scalings:
        return _vp(s, self.beta_d, self.beta_min, self.M)


class VEPrecond(Precond):
    """VE preconditioning (Table 1, "VE" column; Song et al. 2021's NCSN++): D = x + sigma F(x, ln(sigma/2)).

    Args:
        net: F(x_in, c_noise, **cond).
        sigma_min, sigma_max: valid range (0.02, 100).
        net_dtype: as in :class:`EDMPrecond`.
    """

    def __init__(
        self,
        net: Callable[..., Any],
        *,
        sigma_min: float = 0.02,
        sigma_max: float = 100.0,
        net_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(net, sigma_min=sigma_min, sigma_max=sigma_max, net_dtype=net_dtype)

    def scalings(self, sigma: Tensor) -> Scalings:
        return ve_scalings(sigma)

    def _scalings_checked_sigma(self, s: Tensor) -> Scalings:
        return _ve(s)


class iDDPMPrecond(Precond):
    """iDDPM preconditioning (Table 1, "iDDPM" column; Nichol & Dhariwal 2021's ADM).

    F is a discrete-time eps-predictor trained on the M levels u_0 > ... > u_{M-1} of
    :func:`~edm_samplers.iddpm_grid`; it sees the integer-valued time M - 1 - j of the nearest level.
    :meth:`round_sigma` maps sigma to that level; round the schedule with :func:`clamp_to` (or build it
    with :func:`~edm_samplers.iddpm_sigmas`) so the sampler's sigmas are the ones F was trained on.

    Args:
        net: F(x_in, c_noise, **cond).
        c1, c2, M: grid constants (0.001, 0.008, 1000).
        learned_variance: F returns 2C channels on dim 1 (mean and variance, ADM style); keep the first C.
        net_dtype: as in :class:`EDMPrecond`.

    The grid is a non-persistent buffer: it follows ``.to(device)`` but is not part of ``state_dict()``.
    Use ``net_dtype`` for mixed precision rather than ``.half()`` on the wrapper, which would round it.
    """

    u: Tensor

    def __init__(
        self,
        net: Callable[..., Any],
        *,
        c1: float = 0.001,
        c2: float = 0.008,
        M: int = 1000,
        learned_variance: bool = False,
        net_dtype: torch.dtype | None = None,
    ) -> None:
        self.M = check_int(M, "M", minimum=2)
        u = _cached_grid(check_float(c1, "c1", positive=True), check_float(c2, "c2", nonnegative=True), self.M)
        super().__init__(net, sigma_min=float(u[self.M - 1]), sigma_max=float(u[0]), net_dtype=net_dtype)
        self.register_buffer("u", u.clone(), persistent=False)
        self.learned_variance = bool(learned_variance)

    def scalings(self, sigma: Tensor) -> Scalings:
        return iddpm_scalings(sigma, M=self.M, grid=self.u)

    def _scalings_checked_sigma(self, s: Tensor) -> Scalings:
        return _iddpm(s, self.M, self.u)

    def round_sigma(self, sigma: SigmaLike) -> Tensor:
        """The trained level u_j nearest to sigma (same shape and dtype as sigma)."""
        s = _checked_sigma(sigma)
        j = _iddpm_index(s, self.u)
        return self.u.to(device=s.device, dtype=s.dtype)[j]

    def _call_net(self, x_in: Tensor, c_noise: Tensor, cond: dict[str, Any]) -> Any:
        f = self.net(x_in, c_noise, **cond)
        if self.learned_variance and isinstance(f, Tensor):
            f = _split_variance(f, x_in.shape, "net")
        return f


def _split_variance(f: Tensor, x_shape: torch.Size, name: str) -> Tensor:
    """Keep the mean half of a learned-variance output [B, 2C, ...] (static shape check only)."""
    if f.ndim < 2 or f.shape[0] != x_shape[0] or f.shape[1] != 2 * x_shape[1] or f.shape[2:] != x_shape[2:]:
        raise ValueError(
            f"{name} returned shape {tuple(f.shape)}, but a learned-variance model must return twice the "
            f"channels of its input {tuple(x_shape)} on dim 1; pass learned_variance=False if it does not"
        )
    return f[:, : x_shape[1]]


# ----------------------------------------------------------------------------------------------
# Fitting a schedule to a denoiser


def _range_attr(denoiser: object, name: str, default: float) -> float:
    v = getattr(denoiser, name, default)
    if isinstance(v, Tensor) and v.numel() == 1:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"denoiser.{name} must be a real number, got {type(v).__name__} {v!r}")
    if math.isnan(v):
        raise ValueError(f"denoiser.{name} must not be NaN")
    return float(v)


def clamp_to(sigmas: Tensor, denoiser: object, *, round: bool = True) -> Tensor:
    """Clamp (and round) the positive levels of a schedule to a denoiser's valid range, explicitly.

    Reads ``denoiser.sigma_min`` / ``denoiser.sigma_max`` (if present) and, with ``round``,
    ``denoiser.round_sigma`` (if present). The final 0 stays 0; consecutive duplicates created by
    clamping or rounding are removed, so every step moves. Runs once on the host, before sampling.

    Args:
        sigmas: a non-increasing schedule (e.g. :func:`~edm_samplers.karras_sigmas`).
        denoiser: a wrapper of this module, an adapter, or any object with those attributes.
        round: apply ``round_sigma`` (discrete-time models) after clamping.

    Returns:
        The fitted schedule, in ``sigmas``' dtype and on its device: positive, strictly decreasing levels,
        then the final 0 if ``sigmas`` had one.

    Raises:
        ValueError / TypeError: for an invalid schedule, a denoiser whose range is not two numbers with
            sigma_min < sigma_max, a ``round_sigma`` that does not return one finite positive level per input
            level in the same order (e.g. ``lambda s: -s`` or ``lambda s: 0 * s``), or levels that
            ``sigmas``' dtype cannot hold apart.
    """
    s = check_sigmas(sigmas)
    lo = _range_attr(denoiser, "sigma_min", 0.0)
    hi = _range_attr(denoiser, "sigma_max", math.inf)
    if not 0 <= lo < hi:
        raise ValueError(
            f"denoiser has an invalid range sigma_min={lo}, sigma_max={hi}; it needs 0 <= sigma_min < sigma_max"
        )
    pos = s[s > 0].clamp(lo, hi)
    rs = getattr(denoiser, "round_sigma", None)
    if round and rs is not None:
        if not callable(rs):
            raise TypeError("denoiser.round_sigma must be callable")
        r = rs(pos)
        if isinstance(r, (list, tuple)):
            r = torch.tensor(r, dtype=torch.float64) if all(isinstance(v, (int, float)) for v in r) else r
        if not isinstance(r, Tensor) or r.numel() != pos.numel() or not r.is_floating_point():
            got = f"dtype {r.dtype}, shape {tuple(r.shape)}" if isinstance(r, Tensor) else type(r).__name__
            raise TypeError(f"denoiser.round_sigma must map a [N] float tensor to a [N] float tensor, got {got}")
        rounded = r.detach().to(device="cpu", dtype=torch.float64).reshape(pos.shape)
        if not bool(torch.isfinite(rounded).all()) or not bool((rounded > 0).all()):
            raise ValueError(
                f"denoiser.round_sigma returned non-positive or non-finite levels {rounded.tolist()} "
                f"for {pos.tolist()}; it must map each level to a nearby positive one"
            )
        if bool((rounded[1:] > rounded[:-1]).any()):
            raise ValueError(
                f"denoiser.round_sigma reversed the order of the levels: {pos.tolist()} -> {rounded.tolist()}; "
                "it must be non-decreasing in sigma"
            )
        pos = rounded
    keep = torch.ones_like(pos, dtype=torch.bool)
    keep[1:] = pos[1:] != pos[:-1]
    out = pos[keep]
    ends_in_zero = bool(s[-1] == 0)
    if ends_in_zero:
        out = torch.cat([out, out.new_zeros(1)])
    out = out.to(dtype=_out_dtype(sigmas))
    check_strict_schedule(
        out, f"clamp_to(sigmas, denoiser) in {out.dtype}", final_zero=ends_in_zero, fix="fit a float32/float64 schedule"
    )
    return out.to(device=sigmas.device if isinstance(sigmas, Tensor) else None)


def _out_dtype(sigmas: object) -> torch.dtype:
    return sigmas.dtype if isinstance(sigmas, Tensor) else torch.float64
