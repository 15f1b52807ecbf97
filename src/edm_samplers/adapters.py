"""Adapters: existing eps-, v- and x0-prediction models (continuous or discrete time) as denoisers.

diffusers models and schedulers: :func:`~edm_samplers.from_diffusers` (:mod:`.diffusers_adapter`) builds a
:class:`DDPMDenoiser` from them.

Every adapter is an ``nn.Module`` denoiser ``D(x, sigma, **cond)`` in EDM's coordinates, x = y + sigma n
(unscaled, so a sampler starts from ``latents * sigma_max``), wrapping the user's model itself (never a copy).

**VP models** (DDPM, DDPM++, ADM, diffusers UNets) see x_t = alpha_t y + sigma_t^VP eps with
alpha_t^2 + (sigma_t^VP)^2 = 1. In EDM coordinates sigma = sigma_t^VP / alpha_t, so
x_t = x / sqrt(1 + sigma^2) (EDM's s(t) = 1/sqrt(1 + sigma^2)), and for discrete models
sigma_t = sqrt((1 - abar_t) / abar_t). With alpha = 1/sqrt(1 + sigma^2):

- eps-prediction: D = x - sigma eps  (Table 1's VP/iDDPM c_skip = 1, c_out = -sigma)
- v-prediction (v = alpha eps - sigma^VP y): D = x / (1 + sigma^2) - sigma / sqrt(1 + sigma^2) v
- x0 ("sample") prediction: D = the output

**VE models** (NCSN++) see x itself (s = 1); eps- and x0-prediction as above (v is a VP notion).

The time input of a discrete model is a fractional timestep obtained by linear interpolation of
log sigma_t between trained steps (``timestep="interpolate"``, k-diffusion's and diffusers' convention),
or the nearest trained step in log sigma (``timestep="quantize"``; then :meth:`DDPMDenoiser.round_sigma`
returns that step's sigma so :func:`~edm_samplers.clamp_sigmas` (``denoiser=``) can round a schedule). The input
scaling always uses the sigma the sampler asked for. See docs/adapters.md for diffusers' conventions.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ._network import append_dims as _append_dims
from ._network import as_sigma as _as_sigma
from ._network import check_net_dtype as _check_net_dtype
from ._network import compute_dtype_and_sigma as _compute_dtype_and_sigma
from ._network import net_dtype_of as _net_dtype
from ._network import split_variance as _split_variance
from ._validate import check_flag, check_float
from .schedules import vp_sigma, vp_sigma_inv

__all__ = ["ContinuousDenoiser", "DDPMDenoiser", "sigmas_from_alphas_cumprod"]

Prediction = Literal["eps", "v", "x0"]
_PREDICTION_ALIASES: dict[str, Prediction] = {
    "eps": "eps",
    "epsilon": "eps",
    "v": "v",
    "v_prediction": "v",
    "x0": "x0",
    "sample": "x0",
}


def _check_prediction(prediction: object) -> Prediction:
    if not isinstance(prediction, str) or prediction not in _PREDICTION_ALIASES:
        raise ValueError(
            f"prediction must be one of 'eps' (alias 'epsilon'), 'v' ('v_prediction') or 'x0' ('sample'), "
            f"got {prediction!r}"
        )
    return _PREDICTION_ALIASES[prediction]


def _unwrap_output(out: object) -> object:
    # diffusers models return a dataclass with .sample (UNet2DOutput) or a tuple with return_dict=False.
    if isinstance(out, Tensor):
        return out
    sample = getattr(out, "sample", None)
    if isinstance(sample, Tensor):
        return sample
    if isinstance(out, (tuple, list)) and len(out) > 0:
        return out[0]
    return out


class _Adapter(nn.Module, metaclass=abc.ABCMeta):
    """Shared forward: scale x, map sigma to the model's time, call, check, convert the prediction to D."""

    model: Callable[..., Any]

    def __init__(
        self,
        model: Callable[..., Any],
        *,
        prediction: str,
        vp: bool,
        sigma_min: float,
        sigma_max: float,
        learned_variance: bool,
        net_dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(
                f"model must be an nn.Module or a callable model(x_t, t, **cond), got {type(model).__name__}"
            )
        self.model = model
        self.prediction: Prediction = _check_prediction(prediction)
        if self.prediction == "v" and not vp:
            raise ValueError(
                "prediction='v' needs a VP model (v = alpha eps - sigma_VP y); use parameterization='vp' "
                "or an 'eps'/'x0' prediction"
            )
        self.vp = vp
        self.sigma_min = check_float(sigma_min, "sigma_min", nonnegative=True)
        self.sigma_max = check_float(sigma_max, "sigma_max", positive=True, allow_inf=True)
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"sigma_min must be < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        self.learned_variance = check_flag(learned_variance, "learned_variance")
        self.net_dtype = _check_net_dtype(net_dtype)

    @abc.abstractmethod
    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """The model's time input for noise levels ``sigma``."""

    def round_sigma(self, sigma: Tensor | float) -> Tensor:
        """Identity: the model accepts any sigma in its range."""
        return _as_sigma(sigma)

    def forward(self, x: Tensor, sigma: Tensor | float, **cond: Any) -> Tensor:
        """D(x; sigma) for x ``[batch, ...]`` and sigma ``[batch]`` or a scalar; computed in >= float32.

        The steps are hooks a model family overrides: :meth:`model_input` (x to the model's x_t),
        :meth:`sigma_to_t` (its time input), :meth:`call_model` (the call itself) and :meth:`to_denoised`
        (its prediction to D).
        """
        cdt, s = _compute_dtype_and_sigma(x, sigma)
        xc = x.to(cdt)
        sb = _append_dims(s, x.ndim)
        x_in = self.model_input(xc, sb)
        t = self.sigma_to_t(s).to(cdt)
        ndt = _net_dtype(self.model, self.net_dtype)
        if ndt is not None and ndt != cdt:
            x_in = x_in.to(ndt)
            # The time input stays at least float32: float16 cannot even represent t = 999.5.
            t = t.to(torch.promote_types(ndt, torch.float32))
        out = self.call_model(x_in, t, cond)
        if self.learned_variance:
            out = _split_variance(out, x.shape, "model")
        if out.shape != x.shape:
            raise ValueError(
                f"model returned shape {tuple(out.shape)} for an input of shape {tuple(x.shape)}; its prediction "
                "must have x's shape (pass learned_variance=True if it returns mean and variance channels)"
            )
        if not out.is_floating_point():
            raise TypeError(f"model must return a floating-point tensor, got dtype {out.dtype}")
        return self.to_denoised(xc, sb, out.to(cdt))

    def model_input(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The model's input x_t for the state ``x`` at ``sigma`` (broadcast to x's ndim):
        x / sqrt(1 + sigma^2) for a VP model, x for a VE one."""
        return x * torch.rsqrt(sigma**2 + 1) if self.vp else x

    def call_model(self, x_in: Tensor, t: Tensor, cond: dict[str, Any]) -> Tensor:
        """Call the model on its input and time; unwrap a diffusers output (``.sample``) or a tuple."""
        out = _unwrap_output(self.model(x_in, t, **cond))
        if not isinstance(out, Tensor):
            raise TypeError(f"model must return a torch.Tensor (or an output with .sample), got {type(out).__name__}")
        return out

    def to_denoised(self, x: Tensor, sigma: Tensor, out: Tensor) -> Tensor:
        """D from the model's prediction ``out`` (in x's compute dtype) for the state ``x`` at ``sigma``."""
        if self.prediction == "eps":
            return x - sigma * out
        if self.prediction == "x0":
            return out
        # v = alpha eps - sigma_VP y, alpha = 1/sqrt(1+sigma^2), sigma_VP = sigma alpha, x_t = alpha x:
        # y = alpha x_t - sigma_VP v = x / (1 + sigma^2) - sigma / sqrt(1 + sigma^2) v.
        return x / (1 + sigma**2) - sigma * torch.rsqrt(1 + sigma**2) * out


class ContinuousDenoiser(_Adapter):
    """A continuous-time model (Song et al. 2021 style) predicting eps, v or x0, as a denoiser.

    ``model(x_t, t, **cond)`` is called with x_t = x / sqrt(1 + sigma^2) for ``parameterization="vp"`` or
    x_t = x for ``"ve"``, and t = ``time_fn(sigma)``: by default the VP time
    t = sigma^-1(sigma) = (sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)) - beta_min) / beta_d in [0, 1] for VP,
    and t = sigma for VE (NCSN++ conditions on sigma; pass ``time_fn=lambda s: torch.log(s / 2)`` etc.).

    Args:
        model: the network (nn.Module, held itself) or any callable.
        prediction: "eps", "v" (VP only) or "x0".
        parameterization: "vp" or "ve".
        time_fn: sigma ``[batch]`` -> the model's time input ``[batch]``; see above for the default.
        beta_d, beta_min: VP schedule constants for the default ``time_fn`` and range (19.9, 0.1).
        sigma_min, sigma_max: valid range; default VP: sigma(1e-5) .. sigma(1); VE: 0.02 .. 100.
        learned_variance: the model returns 2C channels on dim 1; keep the first C.
        net_dtype: run the model in this dtype; D is computed in at least float32.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        *,
        prediction: str = "eps",
        parameterization: Literal["vp", "ve"] = "vp",
        time_fn: Callable[[Tensor], Tensor] | None = None,
        beta_d: float = 19.9,
        beta_min: float = 0.1,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        learned_variance: bool = False,
        net_dtype: torch.dtype | None = None,
    ) -> None:
        if parameterization not in ("vp", "ve"):
            raise ValueError(f"parameterization must be 'vp' or 've', got {parameterization!r}")
        if time_fn is not None and not callable(time_fn):
            raise TypeError("time_fn must be a callable mapping sigma [batch] to the model's time input")
        bd = check_float(beta_d, "beta_d", positive=True)
        bm = check_float(beta_min, "beta_min", nonnegative=True)
        vp = parameterization == "vp"
        if vp:
            lo_d = float(vp_sigma(torch.tensor(1e-5, dtype=torch.float64), bd, bm))
            hi_d = float(vp_sigma(torch.tensor(1.0, dtype=torch.float64), bd, bm))
        else:
            lo_d, hi_d = 0.02, 100.0
        super().__init__(
            model,
            prediction=prediction,
            vp=vp,
            sigma_min=lo_d if sigma_min is None else sigma_min,
            sigma_max=hi_d if sigma_max is None else sigma_max,
            learned_variance=learned_variance,
            net_dtype=net_dtype,
        )
        self.beta_d, self.beta_min = bd, bm
        self.time_fn = time_fn

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """The model's time input for noise level(s) sigma."""
        if self.time_fn is not None:
            return self.time_fn(sigma)
        return vp_sigma_inv(sigma, self.beta_d, self.beta_min) if self.vp else sigma


