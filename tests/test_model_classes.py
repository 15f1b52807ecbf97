"""Every diffusers model class through the adapters (issue 13 items 3 and 7), on tiny random-weight instances
built offline from their configs: keyword calls (``timestep=`` where the signature needs it), conditioning
passed through (``encoder_hidden_states``, ``class_labels``, ``added_cond_kwargs``, attention masks), learned
variance split, the ``call=`` hook, and mixed precision (bf16/fp16 networks under a float32/float64 state)."""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from torch import Tensor, nn

import tiny_diffusers
from edm_samplers import EDMPrecond, euler_sample, heun_sample, karras_sigmas
from edm_samplers._network import call_by_signature, cast_floats, net_autocast, net_precision, time_keyword_of
from edm_samplers.adapters import DDPMDenoiser, learned_variance_for
from edm_samplers.diffusers_adapter import from_diffusers

diffusers = pytest.importorskip("diffusers")  # a test extra

# diffusers 0.42.1 itself triggers numpy 2 DeprecationWarnings, and a warning on .to(bfloat16) of a model it
# did not load (its _keep_in_fp32_modules advice); neither is ours.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

DOC = Path(__file__).resolve().parents[1] / "docs" / "diffusers.md"
# Stable Diffusion's betas: the schedule every tiny model below is "trained" with.
SD_BETAS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
}
Cond = Callable[[int], dict[str, Any]]


class Named(NamedTuple):
    a: Tensor
    b: int


def unet() -> tuple[nn.Module, tuple[int, ...], Cond]:
    """UNet2DModel, class-conditional (class_labels)."""
    return tiny_diffusers.unet2d(num_class_embeds=4), (3, 8, 8), lambda b: {"class_labels": torch.arange(b) % 4}


def unet_cond() -> tuple[nn.Module, tuple[int, ...], Cond]:
    """UNet2DConditionModel, SD-style cross-attention plus SDXL's added_cond_kwargs (text_embeds, time_ids)."""
    torch.manual_seed(0)
    m = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8, attention_head_dim=2,
        addition_embed_type="text_time", addition_time_embed_dim=4, projection_class_embeddings_input_dim=6 + 6 * 4,
    )  # fmt: skip

    def cond(b: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(5)
        return {
            "encoder_hidden_states": torch.randn(b, 5, 8, generator=g),
            "added_cond_kwargs": {"text_embeds": torch.randn(b, 6, generator=g), "time_ids": torch.full((b, 6), 8.0)},
        }

    return tiny_diffusers.perturbed(m), (4, 8, 8), cond


def dit() -> tuple[nn.Module, tuple[int, ...], Cond]:
    """DiTTransformer2DModel with learned sigma (out_channels = 2 in_channels), class_labels."""
    torch.manual_seed(0)
    m = diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=4, in_channels=4, out_channels=8, num_layers=1, sample_size=8,
        patch_size=2, num_embeds_ada_norm=10, norm_num_groups=1,
    )  # fmt: skip
    return tiny_diffusers.perturbed(m), (4, 8, 8), lambda b: {"class_labels": torch.arange(b) % 10}


