"""EDMSamplerScheduler for the model families beyond plain VP: flow matching (static and dynamic shift), EDM,
VE and zero-terminal-SNR VP (tiny random-weight components, nothing downloaded).

The flow pipelines (SD3, Flux) need transformers' text encoders to be imported at all, so their denoising loop
is driven here as their ``__call__`` runs it (``retrieve_timesteps`` with the pipeline's ``sigmas`` / ``mu``, the
transformer on ``scheduler.timesteps``, ``step``). Two references each time: diffusers' own scheduler where the
algorithm is the same (Euler), and the library's sampler on the same model, latents and levels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

import edm_samplers as es
import tiny_diffusers
from edm_samplers.solvers.api import sampler_function

diffusers = pytest.importorskip("diffusers")  # a test extra; CI installs it (pip install 'edm-samplers[test]')

from edm_samplers.diffusers_scheduler import FAMILIES, scheduler_class  # noqa: E402 (after the importorskip)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers' own numpy 2 warnings

Scheduler = scheduler_class()


def close(got: Tensor, ref: Tensor, rtol: float = 2e-5) -> None:
    # float32 runs of a random network: the same evaluations up to float32 round-off in the first sample's
    # rescaling and the timesteps (float32 levels), amplified by the network to ~1e-6 of the largest value;
    # 2e-5 still rejects any formula difference (a wrong scale, time or step is > 1e-3).
    torch.testing.assert_close(got, ref, rtol=rtol, atol=rtol * float(ref.abs().max()))


def with_class(sched: Any) -> Any:
    # As a pipeline loaded with from_pretrained holds it: its config names its class.
    return type(sched).from_config({**sched.config, "_class_name": type(sched).__name__})


# ---- flow matching: SD3 (static shift) and Flux (dynamic shift) -----------------------------------------


@pytest.fixture(scope="module")
def sd3() -> tuple[torch.nn.Module, dict[str, Tensor], Tensor]:
    return tiny_diffusers.sd3()


def sd3_loop(model: Any, sched: Any, latents: Tensor, cond: dict[str, Tensor], n: int) -> Tensor:
    """StableDiffusion3Pipeline.__call__'s steps 4-7 without guidance (prompt_embeds given; no text encoders)."""
    kwargs = {}
    if sched.config.get("use_dynamic_shifting", None):
        kwargs["mu"] = es.flow_shift_mu(16)
    sched.set_timesteps(n, device="cpu", **kwargs)
    x = latents  # prepare_latents: unit noise, not multiplied by init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            timestep = t.expand(x.shape[0])
            v = model(hidden_states=x, timestep=timestep, **cond, return_dict=False)[0]
            x = sched.step(v, t, x, return_dict=False)[0]
    return x


@pytest.mark.parametrize("dynamic", [False, True], ids=["shift", "mu"])
def test_sd3_loop_euler_equals_flowmatch_euler_and_the_library(sd3: Any, dynamic: bool) -> None:
    """SD3's loop with a static shift (SD3) or dynamic shifting (SD3.5 at high resolution: mu, no sigmas)."""
    model, cond, lat = sd3
    theirs = with_class(diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=dynamic))
    ours = Scheduler.from_config(theirs.config, sampler="euler", schedule="scheduler")
    assert ours.init_noise_sigma == 1.0  # SD3's pipeline never reads it: x_t = latents
    got, ref = sd3_loop(model, ours, lat, cond, 6), sd3_loop(model, theirs, lat, cond, 6)
    close(got, ref)
    torch.testing.assert_close(ours.timesteps, theirs.timesteps, rtol=1e-6, atol=0)  # t * 1000, from t = 1
    den = es.from_diffusers(model, theirs)
    sigmas = es.flow_scheduler_sigmas(theirs, 6, mu=es.flow_shift_mu(16) if dynamic else None)
    assert math.isinf(float(sigmas[0]))
    torch.testing.assert_close(ours.sigmas, sigmas.float())
    with torch.no_grad():
        lib = es.euler_sample(den, es.flow_initial_x(lat, sigmas), sigmas, cond=cond)
    close(got, lib)


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "heun"])
def test_sd3_loop_karras_schedule_starts_at_pure_noise_as_the_library(sd3: Any, sampler: str) -> None:
    """The default schedule on a flow model (range (0, inf)): pure noise, then karras over the replaced
    scheduler's finite levels for the other N - 1 steps."""
    model, cond, lat = sd3
    theirs = with_class(diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0))
    ours = Scheduler.from_config(theirs.config, sampler=sampler)
    got = sd3_loop(model, ours, lat, cond, 5)
    own = es.flow_scheduler_sigmas(theirs, 5)
    levels = torch.cat([own[:1], es.karras_sigmas(4, float(own[-2]), float(own[1]))])
    torch.testing.assert_close(ours.sigmas, levels.float())
    den = es.from_diffusers(model, theirs)
    with torch.no_grad():
        lib = sampler_function(sampler)(den, es.flow_initial_x(lat, levels), levels, cond=cond)
    close(got, lib)


