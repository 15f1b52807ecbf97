"""The adapters' shared base: one forward for every wrapped model, with hooks a model family overrides.

:class:`Adapter` scales x, maps sigma to the model's time, calls the model (keyword rule or a ``call`` hook),
checks its output and converts the prediction (eps, v or x0) to D; the formulas are in :mod:`.adapters`'
docstring. Also here: the prediction and learned-variance options (:data:`ModelCall`, :data:`LearnedVariance`,
:func:`learned_variance_for`), re-exported from :mod:`edm_samplers.adapters`. The concrete adapters are
:mod:`.adapters` (continuous and DDPM time) and :mod:`.flow` (flow matching).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ._network import append_dims as _append_dims
from ._network import as_sigma as _as_sigma
from ._network import call_by_signature as _call_by_signature
from ._network import check_net_dtype as _check_net_dtype
from ._network import compute_dtype_and_sigma as _compute_dtype_and_sigma
from ._network import net_autocast as _net_autocast
from ._network import net_inputs as _net_inputs
from ._network import net_precision as _net_precision
from ._network import split_variance as _split_variance
from ._network import time_keyword_of as _time_keyword_of
from ._network import unwrap_output as _unwrap_output
from ._validate import check_float

__all__ = ["Adapter", "LearnedVariance", "ModelCall", "Prediction", "learned_variance_for"]

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


ModelCall = Callable[[Any, Tensor, Tensor, dict[str, Any]], Any]
"""A call hook ``call(model, x_t, t, cond) -> output`` for a model the keyword rule does not fit."""

LearnedVariance = bool | Literal["auto"]


def _check_learned_variance(value: object) -> LearnedVariance:
    if isinstance(value, str) and value == "auto":
        return "auto"
    if not isinstance(value, bool):
        raise TypeError(
            f"learned_variance must be True or False, got {type(value).__name__} {value!r} (or 'auto': keep the "
            "first half of an output with twice x's channels)"
        )
    return value


def _model_channels(model: object) -> tuple[int, int] | None:
    """(in_channels, out_channels) from a diffusers model's config (out_channels None means in_channels)."""
    cfg = getattr(getattr(model, "_orig_mod", model), "config", None)
    if not isinstance(cfg, Mapping):
        return None
    c_in, c_out = cfg.get("in_channels"), cfg.get("out_channels")
    if c_out is None:
        c_out = c_in
    if isinstance(c_in, bool) or isinstance(c_out, bool) or not isinstance(c_in, int) or not isinstance(c_out, int):
        return None
    return c_in, c_out


def learned_variance_for(model: object, scheduler_variance_type: object) -> LearnedVariance:
    """Whether a diffusers model returns mean and variance channels, decided without calling it.

    The model's config decides when it can: ``out_channels == 2 * in_channels`` (DiT, PixArt-alpha, IF, ADM:
    learned sigma, whatever the scheduler says: DiT ships a DDIMScheduler, which has no variance_type) or
    ``out_channels == in_channels`` (no variance). Otherwise the scheduler's ``variance_type``
    ("learned"/"learned_range") decides, and without either, "auto" (split an output with twice x's channels,
    which a diffusers pipeline does too).

    Raises:
        ValueError: the scheduler says learned but the model's config has as many output as input channels.
    """
    sched_learned = scheduler_variance_type in ("learned", "learned_range")
    ch = _model_channels(model)
    if ch is not None and ch[1] == 2 * ch[0]:
        return True
    if ch is not None and ch[1] == ch[0]:
        if sched_learned:
            raise ValueError(
                f"the scheduler has variance_type={scheduler_variance_type!r} (learned variance) but the model has "
                f"out_channels == in_channels == {ch[0]}, so it returns no variance channels; pass "
                "learned_variance=False (or True) to from_diffusers to say which is right"
            )
        return False
    return True if sched_learned else "auto"