def pixart() -> tuple[nn.Module, tuple[int, ...], Cond]:
    """PixArtTransformer2DModel (forward(hidden_states, encoder_hidden_states, timestep, ...)), learned sigma,
    added_cond_kwargs (resolution, aspect ratio) and an encoder attention mask."""
    torch.manual_seed(0)
    # inner dim 12: divisible by 4 (2-D sin-cos position embedding) and by 3 (resolution + aspect-ratio split).
    m = diffusers.PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=6, in_channels=4, out_channels=8, num_layers=1, sample_size=8,
        patch_size=2, cross_attention_dim=12, caption_channels=5, use_additional_conditions=True, norm_num_groups=1,
    )  # fmt: skip

    def cond(b: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(5)
        mask = torch.ones(b, 7)
        mask[0, 5:] = 0  # a padded caption: the mask must reach the model
        return {
            "encoder_hidden_states": torch.randn(b, 7, 5, generator=g),
            "encoder_attention_mask": mask,
            "added_cond_kwargs": {"resolution": torch.full((b, 2), 64.0), "aspect_ratio": torch.ones(b, 1)},
        }

    return tiny_diffusers.perturbed(m), (4, 8, 8), cond


BUILDERS = {"UNet2DModel": unet, "UNet2DConditionModel": unet_cond, "DiT": dit, "PixArt": pixart}


@functools.cache
def built(name: str) -> tuple[nn.Module, tuple[int, ...], Cond]:
    return BUILDERS[name]()


def diffusers_loop(
    scheduler_cls: Any, model: nn.Module, latents: Tensor, cond: dict[str, Any], n: int, split: bool
) -> tuple[Tensor, Any]:
    """diffusers' own sampling loop, written the way its pipelines do (timestep by name, expanded to the batch;
    DiT/PixArt pipelines keep the first half of a learned-sigma output)."""
    sched = scheduler_cls(**SD_BETAS)
    sched.set_timesteps(n)
    x = latents * sched.init_noise_sigma
    for t in sched.timesteps:
        out = model(sched.scale_model_input(x, t), timestep=t.expand(x.shape[0]), **cond).sample
        if split:
            out = out.chunk(2, dim=1)[0]
        x = sched.step(out, t, x).prev_sample
    return x, sched


# ----------------------------------------------------------------------------------------------
# Calls by signature


def test_time_keyword_is_read_from_the_signature() -> None:
    # A parameter named timestep (or timesteps) that is not the 2nd positional one is passed by name.
    expect = {
        "UNet2DModel": None, "UNet2DConditionModel": None, "UNet1DModel": None, "DiTTransformer2DModel": None,
        "PixArtTransformer2DModel": "timestep", "SD3Transformer2DModel": "timestep",
        "FluxTransformer2DModel": "timestep", "SanaTransformer2DModel": "timestep",
        "AuraFlowTransformer2DModel": "timestep", "CogVideoXTransformer3DModel": "timestep",
        "HiDreamImageTransformer2DModel": None,  # forward(hidden_states, timesteps, ...): 2nd positional
    }  # fmt: skip
    for cls_name, kw in expect.items():
        cls = getattr(diffusers, cls_name, None)
        if cls is None:
            continue
        assert time_keyword_of(functools.partial(cls.forward, None)) == kw, cls_name  # as if bound

    def by_name(x: Tensor, context: Tensor, *, timesteps: Tensor) -> Tensor:
        return x

    assert time_keyword_of(by_name) == "timesteps"
    assert time_keyword_of(lambda x, t, **cond: x) is None
    assert time_keyword_of(lambda *args: args[0]) is None
    assert time_keyword_of(torch.sin) is None  # no readable signature: positional
    assert time_keyword_of(torch.compile(built("PixArt")[0])) == "timestep"  # torch.compile's wrapper is seen through


def test_call_by_signature_passes_time_by_name_and_unwraps() -> None:
    seen: dict[str, Any] = {}

    class Output:
        def __init__(self, sample: Tensor) -> None:
            self.sample = sample

    def model(hidden_states: Tensor, encoder_hidden_states: Tensor, timestep: Tensor, mask: Tensor) -> Output:
        seen.update(encoder_hidden_states=encoder_hidden_states, timestep=timestep, mask=mask)
        return Output(hidden_states * 2)

    x, t, e, mask = torch.ones(2, 3), torch.tensor([5.0, 6.0]), torch.zeros(2, 4), torch.ones(2, 4)
    kw = time_keyword_of(model)
    out = call_by_signature(model, x, t, {"encoder_hidden_states": e, "mask": mask}, kw)
    assert torch.equal(out, 2 * x) and seen["timestep"] is t and seen["encoder_hidden_states"] is e
    assert torch.equal(call_by_signature(lambda x, t: (x + t[:, None], None), x, t, {}, None), x + t[:, None])
    with pytest.raises(TypeError, match=r"model must return a torch\.Tensor \(or an output with \.sample\), got dict"):
        call_by_signature(lambda x, t: {"a": x}, x, t, {}, None)


def test_the_signature_is_read_once_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    import edm_samplers._adapter as adapter_base

    model, shape, cond = built("PixArt")
    reads: list[object] = []
    monkeypatch.setattr(adapter_base, "_time_keyword_of", lambda m: reads.append(m) or time_keyword_of(m))
    den = from_diffusers(model, diffusers.DDPMScheduler(**SD_BETAS))
    assert den.time_keyword == "timestep" and den.learned_variance is True and reads == [model]
    with torch.no_grad():
        for _ in range(2):
            d = den(torch.randn(2, *shape), torch.tensor([1.0, 10.0]), **cond(2))
    assert d.shape == (2, *shape) and reads == [model]


# ----------------------------------------------------------------------------------------------
# Sampling: every model class matches diffusers' own loop


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize(
    ("scheduler", "sampler"), [("EulerDiscreteScheduler", euler_sample), ("HeunDiscreteScheduler", heun_sample)]
)
def test_each_model_class_matches_the_diffusers_loop(name: str, scheduler: str, sampler: Any) -> None:
    model, shape, make_cond = built(name)
    den = from_diffusers(model, diffusers.DDPMScheduler(**SD_BETAS))
    # Learned sigma from the model's config alone (DDPMScheduler's variance_type is "fixed_small").
    assert den.learned_variance is (name in ("DiT", "PixArt"))
    cond = make_cond(2)
    latents = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    # n = 4: diffusers' "linspace" timesteps 999, 666, 333, 0 are integers. At a fractional timestep diffusers
    # interpolates sigma linearly in t (np.interp), the adapter t linearly in log sigma (its Karras convention);
    # at n = 3 (t = 499.5) the two differ by 4e-4 in t, which a random transformer turns into 1e-5 relative.
    with torch.no_grad():
        split = den.learned_variance is True
        ref, sched = diffusers_loop(getattr(diffusers, scheduler), model, latents, cond, 4, split)
        sigmas = torch.unique_consecutive(sched.sigmas.double())  # Heun's list repeats each level
        ours = sampler(den, latents * sigmas[0].float(), sigmas, dtype=torch.float32, cond=cond)
    # Both loops run the same float32 network; they differ in float32 arithmetic (lerp vs x + d dt, float64 vs
    # float32 timestep/sigma tables), measured at 1e-7..7e-7 of max |x|; 1e-5 is the acceptance bound.
    rel = float((ours - ref).abs().max() / ref.abs().max())
    assert rel <= 1e-5, rel


def test_conditioning_reaches_the_model() -> None:
    # Changing any one conditioning input changes D: nothing is dropped on the way (added_cond_kwargs, masks).
    model, shape, make_cond = built("PixArt")
    den = from_diffusers(model, diffusers.DDPMScheduler(**SD_BETAS))
    x, sigma = torch.randn(2, *shape, generator=torch.Generator().manual_seed(3)), torch.tensor([2.0, 2.0])
    with torch.no_grad():
        base = den(x, sigma, **make_cond(2))
        for key, change in [
            ("encoder_hidden_states", lambda c: c["encoder_hidden_states"] + 1),
            ("encoder_attention_mask", lambda c: torch.ones_like(c["encoder_attention_mask"])),
            ("added_cond_kwargs", lambda c: {**c["added_cond_kwargs"], "aspect_ratio": torch.full((2, 1), 2.0)}),
        ]:
            cond = make_cond(2)
            cond[key] = change(cond)
            assert not torch.allclose(den(x, sigma, **cond), base), key


def test_call_hook_replaces_the_call() -> None:
    model, shape, _ = built("UNet2DModel")
    calls: list[Tensor] = []

    def call(m: Any, x_t: Tensor, t: Tensor, cond: dict[str, Any]) -> Any:
        calls.append(t)
        # E.g. a model that wants the label under another name: the hook adapts the call, output unwrapped.
        return m(x_t, t, class_labels=cond["label"])

    den = DDPMDenoiser(model, diffusers.DDPMScheduler(**SD_BETAS).alphas_cumprod, call=call)
    ref = DDPMDenoiser(model, diffusers.DDPMScheduler(**SD_BETAS).alphas_cumprod)
    x, sigma, labels = torch.randn(2, *shape), torch.tensor([1.0, 3.0]), torch.tensor([1, 2])
    with torch.no_grad():
        torch.testing.assert_close(den(x, sigma, label=labels), ref(x, sigma, class_labels=labels), rtol=0, atol=0)
    assert len(calls) == 1 and den.time_keyword is None and "call" not in dict(den.named_children())
    hooked = from_diffusers(model, diffusers.DDPMScheduler(**SD_BETAS), call=call)
    assert hooked.call is call
    with pytest.raises(TypeError, match="call must be None or a function call"):
        DDPMDenoiser(model, diffusers.DDPMScheduler(**SD_BETAS).alphas_cumprod, call=3)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# Learned variance


def test_learned_variance_resolution() -> None:
    class Cfg(nn.Module):
        def __init__(self, c_in: int, c_out: int | None) -> None:
            super().__init__()
            self.config = {"in_channels": c_in, "out_channels": c_out}

    assert learned_variance_for(Cfg(4, 8), None) is True  # DiT: config decides, the scheduler has no say
    assert learned_variance_for(Cfg(4, 8), "fixed_small") is True
    assert learned_variance_for(Cfg(4, None), None) is False  # out_channels None means in_channels
    assert learned_variance_for(Cfg(9, 4), "learned_range") is True  # inpainting: the scheduler decides
    assert learned_variance_for(Cfg(9, 4), "fixed_small") == "auto"
    assert learned_variance_for(lambda x, t: x, None) == "auto"  # no config: the output's shape decides
    with pytest.raises(ValueError, match=r"variance_type='learned_range' .* out_channels == in_channels == 3"):
        learned_variance_for(Cfg(3, 3), "learned_range")


def test_auto_learned_variance_splits_only_twice_the_channels() -> None:
    abar = diffusers.DDPMScheduler(**SD_BETAS).alphas_cumprod
    x, sigma = torch.randn(2, 3, 4), torch.tensor([0.5, 2.0])
    eps = torch.randn(2, 3, 4)
    split = DDPMDenoiser(lambda xt, t: torch.cat([eps, 5 + eps], 1), abar, learned_variance="auto")
    plain = DDPMDenoiser(lambda xt, t: eps, abar, learned_variance="auto")
    expect = x - sigma[:, None, None] * eps  # eps-prediction D
    torch.testing.assert_close(split(x, sigma), expect)
    torch.testing.assert_close(plain(x, sigma), expect)
    with pytest.raises(ValueError, match=r"model returned shape \(2, 9, 4\)"):
        DDPMDenoiser(lambda xt, t: torch.cat([eps] * 3, 1), abar, learned_variance="auto")(x, sigma)
    with pytest.raises(TypeError, match=r"learned_variance must be True or False, got str 'yes' .*'auto'"):
        DDPMDenoiser(lambda xt, t: eps, abar, learned_variance="yes")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# Mixed precision

# bf16 keeps 8 significant bits: unit round-off u = 2^-8 = 3.9e-3; fp16 keeps 11: u = 2^-11 = 4.9e-4. One network
# evaluation with rounded weights, activations and inputs is off by a few u (rounding errors in random
# directions largely cancel: measured 0.5u..1.1u in max-relative terms for every model here); the sampler's
# output is its last D, earlier errors being contracted by the ODE. So the bound is 4u, and the error must
# exceed u/64, which shows that the low precision was really used (a float32 run differs by ~1e-7).
U = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize("name", ["UNet2DModel", "UNet2DConditionModel"])
def test_low_precision_network_under_a_float32_or_float64_state(name: str) -> None:
    model, shape, make_cond = built(name)
    sched = diffusers.DDPMScheduler(**SD_BETAS)
    cond = make_cond(2)
    latents = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    ref_den = from_diffusers(model, sched)
    sigmas = karras_sigmas(3, ref_den.sigma_min, ref_den.sigma_max)
    x0 = latents * sigmas[0].float()
    f32_and_f64, f32 = (torch.float32, torch.float64), (torch.float32,)
    with torch.no_grad():
        ref = heun_sample(ref_den, x0, sigmas, cond=cond)
        cases = [
            # A bf16 model (parameters bf16): inputs and floating conditioning cast to bf16, output cast back.
            (
                "bf16 parameters",
                from_diffusers(copy.deepcopy(model).to(torch.bfloat16), sched),
                torch.bfloat16,
                f32_and_f64,
            ),
            # A float32 model with net_dtype: autocast (before: the input alone was cast and the model failed).
            ("net_dtype bf16", from_diffusers(model, sched, net_dtype=torch.bfloat16), torch.bfloat16, f32_and_f64),
            ("net_dtype fp16", from_diffusers(model, sched, net_dtype=torch.float16), torch.float16, f32),
        ]
        for label, den, low, states in cases:
            for state in states:
                out = heun_sample(den, x0, sigmas, cond=cond, dtype=state)
                assert out.dtype == state, label  # the state keeps its dtype
                rel = _rel(out, ref)
                assert U[low] / 64 < rel < 4 * U[low], (label, state, rel)
    assert next(model.parameters()).dtype == torch.float32  # the user's model is not converted


def test_precond_net_dtype_autocasts_a_float32_network() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.norm = nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(4, 8)
            self.emb, self.conv2 = nn.Linear(1, 8), nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, x: Tensor, c_noise: Tensor, scale: Tensor) -> Tensor:
            # c_noise comes at least float32 (documented): a network embeds it in its own dtype, as diffusers' do.
            h = self.norm(self.conv1(x)) + self.emb(c_noise[:, None].to(x.dtype))[:, :, None, None]
            return self.conv2(torch.nn.functional.silu(h)) * scale[:, None, None, None]

    torch.manual_seed(0)
    net = Net()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 80
    sigmas = karras_sigmas(4)
    scale = torch.tensor([1.0, 0.5], dtype=torch.float64)  # float64 conditioning: cast to the network's dtype
    with torch.no_grad():
        ref = heun_sample(EDMPrecond(net), x, sigmas, cond={"scale": scale})
        for state in (torch.float32, torch.float64):
            out = heun_sample(EDMPrecond(net, net_dtype=torch.bfloat16), x, sigmas, cond={"scale": scale}, dtype=state)
            assert out.dtype == state
            assert U[torch.bfloat16] / 64 < _rel(out, ref) < 4 * U[torch.bfloat16]
        # A bf16 network under a float32 state: inputs and conditioning cast to bf16.
        out = heun_sample(EDMPrecond(copy.deepcopy(net).to(torch.bfloat16)), x, sigmas, cond={"scale": scale})
        assert out.dtype == torch.float32 and _rel(out, ref) < 4 * U[torch.bfloat16]