@pytest.fixture(scope="module")
def flux() -> tuple[torch.nn.Module, dict[str, Tensor], Tensor, dict[str, Tensor]]:
    return tiny_diffusers.flux()


def flux_loop(
    model: Any, sched: Any, latents: Tensor, cond: dict[str, Tensor], ids: dict[str, Tensor], n: int
) -> Tensor:
    """FluxPipeline.__call__'s steps 5-6: its own sigmas and the resolution's mu passed to set_timesteps."""
    sigmas = np.linspace(1.0, 1 / n, n)
    mu = es.flow_shift_mu(latents.shape[1])  # calculate_shift with the scheduler's defaults
    sched.set_timesteps(sigmas=sigmas, device="cpu", mu=mu)  # retrieve_timesteps with sigmas: no step count
    x = latents
    with torch.no_grad():
        for t in sched.timesteps:
            timestep = t.expand(x.shape[0]).to(x.dtype)
            v = model(hidden_states=x, timestep=timestep / 1000, **cond, **ids, return_dict=False)[0]
            x = sched.step(v, t, x, return_dict=False)[0]
    return x


def test_flux_loop_with_dynamic_shift_equals_flowmatch_euler_and_the_library(flux: Any) -> None:
    model, cond, lat, ids = flux
    theirs = with_class(diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift=3.0))
    ours = Scheduler.from_config(theirs.config, sampler="euler", schedule="scheduler")
    got, ref = flux_loop(model, ours, lat, cond, ids, 5), flux_loop(model, theirs, lat, cond, ids, 5)
    close(got, ref)
    # The library on the same levels, built without diffusers: Flux's grid t = 1 .. 1/N, shifted by e^mu.
    levels = es.flow_sigmas(5, mu=es.flow_shift_mu(16), t_min=1 / 5)
    torch.testing.assert_close(ours.sigmas, levels.float())
    den = es.from_diffusers(
        model, theirs, call=lambda m, x_t, t, c: m(hidden_states=x_t, timestep=t, **ids, **c, return_dict=False)[0]
    )
    with torch.no_grad():
        lib = es.euler_sample(den, es.flow_initial_x(lat, levels), levels, cond=cond)
    close(got, lib)
    # mu moves the levels: without it (mu = 0) the schedule is Flux's unshifted grid.
    ours.set_timesteps(sigmas=np.linspace(1.0, 0.2, 5), mu=0.0)
    torch.testing.assert_close(ours.sigmas, es.flow_sigmas(5, mu=0.0, t_min=0.2).float())


# ---- EDM and VE: an SD-style loop with a UNet2DModel -----------------------------------------------------


def sd_loop(unet: Any, sched: Any, latents: Tensor, n: int) -> Tensor:
    """StableDiffusionPipeline's loop: latents * init_noise_sigma, scale_model_input, the model, step."""
    sched.set_timesteps(n)
    x = latents * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(sched.scale_model_input(x, t), t).sample, t, x).prev_sample
    return x


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_edm_loop_equals_edm_euler_and_the_library(prediction: str) -> None:
    unet = tiny_diffusers.unet2d()
    lat = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    theirs = with_class(diffusers.EDMEulerScheduler(prediction_type=prediction))
    ours = Scheduler.from_config(theirs.config, sampler="euler", schedule="scheduler")
    close(sd_loop(unet, ours, lat, 6), sd_loop(unet, theirs, lat, 6))
    torch.testing.assert_close(ours.timesteps, theirs.timesteps)  # c_noise = ln(sigma) / 4
    # Heun on the library's default schedule (EDM's rho = 7 on [sigma_min, sigma_max] = [0.002, 80]).
    heun = Scheduler.from_config(theirs.config, sampler="heun")
    got = sd_loop(unet, heun, lat, 5)
    den = es.from_diffusers(unet, theirs)
    sigmas = es.karras_sigmas(5, 0.002, 80.0)
    with torch.no_grad():
        lib = es.heun_sample(den, es.start_state(theirs, lat, sigmas), sigmas)
    close(got, lib)


