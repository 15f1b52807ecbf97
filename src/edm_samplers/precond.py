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
(float64 stays float64). F's input c_in x is cast to the dtype of its parameters and its output cast back
up, as the paper's code does (so ``heun_sample(..., dtype=torch.float64)`` works with an ordinary float32
network, and a bf16 network with a float32 state); ``net_dtype=torch.bfloat16`` on a float32 network runs
F under ``torch.autocast``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ._network import SigmaLike
from ._network import append_dims as _append_dims
from ._network import check_net_dtype as _check_net_dtype
from ._network import compute_dtype_and_sigma as _compute_dtype_and_sigma
from ._network import net_autocast as _net_autocast
from ._network import net_inputs as _net_inputs
from ._network import net_precision as _net_precision
from ._network import split_variance as _split_variance
from ._validate import check_denoised_on, check_float, check_int
from .scalings import Scalings, edm_scalings, iddpm_scalings, ve_scalings, vp_scalings
from .scalings import cached_iddpm_grid as _cached_grid
from .scalings import checked_sigma as _checked_sigma
from .scalings import edm_coefficients as _edm
from .scalings import iddpm_coefficients as _iddpm
from .scalings import iddpm_index as _iddpm_index
from .scalings import ve_coefficients as _ve
from .scalings import vp_coefficients as _vp
from .schedules import vp_sigma

_NET_SHAPE_FIX = (
    "F must return a tensor of x's shape (for a learned-variance model, use learned_variance=True to drop the "
    "extra channels)"
)

__all__ = [
    "EDMPrecond",
    "Precond",
    "Scalings",
    "VEPrecond",
    "VPPrecond",
    "edm_scalings",
    "iDDPMPrecond",
    "iddpm_scalings",
    "ve_scalings",
    "vp_scalings",
]


# ----------------------------------------------------------------------------------------------
# Module wrappers


class Precond(nn.Module, metaclass=abc.ABCMeta):
    """Base of the preconditioning wrappers: D(x; sigma) = c_skip x + c_out F(c_in x, c_noise, **cond).

    Subclasses define :meth:`scalings`. The wrapped ``net`` is stored as ``self.net`` (a registered
    submodule when it is an ``nn.Module``, so ``parameters()``, ``state_dict()`` (keys ``net.*``),
    ``.to()`` and ``torch.compile`` see it; any other callable is kept as a plain attribute).

    Args:
        net: F(x_in, c_noise, **cond) -> Tensor of x's shape; ``c_noise`` has shape ``[batch]``.
        sigma_min, sigma_max: the valid noise-level range, used by :func:`~edm_samplers.clamp_sigmas`.
        net_dtype: the precision F runs in. None: the dtype of ``net``'s parameters (for an ``nn.Module``;
            F's input and floating ``cond`` tensors are cast to it), else the compute dtype. float16/bfloat16
            on a network with other parameters (or on a plain callable): F runs under ``torch.autocast`` in
            that dtype. F's output is cast back; coefficients and D stay in at least float32.
    """

    net: Callable[..., Any]

    supports_infinite_sigma = False
    """A schedule starting at sigma = inf is refused: c_noise(inf) (ln(sigma) / 4, ln(sigma / 2), the VP time) is
    infinite, and c_out F (c_out = -sigma, sigma, or sigma sigma_data / sqrt(sigma^2 + sigma_data^2) -> sigma_data
    with an infinite noise input) has no usable limit."""
    infinite_sigma_reason = "its network's noise input c_noise(sigma) is infinite there"

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
        _net_precision(net, self.net_dtype)  # an impossible net_dtype fails here, not in the first step

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
        # F's inputs in its parameters' dtype (c_noise at least float32: float16 cannot even represent an iDDPM
        # time such as 999.5), under autocast when net_dtype asks for less (_network.net_precision).
        precision = _net_precision(self.net, self.net_dtype)
        x_in, c_noise, cond = _net_inputs(precision, cdt, x_in, sc.c_noise, cond)
        with _net_autocast(x.device, precision.autocast_dtype):
            f_out = self._call_net(x_in, c_noise, cond)
        # A diffusers model returns an output dataclass (UNet2DOutput.sample); F is its tensor.
        sample = getattr(f_out, "sample", None)
        f = check_denoised_on(sample if isinstance(sample, Tensor) else f_out, x, "net", shape_fix=_NET_SHAPE_FIX)
        return _append_dims(sc.c_skip, x.ndim) * xc + _append_dims(sc.c_out, x.ndim) * f.to(cdt)

    def _call_net(self, x_in: Tensor, c_noise: Tensor, cond: dict[str, Any]) -> Any:
        return self.net(x_in, c_noise, **cond)

    # The steps of forward as hooks, the adapters' names (_adapter.Adapter), for callers that run F themselves
    # (the drop-in diffusers scheduler: the pipeline calls the model). sigma is broadcast to x's ndim; unchecked.
    learned_variance = False
    """F returns x's channels only (the adapters' attribute of the same name)."""

    def model_input(self, x: Tensor, sigma: Tensor) -> Tensor:
        """F's input c_in(sigma) x."""
        return self._scalings_checked_sigma(sigma).c_in * x

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """F's noise input c_noise(sigma)."""
        return self._scalings_checked_sigma(sigma).c_noise

    def to_denoised(self, x: Tensor, sigma: Tensor, out: Tensor) -> Tensor:
        """D = c_skip(sigma) x + c_out(sigma) F from F's output ``out``."""
        sc = self._scalings_checked_sigma(sigma)
        return sc.c_skip * x + sc.c_out * out


