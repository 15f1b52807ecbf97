"""What every wrapper around a network shares (preconditioners, adapters, guidance): sigma as a tensor, the
compute dtype and the ``[batch]`` sigma at entry, broadcasting, the precision the network runs in, calling it
(time by keyword where its signature needs it, diffusers outputs unwrapped), and the learned-variance split.
Private to the package; the names are public within it."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ._validate import check_nonnegative_values

__all__ = [
    "NetPrecision",
    "SigmaLike",
    "append_dims",
    "as_sigma",
    "call_by_signature",
    "cast_floats",
    "check_net_dtype",
    "compute_dtype_and_sigma",
    "net_autocast",
    "net_dtype_of",
    "net_inputs",
    "net_precision",
    "param_dtype_of",
    "split_variance",
    "time_keyword_of",
    "unwrap_output",
]

SigmaLike = Tensor | float

_FORWARD_FIX = (
    "a denoiser is evaluated at sigma > 0 only (D(x; 0) = x needs no network: the samplers' last step to 0 "
    "does not call it)"
)


def as_sigma(sigma: SigmaLike) -> Tensor:
    if isinstance(sigma, Tensor):
        if not sigma.is_floating_point():
            raise TypeError(f"sigma must be a floating-point tensor, got dtype {sigma.dtype}")
        return sigma
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma must be a tensor or a real number, got {type(sigma).__name__} {sigma!r}")
    return torch.tensor(float(sigma), dtype=torch.float64)


def check_net_dtype(net_dtype: object) -> torch.dtype | None:
    if net_dtype is None:
        return None
    if not isinstance(net_dtype, torch.dtype) or not net_dtype.is_floating_point:
        raise TypeError(f"net_dtype must be None or a floating torch.dtype such as torch.bfloat16, got {net_dtype!r}")
    return net_dtype


def net_dtype_of(net: object, net_dtype: torch.dtype | None) -> torch.dtype | None:
    """``net_dtype`` if given, else the dtype of an ``nn.Module``'s first floating parameter, else None.
    (Kept for callers outside the wrappers; the wrappers use :func:`net_precision`.)"""
    return net_dtype if net_dtype is not None else param_dtype_of(net)


def param_dtype_of(net: object) -> torch.dtype | None:
    """The dtype of an ``nn.Module``'s first floating parameter, else None (a plain callable)."""
    if isinstance(net, nn.Module):
        for p in net.parameters():
            if p.is_floating_point():
                return p.dtype
    return None


_AUTOCAST_DTYPES = (torch.float16, torch.bfloat16)


class NetPrecision(NamedTuple):
    """How a wrapper runs its network: inputs cast to ``input_dtype`` (None: left in the compute dtype), the
    call made under ``torch.autocast(x.device.type, autocast_dtype)`` (None: no autocast)."""

    input_dtype: torch.dtype | None
    autocast_dtype: torch.dtype | None


def net_precision(net: object, net_dtype: torch.dtype | None) -> NetPrecision:
    """The precision rule shared by every wrapper (adapters and preconditioners).

    - The inputs go in the dtype of the network's parameters when it is an ``nn.Module`` (a bf16 model gets
      bf16 inputs from a float32 state), else in ``net_dtype``, else in the compute dtype.
    - ``net_dtype`` float16/bfloat16 that differs from the parameters' dtype (or on a plain callable, whose
      parameters are not visible) runs the call under ``torch.autocast``: a float32 model computes its
      matmuls and convolutions in bf16 with float32 weights, where a mere input cast failed inside the network.
    - ``net_dtype`` float32/float64 different from the parameters' dtype cannot be autocast (autocast only
      lowers precision) and is a ValueError naming the fix.

    The output is always cast back to the compute dtype by the caller.
    """
    param = param_dtype_of(net)
    if net_dtype is None or net_dtype == param:
        return NetPrecision(param, None)
    if net_dtype not in _AUTOCAST_DTYPES:
        if param is None:
            return NetPrecision(net_dtype, None)
        raise ValueError(
            f"net_dtype={net_dtype} but the model's parameters are {param}: only float16/bfloat16 can be applied by "
            f"autocast; convert the model itself (model.to({net_dtype})) or pass net_dtype=None"
        )
    return NetPrecision(param if param is not None else net_dtype, net_dtype)


