"""EDMSamplerScheduler inside real diffusers pipelines (tiny random-weight components, nothing downloaded).

Three references: the library's own sampler on the same model, latents and schedule (the scheduler runs that
very program, so only the first sample's rescaling differs: float32 round-off); diffusers' own scheduler
where the algorithm is the same (Euler, DPM-Solver++(2M), UniPC-bh2); and the pipeline's bookkeeping
(one model call per timestep, per-sample generators, save/load of the configuration).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import tiny_diffusers
from edm_samplers import count_nfe, from_diffusers, karras_sigmas, save_schedule
from edm_samplers.solvers.api import sampler_function
from edm_samplers.solvers.registry import get, names, parse_label

diffusers = pytest.importorskip("diffusers")  # a test extra; CI installs it (pip install 'edm-samplers[test]')

from edm_samplers.diffusers_scheduler import FAMILIES, scheduler_class  # noqa: E402 (after the importorskip)

# diffusers 0.42.1 itself triggers numpy 2 DeprecationWarnings (np.array(tensor, copy=False)); not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

Scheduler = scheduler_class()
DDPM_CFG = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
DOC = Path(__file__).resolve().parents[1] / "docs" / "diffusers.md"


def ddpm_scheduler(**overrides: Any) -> Any:
    # Built from a config with _class_name, as a pipeline loaded with from_pretrained holds it.
    return diffusers.DDPMScheduler.from_config({"_class_name": "DDPMScheduler", **DDPM_CFG, **overrides})


def ddpm_pipeline(scheduler: Any) -> Any:
    pipe = diffusers.DDPMPipeline(unet=tiny_diffusers.unet2d(), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Recorder:
    """Wraps a scheduler's step: counts the calls and keeps the last prev_sample (the pre-clamp result)."""

    def __init__(self, sched: Any) -> None:
        self.calls = 0
        self.last: Tensor | None = None
        self._step = sched.step
        sched.step = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self._step(*args, **kwargs)
        self.calls += 1
        self.last = out.prev_sample if kwargs.get("return_dict", True) else out[0]
        return out


def latents(shape: tuple[int, ...], seeds: list[int]) -> Tensor:
    """What a pipeline draws from one generator per sample (diffusers' randn_tensor, row by row)."""
    return torch.cat([torch.randn((1, *shape[1:]), generator=torch.Generator().manual_seed(s)) for s in seeds])


def run_ddpm(pipe: Any, seeds: list[int], steps: int) -> tuple[Tensor, Recorder]:
    rec = Recorder(pipe.scheduler)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    pipe(batch_size=len(seeds), generator=gens, num_inference_steps=steps, output_type="pt")
    assert rec.last is not None
    return rec.last, rec


def close(got: Tensor, ref: Tensor, rtol: float = 2e-5) -> None:
    # float32 sampling of O(10..500) states through a random network: the first sample differs by one rounding
    # (unit latents vs latents * sqrt(1 + sigma_0^2) / sqrt(1 + sigma_0^2)), which the network and the steps
    # amplify to ~1e-6 relative; 2e-5 of the largest value still rejects any formula difference (> 1e-3).
    torch.testing.assert_close(got, ref, rtol=rtol, atol=rtol * float(ref.abs().max()))


# ---- the library's own sampler on the same model, latents and schedule -----------------------------------


@pytest.mark.parametrize(
    ("sampler", "prediction"),
    [
        ("euler", "epsilon"), ("euler", "v_prediction"), ("euler", "sample"), ("heun", "epsilon"),
        ("dpmpp_2m", "epsilon"), ("unipc:order=2", "v_prediction"), ("dpm2", "epsilon"), ("lms", "epsilon"),
    ],
)  # fmt: skip
def test_ddpm_pipeline_equals_the_library_sampler(sampler: str, prediction: str) -> None:
    sched = ddpm_scheduler(prediction_type=prediction)
    pipe = ddpm_pipeline(sched)
    pipe.scheduler = Scheduler.from_config(pipe.scheduler.config, sampler=sampler, schedule="karras")
    n, seeds = 5, [3, 4]
    got, rec = run_ddpm(pipe, seeds, n)
    den = from_diffusers(pipe.unet, sched)
    sig = karras_sigmas(n, den.sigma_min, den.sigma_max)
    assert rec.calls == len(pipe.scheduler.timesteps) == count_nfe(sig, parse_label(sampler)[0])
    x0 = latents((2, 3, 8, 8), seeds) * math.sqrt(1 + float(sig[0]) ** 2)  # init_noise_sigma = 1: the VP start
    name, knobs = parse_label(sampler)
    with torch.no_grad():
        ref = sampler_function(name)(den, x0, sig, **knobs)
    close(got, ref)