def test_precision_rule_and_errors() -> None:
    f32 = nn.Linear(2, 2)
    bf16 = nn.Linear(2, 2).to(torch.bfloat16)
    assert net_precision(f32, None) == (torch.float32, None)
    assert net_precision(bf16, None) == (torch.bfloat16, None)
    assert net_precision(bf16, torch.bfloat16) == (torch.bfloat16, None)
    assert net_precision(f32, torch.bfloat16) == (torch.float32, torch.bfloat16)
    assert net_precision(lambda x, t: x, torch.float16) == (torch.float16, torch.float16)
    assert net_precision(lambda x, t: x, torch.float64) == (torch.float64, None)
    assert net_precision(lambda x, t: x, None) == (None, None)
    abar = diffusers.DDPMScheduler(**SD_BETAS).alphas_cumprod
    msg = r"net_dtype=torch\.float64 but the model's parameters are torch\.float32: only float16/bfloat16"
    with pytest.raises(ValueError, match=msg):
        DDPMDenoiser(f32, abar, net_dtype=torch.float64)
    with pytest.raises(ValueError, match=msg):
        EDMPrecond(f32, net_dtype=torch.float64)
    with pytest.raises(ValueError, match="not available on device type 'meta'"):
        net_autocast(torch.device("meta"), torch.bfloat16)
    # Conditioning: floating tensors cast, nested containers kept, integers and other values untouched.
    cond = {"a": torch.ones(1, dtype=torch.float64), "b": {"c": [torch.ones(1), torch.ones(1, dtype=torch.long)]}}
    out = cast_floats(cond, torch.bfloat16)
    assert out["a"].dtype == torch.bfloat16 and out["b"]["c"][0].dtype == torch.bfloat16
    assert out["b"]["c"][1].dtype == torch.long and isinstance(out["b"]["c"], list)
    pair = cast_floats(torch.return_types.max((torch.ones(1), torch.zeros(1, dtype=torch.long))), torch.float16)
    assert pair.values.dtype == torch.float16 and pair.indices.dtype == torch.long
    named = cast_floats(Named(torch.ones(1), 3), torch.bfloat16)
    assert isinstance(named, Named) and named.a.dtype == torch.bfloat16 and named.b == 3


