"""Guidance on tiny random-weight diffusers models: batched CFG equals two-call CFG, the null condition of
DiT and of class-conditional UNet2DModel, and docs/diffusers.md's guidance example runs as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

import edm_samplers as es
import tiny_diffusers

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

DOC = Path(__file__).resolve().parents[1] / "docs" / "diffusers.md"


def tiny_dit() -> torch.nn.Module:
    torch.manual_seed(0)
    dit = diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=4, in_channels=4, out_channels=8, num_layers=1, sample_size=8,
        patch_size=2, num_embeds_ada_norm=10, norm_num_groups=1,
    )  # fmt: skip
    return tiny_diffusers.perturbed(dit)  # random init leaves the adaLN-Zero and output layers at zero


def _batches(model: torch.nn.Module) -> list[int]:
    seen: list[int] = []
    model.register_forward_hook(lambda m, args, kwargs, out: seen.append(args[0].shape[0]), with_kwargs=True)
    return seen


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("kind", ["dit", "unet"])
def test_batched_cfg_equals_two_calls_on_diffusers_models(kind: str) -> None:
    if kind == "dit":
        net, sched, shape = tiny_dit(), diffusers.DDPMScheduler(variance_type="learned_range"), (4, 4, 8, 8)
    else:
        net, sched, shape = tiny_diffusers.unet2d(num_class_embeds=10), diffusers.DDPMScheduler(), (4, 3, 8, 8)
    den = es.from_diffusers(net, sched)
    cond = {"class_labels": torch.tensor([0, 3, 7, 9])}
    null = es.null_condition(den, cond) if kind == "dit" else es.null_condition(den, cond, null_class=9)
    assert null["class_labels"].tolist() == ([10] * 4 if kind == "dit" else [9] * 4)
    sig = es.karras_sigmas(4, sigma_min=0.05, sigma_max=80.0)
    x = es.initial_x(torch.randn(shape, generator=torch.Generator().manual_seed(0)), sig)
    seen = _batches(net)
    with torch.no_grad():
        one = es.euler_sample(es.guided(den, den, 3.0, guide_cond=null), x, sig, cond=cond)
        n_one = len(seen)
        two = es.euler_sample(es.guided(den, den, 3.0, guide_cond=null, batched=False), x, sig, cond=cond)
        pp_one = es.euler_cfgpp_sample(es.guided(den, den, 0.6, guide_cond=null), x, sig, cond=cond)
        pp_two = es.euler_cfgpp_sample(es.guided(den, den, 0.6, guide_cond=null, batched=False), x, sig, cond=cond)
        unguided = es.euler_sample(den, x, sig, cond=cond)
    assert seen[:n_one] == [8] * 4 and seen[n_one : n_one + 8] == [4] * 8  # 1 call of 2B vs 2 calls of B per step
    # float32 network; a batch of 8 vs two of 4 may be blocked differently by the CPU kernels (convolutions,
    # attention): round-off of a few 1e-7 per evaluation, amplified at most by the guidance weight over 4 steps.
    # (Measured here on CPU: 0, bitwise equal.)
    assert _rel(one, two) <= 1e-5 and _rel(pp_one, pp_two) <= 1e-5
    assert _rel(one, unguided) > 1e-3  # guidance changed the samples


def test_null_class_needs_an_index_on_dit_and_class_unet() -> None:
    x, sigma, labels = torch.randn(2, 4, 8, 8), torch.tensor([1.0, 2.0]), torch.tensor([1, 2])
    dit = es.from_diffusers(tiny_dit(), diffusers.DDPMScheduler(variance_type="learned_range"))
    with pytest.raises(TypeError):  # why guide_cond={"class_labels": None} is not the recipe
        dit(x, sigma, class_labels=None)
    unet = es.from_diffusers(tiny_diffusers.unet2d(num_class_embeds=10), diffusers.DDPMScheduler())
    with pytest.raises(ValueError, match="class_labels should be provided"):
        unet(x[:, :3], sigma, class_labels=None)
    with pytest.raises(ValueError, match=r"UNet2DModel \(class_embed_type=None, num_class_embeds=10\) reserves no"):
        es.null_condition(unet, {"class_labels": labels})
    no_dropout = diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=4, in_channels=4, num_layers=1, sample_size=8, patch_size=2,
        num_embeds_ada_norm=10, norm_num_groups=1,
    )  # fmt: skip
    for m in no_dropout.modules():
        if type(m).__name__ == "LabelEmbedding":
            m.dropout_prob = 0.0
    with pytest.raises(ValueError, match="without label dropout"):
        es.null_condition(no_dropout, {"class_labels": labels})


def test_doc_example_runs() -> None:
    block = re.search(r"<!-- example: guidance.*?-->\n```python\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None, "the guidance example is missing from docs/diffusers.md"
    ns: dict[str, Any] = {}
    exec(compile(block.group(1), str(DOC), "exec"), ns)
    assert ns["images"].shape == ns["images_pp"].shape == ns["text_images"].shape == (4, 4, 8, 8)
    assert _rel(ns["images"], ns["two_calls"]) <= 1e-5  # the doc's claim: same values, float32 round-off