def sigmas_from_alphas_cumprod(alphas_cumprod: object) -> Tensor:
    """sigma_t = sqrt((1 - abar_t) / abar_t) (float64) after validating ``alphas_cumprod``.

    A tensor keeps its own precision (float32 values are widened exactly); a sequence of Python numbers or a
    NumPy array is read directly in float64. The last entry may be exactly 0 (zero terminal SNR,
    ``rescale_betas_zero_snr=True``): its sigma is ``inf``.

    Raises:
        TypeError / ValueError: unless ``alphas_cumprod`` is a 1-D sequence of at least 2 finite values in
            (0, 1] (the last one in [0, 1]), strictly decreasing.
    """
    try:
        if isinstance(alphas_cumprod, Tensor):
            if alphas_cumprod.is_complex() or alphas_cumprod.dtype == torch.bool:
                raise TypeError(f"got dtype {alphas_cumprod.dtype}")
            a = alphas_cumprod.detach().to(device="cpu", dtype=torch.float64)
        else:
            # Straight to float64: torch.as_tensor would read Python floats as float32 first (abar_0 = 1 - 1e-10
            # would become 1, sigma_0 = 1e-5 would become 0).
            a = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError, NotImplementedError) as e:
        raise TypeError(f"alphas_cumprod must be a 1-D tensor or sequence of numbers: {e}") from None
    if a.ndim != 1 or a.numel() < 2:
        raise ValueError(f"alphas_cumprod must be 1-D with at least 2 entries, got shape {tuple(a.shape)}")
    # Zero terminal SNR: abar_{T-1} = 0 exactly (sigma = inf, pure noise); anywhere else 0 is an error.
    if not bool(torch.isfinite(a).all()) or bool((a[:-1] <= 0).any()) or bool(a[-1] < 0) or bool((a > 1).any()):
        raise ValueError(
            f"alphas_cumprod must lie in (0, 1] (abar_t = prod_s (1 - beta_s); only the last entry may be 0, zero "
            f"terminal SNR), got min {a.min().item()}, max {a.max().item()}"
        )
    if bool((a[1:] >= a[:-1]).any()):
        i = int(torch.nonzero(a[1:] >= a[:-1])[0])
        raise ValueError(
            f"alphas_cumprod must be strictly decreasing in t (noise grows with t), but alphas_cumprod[{i + 1}] = "
            f"{a[i + 1].item()} >= alphas_cumprod[{i}] = {a[i].item()}; pass the cumulative product of (1 - betas)"
        )
    return torch.sqrt((1 - a) / a)