def test_ve_loop_equals_the_library() -> None:
    unet = tiny_diffusers.unet2d()
    lat = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    cfg = {"_class_name": "ScoreSdeVeScheduler", "sigma_min": 0.01, "sigma_max": 20.0}
    ours = Scheduler.from_config(cfg, sampler="dpmpp_2m")
    assert ours.init_noise_sigma == 20.0  # VE: the model sees x itself, x = latents * sigma_max
    got = sd_loop(unet, ours, lat, 5)
    torch.testing.assert_close(ours.timesteps, ours.sigmas[:-1])  # the model's time input is sigma
    den = es.from_diffusers(unet, cfg)
    sigmas = es.karras_sigmas(5, 0.01, 20.0)
    with torch.no_grad():
        lib = es.dpmpp_2m_sample(den, lat * 20.0, sigmas)
    close(got, lib)


# ---- zero terminal SNR: from sigma = inf -----------------------------------------------------------------


ZERO_SNR = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"}


def test_zero_snr_v_prediction_ddim_pipeline_equals_ddim_and_the_library() -> None:
    """DDPMPipeline (which never reads init_noise_sigma) with a zero-SNR, trailing, v-prediction DDIM config: the
    first level is sigma = inf, where the model sees the unit noise itself."""
    unet = tiny_diffusers.unet2d()
    ddim = with_class(diffusers.DDIMScheduler(**ZERO_SNR, clip_sample=False))
    images = []
    for sched in (ddim, Scheduler.from_config(ddim.config, sampler="euler", schedule="scheduler")):
        pipe = diffusers.DDPMPipeline(unet=unet, scheduler=sched)
        pipe.set_progress_bar_config(disable=True)
        out = pipe(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(7), output_type="np")
        images.append(torch.as_tensor(out.images))
    assert math.isinf(float(sched.sigmas[0])) and sched.init_noise_sigma == 1.0
    close(images[1], images[0])
    # The library: scheduler_sigmas starts at inf; start_state is the unit latents there.
    den = es.from_diffusers(unet, ddim)
    sigmas = es.scheduler_sigmas(ddim, 5)
    lat = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        x = es.euler_sample(den, es.start_state(ddim, lat, sigmas), sigmas)
    close(images[1], (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1))


def test_zero_snr_karras_schedule_starts_at_inf_and_runs_as_the_library() -> None:
    unet = tiny_diffusers.unet2d()
    ddim = with_class(diffusers.DDIMScheduler(**ZERO_SNR))
    ours = Scheduler.from_config(ddim.config, sampler="dpmpp_2m")
    lat = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    got = sd_loop(unet, ours, lat, 5)
    own = es.scheduler_sigmas(ddim, 5)
    den = es.from_diffusers(unet, ddim)
    levels = torch.cat([own[:1], es.karras_sigmas(4, den.sigma_min, float(own[1]))])
    assert math.isinf(float(levels[0]))
    torch.testing.assert_close(ours.sigmas, levels.float())
    with torch.no_grad():
        lib = es.dpmpp_2m_sample(den, lat, levels)
    close(got, lib)


# ---- the hooks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction", ["edm", "v"])
def test_precond_hooks_compose_to_its_forward(prediction: str) -> None:
    net = tiny_diffusers.unet2d()
    den = es.EDMPrecond(net, sigma_data=0.5, prediction=prediction)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(9)) * 3
    sigma = torch.tensor([3.0, 0.1])
    sb = sigma.reshape(-1, 1, 1, 1)
    with torch.no_grad():
        f = net(den.model_input(x, sb), den.sigma_to_t(sigma)).sample
        # An independent transcription of Table 1's EDM column (v: c_out changes sign).
        sd = 0.5
        c_in, c_skip = 1 / torch.sqrt(sb**2 + sd**2), sd**2 / (sb**2 + sd**2)
        c_out = (1 if prediction == "edm" else -1) * sb * sd / torch.sqrt(sb**2 + sd**2)
        ref = c_skip * x + c_out * net(c_in * x, torch.log(sigma) / 4).sample
        torch.testing.assert_close(den.to_denoised(x, sb, f), ref)
        torch.testing.assert_close(den(x, sigma), ref)