@pytest.mark.cuda
def test_autocast_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    # The float32 reference must be float32: cuDNN's TF32 convolutions (on by default) round like fp16.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model, shape, make_cond = built("PixArt")
    dev = torch.device("cuda")
    m = copy.deepcopy(model).to(dev)
    cond = {
        k: ({kk: vv.to(dev) for kk, vv in v.items()} if isinstance(v, dict) else v.to(dev))
        for k, v in make_cond(2).items()
    }
    sched = diffusers.DDPMScheduler(**SD_BETAS)
    ref_den = from_diffusers(m, sched)
    sigmas = karras_sigmas(4, ref_den.sigma_min, ref_den.sigma_max)
    x0 = torch.randn(2, *shape, device=dev, generator=torch.Generator(dev).manual_seed(1)) * sigmas[0].float()
    with torch.no_grad():
        ref = heun_sample(ref_den, x0, sigmas, cond=cond)
        for low in (torch.bfloat16, torch.float16):
            out = heun_sample(from_diffusers(m, sched, net_dtype=low), x0, sigmas, cond=cond)
            assert out.dtype == torch.float32 and U[low] / 64 < _rel(out, ref) < 4 * U[low]


# ----------------------------------------------------------------------------------------------
# docs/diffusers.md: the "Model classes" examples run as written


