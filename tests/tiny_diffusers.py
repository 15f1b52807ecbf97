"""Tiny random-weight diffusers models shared by the tests (offline, built from config in milliseconds;
diffusers is imported by each builder, so a test module can import this one before its importorskip).

Random initialisation leaves some layers at zero (adaLN-zero, zero-initialised output convolutions), which
would make a model's output ignore x, t or the condition; :func:`perturbed` adds small noise to every weight
so that comparisons between two samplers exercise the whole network.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` (in eval mode) with N(0, 0.05^2) added to every parameter, from its own generator."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


def unet2d(out_channels: int = 3, num_class_embeds: int | None = None) -> nn.Module:
    """A 3x8x8 ``UNet2DModel`` (two down/up blocks, no attention), optionally class-conditional."""
    import diffusers

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=out_channels, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        add_attention=False, num_class_embeds=num_class_embeds,
    )  # fmt: skip
    return perturbed(unet)


def flux() -> tuple[nn.Module, dict[str, Tensor], Tensor, dict[str, Tensor]]:
    """A one-layer ``FluxTransformer2DModel`` with a guidance embedding: (model, cond for batch 2, packed
    latents [2, 16, 8] (4x4 tokens of 8 channels), the position ids shared by the batch)."""
    import diffusers

    torch.manual_seed(0)
    model = diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, pooled_projection_dim=8, guidance_embeds=True, axes_dims_rope=(2, 2, 4),
    )  # fmt: skip
    g = torch.Generator().manual_seed(3)
    cond = {
        "encoder_hidden_states": torch.randn(2, 3, 16, generator=g),
        "pooled_projections": torch.randn(2, 8, generator=g),
        "guidance": torch.full((2,), 3.5),
    }
    latents = torch.randn(2, 16, 8, generator=g)
    img = torch.zeros(16, 3)
    img[:, 1], img[:, 2] = torch.arange(16) // 4, torch.arange(16) % 4
    ids = {"txt_ids": torch.zeros(3, 3), "img_ids": img}  # shared by the batch, as FluxPipeline builds them
    return perturbed(model), cond, latents, ids


def sd3() -> tuple[nn.Module, dict[str, Tensor], Tensor]:
    """A one-layer ``SD3Transformer2DModel``: (model, cond for batch 2, latents [2, 4, 8, 8])."""
    import diffusers

    torch.manual_seed(0)
    model = diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=8,
        pos_embed_max_size=8,
    )  # fmt: skip
    g = torch.Generator().manual_seed(1)
    cond = {"encoder_hidden_states": torch.randn(2, 3, 16, generator=g)}
    cond["pooled_projections"] = torch.randn(2, 8, generator=g)
    return perturbed(model), cond, torch.randn(2, 4, 8, 8, generator=g)