def tiny_dit_pipeline(scheduler: Any) -> Any:
    torch.manual_seed(0)
    tr = diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=1, norm_num_groups=4,
        sample_size=4, patch_size=2, num_embeds_ada_norm=1000,
    )  # fmt: skip
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(8,), layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=8,
    )  # fmt: skip
    pipe = diffusers.DiTPipeline(transformer=tiny_diffusers.perturbed(tr), vae=vae.eval(), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_dit(pipe: Any, labels: list[int], steps: int, seed: int = 0, scale: float = 4.0) -> Tensor:
    """The latents DiTPipeline hands to the VAE (the sampler's result, before decoding and clamping)."""
    seen: list[Tensor] = []
    decode = pipe.vae.decode

    def spy(z: Tensor, *args: Any, **kwargs: Any) -> Any:
        seen.append(z * pipe.vae.config.scaling_factor)
        return decode(z, *args, **kwargs)

    pipe.vae.decode = spy
    pipe(class_labels=labels, guidance_scale=scale, num_inference_steps=steps,
         generator=torch.Generator().manual_seed(seed), output_type="pt")  # fmt: skip
    pipe.vae.decode = decode
    return seen[0]


def dit_cfg_model(tr: Any, labels: list[int], scale: float) -> Callable[[Tensor, Tensor], Tensor]:
    """The DiT network with the pipeline's classifier-free guidance (null class 1000), as model(x_t, t)."""
    lab = torch.tensor(labels)

    def model(x_in: Tensor, t: Tensor) -> Tensor:
        out = tr(torch.cat([x_in, x_in]), timestep=torch.cat([t, t]),
                 class_labels=torch.cat([lab, torch.full_like(lab, 1000)])).sample  # fmt: skip
        cond, uncond = out[:, :4].chunk(2)
        return uncond + scale * (cond - uncond)

    return model


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        (lambda: diffusers.DPMSolverMultistepScheduler(**DDPM_CFG), "dpmpp_2m:order_rule=final"),
        (lambda: diffusers.UniPCMultistepScheduler(**DDPM_CFG), "unipc:order=2,order_rule=final"),
        (lambda: diffusers.DDIMScheduler(**DDPM_CFG, clip_sample=False), "euler"),  # DDIM (eta 0) = Euler in EDM units
    ],
)
def test_dit_pipeline_with_cfg_equals_diffusers_and_the_library(theirs: Callable[[], Any], ours: str) -> None:
    labels, n = [1, 3], 6
    pipe = tiny_dit_pipeline(theirs())
    ref = run_dit(pipe, labels, n)
    sched = pipe.scheduler
    pipe.scheduler = Scheduler.from_config(sched, sampler=ours, schedule="scheduler")  # built in code: pass it
    got = run_dit(pipe, labels, n)
    # Same algorithm on the same levels (diffusers' own); diffusers computes its step scalars partly in float32
    # and feeds integer timesteps where we feed t(sigma) from float32 sigmas: ~1e-6 relative (measured).
    close(got, ref)
    # The library's sampler with the same guidance on the same levels and latents.
    den = from_diffusers(dit_cfg_model(pipe.transformer, labels, 4.0), sched)
    sched.set_timesteps(n)
    lvl = pipe.scheduler.sigmas.double()
    x0 = torch.randn((2, 4, 4, 4), generator=torch.Generator().manual_seed(0)) * math.sqrt(1 + float(lvl[0]) ** 2)
    name, knobs = parse_label(ours)
    with torch.no_grad():
        lib = sampler_function(name)(den, x0, lvl, **knobs)
    close(got, lib)


