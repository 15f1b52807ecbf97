"""Non-leaky geometric augmentation (EDM Appendix F.2, after Karras et al. 2020, "ADA").

Each image of a batch ``[B, C, H, W]`` is transformed, with probability ``p`` per transform, by
x-flip, y-flip, integer translation, isotropic scaling, rotation, anisotropic scaling and fractional
translation. The applied parameters are returned as a label vector per image (all zeros when nothing
was applied) that the network receives as conditioning (``augment_labels``); at sampling time the
label is zero, so the model generates un-augmented images: the augmentation does not "leak".

Flips and integer translations move whole pixels (exact; integer translation reflects about the edge
pixel, without repeating it); the other transforms are combined into one affine map per image and
resampled with bilinear ``grid_sample`` and reflection padding (which reflects about the image border,
so the edge pixel repeats once). Rows where no resampling transform was applied keep their
exact pixels. Everything is torch, on the images' device.

Label layout (``AugmentPipe.label_dim = 10`` numbers per image), zero = identity:

===  ===========================================================
0    x-flip applied (0 or 1)
1    y-flip applied (0 or 1)
2-3  integer translation (tx, ty) as fractions of the width/height
4    log2 of the isotropic scale factor
5-6  rotation angle theta as (cos theta - 1, sin theta)
7    log2 of the anisotropic factor (x scaled by 2^a, y by 2^-a)
8-9  fractional translation (tx, ty) as fractions of the width/height
===  ===========================================================
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validate import check_float

__all__ = ["AugmentPipe", "AugmentPipeProtocol"]


@runtime_checkable
class AugmentPipeProtocol(Protocol):
    """Anything the losses accept as ``augment_pipe``:
    ``pipe(images, *, generator=None) -> (augmented_images, augment_labels)``."""

    def __call__(self, images: Tensor, /, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]: ...


# Columns of the per-row uniform draws (one [B, _NUM_DRAWS] block, so a row's parameters depend on
# the generator state and its row index only: on CPU the first k rows are the same for any batch size).
_XFLIP, _XFLIP_BIT, _YFLIP, _YFLIP_BIT = 0, 1, 2, 3
_TINT, _TINT_X, _TINT_Y = 4, 5, 6
_SCALE, _SCALE_V = 7, 8
_ROT, _ROT_V = 9, 10
_ANISO, _ANISO_V = 11, 12
_TFRAC, _TFRAC_X, _TFRAC_Y = 13, 14, 15
_NUM_DRAWS = 16


def _normal(u: Tensor) -> Tensor:
    """Standard normal from uniform draws by the inverse CDF (keeps one uniform per parameter)."""
    eps = torch.finfo(u.dtype).eps
    return math.sqrt(2) * torch.erfinv(2 * u.clamp(eps, 1 - eps) - 1)


def _reflect(idx: Tensor, n: int) -> Tensor:
    """Reflect integer indices into [0, n) without repeating the edge (like 'reflect' padding)."""
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    m = torch.remainder(idx, period)
    return torch.where(m >= n, period - m, m)


class AugmentPipe:
    """Geometric augmentation with conditioning labels, ``pipe(images, generator=None) -> (images, labels)``.

    Each transform is applied to each image independently with probability ``p * <its multiplier>``
    (clipped to 1); a multiplier of 0 disables that transform.

    Args:
        p: overall augmentation probability (EDM uses about 0.12 to 0.15).
        xflip, yflip: multipliers for flips (an applied flip mirrors the image with probability 1/2,
            as in EDM, so a multiplier of 1e8 means "random flips on every image").
        translate_int: multiplier for integer translation by up to ``translate_int_max`` of the size.
        translate_frac: multiplier for fractional translation, N(0, ``translate_frac_std``^2) of the size.
        scale: multiplier for isotropic scaling by 2^N(0, ``scale_std``^2).
        rotate: multiplier for rotation by U(-pi, pi) times ``rotate_max``.
        aniso: multiplier for anisotropic scaling by 2^(+-N(0, ``aniso_std``^2)).
        translate_int_max, translate_frac_std, scale_std, rotate_max, aniso_std: transform strengths.

    The pipe keeps no state; pass ``generator=`` (a ``torch.Generator`` on the images' device) to make
    it reproducible. The images' dtype is kept (the affine resampling runs in at least float32).
    """

    label_dim: int = 10

    def __init__(
        self,
        p: float = 0.12,
        *,
        xflip: float = 1.0,
        yflip: float = 1.0,
        translate_int: float = 1.0,
        translate_frac: float = 1.0,
        scale: float = 1.0,
        rotate: float = 1.0,
        aniso: float = 1.0,
        translate_int_max: float = 0.125,
        translate_frac_std: float = 0.125,
        scale_std: float = 0.2,
        rotate_max: float = 1.0,
        aniso_std: float = 0.2,
    ) -> None:
        self.p = check_float(p, "p", nonnegative=True)
        if self.p > 1:
            raise ValueError(f"p must be a probability in [0, 1], got {p}")
        self.xflip = check_float(xflip, "xflip", nonnegative=True)
        self.yflip = check_float(yflip, "yflip", nonnegative=True)
        self.translate_int = check_float(translate_int, "translate_int", nonnegative=True)
        self.translate_frac = check_float(translate_frac, "translate_frac", nonnegative=True)
        self.scale = check_float(scale, "scale", nonnegative=True)
        self.rotate = check_float(rotate, "rotate", nonnegative=True)
        self.aniso = check_float(aniso, "aniso", nonnegative=True)
        self.translate_int_max = check_float(translate_int_max, "translate_int_max", nonnegative=True)
        self.translate_frac_std = check_float(translate_frac_std, "translate_frac_std", nonnegative=True)
        self.scale_std = check_float(scale_std, "scale_std", nonnegative=True)
        self.rotate_max = check_float(rotate_max, "rotate_max", nonnegative=True)
        self.aniso_std = check_float(aniso_std, "aniso_std", nonnegative=True)

    def __repr__(self) -> str:
        return (
            f"AugmentPipe(p={self.p}, xflip={self.xflip}, yflip={self.yflip}, translate_int={self.translate_int}, "
            f"translate_frac={self.translate_frac}, scale={self.scale}, rotate={self.rotate}, aniso={self.aniso})"
        )

    def _prob(self, mult: float) -> float:
        return min(self.p * mult, 1.0)

    def __call__(self, images: Tensor, /, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Augment ``images`` ``[B, C, H, W]``; returns ``(images', labels [B, 10])`` (see the module docstring)."""
        if not isinstance(images, Tensor) or not images.is_floating_point() or images.ndim != 4:
            raise TypeError(
                "images must be a floating tensor of shape [B, C, H, W], got "
                f"{getattr(images, 'shape', type(images).__name__)}"
            )
        b, _, h, w = images.shape
        dev = images.device
        work = torch.promote_types(images.dtype, torch.float32)
        u = torch.rand((b, _NUM_DRAWS), generator=generator, device=dev, dtype=torch.float32).to(work)
        labels = torch.zeros((b, self.label_dim), device=dev, dtype=work)
        x = images

        # ---- exact pixel operations: flips and integer translation ------------------------------
        fx = (u[:, _XFLIP] < self._prob(self.xflip)) & (u[:, _XFLIP_BIT] < 0.5)
        fy = (u[:, _YFLIP] < self._prob(self.yflip)) & (u[:, _YFLIP_BIT] < 0.5)
        x = torch.where(fx[:, None, None, None], x.flip(3), x)
        x = torch.where(fy[:, None, None, None], x.flip(2), x)
        labels[:, 0] = fx.to(work)
        labels[:, 1] = fy.to(work)

        on = u[:, _TINT] < self._prob(self.translate_int)
        # integer shift uniform in {-m, ..., m} pixels, m = round(translate_int_max * size)
        mx, my = round(self.translate_int_max * w), round(self.translate_int_max * h)
        tx = torch.where(on, torch.floor(u[:, _TINT_X] * (2 * mx + 1)).clamp(max=2 * mx) - mx, 0).long()
        ty = torch.where(on, torch.floor(u[:, _TINT_Y] * (2 * my + 1)).clamp(max=2 * my) - my, 0).long()
        src_x = _reflect(torch.arange(w, device=dev)[None, :] - tx[:, None], w)  # [B, W]
        src_y = _reflect(torch.arange(h, device=dev)[None, :] - ty[:, None], h)  # [B, H]
        rows = torch.arange(b, device=dev)[:, None, None]
        x = x[rows, :, src_y[:, :, None], src_x[:, None, :]].permute(0, 3, 1, 2)  # [B, H, W, C] -> [B, C, H, W]
        labels[:, 2] = tx.to(work) / w
        labels[:, 3] = ty.to(work) / h

        # ---- resampled operations: one affine map per image -------------------------------------
        s_on = u[:, _SCALE] < self._prob(self.scale)
        log2s = torch.where(s_on, _normal(u[:, _SCALE_V]) * self.scale_std, 0)
        r_on = u[:, _ROT] < self._prob(self.rotate)
        theta = torch.where(r_on, (2 * u[:, _ROT_V] - 1) * math.pi * self.rotate_max, 0)
        a_on = u[:, _ANISO] < self._prob(self.aniso)
        log2a = torch.where(a_on, _normal(u[:, _ANISO_V]) * self.aniso_std, 0)
        t_on = u[:, _TFRAC] < self._prob(self.translate_frac)
        fx_t = torch.where(t_on, _normal(u[:, _TFRAC_X]) * self.translate_frac_std, 0)
        fy_t = torch.where(t_on, _normal(u[:, _TFRAC_Y]) * self.translate_frac_std, 0)
        labels[:, 4] = log2s
        labels[:, 5] = torch.cos(theta) - 1
        labels[:, 6] = torch.sin(theta)
        labels[:, 7] = log2a
        labels[:, 8] = fx_t
        labels[:, 9] = fy_t

        if any(m > 0 for m in (self.scale, self.rotate, self.aniso, self.translate_frac)) and self.p > 0:
            resample = s_on | r_on | a_on | t_on
            # Forward map in pixel units about the image centre: p_out = T R A S p_in. grid_sample needs
            # the inverse, p_in = S^-1 A^-1 R^-1 (p_out - t), expressed in normalised coordinates
            # (x_norm = x_pix / (W/2)), so that rotations stay rotations on non-square images.
            sx = torch.exp2(-(log2s + log2a))
            sy = torch.exp2(-(log2s - log2a))
            cos, sin = torch.cos(theta), torch.sin(theta)
            # inverse linear part L = diag(sx, sy) @ R(-theta), in pixel units
            l00, l01 = sx * cos, sx * sin
            l10, l11 = -sy * sin, sy * cos
            tpx, tpy = fx_t * w, fy_t * h  # translation in pixels
            off_x = -(l00 * tpx + l01 * tpy)
            off_y = -(l10 * tpx + l11 * tpy)
            hw, hh = w / 2, h / 2
            theta_mat = torch.stack(
                [
                    torch.stack([l00, l01 * hh / hw, off_x / hw], dim=1),
                    torch.stack([l10 * hw / hh, l11, off_y / hh], dim=1),
                ],
                dim=1,
            )  # [B, 2, 3]
            grid = F.affine_grid(theta_mat, [b, x.shape[1], h, w], align_corners=False)
            moved = F.grid_sample(x.to(work), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
            x = torch.where(resample[:, None, None, None], moved.to(images.dtype), x)
        return x, labels.to(images.dtype)