class EDMPrecond(Precond):
    """EDM preconditioning (Table 1, right column; Section 5) around a user network F.

    D(x; sigma) = c_skip x + c_out F(c_in x, ln(sigma)/4) with c_skip = sigma_data^2/(sigma^2+sigma_data^2),
    c_out = sigma sigma_data/sqrt(sigma^2+sigma_data^2), c_in = 1/sqrt(sigma^2+sigma_data^2).

    ``prediction="v"`` is the v-prediction form of diffusers' EDM schedulers (``EDMEulerScheduler`` /
    ``EDMDPMSolverMultistepScheduler`` with ``prediction_type="v_prediction"``, e.g. CosXL): c_out changes sign,
    D = c_skip x - c_out F. A diffusers output with ``.sample`` is unwrapped.

    Args:
        net: F(x_in, c_noise, **cond), an ``nn.Module`` (held itself, not copied) or any callable.
        sigma_data: standard deviation of the training data (0.5 for images in [-1, 1]).
        sigma_min, sigma_max: valid range (default: all of (0, inf)).
        net_dtype: run F in this dtype (e.g. ``torch.float16``/``torch.bfloat16``); D stays float32+.
        prediction: "edm" (alias "epsilon", diffusers' name for it): D = c_skip x + c_out F, the paper's form;
            or "v" (alias "v_prediction"): D = c_skip x - c_out F.
    """

    def __init__(
        self,
        net: Callable[..., Any],
        *,
        sigma_data: float = 0.5,
        sigma_min: float = 0.0,
        sigma_max: float = float("inf"),
        net_dtype: torch.dtype | None = None,
        prediction: str = "edm",
    ) -> None:
        super().__init__(net, sigma_min=sigma_min, sigma_max=sigma_max, net_dtype=net_dtype)
        self.sigma_data = check_float(sigma_data, "sigma_data", positive=True)
        if prediction not in ("edm", "epsilon", "v", "v_prediction"):
            raise ValueError(
                f"prediction must be 'edm' (alias 'epsilon': D = c_skip x + c_out F) or 'v' (alias 'v_prediction': "
                f"D = c_skip x - c_out F), got {prediction!r}"
            )
        self.prediction = "v" if prediction in ("v", "v_prediction") else "edm"

    def scalings(self, sigma: Tensor) -> Scalings:
        return self._signed(edm_scalings(sigma, self.sigma_data))

    def _scalings_checked_sigma(self, s: Tensor) -> Scalings:
        return self._signed(_edm(s, self.sigma_data))

    def _signed(self, sc: Scalings) -> Scalings:
        """v-prediction (diffusers' EDM schedulers): D = c_skip x - c_out F."""
        return sc._replace(c_out=-sc.c_out) if self.prediction == "v" else sc


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
    :meth:`round_sigma` maps sigma to that level; round the schedule with
    ``clamp_sigmas(sigmas, denoiser=precond)`` (or build it with :func:`~edm_samplers.iddpm_sigmas`) so the
    sampler's sigmas are the ones F was trained on.

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
