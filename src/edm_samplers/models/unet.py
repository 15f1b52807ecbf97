"""A compact U-Net for small images: the network F(x_in, c_noise, **cond) inside a preconditioner.

Written for this project (from the architecture descriptions in DDPM/ADM/EDM, not from their code):

- the noise level ``c_noise`` (any real number, e.g. EDM's ln(sigma)/4) goes through a sinusoidal
  embedding [cos(2 pi f_k c), sin(2 pi f_k c)] with log-spaced frequencies, then a 2-layer MLP;
- optional conditioning adds learned projections of ``class_labels`` (one-hot ``[B, label_dim]``, or
  integer class ids ``[B]``) and ``augment_labels`` (``[B, augment_dim]``, from
  :class:`~edm_samplers.training.AugmentPipe`) to the embedding; both default to zeros when omitted;
- residual blocks GroupNorm -> SiLU -> 3x3 conv, with the embedding applied as a per-channel
  scale and shift after the second GroupNorm, the last conv of every residual branch
  zero-initialised so each block starts as the identity; optional self-attention at chosen
  resolutions;
- encoder/decoder with skip connections; 2x2 average pooling down, nearest-neighbour up.

The defaults (``model_channels=64, channel_mult=(1, 2), num_blocks=2``) give about 4.1M parameters
for 1x8x8 images; the shipped digits model uses ``model_channels=32`` (1.03M parameters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FourierEmbedding", "UNet"]


class FourierEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar per batch row: ``[B] -> [B, num_channels]``.

    The ``num_channels / 2`` frequencies are log-spaced, f_k = exp(linspace(0, ln(max_freq))) / (2 pi),
    so c_noise in roughly [-2, 1.1] (EDM's ln(sigma)/4 over sigma in [0.002, 80]) is resolved at
    coarse and fine scales alike.
    """

    freqs: Tensor

    def __init__(self, num_channels: int, max_freq: float = 1000.0) -> None:
        super().__init__()
        if num_channels % 2:
            raise ValueError(f"num_channels must be even, got {num_channels}")
        half = num_channels // 2
        freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), half, dtype=torch.float64)) / (2 * math.pi)
        self.register_buffer("freqs", freqs.to(torch.float32), persistent=False)

    def forward(self, c: Tensor) -> Tensor:
        arg = 2 * math.pi * c.to(torch.float32)[:, None] * self.freqs[None, :]
        return torch.cat([arg.cos(), arg.sin()], dim=1)


def _groups(channels: int, max_groups: int) -> int:
    g = min(max_groups, channels)
    while channels % g:
        g -= 1
    return g


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, *, groups: int, dropout: float, attention: bool) -> None:
        super().__init__()
        self.norm0 = nn.GroupNorm(_groups(c_in, groups), c_in)
        self.conv0 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.affine = nn.Linear(emb_dim, 2 * c_out)
        self.norm1 = nn.GroupNorm(_groups(c_out, groups), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv1.weight)
        nn.init.zeros_(self.conv1.bias)  # type: ignore[arg-type]
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.attn: _Attention | None = _Attention(c_out, groups=groups) if attention else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        h = self.conv1(self.dropout(h))
        x = (self.skip(x) + h) * (1 / math.sqrt(2))  # keep the residual stream's variance roughly constant
        if self.attn is not None:
            x = self.attn(x)
        return x


