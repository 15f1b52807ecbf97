"""Cross-check of the diffusers adapter against diffusers itself (tiny random UNet, nothing downloaded)."""

from __future__ import annotations

import pytest
import torch

import tiny_diffusers
from edm_samplers import euler_sample, heun_sample, karras_sigmas
from edm_samplers.adapters import DDPMDenoiser
from edm_samplers.diffusers_adapter import from_diffusers, scheduler_sigmas, start_state

diffusers = pytest.importorskip("diffusers")  # a test extra; CI installs it (pip install 'edm-samplers[test]')

# diffusers 0.42.1 itself triggers numpy 2 DeprecationWarnings (np.array(tensor, copy=False)); not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def ddpm_config() -> dict[str, object]:
    return {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}


def diffusers_euler_karras(unet: torch.nn.Module, latents: torch.Tensor, n: int) -> torch.Tensor:
    """diffusers' own sampling loop with EulerDiscreteScheduler(use_karras_sigmas=True)."""
    sched = diffusers.EulerDiscreteScheduler(**ddpm_config(), use_karras_sigmas=True)
    sched.set_timesteps(n)
    x = latents * sched.init_noise_sigma
    for t in sched.timesteps:
        inp = sched.scale_model_input(x, t)
        eps = unet(inp, t).sample
        x = sched.step(eps, t, x).prev_sample
    return x


def test_euler_matches_diffusers_euler_karras() -> None:
    unet = tiny_diffusers.unet2d()
    ddpm = diffusers.DDPMScheduler(**ddpm_config())
    den = from_diffusers(unet, ddpm)
    assert isinstance(den, DDPMDenoiser) and den.model is unet
    n = 6
    latents = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = diffusers_euler_karras(unet, latents, n)
        # Same schedule: diffusers' Karras sigmas span the trained range [sigma_0, sigma_999] with rho = 7.
        sigmas = karras_sigmas(n, den.sigma_min, den.sigma_max)
        ours = euler_sample(den, latents * sigmas[0].float(), sigmas, dtype=torch.float32)
    # Both run float32 with different but equivalent arithmetic (lerp vs x + d dt, float64 vs float32 timestep
    # interpolation); the outputs are O(1..100) after 6 steps, so agreement to ~1e-5 relative is round-off.
    torch.testing.assert_close(ours, ref, rtol=2e-5, atol=2e-5 * float(ref.abs().max()))


def test_timesteps_and_scaling_match_diffusers() -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    unet = tiny_diffusers.unet2d()

    def spy(x: torch.Tensor, t: torch.Tensor) -> object:
        seen.append((x, t))
        return unet(x, t)

    sched = diffusers.EulerDiscreteScheduler(**ddpm_config(), use_karras_sigmas=True)
    sched.set_timesteps(5)
    den = from_diffusers(spy, sched)
    x = torch.randn(1, 3, 8, 8)
    for i, t in enumerate(sched.timesteps):
        sigma = sched.sigmas[i]
        with torch.no_grad():
            den(x, sigma.reshape(1))
        x_in, t_ours = seen[-1]
        # Timestep: our float64 log-sigma interpolation vs diffusers' numpy one cast to float32: float32 round-off.
        torch.testing.assert_close(t_ours, t.reshape(1).float(), rtol=1e-6, atol=1e-4)
        sched._step_index = i
        torch.testing.assert_close(x_in, sched.scale_model_input(x, t), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("karras", [False, True])
def test_heun_matches_diffusers_heun(karras: bool) -> None:
    # With its own betas (linear 0.00085 .. 0.012), HeunDiscreteScheduler evaluates the network at t(sigma) for
    # every sigma it visits (log-sigma interpolation with Karras sigmas; linear in sigma without): sigma = 25.15 is
    # its sigma_max, at t = 999. heun_sample on the adapter reproduces its loop to float32 round-off.
    unet = tiny_diffusers.unet2d()
    sched = diffusers.HeunDiscreteScheduler(use_karras_sigmas=karras)
    n = 6
    latents = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    sched.set_timesteps(n)
    x = latents * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(sched.scale_model_input(x, t), t).sample, t, x).prev_sample
        den = from_diffusers(unet, sched)
        sigmas = scheduler_sigmas(sched, n)
        ours = heun_sample(den, start_state(sched, latents, sigmas), sigmas, dtype=torch.float32)
    assert den.sigma_max == pytest.approx(25.1461, abs=1e-4)
    # float32 round-off of two equivalent loops (11 network evaluations): measured ~2e-7 relative.
    assert float((ours - x).abs().max() / x.abs().max()) <= 1e-5


def test_heun_on_adapter_halves_nfe_error() -> None:
    # Heun on the adapter is the core's Heun; here it is consistent with a fine Euler solution of the same ODE.
    unet = tiny_diffusers.unet2d()
    # The UNet is float32; sampling in float64 runs it through net_dtype (D and the state stay float64).
    den = from_diffusers(unet, diffusers.DDPMScheduler(**ddpm_config()), net_dtype=torch.float32)
    latents = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        sig = karras_sigmas(8, 0.5, den.sigma_max)  # stop at 0.5: the ODE part, no final jump to D
        x0 = latents * sig[0].float()
        h = heun_sample(den, x0, sig[:-1], dtype=torch.float64)
        fine = euler_sample(den, x0, karras_sigmas(128, 0.5, den.sigma_max)[:-1], dtype=torch.float64)
        coarse = euler_sample(den, x0, sig[:-1], dtype=torch.float64)
    # Heun (order 2, 15 NFE) must beat Euler at 8 steps (order 1) against the fine solution.
    assert float((h - fine).abs().max()) < float((coarse - fine).abs().max())