def test_every_family_from_diffusers_returns_has_an_entry() -> None:
    model = tiny_diffusers.unet2d()
    flow = {"time_scale": 1000.0}  # the model's time input (not readable from a UNet2DModel)
    cases = [
        (diffusers.DDPMScheduler(), {}),
        (diffusers.EDMEulerScheduler(), {}),
        (diffusers.ScoreSdeVeScheduler(), {}),
        (diffusers.FlowMatchEulerDiscreteScheduler(), flow),
        (diffusers.DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction"), flow),
    ]
    for sched, kwargs in cases:
        assert type(es.from_diffusers(model, sched, **kwargs)).__name__ in FAMILIES
        Scheduler.from_config(sched, sampler="euler").set_timesteps(3)  # builds and plans for each family


def test_pipelines_read_the_replaced_schedulers_keys_from_our_config(tmp_path: Any) -> None:
    """SD3 reads ``scheduler.config.get("use_dynamic_shifting")`` to decide whether to pass mu, Flux
    ``hasattr(scheduler.config, "use_flow_sigmas")``: those keys come from the replaced scheduler's config."""
    theirs = with_class(diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.4))
    ours = Scheduler.from_config(theirs.config, sampler="euler")
    assert ours.config.get("use_dynamic_shifting") is True and ours.config.get("base_shift") == 0.4
    assert ours.config.base_image_seq_len == 256 and not hasattr(ours.config, "use_flow_sigmas")
    assert ours.config.get("sampler") == "euler" and "use_dynamic_shifting" not in ours.config  # ours, not merged
    ours.save_pretrained(tmp_path)
    again = Scheduler.from_pretrained(tmp_path)
    assert again.config.model_config == ours.config.model_config and again.config.get("base_shift") == 0.4
    with pytest.raises(ValueError, match=r"use_dynamic_shifting=True.*got no mu: pass set_timesteps\(num_inference"):
        ours.set_timesteps(4)
    ours.set_timesteps(4, mu=0.8)
    assert math.isinf(float(ours.sigmas[0]))


@pytest.mark.parametrize("cls", ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler"])
def test_multistep_with_flow_sigmas_equals_diffusers(sd3: Any, cls: str) -> None:
    """DPM-Solver++(2M) / UniPC with ``use_flow_sigmas`` (Sana's, Wan's schedulers): their int64 timesteps are
    floor(1000 t), which ours reproduce; the algorithm is the library's with ``order_rule="final"``."""
    model, cond, lat = sd3
    theirs = with_class(
        getattr(diffusers, cls)(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0)
    )
    sampler = "dpmpp_2m:order_rule=final" if cls.startswith("DPM") else "unipc:order=2,order_rule=final"
    ours = Scheduler.from_config(theirs.config, sampler=sampler, schedule="scheduler")
    got, ref = sd3_loop(model, ours, lat, cond, 6), sd3_loop(model, theirs, lat, cond, 6)
    torch.testing.assert_close(ours.timesteps, theirs.timesteps.float())
    close(got, ref)


def test_a_flow_config_without_class_name_is_read_by_its_keys(sd3: Any) -> None:
    """``from_config(pipe.scheduler.config)`` for a scheduler built in code (no '_class_name'): FlowMatchEuler's keys
    name it; FlowMatchHeun's fit another class too (from_diffusers says to pass the scheduler itself)."""
    built = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    assert "_class_name" not in built.config
    ours = Scheduler.from_config(built.config, sampler="euler", schedule="scheduler")
    ours.set_timesteps(4)
    torch.testing.assert_close(ours.sigmas, es.flow_scheduler_sigmas(built, 4).float())
    with pytest.raises(TypeError, match="pass the scheduler or add '_class_name'"):
        Scheduler.from_config(diffusers.FlowMatchHeunDiscreteScheduler().config, sampler="euler")
    with pytest.raises(ValueError, match=r"names none.*EDMSamplerScheduler.from_config\(pipe.scheduler"):
        partial = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
        # A DDPM config of no one class (a subset of the keys): from_diffusers reads it, its levels need a class.
        Scheduler.from_config({**partial, "prediction_type": "epsilon"}, schedule="scheduler").set_timesteps(4)
    Scheduler.from_config(diffusers.FlowMatchHeunDiscreteScheduler(), sampler="euler").set_timesteps(4)
