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

**At sigma = inf** (a schedule starting from pure noise; docs/api.md) the state x is the unit noise n, the limit of
x / sigma, and a VP model's input x / sqrt(1 + sigma^2) tends to n: the adapters feed n itself there
(``model_input``) and take D's limit (``to_denoised``): x0-prediction D = the output, v-prediction D = -v
(alpha = 0, sigma_VP = 1 at zero SNR). eps-prediction cannot recover the data at zero SNR (D = x - sigma eps has no
limit) and VE models see x itself (infinite): those adapters say ``supports_infinite_sigma = False`` and the
samplers refuse an infinite first level for them. A discrete model is evaluated at its last trained step there.

The time input of a discrete model is a fractional timestep obtained by linear interpolation of
log sigma_t between trained steps (``timestep="interpolate"``, k-diffusion's and diffusers' convention),
or the nearest trained step in log sigma (``timestep="quantize"``; then :meth:`DDPMDenoiser.round_sigma`
returns that step's sigma so :func:`~edm_samplers.clamp_sigmas` (``denoiser=``) can round a schedule). The input
scaling always uses the sigma the sampler asked for. See docs/adapters.md for diffusers' conventions.

The forward these formulas describe (input scaling, the model call, the prediction-to-D conversion) is shared by
every adapter: :class:`._adapter.Adapter`, with ``ModelCall``, ``LearnedVariance`` and ``learned_variance_for``
(re-exported here). This module holds the continuous- and discrete-time adapters; :mod:`.flow` the flow-matching
one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from ._adapter import Adapter
from ._adapter import LearnedVariance as LearnedVariance
from ._adapter import ModelCall as ModelCall
from ._adapter import Prediction as Prediction
from ._adapter import learned_variance_for as learned_variance_for
from ._network import as_sigma as _as_sigma
from ._validate import check_float
from .schedules import vp_sigma, vp_sigma_inv

__all__ = ["ContinuousDenoiser", "DDPMDenoiser", "sigmas_from_alphas_cumprod"]


class ContinuousDenoiser(Adapter):
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
        learned_variance: the model returns 2C channels on dim 1; keep the first C. "auto": do so when the
            output has twice x's channels (a static shape test).
        net_dtype: the precision the model runs in; see :class:`DDPMDenoiser`.
        call: a hook ``call(model, x_t, t, cond) -> output`` replacing the default call; see
            :class:`DDPMDenoiser`.
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
        learned_variance: LearnedVariance = False,
        net_dtype: torch.dtype | None = None,
        call: ModelCall | None = None,
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
            call=call,
        )
        self.beta_d, self.beta_min = bd, bm
        self.time_fn = time_fn

    @property
    def supports_infinite_sigma(self) -> bool:
        """VP, v or x0 prediction, and a ``time_fn`` (the default VP time sigma^-1(inf) is infinite)."""
        return self.vp and self.prediction != "eps" and self.time_fn is not None

    @property
    def infinite_sigma_reason(self) -> str:
        if self.vp and self.prediction != "eps" and self.time_fn is None:
            return "the default VP time sigma^-1(inf) is infinite: pass time_fn giving a finite time at sigma = inf"
        return super().infinite_sigma_reason

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


class DDPMDenoiser(Adapter):
    """A discrete-time DDPM-style model given its ``alphas_cumprod``, as a denoiser.

    Trained steps t = 0 .. T-1 have sigma_t = sqrt((1 - abar_t) / abar_t). The model is called as
    ``model(x / sqrt(1 + sigma^2), t, **cond)`` with t from :meth:`sigma_to_t`; a model whose signature has
    ``timestep`` elsewhere than 2nd (PixArt, SD3, Flux, Sana: ``forward(hidden_states, encoder_hidden_states,
    timestep, ...)``) gets ``timestep=t`` by name, decided once from its signature (:attr:`time_keyword`).
    Conditioning (``encoder_hidden_states``, ``class_labels``, ``added_cond_kwargs``, attention masks) is
    passed through by keyword from the denoiser's ``**cond``.

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
            "auto": do so when the output has twice x's channels (a static shape test, no sync).
        net_dtype: the precision the model runs in. None: the dtype of its parameters (a bf16 model gets bf16
            inputs from a float32 or float64 state). float16/bfloat16 on a model with other parameters: the
            call runs under ``torch.autocast`` in that dtype (on x's device type). The inputs, the time
            (at least float32) and every floating tensor in ``cond`` go in the parameters' dtype; the output
            comes back in the state's compute dtype (>= float32), where D is formed.
        call: a hook ``call(model, x_t, t, cond) -> output`` for a model the default call does not fit
            (say, one that takes its time as ``sigma`` or needs extra channels concatenated to x_t); its output
            is unwrapped and checked as the model's.

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
        learned_variance: LearnedVariance = False,
        net_dtype: torch.dtype | None = None,
        call: ModelCall | None = None,
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
            call=call,
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