class Adapter(nn.Module, metaclass=abc.ABCMeta):
    """Shared forward: scale x, map sigma to the model's time, call, check, convert the prediction to D."""

    model: Callable[..., Any]
    call: ModelCall | None

    def __init__(
        self,
        model: Callable[..., Any],
        *,
        prediction: str,
        vp: bool,
        sigma_min: float,
        sigma_max: float,
        learned_variance: LearnedVariance,
        net_dtype: torch.dtype | None,
        call: ModelCall | None = None,
    ) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(
                f"model must be an nn.Module or a callable model(x_t, t, **cond), got {type(model).__name__}"
            )
        if call is not None and not callable(call):
            raise TypeError(
                f"call must be None or a function call(model, x_t, t, cond) -> output, got {type(call).__name__}"
            )
        self.model = model
        # A plain attribute, not a submodule: a hook is code, and its parameters (if any) are the model's.
        object.__setattr__(self, "call", call)
        # The model's signature is read once here, not per call.
        self.time_keyword: str | None = None if call is not None else _time_keyword_of(model)
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
        self.learned_variance: LearnedVariance = _check_learned_variance(learned_variance)
        self.net_dtype = _check_net_dtype(net_dtype)
        _net_precision(model, self.net_dtype)  # an impossible net_dtype fails here, not in the first step

    @abc.abstractmethod
    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """The model's time input for noise levels ``sigma``."""

    @property
    def supports_infinite_sigma(self) -> bool:
        """Whether D(x; inf) is defined (x = unit noise there): VP models predicting v or x0.

        The samplers read it once at entry for a schedule starting at sigma = inf; a subclass (another model
        family) overrides it together with :meth:`model_input` and :meth:`to_denoised`."""
        return self.vp and self.prediction != "eps"

    @property
    def infinite_sigma_reason(self) -> str:
        """Why :attr:`supports_infinite_sigma` is False (for the samplers' error message)."""
        if not self.vp:
            return "a VE model sees x itself, which is infinite at sigma = inf"
        if self.prediction == "eps":
            return "an eps-prediction cannot give the data at zero SNR: D = x - sigma eps has no limit"
        return ""

    def round_sigma(self, sigma: Tensor | float) -> Tensor:
        """Identity: the model accepts any sigma in its range."""
        return _as_sigma(sigma)

    def forward(self, x: Tensor, sigma: Tensor | float, **cond: Any) -> Tensor:
        """D(x; sigma) for x ``[batch, ...]`` and sigma ``[batch]`` or a scalar; computed in >= float32.

        The steps are hooks a model family overrides: :meth:`model_input` (x to the model's x_t),
        :meth:`sigma_to_t` (its time input), :meth:`call_model` (the call itself) and :meth:`to_denoised`
        (its prediction to D).
        """
        cdt, s = _compute_dtype_and_sigma(x, sigma, allow_inf=self.supports_infinite_sigma)
        xc = x.to(cdt)
        sb = _append_dims(s, x.ndim)
        x_in = self.model_input(xc, sb)
        t = self.sigma_to_t(s).to(cdt)
        precision = _net_precision(self.model, self.net_dtype)
        x_in, t, cond = _net_inputs(precision, cdt, x_in, t, cond)
        with _net_autocast(x.device, precision.autocast_dtype):
            out = self.call_model(x_in, t, cond)
        lv = self.learned_variance
        # "auto" decides on the static output shape (no host sync): twice x's channels is mean and variance.
        if lv is True or (lv == "auto" and out.shape != x.shape and out.ndim >= 2 and out.shape[1] == 2 * x.shape[1]):
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
        x / sqrt(1 + sigma^2) for a VP model, x for a VE one; at sigma = inf (x = unit noise) its limit x."""
        if not self.vp:
            return x
        scaled = x * torch.rsqrt(sigma**2 + 1)
        # A where, not a branch: no sync; finite rows get exactly the scaled value.
        return torch.where(torch.isinf(sigma), x, scaled) if self.supports_infinite_sigma else scaled

    def call_model(self, x_in: Tensor, t: Tensor, cond: dict[str, Any]) -> Tensor:
        """Call the model on its input, time and conditioning; unwrap a diffusers output (``.sample``) or a tuple.

        With a ``call`` hook: ``call(model, x_t, t, cond)``. Otherwise ``model(x_t, t, **cond)``, or
        ``model(x_t, timestep=t, **cond)`` for a model whose signature has ``timestep`` elsewhere than 2nd
        (:attr:`time_keyword`, read from the signature at construction).
        """
        hook: ModelCall | None = self.call
        if hook is not None:
            return _unwrap_output(hook(self.model, x_in, t, cond))
        return _call_by_signature(self.model, x_in, t, cond, self.time_keyword)

    def to_denoised(self, x: Tensor, sigma: Tensor, out: Tensor) -> Tensor:
        """D from the model's prediction ``out`` (in x's compute dtype) for the state ``x`` at ``sigma``."""
        if self.prediction == "eps":
            return x - sigma * out
        if self.prediction == "x0":
            return out
        # v = alpha eps - sigma_VP y, alpha = 1/sqrt(1+sigma^2), sigma_VP = sigma alpha, x_t = alpha x:
        # y = alpha x_t - sigma_VP v = x / (1 + sigma^2) - sigma / sqrt(1 + sigma^2) v; at sigma = inf: -v.
        d = x / (1 + sigma**2) - sigma * torch.rsqrt(1 + sigma**2) * out
        return torch.where(torch.isinf(sigma), -out, d)