def _section_blocks(heading: str) -> list[str]:
    text = DOC.read_text()
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m is not None, f"docs/diffusers.md has no '## {heading}' section"
    return re.findall(r"```python\n(.*?)```", m.group(1), re.S)


def test_model_classes_doc_examples_run() -> None:
    blocks = _section_blocks("Model classes")
    assert len(blocks) >= 2
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC}:Model classes block {i}", "exec"), {"__name__": "doc_example"})


def test_autocast_call_compiles_without_graph_breaks() -> None:
    # CUDA-graph capture and torch.compile need the autocast region inside the denoiser to trace as one graph
    # (fullgraph=True fails on a break). Dynamo's tracing decides that; backend="eager" skips Inductor's code
    # generation (30 s here), which has nothing to do with graph breaks.
    class Lin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, hidden_states: Tensor, context: Tensor, timestep: Tensor) -> Tensor:
            return self.lin(hidden_states + context) * torch.cos(timestep / 1000)[:, None].to(hidden_states.dtype)

    torch.manual_seed(0)
    den = DDPMDenoiser(Lin(), diffusers.DDPMScheduler(**SD_BETAS).alphas_cumprod, net_dtype=torch.bfloat16)
    assert den.time_keyword == "timestep"
    x, sigma, ctx = torch.randn(2, 4), torch.tensor([1.0, 5.0]), torch.randn(2, 4, dtype=torch.float64)
    with torch.no_grad():
        eager = den(x, sigma, context=ctx)
        compiled = torch.compile(den, fullgraph=True, backend="eager")(x, sigma, context=ctx)
    # The eager backend runs the traced graph with the same kernels and casts: bitwise equal.
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