def test_euler_equals_euler_discrete_scheduler_in_a_pipeline_loop() -> None:
    """An SD-style loop (init_noise_sigma, scale_model_input, model, step) with each scheduler's own start."""
    unet, n = tiny_diffusers.unet2d(), 6
    lat = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    results = []
    for sched in (
        diffusers.EulerDiscreteScheduler(**DDPM_CFG, use_karras_sigmas=True),
        Scheduler.from_config(diffusers.EulerDiscreteScheduler(**DDPM_CFG).config, sampler="euler"),
    ):
        sched.set_timesteps(n)
        # Same EDM state: diffusers starts at latents * sigma_0 (x in EDM units), ours at its x_t = x / sqrt(1 +
        # sigma_0^2); init_noise_sigma is each one's convention for unit latents.
        s0 = float(sched.sigmas[0])
        x = lat * s0 if sched.init_noise_sigma != 1.0 else lat * s0 / math.sqrt(1 + s0**2)
        with torch.no_grad():
            for t in sched.timesteps:
                x = sched.step(unet(sched.scale_model_input(x, t), t).sample, t, x).prev_sample
        results.append(x)
    close(results[1], results[0])


# ---- every sampler, schedules, bookkeeping -------------------------------------------------------------


class RowGenerators:
    """A NoiseSource drawing row k from generator k (what a pipeline's list of generators gives)."""

    def __init__(self, gens: list[torch.Generator]) -> None:
        self.gens = gens

    def randn(self, shape: Any, *, dtype: torch.dtype, device: Any) -> Tensor:
        rows = [torch.randn((1, *shape[1:]), generator=g, dtype=torch.float32) for g in self.gens]
        return torch.cat(rows).to(dtype)


def test_cfgpp_samplers_are_refused_with_the_alternatives() -> None:
    # A pipeline combines the conditional and unconditional outputs before step(): CFG++ cannot see D_u.
    sched = ddpm_scheduler()
    with pytest.raises(ValueError, match=r"CFG\+\+.*pick a sampler for the pipeline: .*dpmpp_2m"):
        Scheduler.from_config(sched.config, sampler="euler_cfgpp")


@pytest.mark.parametrize("sampler", [n for n in names() if not get(n).guided])
def test_every_registry_sampler_runs_in_a_pipeline_as_in_the_library(sampler: str) -> None:
    sched = ddpm_scheduler()
    pipe = ddpm_pipeline(sched)
    pipe.scheduler = Scheduler.from_config(pipe.scheduler.config, sampler=sampler)
    got, rec = run_ddpm(pipe, [1, 2], 3)
    assert rec.calls == len(pipe.scheduler.timesteps) == count_nfe(pipe.scheduler.sigmas, sampler)
    assert pipe.scheduler.order == (2 if count_nfe(karras_sigmas(2), sampler) == 3 else 1)
    # The library's sampler on the same latents, schedule and per-sample noise streams.
    den = from_diffusers(pipe.unet, sched)
    sig = karras_sigmas(3, den.sigma_min, den.sigma_max)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    x0 = torch.cat([torch.randn((1, 3, 8, 8), generator=g) for g in gens]) * math.sqrt(1 + float(sig[0]) ** 2)
    with torch.no_grad():
        ref = sampler_function(sampler)(den, x0, sig, noise=RowGenerators(gens))
    close(got, ref)