def net_autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` on ``device``'s type in ``dtype``, or a no-op for None.

    The weight-cast cache is off: CUDA-graph capture requires it (torch.cuda.graph's notes), and a denoiser
    call is one forward, so the cache saves only repeated casts of a weight used twice in it.
    """
    if dtype is None:
        return contextlib.nullcontext()
    if not torch.amp.is_autocast_available(device.type):
        raise ValueError(
            f"net_dtype={dtype} runs the network under torch.autocast, which is not available on device type "
            f"{device.type!r}; convert the model itself (model.to({dtype})) and pass net_dtype=None"
        )
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=False)


def cast_floats(obj: Any, dtype: torch.dtype | None) -> Any:
    """``obj`` with every floating tensor (also inside dicts, lists and tuples, e.g. diffusers'
    ``added_cond_kwargs``) cast to ``dtype``; integer and bool tensors and other values unchanged. A diffusers
    pipeline casts its conditioning to the model's dtype the same way (prompt embeddings, SDXL time ids)."""
    if dtype is None:
        return obj
    if isinstance(obj, Tensor):
        return obj.to(dtype) if obj.is_floating_point() and obj.dtype != dtype else obj
    if isinstance(obj, Mapping):
        return {k: cast_floats(v, dtype) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a NamedTuple takes its fields as arguments
        return type(obj)(*(cast_floats(v, dtype) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(cast_floats(v, dtype) for v in obj)
    return obj


def net_inputs(
    precision: NetPrecision, compute_dtype: torch.dtype, x_in: Tensor, t: Tensor, cond: Mapping[str, Any]
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """The network's input, time and conditioning in ``precision.input_dtype``. The time input stays at least
    float32 (float16 cannot even represent t = 999.5; diffusers' time embeddings cast their own output)."""
    ndt = precision.input_dtype
    if ndt is None:
        return x_in, t, dict(cond)
    if ndt != compute_dtype:
        x_in = x_in.to(ndt)
        t = t.to(torch.promote_types(ndt, torch.float32))
    return x_in, t, cast_floats(dict(cond), ndt)


# The names diffusers models give their time input (``timestep``; HiDream's ``timesteps``).
_TIME_NAMES = ("timestep", "timesteps")
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_BY_NAME = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def time_keyword_of(model: object) -> str | None:
    """The keyword to pass a model's time input by, or None to pass it as the 2nd positional argument.

    Read once from the signature (of ``forward`` for an ``nn.Module``; of the ``torch.compile``-d module's
    original): a parameter named ``timestep``/``timesteps`` that is not already the 2nd positional one is
    passed by name. So ``PixArtTransformer2DModel.forward(hidden_states, encoder_hidden_states, timestep, ...)``
    (also SD3, Flux, Sana, AuraFlow, CogVideoX) gets ``timestep=t``, while ``UNet2DModel``,
    ``UNet2DConditionModel``, ``DiTTransformer2DModel`` and any ``f(x, t, **cond)`` get t positionally. A
    signature that cannot be read (a C function) means positional.
    """
    target: Any = getattr(model, "_orig_mod", model)  # torch.compile wraps the module as OptimizedModule
    fn = target.forward if isinstance(target, nn.Module) else target
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in _POSITIONAL]
    second = positional[1].name if len(positional) > 1 else None
    for name in _TIME_NAMES:
        p = sig.parameters.get(name)
        if p is not None and p.kind in _BY_NAME and name != second:
            return name
    return None


def unwrap_output(out: object, name: str = "model") -> Tensor:
    """The prediction tensor of a model's output: itself, a diffusers output's ``.sample`` (``UNet2DOutput``,
    ``Transformer2DModelOutput``), or the first element of a tuple (``return_dict=False``)."""
    if not isinstance(out, Tensor):
        sample = getattr(out, "sample", None)
        if isinstance(sample, Tensor):
            out = sample
        elif isinstance(out, (tuple, list)) and len(out) > 0:
            out = out[0]
    if not isinstance(out, Tensor):
        raise TypeError(f"{name} must return a torch.Tensor (or an output with .sample), got {type(out).__name__}")
    return out


def call_by_signature(
    model: Callable[..., Any], x_t: Tensor, t: Tensor, cond: Mapping[str, Any], time_keyword: str | None
) -> Tensor:
    """``model(x_t, t, **cond)``, or ``model(x_t, **{time_keyword: t}, **cond)`` when ``time_keyword`` (from
    :func:`time_keyword_of`, computed once when the wrapper is built) is set; the output unwrapped by
    :func:`unwrap_output`."""
    out = model(x_t, **{time_keyword: t}, **cond) if time_keyword is not None else model(x_t, t, **cond)
    return unwrap_output(out)


def compute_dtype_and_sigma(x: object, sigma: SigmaLike, *, allow_inf: bool = False) -> tuple[torch.dtype, Tensor]:
    """Shared entry of every wrapper: x's dtype promoted to >= float32, and sigma as a ``[batch]`` tensor in it.

    ``allow_inf``: sigma = inf passes (a wrapper defined at the start from pure noise, where x is unit noise).

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
    s = check_nonnegative_values(
        as_sigma(sigma).to(dtype=cdt), "sigma", fix=_FORWARD_FIX, positive=True, allow_inf=allow_inf
    )
    s = s.to(device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    elif s.shape != (x.shape[0],):
        raise ValueError(f"sigma must have shape [batch] = [{x.shape[0]}] or be a scalar, got shape {tuple(s.shape)}")
    return cdt, s


def append_dims(v: Tensor, ndim: int) -> Tensor:
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def split_variance(f: Tensor, x_shape: torch.Size, name: str) -> Tensor:
    """Keep the mean half of a learned-variance output [B, 2C, ...] (static shape check only)."""
    if f.ndim < 2 or f.shape[0] != x_shape[0] or f.shape[1] != 2 * x_shape[1] or f.shape[2:] != x_shape[2:]:
        raise ValueError(
            f"{name} returned shape {tuple(f.shape)}, but a learned-variance model must return twice the "
            f"channels of its input {tuple(x_shape)} on dim 1; pass learned_variance=False if it does not"
        )
    return f[:, : x_shape[1]]