class _Attention(nn.Module):
    def __init__(self, channels: int, *, groups: int, head_dim: int = 32) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(_groups(channels, groups), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        out: Tensor = self.proj(a.transpose(-1, -2).reshape(b, c, h, w))
        return (x + out) * (1 / math.sqrt(2))


class UNet(nn.Module):
    """A small U-Net F(x_in, c_noise, class_labels=None, augment_labels=None) -> [B, out_channels, H, W].

    Args:
        img_channels: input (and default output) channels.
        img_resolution: input height = width; must be divisible by 2^(len(channel_mult) - 1).
        out_channels: output channels (default ``img_channels``).
        model_channels: base width; level i has ``model_channels * channel_mult[i]`` channels.
        channel_mult: width multipliers, one per resolution (each level after the first halves H, W).
        num_blocks: residual blocks per level in the encoder (the decoder has one more per level).
        attn_resolutions: resolutions (e.g. ``(4,)``) whose blocks get self-attention.
        emb_dim: embedding width (default ``4 * model_channels``).
        label_dim: number of classes for ``class_labels`` (0: unconditional).
        augment_dim: length of ``augment_labels`` (0: no augmentation conditioning).
        dropout: dropout in residual blocks.
        groups: maximum GroupNorm groups.
    """

    def __init__(
        self,
        img_channels: int = 1,
        img_resolution: int = 8,
        *,
        out_channels: int | None = None,
        model_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2),
        num_blocks: int = 2,
        attn_resolutions: Sequence[int] = (4,),
        emb_dim: int | None = None,
        label_dim: int = 0,
        augment_dim: int = 0,
        dropout: float = 0.0,
        groups: int = 32,
    ) -> None:
        super().__init__()
        levels = len(channel_mult)
        if levels < 1 or img_resolution % (2 ** (levels - 1)):
            raise ValueError(
                f"img_resolution={img_resolution} must be divisible by 2^(len(channel_mult) - 1) = {2 ** (levels - 1)}"
            )
        self.img_channels = img_channels
        self.img_resolution = img_resolution
        self.label_dim = label_dim
        self.augment_dim = augment_dim
        out_channels = img_channels if out_channels is None else out_channels
        emb_dim = 4 * model_channels if emb_dim is None else emb_dim

        self.noise_embed = FourierEmbedding(model_channels)
        self.label_embed = nn.Linear(label_dim, emb_dim, bias=False) if label_dim else None
        self.augment_embed = nn.Linear(augment_dim, emb_dim, bias=False) if augment_dim else None
        self.emb_mlp = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.emb_out = nn.SiLU()

        self.conv_in = nn.Conv2d(img_channels, model_channels, 3, padding=1)
        self.enc = nn.ModuleList()
        skip_channels = [model_channels]
        c = model_channels
        res = img_resolution
        for level, mult in enumerate(channel_mult):
            if level > 0:
                self.enc.append(nn.AvgPool2d(2))
                res //= 2
                skip_channels.append(c)
            for _ in range(num_blocks):
                self.enc.append(
                    _ResBlock(
                        c,
                        model_channels * mult,
                        emb_dim,
                        attention=res in attn_resolutions,
                        groups=groups,
                        dropout=dropout,
                    )
                )
                c = model_channels * mult
                skip_channels.append(c)
        self.mid = nn.ModuleList(
            [
                _ResBlock(c, c, emb_dim, attention=True, groups=groups, dropout=dropout),
                _ResBlock(c, c, emb_dim, attention=False, groups=groups, dropout=dropout),
            ]
        )
        self.dec = nn.ModuleList()
        for level in reversed(range(levels)):
            mult = channel_mult[level]
            for _ in range(num_blocks + 1):
                c_skip = skip_channels.pop()
                self.dec.append(
                    _ResBlock(
                        c + c_skip,
                        model_channels * mult,
                        emb_dim,
                        attention=res in attn_resolutions,
                        groups=groups,
                        dropout=dropout,
                    )
                )
                c = model_channels * mult
            if level > 0:
                self.dec.append(nn.Upsample(scale_factor=2, mode="nearest"))
                res *= 2
        self.norm_out = nn.GroupNorm(_groups(c, groups), c)
        self.conv_out = nn.Conv2d(c, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)  # type: ignore[arg-type]

    def forward(
        self, x: Tensor, c_noise: Tensor, class_labels: Tensor | None = None, augment_labels: Tensor | None = None
    ) -> Tensor:
        """Evaluate F on ``x`` ``[B, C, H, W]`` with ``c_noise`` ``[B]`` (a scalar broadcasts).

        ``class_labels``: one-hot/soft ``[B, label_dim]`` or class ids ``[B]`` (int). ``augment_labels``:
        ``[B, augment_dim]``. Either may be omitted (zeros: unconditional / not augmented).
        """
        b = x.shape[0]
        c_noise = c_noise.reshape(-1).expand(b) if c_noise.numel() == 1 else c_noise.reshape(b)
        emb = self.emb_mlp(self.noise_embed(c_noise).to(x.dtype))
        if self.label_embed is not None and class_labels is not None:
            if not class_labels.is_floating_point():
                class_labels = F.one_hot(class_labels.reshape(b).long(), self.label_dim)
            emb = emb + self.label_embed(class_labels.to(emb.dtype).reshape(b, self.label_dim))
        elif class_labels is not None:
            raise TypeError("this UNet was built with label_dim=0; pass label_dim=num_classes to use class_labels")
        if self.augment_embed is not None and augment_labels is not None:
            emb = emb + self.augment_embed(augment_labels.to(emb.dtype).reshape(b, self.augment_dim))
        elif augment_labels is not None and self.augment_dim == 0:
            raise TypeError(
                "this UNet was built with augment_dim=0; pass augment_dim=AugmentPipe.label_dim to use augment_labels"
            )
        emb = self.emb_out(emb)

        h = self.conv_in(x)
        skips = [h]
        for layer in self.enc:
            h = layer(h, emb) if isinstance(layer, _ResBlock) else layer(h)
            skips.append(h)
        for block in self.mid:
            h = block(h, emb)
        for layer in self.dec:
            h = layer(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(layer, _ResBlock) else layer(h)
        out: Tensor = self.conv_out(F.silu(self.norm_out(h)))
        return out