def test_per_sample_generators_make_each_sample_depend_on_its_own_seed() -> None:
    pipe = ddpm_pipeline(ddpm_scheduler())
    pipe.scheduler = Scheduler.from_config(pipe.scheduler.config, sampler="euler_ancestral")
    both, _ = run_ddpm(pipe, [7, 8], 4)
    alone, _ = run_ddpm(pipe, [8], 4)
    # Row 1 of the pair and the single run draw the same latents and step noise from the same seed; only the
    # network's batch (2 vs 1) differs, which changes float32 reductions by round-off.
    close(both[1:], alone)
    x = torch.zeros(2, 3, 8, 8)
    for sampler in ("euler_ancestral", "dpmpp_2m_sde"):  # on the caller's thread, and in a worker thread
        sched = Scheduler.from_config(ddpm_scheduler(), sampler=sampler)
        sched.set_timesteps(2)
        with pytest.raises(ValueError, match="one generator per sample"):
            sched.step(x, sched.timesteps[0], x, generator=[torch.Generator()])
        # The failed run is dropped (its worker has ended): the next call starts over instead of waiting.
        sched.step(x, sched.timesteps[0], x, generator=[torch.Generator(), torch.Generator()])


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m_sde", "stochastic:s_churn=20,s_tmax=10"])
def test_stochastic_samplers_draw_the_pipelines_generator_like_the_library(sampler: str) -> None:
    """One generator: the pipeline draws the latents from it, then each step's noise (in the stepper or the
    worker thread), exactly as the library's sampler continuing on the same generator."""
    sched = ddpm_scheduler()
    pipe = ddpm_pipeline(sched)
    pipe.scheduler = Scheduler.from_config(sched.config, sampler=sampler)
    rec = Recorder(pipe.scheduler)
    pipe(batch_size=2, generator=torch.Generator().manual_seed(9), num_inference_steps=4, output_type="pt")
    den = from_diffusers(pipe.unet, sched)
    sig = karras_sigmas(4, den.sigma_min, den.sigma_max)
    g = torch.Generator().manual_seed(9)
    x0 = torch.randn(2, 3, 8, 8, generator=g) * math.sqrt(1 + float(sig[0]) ** 2)
    name, knobs = parse_label(sampler)
    with torch.no_grad():
        ref = sampler_function(name)(den, x0, sig, noise=g, **knobs)
    assert rec.last is not None
    close(rec.last, ref)


def test_churn_before_the_first_model_call_is_refused() -> None:
    sched = Scheduler.from_config(ddpm_scheduler(), sampler="stochastic:s_churn=40")
    with pytest.raises(ValueError, match=r"changes the state before its first model call.*s_tmax below sigma_0"):
        sched.set_timesteps(4)


def test_an_abandoned_threaded_run_is_ended_by_the_next_set_timesteps() -> None:
    sched = Scheduler.from_config(ddpm_scheduler(), sampler="unipc")
    sched.set_timesteps(5)
    x = torch.zeros(1, 3, 8, 8)
    sched.step(x, sched.timesteps[0], x)
    worker = sched._run._thread  # the multistep program runs in a worker thread
    sched.set_timesteps(5)  # the pipeline raised mid-loop and starts over
    worker.join(timeout=5)
    assert not worker.is_alive() and sched._run is None


def test_schedules_scheduler_file_list_and_range(tmp_path: Path) -> None:
    cfg = ddpm_scheduler().config
    own = Scheduler.from_config(cfg, sampler="euler", schedule="scheduler")
    own.set_timesteps(4)
    ddpm = ddpm_scheduler()
    ddpm.set_timesteps(4)
    abar = ddpm.alphas_cumprod.double()[ddpm.timesteps]
    torch.testing.assert_close(own.sigmas.double()[:-1], ((1 - abar) / abar).sqrt().float().double())
    lvl = karras_sigmas(3, 0.1, 10.0)
    save_schedule(tmp_path / "s.json", lvl)
    for spec in (str(tmp_path / "s.json"), lvl.tolist(), lvl[:-1].tolist()):
        s = Scheduler.from_config(cfg, schedule=spec)
        s.set_timesteps(3)
        torch.testing.assert_close(s.sigmas, lvl.float())
    with pytest.raises(ValueError, match="num_inference_steps=3"):
        s.set_timesteps(5)
    ranged = Scheduler.from_config(cfg, schedule="loglinear", sigma_min=0.5, sigma_max=8.0)
    ranged.set_timesteps(3)
    torch.testing.assert_close(ranged.sigmas, torch.tensor([8.0, 2.0, 0.5, 0.0]))