def test_config_dict_and_learned_variance() -> None:
    cfg = {**ddpm_config(), "variance_type": "learned_range", "prediction_type": "v_prediction"}
    unet = tiny_diffusers.unet2d(out_channels=6)
    den = from_diffusers(unet, cfg)
    assert den.learned_variance and den.prediction == "v"
    ref_abar = diffusers.DDPMScheduler(**ddpm_config()).alphas_cumprod.double()
    torch.testing.assert_close(den.sigmas, torch.sqrt((1 - ref_abar) / ref_abar), rtol=0, atol=0)
    with torch.no_grad():
        d = den(torch.randn(2, 3, 8, 8), torch.tensor([1.0, 10.0]))
    assert d.shape == (2, 3, 8, 8) and d.dtype == torch.float32


def test_from_diffusers_errors() -> None:
    with pytest.raises(TypeError, match="scheduler_or_config must be a diffusers"):
        from_diffusers(tiny_diffusers.unet2d(), object())
    with pytest.raises(ValueError, match="prediction must be one of"):
        from_diffusers(tiny_diffusers.unet2d(), {**ddpm_config(), "prediction_type": "flow"})


def test_config_is_read_by_its_own_class() -> None:
    # HeunDiscreteScheduler's defaults (beta 0.00085 .. 0.012) differ from DDPMScheduler's (1e-4 .. 0.02).
    den = from_diffusers(lambda x, t: x, {"_class_name": "HeunDiscreteScheduler"})
    ref = diffusers.HeunDiscreteScheduler().alphas_cumprod.double()
    torch.testing.assert_close(den.sigmas, torch.sqrt((1 - ref) / ref), rtol=0, atol=0)
    assert den.prediction == "eps"
    # A scheduler instance's own config (no _class_name) is recognised by its keys and read by its own class.
    # (Read as a DDPM config, diffusers' from_config would replace the values listed in _use_default_values.)
    sched = diffusers.HeunDiscreteScheduler()
    torch.testing.assert_close(from_diffusers(lambda x, t: x, sched.config).sigmas, den.sigmas, rtol=0, atol=0)


def test_config_without_class_name_must_state_its_schedule() -> None:
    with pytest.raises(ValueError, match=r"no '_class_name' and lacks beta_start, beta_end, prediction_type"):
        from_diffusers(lambda x, t: x, {"num_train_timesteps": 1000, "beta_schedule": "linear"})
    with pytest.raises(ValueError, match=r"lacks num_train_timesteps, beta_schedule \(or trained_betas\)"):
        from_diffusers(lambda x, t: x, {"prediction_type": "epsilon"})
    with pytest.raises(ValueError, match=r"lacks prediction_type \(or the prediction= argument\)"):
        from_diffusers(lambda x, t: x, ddpm_config())
    # Stated explicitly, nothing is guessed; prediction= stands in for prediction_type.
    den = from_diffusers(lambda x, t: x, ddpm_config(), prediction="v")
    assert den.prediction == "v" and den.sigmas.numel() == 1000
    cos = {"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "epsilon"}
    ref = diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2").alphas_cumprod.double()
    torch.testing.assert_close(from_diffusers(lambda x, t: x, cos).sigmas, torch.sqrt((1 - ref) / ref))
    betas = torch.linspace(1e-4, 0.02, 50).tolist()
    den = from_diffusers(
        lambda x, t: x, {"num_train_timesteps": 50, "trained_betas": betas, "prediction_type": "sample"}
    )
    assert den.prediction == "x0" and den.sigmas.numel() == 50


def test_options_that_switch_the_model_family_are_rejected() -> None:
    cont = {"_class_name": "EulerDiscreteScheduler", "timestep_type": "continuous", "prediction_type": "v_prediction"}
    with pytest.raises(ValueError, match="timestep_type='continuous'"):
        from_diffusers(lambda x, t: x, cont)
    with pytest.raises(TypeError, match=r"_class_name'\] must be a str"):
        from_diffusers(lambda x, t: x, {"_class_name": 3})
    with pytest.raises(TypeError, match="scheduler_or_config must be a diffusers scheduler"):
        from_diffusers(lambda x, t: x, "DDPMScheduler")


def test_zero_terminal_snr_is_accepted() -> None:
    # abar_T = 0 (DDIM): sigma_max = inf, and t = T-1 there; eps-prediction cannot give x0 from pure noise.
    cfg = {**ddpm_config(), "_class_name": "DDIMScheduler", "rescale_betas_zero_snr": True}
    den = from_diffusers(lambda x, t: x, {**cfg, "prediction_type": "v_prediction"})
    assert den.sigma_max == float("inf") and den.sigma_to_t(torch.tensor([float("inf")])).item() == 999
    with pytest.raises(ValueError, match="zero terminal SNR"):
        from_diffusers(lambda x, t: x, cfg)


def test_missing_diffusers_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name == "diffusers" or name.startswith("diffusers."):
            raise ImportError("No module named 'diffusers'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pip install 'edm-samplers\[diffusers\]'"):
        from_diffusers(lambda x, t: x, ddpm_config())
