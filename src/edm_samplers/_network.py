"""What every wrapper around a network shares (preconditioners, adapters, guidance): sigma as a tensor, the
compute dtype and the ``[batch]`` sigma at entry, broadcasting, the dtype the network runs in, and the
learned-variance split. Private to the package; the names are public within it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._validate import check_nonnegative_values

__all__ = [
    "SigmaLike",
    "append_dims",
    "as_sigma",
    "check_net_dtype",
    "compute_dtype_and_sigma",
    "net_dtype_of",
    "split_variance",
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