def test_img2img_add_noise_and_begin_index_equal_the_library_on_the_rest_of_the_schedule() -> None:
    unet, n, k = tiny_diffusers.unet2d(), 6, 2
    sched = Scheduler.from_config(ddpm_scheduler().config, sampler="heun")
    sched.set_timesteps(n)
    ts = sched.timesteps[k * sched.order :]
    sched.set_begin_index(k * sched.order)
    x0 = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    noise = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    x = sched.add_noise(x0, noise, ts[:1])
    with torch.no_grad():
        for t in ts:
            x = sched.step(unet(x, t).sample, t, x).prev_sample
    den = from_diffusers(unet, ddpm_scheduler())
    sig = sched.sigmas.double()[k:]
    with torch.no_grad():
        ref = sampler_function("heun")(den, x0 + noise * float(sched.sigmas[k]), sig)
    close(x, ref)
    with pytest.raises(ValueError, match="first model call of a step"):
        sched.set_begin_index(2 * k + 1)


def test_save_pretrained_round_trips_the_configuration(tmp_path: Path) -> None:
    sched = Scheduler.from_config(
        ddpm_scheduler(prediction_type="v_prediction").config, sampler="unipc:order=2", knobs={"order_rule": "full"},
        schedule="loglinear", sigma_max=10.0,
    )  # fmt: skip
    sched.save_pretrained(tmp_path)
    back = Scheduler.from_pretrained(tmp_path)

    def stated(cfg: Any) -> dict[str, Any]:  # diffusers' bookkeeping of defaults aside
        return {k: v for k, v in cfg.items() if k != "_use_default_values"}

    assert stated(back.config) == stated(sched.config)
    assert back.sampler_label == "unipc:order=2,order_rule=full"
    assert back.config.model_config["prediction_type"] == "v_prediction"
    for s in (sched, back):
        s.set_timesteps(4)
    torch.testing.assert_close(back.timesteps, sched.timesteps)
    # A config of our own class given to from_config is read as ours, not as a replaced scheduler's.
    again = Scheduler.from_config(back.config, sampler="heun")
    assert again.config.model_config == sched.config.model_config and again.order == 2


# ---- errors --------------------------------------------------------------------------------------------


def test_bad_sampler_knob_schedule_and_family_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ddpm_scheduler().config
    with pytest.raises(ValueError, match=r"sampler must be one of 'euler', 'heun'.*got 'eulr'"):
        Scheduler.from_config(cfg, sampler="eulr")
    with pytest.raises(TypeError, match=r"unipc_sample got unknown option\(s\) 'eta'; it accepts order"):
        Scheduler.from_config(cfg, sampler="unipc", knobs={"eta": 0.5})
    with pytest.raises(ValueError, match="order must be between 1 and 3"):
        Scheduler.from_config(cfg, sampler="unipc:order=5")
    with pytest.raises(ValueError, match=r"schedule must be one of 'karras', 'loglinear', 'scheduler'"):
        Scheduler.from_config(cfg, schedule="karas")
    monkeypatch.delitem(FAMILIES, "FlowDenoiser")  # a family from_diffusers knows but the scheduler does not
    with pytest.raises(ValueError, match="no family entry for FlowDenoiser"):
        Scheduler.from_config(diffusers.FlowMatchEulerDiscreteScheduler())
    with pytest.raises(ValueError, match="no model_config"):
        Scheduler().set_timesteps(4)


def test_protocol_misuse_is_named() -> None:
    sched = Scheduler.from_config(ddpm_scheduler().config)
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(RuntimeError, match="call set_timesteps"):
        sched.step(x, 999, x)
    sched.set_timesteps(1)
    with pytest.raises(ValueError, match="model_output has shape"):
        sched.step(torch.zeros(1, 3, 4, 4), sched.timesteps[0], x)
    sched.set_timesteps(1)
    sched.step(x, sched.timesteps[0], x)
    with pytest.raises(RuntimeError, match="more often than the 1 model calls"):
        sched.step(x, sched.timesteps[0], x)
    with pytest.raises(ValueError, match="num_inference_steps must be an int"):
        sched.set_timesteps(0)
    assert sched.scale_model_input(x, 3) is x and sched.init_noise_sigma == 1.0


def test_families_are_keyed_by_adapter_class() -> None:
    assert type(from_diffusers(lambda x, t: x, ddpm_scheduler())).__name__ in FAMILIES


def test_docs_example_runs() -> None:
    text = DOC.read_text()
    section = text.split("## Drop-in scheduler", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "docs/diffusers.md's Drop-in scheduler section has no python example"
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {})
