"""Every diffusers scheduler family against diffusers' own loop (tiny random UNet, same latents, nothing downloaded).

The reference is always diffusers' loop: ``x = latents * init_noise_sigma``, then ``scale_model_input``, the model,
``step``. Ours: ``from_diffusers`` + ``scheduler_sigmas`` + ``start_state`` + the matching sampler. Both run the
model in float32; "relative" is max |ours - ref| / max |ref|, and 1e-5 is float32 round-off after ~10 network
evaluations with different but equivalent arithmetic (measured: 2e-7 .. 8e-7, docs/diffusers.md).
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

import edm_samplers as es
import tiny_diffusers
from edm_samplers import DDPMDenoiser, EDMPrecond, from_diffusers, scheduler_sigmas, start_state

diffusers = pytest.importorskip("diffusers")

# diffusers 0.42.1 itself triggers numpy 2 DeprecationWarnings (np.array(tensor, copy=False)); not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DDPM_BETAS = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
SD_BETAS = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
ZERO_SNR_V = {
    **SD_BETAS,
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
    "prediction_type": "v_prediction",
}
EDM_EXP = {"sigma_schedule": "exponential", "sigma_max": 14.6, "sigma_data": 1.0}
RTOL = 1e-5  # float32 round-off of two equivalent loops (module docstring)


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    return tiny_diffusers.unet2d()


LATENTS = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def diffusers_loop(model: Any, sched: Any, latents: torch.Tensor, n: int, seed: int | None = None) -> torch.Tensor:
    sched.set_timesteps(n)
    x = latents * sched.init_noise_sigma
    kw = {}
    if seed is not None and "generator" in inspect.signature(sched.step).parameters:
        kw["generator"] = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in sched.timesteps:
            out = model(sched.scale_model_input(x, t), t).sample
            x = sched.step(out, t, x, **kw).prev_sample
    return x


def ours(model: Any, sched: Any, sampler: Callable[..., torch.Tensor], n: int, **knobs: Any) -> torch.Tensor:
    den = from_diffusers(model, sched)
    sigmas = scheduler_sigmas(sched, n)
    with torch.no_grad():
        return sampler(den, start_state(sched, LATENTS, sigmas), sigmas, dtype=torch.float32, **knobs)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# (scheduler, its options, our sampler, its knobs, steps). Pairings and why they are exact:
# DDIM (eta 0) is Euler in EDM units; DPM-Solver++(2M) "midpoint" = k-diffusion's 2M; diffusers' lower_order_final
# (on below 15 steps) = order_rule="final". DDIM's clip_sample clips x0, which no denoiser reproduces: off.
VP_CASES = [
    ("EulerDiscreteScheduler", {}, es.euler_sample, {}, 7),
    ("EulerDiscreteScheduler", {"use_karras_sigmas": True}, es.euler_sample, {}, 7),
    ("EulerDiscreteScheduler", {"timestep_spacing": "leading", "prediction_type": "sample"}, es.euler_sample, {}, 7),
    ("HeunDiscreteScheduler", {"prediction_type": "v_prediction"}, es.heun_sample, {}, 6),
    ("DDIMScheduler", {"clip_sample": False}, es.euler_sample, {}, 7),
    ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}, es.euler_sample, {}, 7),
    ("DPMSolverMultistepScheduler", {}, es.dpmpp_2m_sample, {"order_rule": "final"}, 7),
    ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, es.dpmpp_2m_sample, {"order_rule": "final"}, 7),
    ("UniPCMultistepScheduler", {}, es.unipc_sample, {"order": 2, "order_rule": "final"}, 7),
    ("DEISMultistepScheduler", {"solver_order": 3}, es.deis_sample, {"order": 3, "order_rule": "final"}, 7),
    ("LMSDiscreteScheduler", {}, es.lms_sample, {"order": 4, "order_rule": "full"}, 7),
    ("KDPM2DiscreteScheduler", {"timestep_spacing": "trailing"}, es.dpm2_sample, {}, 5),
]


@pytest.mark.parametrize(("name", "opts", "sampler", "knobs", "n"), VP_CASES, ids=lambda v: str(v)[:40])
def test_vp_family_matches_its_scheduler(
    unet: Any, name: str, opts: dict[str, Any], sampler: Any, knobs: dict[str, Any], n: int
) -> None:
    sched = getattr(diffusers, name)(**DDPM_BETAS, **opts)
    ref = diffusers_loop(unet, sched, LATENTS, n)
    got = ours(unet, sched, sampler, n, **knobs)
    last = float(scheduler_sigmas(sched, n)[-1])
    if last > 0 and start_state(sched, torch.ones(1), torch.tensor([1.0])).item() != 1.0:
        # A VP-state scheduler stopping above 0 (DEIS, set_alpha_to_one=False) returns x_t = x / sqrt(1 + sigma^2).
        got = got / math.sqrt(1 + last**2)
    assert rel(got, ref) <= RTOL


def test_euler_ancestral_matches_with_the_same_noise(unet: Any) -> None:
    # diffusers draws torch.randn(shape, generator) once per step (sigma_up = 0 on the last): the same draws here.
    n, seed = 6, 5
    sched = diffusers.EulerAncestralDiscreteScheduler(**DDPM_BETAS)
    ref = diffusers_loop(unet, sched, LATENTS, n, seed=seed)
    g = torch.Generator().manual_seed(seed)
    draws = torch.stack([torch.randn(LATENTS.shape, generator=g) for _ in range(n)])
    got = ours(unet, sched, es.euler_ancestral_sample, n, noise=es.PrecomputedNoise(draws))
    assert rel(got, ref) <= RTOL


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize(
    ("cls", "opts", "sampler", "knobs"),
    [
        ("EDMEulerScheduler", {}, es.euler_sample, {}),
        ("EDMEulerScheduler", EDM_EXP, es.euler_sample, {}),
        ("EDMDPMSolverMultistepScheduler", {}, es.dpmpp_2m_sample, {"order_rule": "final"}),
    ],
)
def test_edm_family_matches_its_scheduler(
    unet: Any, prediction: str, cls: str, opts: dict[str, Any], sampler: Any, knobs: dict[str, Any]
) -> None:
    sched = getattr(diffusers, cls)(prediction_type=prediction, **opts)
    den = from_diffusers(unet, sched)
    assert isinstance(den, EDMPrecond) and den.net is unet
    assert den.prediction == ("v" if prediction == "v_prediction" else "edm")
    assert (den.sigma_data, den.sigma_max) == (sched.config.sigma_data, sched.config.sigma_max)
    ref = diffusers_loop(unet, sched, LATENTS, 7)
    assert rel(ours(unet, sched, sampler, 7, **knobs), ref) <= RTOL


def test_edm_precond_v_form_is_the_sign_flip_of_c_out() -> None:
    # Independent transcription of diffusers' precondition_outputs: v-prediction uses c_out = -sigma sd / sqrt(..).
    f = torch.randn(3, 4)
    x, sigma, sd = torch.randn(3, 4), torch.tensor([0.3, 2.0, 40.0]), 0.7
    d = EDMPrecond(lambda x_in, c: f, sigma_data=sd, prediction="v_prediction")(x, sigma)
    s = sigma[:, None]
    want = sd**2 / (s**2 + sd**2) * x - s * sd / (s**2 + sd**2).sqrt() * f
    torch.testing.assert_close(d, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="prediction must be 'edm'"):
        EDMPrecond(lambda x_in, c: f, prediction="sample")


def test_zero_terminal_snr_clamped_schedulers_match(unet: Any) -> None:
    # Euler, DPM-Solver and UniPC clamp abar_{T-1} to 2**-24: their loops start at sigma = 4096, t = 999.
    n = 10
    for cls, sampler, knobs in [
        ("DPMSolverMultistepScheduler", es.dpmpp_2m_sample, {"order_rule": "final"}),
        ("UniPCMultistepScheduler", es.unipc_sample, {"order": 2, "order_rule": "final"}),
    ]:
        sched = getattr(diffusers, cls)(**ZERO_SNR_V)
        assert float(scheduler_sigmas(sched, n)[0]) == 4096.0
        assert rel(ours(unet, sched, sampler, n, **knobs), diffusers_loop(unet, sched, LATENTS, n)) <= RTOL
    sched = diffusers.EulerDiscreteScheduler(**ZERO_SNR_V)
    ref = diffusers_loop(unet, sched, LATENTS, n)
    got = ours(unet, sched, es.euler_sample, n)
    den = from_diffusers(unet, sched, net_dtype=torch.float32)
    sig = scheduler_sigmas(sched, n)
    with torch.no_grad():
        exact = es.euler_sample(den, start_state(sched, LATENTS.double(), sig), sig, dtype=torch.float64)
    # diffusers' float32 x + d (sigma_1 - 4096) loses ~4096 * 2**-24 relative digits on the first step (measured
    # 1.7e-5 from the float64 solution); ours stays at float32 round-off of it (2e-7).
    assert rel(got.double(), exact) <= 1e-6
    assert rel(ref.double(), exact) <= 3e-5
    assert rel(got, ref) <= 3e-5


def test_zero_terminal_snr_ddim_from_infinity(unet: Any) -> None:
    # DDIM keeps abar_{T-1} = 0: sigma_0 = inf, the model sees pure noise at t = 999.
    n = 10
    sched = diffusers.DDIMScheduler(**ZERO_SNR_V, clip_sample=False)
    den = from_diffusers(unet, sched)
    assert isinstance(den, DDPMDenoiser) and den.sigma_max == math.inf
    sig = scheduler_sigmas(sched, n)
    assert sig[0] == math.inf and torch.isfinite(sig[1:]).all()
    assert torch.equal(start_state(sched, LATENTS, sig), LATENTS)
    # The finite levels now: time input and D against DDIM's own x0 prediction at each step.
    sched.set_timesteps(n)
    x_t = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    for t, sigma in zip(sched.timesteps[1:], sig[1:-1], strict=True):
        torch.testing.assert_close(den.sigma_to_t(sigma.reshape(1)), t.double().reshape(1), rtol=0, atol=1e-9)
        with torch.no_grad():
            v = unet(x_t, t).sample
            x0 = sched.step(v, t, x_t).pred_original_sample
            d = den(x_t * math.sqrt(1 + float(sigma) ** 2), sigma.float().reshape(1))
        torch.testing.assert_close(d, x0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(den.sigma_to_t(torch.tensor([math.inf])), torch.tensor([999.0], dtype=torch.float64))
    ref = diffusers_loop(unet, sched, LATENTS, n)
    # The first step from pure noise by hand (its exact limit: the model sees x_t = n at t = 999, v-prediction
    # gives D = -v, and Euler lands on D + sigma_1 n), then Euler on the finite levels.
    with torch.no_grad():
        d0 = -unet(LATENTS, torch.tensor([999.0])).sample
        x1 = d0 + float(sig[1]) * LATENTS
        by_hand = es.euler_sample(den, x1, sig[1:], dtype=torch.float32)
    assert rel(by_hand, ref) <= RTOL
    assert rel(ours(unet, sched, es.euler_sample, n), ref) <= RTOL


def test_zero_snr_with_ddpm_betas_is_accepted() -> None:
    # The 2**-24 clamp lies below abar_998 with the default DDPM betas: the level order breaks, the clamp is undone.
    sched = diffusers.EulerDiscreteScheduler(**DDPM_BETAS, rescale_betas_zero_snr=True, prediction_type="v_prediction")
    den = from_diffusers(lambda x, t: x, sched)
    assert isinstance(den, DDPMDenoiser) and den.sigma_max == math.inf
    assert scheduler_sigmas(sched, 5)[0] == math.inf
    keep = diffusers.EulerDiscreteScheduler(**ZERO_SNR_V)
    assert from_diffusers(lambda x, t: x, keep).sigma_max == pytest.approx(4096.0, rel=1e-6)
    with pytest.raises(ValueError, match=r"zero terminal SNR .* prediction_type='epsilon'"):
        from_diffusers(lambda x, t: x, diffusers.DDIMScheduler(rescale_betas_zero_snr=True))


# Families with no exact library counterpart: the mapping (levels, time inputs, D) against the scheduler itself.
@pytest.mark.parametrize(
    ("cls", "opts"),
    [
        ("DDPMScheduler", {"clip_sample": False}),
        ("LCMScheduler", {}),
        ("TCDScheduler", {}),
        ("PNDMScheduler", {"skip_prk_steps": True}),
        ("DPMSolverSinglestepScheduler", {}),
        ("DPMSolverSinglestepScheduler", {"use_karras_sigmas": True}),
    ],
)
def test_mapping_of_families_without_a_matching_sampler(cls: str, opts: dict[str, Any]) -> None:
    seen: list[torch.Tensor] = []

    def spy(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(t.reshape(-1)[:1].double())
        return torch.zeros_like(x)

    sched = getattr(diffusers, cls)(**DDPM_BETAS, **opts)
    den = from_diffusers(spy, sched)
    n = 4
    sig = scheduler_sigmas(sched, n)
    sched.set_timesteps(n)
    ts = torch.unique_consecutive(sched.timesteps.double())
    # The final level: 0, or sigma_{t=0} where the scheduler stops at abar_0 (PNDM's default set_alpha_to_one=False).
    last = 0.0 if sched.config.get("set_alpha_to_one", True) else float(den.sigmas[0])
    assert sig.numel() == ts.numel() + 1 and float(sig[-1]) == last
    with torch.no_grad():
        for level in sig[:-1]:
            den(torch.zeros(1, 3, 2, 2), level.float().reshape(1))
    # Each level feeds the model the scheduler's own timestep (float32 levels: t within 1e-4).
    torch.testing.assert_close(torch.cat(seen), ts, rtol=0, atol=1e-4)


def test_lcm_denoised_is_the_adapters_d(unet: Any) -> None:
    # LCM's denoised = c_out x0 + c_skip x_t with boundary scalings ~1 and ~2e-9 away from t = 0: D to 1e-6.
    sched = diffusers.LCMScheduler(**DDPM_BETAS)
    den = from_diffusers(unet, sched)
    sig = scheduler_sigmas(sched, 3)
    sched.set_timesteps(3)
    x_t = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for t, s in zip(sched.timesteps, sig[:-1], strict=True):
            denoised = sched.step(unet(x_t, t).sample, t, x_t).denoised
            d = den(x_t * math.sqrt(1 + float(s) ** 2), s.float().reshape(1))
            assert rel(d, denoised) <= RTOL  # x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) amplifies round-off


def test_score_sde_ve_mapping(unet: Any) -> None:
    sched = diffusers.ScoreSdeVeScheduler(sigma_min=0.01, sigma_max=50.0)
    den = from_diffusers(unet, sched)
    assert isinstance(den, es.ContinuousDenoiser) and (den.sigma_min, den.sigma_max) == (0.01, 50.0)
    n = 5
    sig = scheduler_sigmas(sched, n)
    sched.set_timesteps(n)
    sched.set_sigmas(n)
    torch.testing.assert_close(sig[:-1], sched.sigmas.double())
    assert sig[-1] == 0 and torch.equal(start_state(sched, LATENTS, sig), LATENTS * sched.init_noise_sigma)
    # The predictor step's mean is x + (sigma^2 - sigma_prev^2) score with score = (D - x) / sigma^2 (EDM Eq. 3);
    # the pipeline calls the model at sched.sigmas[i], the step uses its grid discrete_sigmas.
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(6)) * 5
    t, sigma = sched.timesteps[1], sched.sigmas[1]
    k = int(t * (n - 1))
    step = sched.discrete_sigmas[k] ** 2 - sched.discrete_sigmas[k - 1] ** 2
    with torch.no_grad():
        out = sched.step_pred(unet(x, sigma.reshape(1)).sample, t, x, generator=torch.Generator().manual_seed(0))
        d = den(x, sigma.reshape(1))
    torch.testing.assert_close(out.prev_sample_mean, x + step * (d - x) / sigma**2, rtol=1e-5, atol=1e-5)


def test_config_mappings_use_their_own_class() -> None:
    heun = diffusers.HeunDiscreteScheduler()
    named = {**heun.config, "_class_name": "HeunDiscreteScheduler"}
    for cfg in (heun.config, named, {"_class_name": "HeunDiscreteScheduler"}):
        den = from_diffusers(lambda x, t: x, cfg)
        assert den.sigma_max == pytest.approx(float(heun.sigmas.max()), rel=1e-6)  # 25.1, not DDPM's 157
        assert den.timestep == "linear"
    edm = diffusers.EDMEulerScheduler(sigma_max=14.6, prediction_type="v_prediction")
    for cfg in (edm.config, {"_class_name": "EDMEulerScheduler", "sigma_max": 14.6, "prediction_type": "v_prediction"}):
        den = from_diffusers(lambda x, t: x, cfg)
        assert isinstance(den, EDMPrecond) and den.sigma_max == 14.6 and den.prediction == "v"
    ve = from_diffusers(lambda x, t: x, diffusers.ScoreSdeVeScheduler(sigma_max=348.0).config)
    assert isinstance(ve, es.ContinuousDenoiser) and ve.sigma_max == 348.0
    for cls in ("LCMScheduler", "TCDScheduler"):
        den = from_diffusers(lambda x, t: x, getattr(diffusers, cls)().config)
        ref = getattr(diffusers, cls)().alphas_cumprod.double()
        torch.testing.assert_close(den.sigmas, torch.sqrt((1 - ref) / ref), rtol=0, atol=0)
    assert from_diffusers(lambda x, t: x, diffusers.DPMSolverMultistepScheduler().config).timestep == "quantize"


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("CMStochasticIterativeScheduler", "consistency model"),
        ("KarrasVeScheduler", "deprecated"),
        ("MyScheduler", "not a known scheduler"),
    ],
)
def test_unsupported_classes_are_named(name: str, match: str) -> None:
    with pytest.raises(ValueError, match=rf"_class_name'\] = '{name}': {name} .*{match}"):
        from_diffusers(lambda x, t: x, {"_class_name": name})
    sched = diffusers.CMStochasticIterativeScheduler()
    with pytest.raises(TypeError, match=r"instance of CMStochasticIterativeScheduler: .*consistency model"):
        from_diffusers(lambda x, t: x, sched)


def test_flow_schedulers_map_to_the_flow_schedule_and_start() -> None:
    # The flow schedule starts at t = 1, sigma = inf, from the latents themselves.
    sched = diffusers.FlowMatchEulerDiscreteScheduler()
    sig = scheduler_sigmas(sched, 4)
    assert sig[0] == math.inf and torch.equal(start_state(sched, LATENTS, sig), LATENTS)


def test_options_of_another_family_are_rejected() -> None:
    edm, ve = diffusers.EDMEulerScheduler(), diffusers.ScoreSdeVeScheduler()
    with pytest.raises(ValueError, match="timestep=, learned_variance= and call= apply to VP"):
        from_diffusers(lambda x, t: x, edm, timestep="quantize")
    with pytest.raises(ValueError, match="timestep=, learned_variance= and call= apply to VP"):
        from_diffusers(lambda x, t: x, ve, learned_variance=True)
    with pytest.raises(TypeError, match="learned_variance must be True or False"):
        from_diffusers(lambda x, t: x, edm, learned_variance="no")
    with pytest.raises(ValueError, match="prediction= does not apply"):
        from_diffusers(lambda x, t: x, ve, prediction="v")
    with pytest.raises(ValueError, match="EDM schedulers take 'epsilon' or 'v_prediction'"):
        from_diffusers(lambda x, t: x, edm, prediction="sample")
    with pytest.raises(ValueError, match="timestep must be 'auto'"):
        from_diffusers(lambda x, t: x, edm, timestep="round")  # type: ignore[arg-type]


def test_range_warning_once_at_entry() -> None:
    den = from_diffusers(lambda x, t: torch.zeros_like(x), diffusers.EDMEulerScheduler(sigma_max=14.6))
    x = torch.zeros(1, 2)
    with pytest.warns(UserWarning, match=r"starts at sigma = 80, above the denoiser's sigma_max = 14.6"):
        es.euler_sample(den, x, es.karras_sigmas(4, 0.002, 80.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        es.euler_sample(den, x, scheduler_sigmas(diffusers.EDMEulerScheduler(sigma_max=14.6), 4))


def test_scheduler_sigmas_and_start_state() -> None:
    sched = diffusers.EulerDiscreteScheduler(**DDPM_BETAS, timestep_spacing="leading")
    sig = scheduler_sigmas(sched, 5, device="cpu")
    assert sig.dtype == torch.float64 and sig.numel() == 6 and sched.num_inference_steps is None  # not modified
    torch.testing.assert_close(start_state(sched, LATENTS, sig), LATENTS * math.sqrt(float(sig[0]) ** 2 + 1))
    heun = diffusers.HeunDiscreteScheduler()
    heun.set_timesteps(5)
    torch.testing.assert_close(scheduler_sigmas(heun, 5), torch.unique_consecutive(heun.sigmas.double()))
    edm = diffusers.EDMEulerScheduler()
    torch.testing.assert_close(start_state(edm, LATENTS, scheduler_sigmas(edm, 3)), LATENTS * math.sqrt(80.0**2 + 1))
    dpm = diffusers.DPMSolverMultistepScheduler()
    s = scheduler_sigmas(dpm, 4)
    torch.testing.assert_close(start_state(dpm, LATENTS, s), LATENTS * math.sqrt(1 + float(s[0]) ** 2))
    with pytest.warns(UserWarning, match="no single noise schedule"):
        scheduler_sigmas(diffusers.DDIMScheduler(timestep_spacing="trailing"), 7)
    with pytest.raises(ValueError, match="num_steps"):
        scheduler_sigmas(dpm, 0)
    with pytest.raises(TypeError, match="latents must be a floating-point tensor"):
        start_state(dpm, torch.zeros(2, dtype=torch.int64), s)
    with pytest.raises(TypeError, match="scheduler_or_config must be a diffusers scheduler"):
        scheduler_sigmas(object(), 4)


def test_the_scheduler_families_example_of_the_docs_runs() -> None:
    # docs/diffusers.md, "Scheduler families": the EDM-trained example reproduces EDMEulerScheduler (its asserts).
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "diffusers.md").read_text()
    m = re.search(r"^## Scheduler families\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m is not None, "docs/diffusers.md lost its 'Scheduler families' section"
    blocks = re.findall(r"```python\n(.*?)```", m.group(1), re.S)
    assert blocks, "the section has no python example"
    for code in blocks:
        exec(compile(code, "docs/diffusers.md", "exec"), {})