class DDPMDenoiser(_Adapter):
    """A discrete-time DDPM-style model given its ``alphas_cumprod``, as a denoiser.

    Trained steps t = 0 .. T-1 have sigma_t = sqrt((1 - abar_t) / abar_t). The model is called as
    ``model(x / sqrt(1 + sigma^2), t, **cond)`` with t from :meth:`sigma_to_t`.

    Zero terminal SNR (``abar_{T-1} = 0``, e.g. diffusers' ``rescale_betas_zero_snr=True``): the last level is
    sigma = inf (``sigma_max = inf``) and maps to t = T-1; a finite sigma above the last finite level maps to
    t = T-2 (the model was trained at no level in between).

    Args:
        model: the network (nn.Module, held itself) or any callable; an output with ``.sample`` (diffusers)
            or a tuple is unwrapped.
        alphas_cumprod: ``[T]`` cumulative products abar_t, strictly decreasing in (0, 1] (the last may be 0).
        prediction: "eps" ("epsilon"), "v" ("v_prediction") or "x0" ("sample").
        timestep: "interpolate" (fractional t, linear in log sigma between trained steps), "linear" (fractional
            t, linear in sigma: the inverse of diffusers' ``np.interp`` of sigmas at fractional timesteps, used by
            its Euler/Heun/LMS schedulers without Karras sigmas) or "quantize" (nearest trained step in log sigma,
            an integer-valued float).
        learned_variance: the model returns 2C channels on dim 1 (mean and variance); keep the first C.
        net_dtype: run the model in this dtype; D is computed in at least float32.

    Attributes:
        sigma_min, sigma_max: the smallest positive and the largest trained sigma_t (inf at zero terminal SNR).
        sigmas: ``[T]`` float64 trained levels (a non-persistent buffer; not in ``state_dict()``).
    """

    sigmas: Tensor
    log_sigmas: Tensor

    def __init__(
        self,
        model: Callable[..., Any],
        alphas_cumprod: object,
        *,
        prediction: str = "eps",
        timestep: Literal["interpolate", "linear", "quantize"] = "interpolate",
        learned_variance: bool = False,
        net_dtype: torch.dtype | None = None,
    ) -> None:
        sig = sigmas_from_alphas_cumprod(alphas_cumprod)
        if timestep not in ("interpolate", "linear", "quantize"):
            raise ValueError(f"timestep must be 'interpolate', 'linear' or 'quantize', got {timestep!r}")
        # abar_0 may be exactly 1 (sigma_0 = 0, log = -inf): only positive levels take part in the mapping;
        # abar_{T-1} may be 0 (sigma = inf): only finite levels take part in the interpolation.
        k0 = int((sig == 0).sum())
        finite = int(torch.isfinite(sig).sum())
        if finite - k0 < 2:
            raise ValueError("alphas_cumprod must have at least 2 entries in (0, 1) (two positive finite noise levels)")
        super().__init__(
            model,
            prediction=prediction,
            vp=True,
            sigma_min=float(sig[k0]),
            sigma_max=float(sig[-1]),
            learned_variance=learned_variance,
            net_dtype=net_dtype,
        )
        self.timestep = timestep
        self.t_offset = k0
        self.register_buffer("sigmas", sig, persistent=False)
        self.register_buffer("log_sigmas", torch.log(sig[k0:finite]), persistent=False)

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Timestep(s) for sigma: fractional (log-sigma or sigma interpolation) or the nearest trained step.

        Out-of-range sigmas map to the end steps (0 / T-1); sigma = inf maps to T-1. Computed in float64; no
        host sync.
        """
        ls = self.log_sigmas.to(device=sigma.device, dtype=torch.float64)
        s64 = sigma.to(torch.float64)
        # Capped at the last finite level (no sync): an infinite or larger sigma maps to the last finite step in
        # every mode (the nearest level of an infinite log sigma would otherwise be the first).
        log_s = torch.minimum(torch.log(s64.clamp_min(1e-30)), ls[-1])
        n = ls.numel()
        if self.timestep == "quantize":
            t = torch.argmin(torch.abs(log_s.unsqueeze(-1) - ls), dim=-1).to(torch.float64)
        elif self.timestep == "linear":
            sg = torch.exp(ls)
            low = (torch.searchsorted(sg, s64.contiguous(), right=True) - 1).clamp(0, n - 2)
            lo, hi = sg[low], sg[low + 1]
            t = low.to(torch.float64) + ((s64 - lo) / (hi - lo)).clamp(0, 1)
        else:
            low = (torch.searchsorted(ls, log_s.contiguous(), right=True) - 1).clamp(0, n - 2)
            lo, hi = ls[low], ls[low + 1]
            t = low.to(torch.float64) + ((log_s - lo) / (hi - lo)).clamp(0, 1)
        t = t + self.t_offset
        if self.t_offset + n < self.sigmas.numel():  # zero terminal SNR: the infinite level is step T-1
            t = torch.where(torch.isinf(s64), torch.full_like(t, self.sigmas.numel() - 1), t)
        return t

    def round_sigma(self, sigma: Tensor | float) -> Tensor:
        """With ``timestep="quantize"``: sigma of the nearest trained step (in log sigma); else the identity."""
        s = _as_sigma(sigma)
        if self.timestep != "quantize":
            return s
        t = self.sigma_to_t(s).to(torch.int64)
        return self.sigmas.to(device=s.device, dtype=s.dtype)[t]
