"""Flow-matching models (edm_samplers.flow): the adapter's formula, the schedules against diffusers 0.42's
schedulers, and the library's samplers against diffusers' own loops on tiny random-weight transformers
(SD3, Flux, Sana; built from config, nothing downloaded)."""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import edm_samplers as es
import tiny_diffusers
from edm_samplers import FlowDenoiser, flow_initial_x, flow_scheduler_sigmas, flow_shift_mu, flow_sigmas

F64 = torch.float64
INF = math.inf
DOC = Path(__file__).resolve().parents[1] / "docs" / "diffusers.md"


# ---- the adapter's formula (no diffusers needed) ---------------------------------------------------------


class Spy:
    """A velocity model v(x_t, t) = a x_t + b t + c (any smooth function would do) that records its inputs."""

    def __init__(self) -> None:
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, hidden_states: torch.Tensor, timestep: torch.Tensor, **cond: Any) -> torch.Tensor:
        self.seen.append((hidden_states, timestep))
        tb = timestep.reshape(-1, *([1] * (hidden_states.ndim - 1))).to(hidden_states.dtype)
        return 0.7 * hidden_states - 0.3 * tb / 1000 + 0.1 + cond.get("shift", 0.0)


@given(t=st.lists(st.floats(1e-4, 1 - 1e-4), min_size=1, max_size=4), scale=st.sampled_from([1.0, 1000.0]))
@settings(max_examples=10)  # a closed-form identity: a few draws of t in (0, 1) suffice
def test_denoiser_is_x_t_minus_t_v(t: list[float], scale: float) -> None:
    # Independent transcription, in flow coordinates: pick t and x_t, then sigma = t / (1 - t), x = x_t / (1 - t);
    # the model must see (x_t, t * scale) and D must be x_t - t v.
    tt = torch.tensor(t, dtype=F64)
    x_t = torch.randn(len(t), 3, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    sigma = tt / (1 - tt)
    x = x_t / (1 - tt)[:, None, None]
    spy = Spy()
    den = FlowDenoiser(spy, time_scale=scale)
    d = den(x, sigma)
    seen_x, seen_t = spy.seen[-1]
    # float64: the two directions of the coordinate change agree to a few ulps of x (|x| <= 1e4 |x_t|).
    torch.testing.assert_close(seen_x, x_t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(seen_t, tt * scale, rtol=1e-13, atol=0)
    v = spy(x_t, tt * scale)
    torch.testing.assert_close(d, x_t - tt[:, None, None] * v, rtol=1e-12, atol=1e-12)


def test_denoiser_at_infinity_sees_the_noise_itself() -> None:
    n = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1))
    spy = Spy()
    den = FlowDenoiser(spy, time_scale=1000.0)
    d = den(n, torch.tensor([INF, 3.0]))
    x_t, t = spy.seen[-1]
    assert torch.equal(x_t[0], n[0]) and torch.equal(t, torch.tensor([1000.0, 750.0]))
    v = spy(x_t, t)
    torch.testing.assert_close(d[0], n[0] - v[0], rtol=0, atol=0)  # D(n; inf) = n - v, t = 1 exactly
    assert bool(torch.isfinite(d).all())
    # A scalar inf is broadcast like any sigma; NaN is still rejected at the entry.
    assert torch.isfinite(den(n, INF)).all()
    with pytest.raises(ValueError, match=r"sigma must be > 0 \(inf allowed\)"):
        den(n, torch.tensor([math.nan, 1.0]))


def test_floor_timestep_and_call_conventions() -> None:
    calls: list[torch.Tensor] = []

    def positional(x_t: torch.Tensor, t: torch.Tensor, *, extra: float) -> torch.Tensor:
        calls.append(t)
        return x_t * extra

    den = FlowDenoiser(positional, time_scale=2000.0, timestep="floor")
    x = torch.ones(2, 3)
    den(x, torch.tensor([0.9997 / 0.0003, 1.0]), extra=0.5)  # t = 0.9997 and 0.5
    # floor(1000 t) on the num_train_timesteps grid, then scaled: 999 * 2 and 500 * 2.
    torch.testing.assert_close(calls[-1], torch.tensor([1998.0, 1000.0]))

    def transformer_like(hidden_states: torch.Tensor, context: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        calls.append(timestep)
        return hidden_states + context

    # timestep elsewhere than 2nd (every diffusers transformer): passed by name, the conditioning by keyword.
    d = FlowDenoiser(transformer_like, time_scale=1.0)(x, torch.tensor([1.0, 3.0]), context=torch.zeros(2, 3))
    torch.testing.assert_close(calls[-1], torch.tensor([0.5, 0.75]))
    torch.testing.assert_close(d, x / torch.tensor([[2.0], [4.0]]) * (1 - torch.tensor([[0.5], [0.75]])))
    hooked = FlowDenoiser(transformer_like, time_scale=1.0, call=lambda m, x_t, t, c: m(x_t, 0 * x_t, t))
    torch.testing.assert_close(hooked(x, 1.0), x / 2 - 0.5 * x / 2)


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({}, TypeError, "time_scale"),
        ({"time_scale": 0.0}, ValueError, "time_scale must be > 0"),
        ({"time_scale": 1.0, "timestep": "round"}, ValueError, "timestep must be 'continuous'"),
        ({"time_scale": 1.0, "call": 3}, TypeError, "call must be None or a function"),
        ({"time_scale": 1.0, "num_train_timesteps": 0}, ValueError, "num_train_timesteps must be >= 1"),
    ],
)
def test_flow_denoiser_bad_arguments(kw: dict[str, Any], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        FlowDenoiser(Spy(), **kw)


# ---- schedules -------------------------------------------------------------------------------------------


def test_flow_sigmas_closed_form() -> None:
    # shift 1, t_min 0.25, N = 4: t = 1, 0.75, 0.5, 0.25 -> sigma = inf, 3, 1, 1/3, then 0.
    torch.testing.assert_close(
        flow_sigmas(4, t_min=0.25), torch.tensor([INF, 3.0, 1.0, 1 / 3, 0.0], dtype=F64), rtol=1e-15, atol=0
    )
    # Static shift s: t -> s t / (1 + (s - 1) t), i.e. sigma -> s sigma (the shift is a scaling of EDM's sigma).
    base = flow_sigmas(6, t_min=0.1)
    torch.testing.assert_close(flow_sigmas(6, shift=3.0, t_min=0.1)[1:], 3 * base[1:], rtol=1e-14, atol=0)
    # Dynamic exponential shift: t -> e^mu / (e^mu + 1/t - 1), i.e. sigma -> e^mu sigma; linear: sigma -> mu sigma.
    torch.testing.assert_close(flow_sigmas(6, mu=0.7, t_min=0.1)[1:], math.exp(0.7) * base[1:], rtol=1e-14, atol=0)
    lin = flow_sigmas(6, mu=0.7, time_shift="linear", t_min=0.1)
    torch.testing.assert_close(lin[1:], 0.7 * base[1:], rtol=1e-14, atol=0)
    # A first t below 1 gives a finite first level.
    assert flow_sigmas(3, t_max=0.5, t_min=0.1)[0] == 1.0


def t_of(sigmas: torch.Tensor) -> torch.Tensor:
    """Flow time t = sigma / (1 + sigma), 1 at sigma = inf."""
    return torch.where(sigmas.isinf(), 1.0, sigmas / (1 + sigmas))


@given(
    n=st.integers(1, 60),
    shift=st.floats(0.1, 10.0),
    mu=st.none() | st.floats(-2.0, 3.0),
    spacing=st.sampled_from(["linear", "karras", "exponential"]),
    terminal=st.none() | st.floats(0.001, 0.5),
)
@settings(max_examples=30)
def test_flow_sigmas_properties(n: int, shift: float, mu: float | None, spacing: Any, terminal: float | None) -> None:
    if terminal is not None:
        n = max(n, 2)  # stretching divides by 1 - (last t), which is 0 for a single step
    sig = flow_sigmas(n, shift=1.0 if mu is not None else shift, mu=mu, spacing=spacing, shift_terminal=terminal)
    assert sig.dtype == F64 and sig.shape == (n + 1,) and sig[-1] == 0 and sig[0] == INF  # from pure noise
    assert bool((sig[1:] < sig[:-1]).all()) and bool((sig[:-1] > 0).all())


SCHEDULER_CASES: list[tuple[str, dict[str, Any], dict[str, Any], float | None]] = [
    ("FlowMatchEulerDiscreteScheduler", {}, {}, None),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, {"shift": 3.0}, None),
    ("FlowMatchEulerDiscreteScheduler", {"use_dynamic_shifting": True}, {}, 0.8),
    ("FlowMatchEulerDiscreteScheduler", {"use_dynamic_shifting": True, "time_shift_type": "linear"},
     {"time_shift": "linear"}, 1.3),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0, "shift_terminal": 0.1}, {"shift": 3.0, "shift_terminal": 0.1},
     None),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0, "use_karras_sigmas": True}, {"shift": 3.0, "spacing": "karras"},
     None),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 2.0, "use_exponential_sigmas": True},
     {"shift": 2.0, "spacing": "exponential"}, None),
    ("FlowMatchEulerDiscreteScheduler", {"num_train_timesteps": 500, "shift": 3.0},
     {"shift": 3.0, "num_train_timesteps": 500}, None),
    ("FlowMatchHeunDiscreteScheduler", {"shift": 3.0}, {"shift": 3.0}, None),
]  # fmt: skip


@pytest.mark.parametrize(("cls", "cfg", "ours", "mu"), SCHEDULER_CASES)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_flow_sigmas_and_scheduler_sigmas_match_diffusers(
    cls: str, cfg: dict[str, Any], ours: dict[str, Any], mu: float | None
) -> None:
    diffusers = pytest.importorskip("diffusers")
    n = 7
    sched = getattr(diffusers, cls)(**cfg)
    got = flow_scheduler_sigmas(sched, n, mu=mu)
    built = flow_sigmas(n, mu=mu, **ours)
    sched.set_timesteps(n, **({} if mu is None else {"mu": mu}))
    t_ref = sched.sigmas.double()
    if cls == "FlowMatchHeunDiscreteScheduler":
        t_ref = torch.cat([t_ref[:1], t_ref[1:-1:2], t_ref[-1:]])
    assert got.dtype == F64 and got.shape == (n + 1,) and got[-1] == 0 and got[0] == INF
    # The scheduler's own levels: its float32 t widened, then t / (1 - t); back to t within float64 round-off.
    torch.testing.assert_close(t_of(got), t_ref, rtol=1e-15, atol=0)
    # The float64 builder vs diffusers' float32 computation, compared in t (sigma = t / (1 - t) amplifies the
    # float32 rounding of t near 1): a few float32 ulps.
    torch.testing.assert_close(t_of(built), t_ref, rtol=0, atol=3e-7)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_flow_sigmas_beta_spacing_matches_diffusers() -> None:
    diffusers = pytest.importorskip("diffusers")
    pytest.importorskip("scipy")
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0, use_beta_sigmas=True)
    sched.set_timesteps(6)
    built = flow_sigmas(6, shift=3.0, spacing="beta")
    torch.testing.assert_close(t_of(built), sched.sigmas.double(), atol=3e-7, rtol=0)


def test_flow_shift_mu_is_diffusers_calculate_shift() -> None:
    # diffusers.pipelines.flux.pipeline_flux.calculate_shift, transcribed (importing it needs transformers).
    def calculate_shift(n: int, base: int = 256, top: int = 4096, lo: float = 0.5, hi: float = 1.15) -> float:
        m = (hi - lo) / (top - base)
        return n * m + (lo - m * base)

    for n in (1, 256, 1024, 4096, 10000):
        assert flow_shift_mu(n) == pytest.approx(calculate_shift(n), rel=1e-15)
    assert flow_shift_mu(256) == pytest.approx(0.5) and flow_shift_mu(4096) == pytest.approx(1.15)
    assert flow_shift_mu(100, base_seq_len=100, max_seq_len=200, base_shift=0.2, max_shift=0.4) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="max_seq_len must differ"):
        flow_shift_mu(10, base_seq_len=5, max_seq_len=5)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"shift": 2.0, "mu": 0.5}, "pass shift .* or mu .*, not both"),
        ({"time_shift": "cubic"}, "time_shift must be"),
        ({"spacing": "cosine"}, "spacing must be"),
        ({"t_max": 1.5}, r"t_max must be in \(0, 1\]"),
        ({"t_min": 0.9, "t_max": 0.5}, "t_min must be < t_max"),
        ({"shift_terminal": 1.0}, r"shift_terminal must be in \(0, 1\)"),
        ({"mu": -1.0, "time_shift": "linear"}, "mu must be > 0"),
        ({"shift": -1.0}, "shift must be > 0"),
    ],
)
def test_flow_sigmas_bad_arguments(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        flow_sigmas(5, **kw)
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        flow_sigmas(0)
    with pytest.raises(ValueError, match="use at least 2 steps"):
        flow_sigmas(1, shift_terminal=0.5)


def test_flow_initial_x() -> None:
    lat = torch.randn(2, 3)
    assert torch.equal(flow_initial_x(lat, flow_sigmas(4)), lat)  # sigma_0 = inf: unit noise
    sig = flow_sigmas(4, t_max=0.75, t_min=0.1)  # sigma_0 = 3: diffusers' x_t = latents is x = 4 latents
    torch.testing.assert_close(flow_initial_x(lat, sig), 4 * lat)
    with pytest.raises(ValueError, match="sigmas"):
        flow_initial_x(lat, torch.tensor([0.0]))


# ---- against diffusers' loops on tiny transformers ---------------------------------------------------------

diffusers_mark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def diffusers_mod() -> Any:
    return pytest.importorskip("diffusers")  # a test extra; CI installs it


@pytest.fixture(scope="module")
def sd3(diffusers_mod: Any) -> tuple[torch.nn.Module, dict[str, torch.Tensor], torch.Tensor]:
    return tiny_diffusers.sd3()


@pytest.fixture(scope="module")
def sana(diffusers_mod: Any) -> tuple[torch.nn.Module, dict[str, torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    model = diffusers_mod.SanaTransformer2DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=4, num_layers=1,
        num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8,
        sample_size=8, patch_size=1, mlp_ratio=2.0,
    )  # fmt: skip
    g = torch.Generator().manual_seed(2)
    cond = {"encoder_hidden_states": torch.randn(2, 3, 8, generator=g)}
    return tiny_diffusers.perturbed(model), cond, torch.randn(2, 4, 8, 8, generator=g)


@pytest.fixture(scope="module")
def flux(diffusers_mod: Any) -> tuple[torch.nn.Module, dict[str, torch.Tensor], torch.Tensor]:
    model, cond, latents, _ = tiny_diffusers.flux()
    return model, cond, latents


def flux_ids() -> dict[str, torch.Tensor]:
    # Position ids are shared by the batch (2-D, no batch dimension): bound in a call hook, not passed as cond,
    # whose tensors the samplers check for a batch dimension.
    img = torch.zeros(16, 3)
    img[:, 1] = torch.arange(16) // 4
    img[:, 2] = torch.arange(16) % 4
    return {"txt_ids": torch.zeros(3, 3), "img_ids": img}


def diffusers_loop(
    model: Any, sched: Any, latents: torch.Tensor, cond: dict[str, Any], n: int, *, mu: float | None = None,
    time_div: float = 1.0,
) -> list[torch.Tensor]:  # fmt: skip
    """diffusers' own loop (as its pipelines run it, without guidance): every state, x_{t_0} = latents first."""
    sched.set_timesteps(n, **({} if mu is None else {"mu": mu}))
    x = latents.clone()
    states = [x]
    with torch.no_grad():
        for t in sched.timesteps:
            v = model(hidden_states=x, timestep=t.expand(x.shape[0]) / time_div, **cond).sample
            x = sched.step(v, t, x).prev_sample
            states.append(x)
    return states


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# float32 model and state on both sides; diffusers steps x_t + dt v, the library lerps in EDM coordinates and maps
# t <-> sigma: different but equivalent arithmetic, measured 1e-7 .. 3e-7 relative; 1e-5 is the acceptance bound,
# and a wrong formula (a shift, an off-by-one time, the int64 floor missing) moves the result by >= 1e-4.
TOL = 1e-5


@diffusers_mark
@pytest.mark.parametrize("dynamic", [False, True], ids=["shift3", "dynamic"])
def test_euler_matches_flowmatch_euler_from_the_second_level(sd3: Any, diffusers_mod: Any, dynamic: bool) -> None:
    model, cond, lat = sd3
    n = 6
    kw: dict[str, Any] = {"use_dynamic_shifting": True} if dynamic else {"shift": 3.0}
    mu = flow_shift_mu(16) if dynamic else None  # 4x4 tokens after 2x2 patches
    sched = diffusers_mod.FlowMatchEulerDiscreteScheduler(**kw)
    states = diffusers_loop(model, sched, lat, cond, n, mu=mu)
    den = es.from_diffusers(model, sched)
    assert isinstance(den, FlowDenoiser) and den.model is model and den.time_scale == 1000.0
    sig = flow_scheduler_sigmas(sched, n, mu=mu)
    assert sig[0] == INF
    # Start at the second level from diffusers' state after its first step, mapped to EDM (x = x_t / (1 - t)).
    x1 = states[1] * (1 + float(sig[1]))
    with torch.no_grad():
        ours = es.euler_sample(den, x1, sig[1:], cond=cond, dtype=torch.float32)
    assert rel(ours, states[-1]) <= TOL


@diffusers_mark
def test_first_step_from_infinity_is_diffusers_first_step(sd3: Any, diffusers_mod: Any) -> None:
    # The exact Euler step from t = 1: x_{t_1} = (1 - t_1) D(n; inf) + t_1 n (flow coordinates).
    model, cond, lat = sd3
    sched = diffusers_mod.FlowMatchEulerDiscreteScheduler(shift=3.0)
    states = diffusers_loop(model, sched, lat, cond, 4)
    den = es.from_diffusers(model, sched)
    t1 = float(sched.sigmas[1])
    with torch.no_grad():
        d = den(lat, torch.full((2,), INF), **cond)
    assert rel((1 - t1) * d + t1 * lat, states[1]) <= TOL


@diffusers_mark
@pytest.mark.parametrize("dynamic", [False, True], ids=["shift3", "dynamic"])
def test_euler_matches_flowmatch_euler_from_pure_noise(sd3: Any, diffusers_mod: Any, dynamic: bool) -> None:
    model, cond, lat = sd3
    n = 6
    kw: dict[str, Any] = {"use_dynamic_shifting": True} if dynamic else {"shift": 3.0}
    mu = flow_shift_mu(16) if dynamic else None
    sched = diffusers_mod.FlowMatchEulerDiscreteScheduler(**kw)
    ref = diffusers_loop(model, sched, lat, cond, n, mu=mu)[-1]
    den = es.from_diffusers(model, sched)
    sig = flow_scheduler_sigmas(sched, n, mu=mu)
    with torch.no_grad():
        ours = es.euler_sample(den, flow_initial_x(lat, sig), sig, cond=cond, dtype=torch.float32)
    assert rel(ours, ref) <= TOL


@diffusers_mark
def test_flux_euler_dynamic_shift_with_guidance_embedding(flux: Any, diffusers_mod: Any) -> None:
    model, cond, lat = flux
    n = 5
    mu = flow_shift_mu(16)  # 4x4 packed tokens
    sched = diffusers_mod.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    ids = flux_ids()
    # Flux's pipeline passes timestep / 1000 (the transformer multiplies by 1000 itself): time_scale = 1.
    ref = diffusers_loop(functools.partial(model, **ids), sched, lat, cond, n, mu=mu, time_div=1000.0)[-1]

    def call(m: Any, x_t: torch.Tensor, t: torch.Tensor, c: dict[str, Any]) -> Any:
        return m(x_t, timestep=t, **ids, **c)  # the batch-shared ids bound here, not passed as cond

    den = es.from_diffusers(model, sched, call=call)
    assert isinstance(den, FlowDenoiser) and den.time_scale == 1.0  # read from the class
    sig = flow_scheduler_sigmas(sched, n, mu=mu)
    with torch.no_grad():
        ours = es.euler_sample(den, flow_initial_x(lat, sig), sig, cond=cond, dtype=torch.float32)
    assert rel(ours, ref) <= TOL


# diffusers' defaults: solver_order=2, lower_order_final=True (the last step to 0 is first order), DPM-Solver++
# midpoint / UniPC bh2 with its corrector. The library's order_rule="final" is that rule; its default "auto"
# also lowers the order on steps landing on sigma <= 0.1 (docs/multistep-defaults.md), which diffusers does not.
MULTISTEP = {
    "dpmpp_2m": ("DPMSolverMultistepScheduler", functools.partial(es.dpmpp_2m_sample, order_rule="final")),
    "unipc": ("UniPCMultistepScheduler", functools.partial(es.unipc_sample, order=2, order_rule="final")),
}


@diffusers_mark
@pytest.mark.parametrize("solver", list(MULTISTEP))
def test_multistep_matches_diffusers_with_flow_sigmas(sana: Any, diffusers_mod: Any, solver: str) -> None:
    model, cond, lat = sana
    cls, sample = MULTISTEP[solver]
    n = 8
    sched = getattr(diffusers_mod, cls)(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0)
    ref = diffusers_loop(model, sched, lat, cond, n)[-1]
    den = es.from_diffusers(model, sched)
    assert isinstance(den, FlowDenoiser) and den.timestep == "floor" and den.time_scale == 1000.0
    sig = flow_scheduler_sigmas(sched, n)
    assert math.isfinite(float(sig[0]))  # these schedulers start below t = 1 (DPM: shifted 0.999, UniPC: 1 - 1e-6)
    with torch.no_grad():
        ours = sample(den, flow_initial_x(lat, sig), sig, cond=cond, dtype=torch.float32)
        assert rel(ours, ref) <= TOL
        # The int64 timesteps matter: the continuous time input misses diffusers' loop by far more than round-off.
        cont = FlowDenoiser(model, time_scale=1000.0)
        assert rel(sample(cont, flow_initial_x(lat, sig), sig, cond=cond, dtype=torch.float32), ref) > 10 * TOL


# ---- from_diffusers dispatch and option checks --------------------------------------------------------------


@diffusers_mark
def test_from_diffusers_reads_flow_configs_by_class_name(sd3: Any, sana: Any, flux: Any, diffusers_mod: Any) -> None:
    cfg = diffusers_mod.FlowMatchEulerDiscreteScheduler(shift=3.0).config
    den = es.from_diffusers(sd3[0], {**cfg, "_class_name": "FlowMatchEulerDiscreteScheduler"})
    assert isinstance(den, FlowDenoiser) and den.time_scale == 1000.0 and den.timestep == "continuous"
    dpm = {"_class_name": "DPMSolverMultistepScheduler", "use_flow_sigmas": True, "prediction_type": "flow_prediction"}
    den = es.from_diffusers(sana[0], dpm)
    assert den.timestep == "floor" and not den.learned_variance
    den = es.from_diffusers(flux[0], {"_class_name": "FlowMatchHeunDiscreteScheduler"})
    assert isinstance(den, FlowDenoiser) and den.time_scale == 1.0
    den = es.from_diffusers(lambda **kw: kw["hidden_states"], dpm, time_scale=1.0, learned_variance=False)
    assert den.time_scale == 1.0
    # Sana's pipeline multiplies the timesteps by config.timestep_scale; out_channels = 2 * in_channels is a
    # learned-variance output whose first half the pipeline keeps.
    lv = diffusers_mod.SanaTransformer2DModel(
        in_channels=4, out_channels=8, num_attention_heads=2, attention_head_dim=4, num_layers=1,
        num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8,
        sample_size=8, patch_size=1, mlp_ratio=2.0, timestep_scale=0.5,
    )  # fmt: skip
    den = es.from_diffusers(lv, dpm)
    assert den.learned_variance and den.time_scale == 500.0
    with torch.no_grad():
        d = den(sana[2], torch.tensor([1.0, 5.0]), **sana[1])
    assert d.shape == sana[2].shape
    # A scheduler's .config has no '_class_name': recognised by its keys (it used to become a DDPM denoiser).
    den = es.from_diffusers(sd3[0], cfg)
    assert isinstance(den, FlowDenoiser) and den.timestep == "continuous"
    torch.testing.assert_close(t_of(flow_scheduler_sigmas(cfg, 5)), t_of(flow_sigmas(5, shift=3.0)), rtol=0, atol=3e-7)
    # FlowMatchHeun's .config (num_train_timesteps, shift) fits several classes: from_diffusers' class-by-keys
    # rule reads it as FlowMapEulerDiscreteScheduler, which is refused naming the way out; flow_scheduler_sigmas
    # asks for the class (Euler or Heun: the levels differ in repetition).
    heun_cfg = diffusers_mod.FlowMatchHeunDiscreteScheduler(shift=3.0).config
    with pytest.raises(TypeError, match="pass the scheduler or add '_class_name'"):
        es.from_diffusers(sd3[0], heun_cfg)
    with pytest.raises(ValueError, match="without '_class_name', and its keys fit more than one class"):
        flow_scheduler_sigmas(heun_cfg, 5)
    uni = diffusers_mod.UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction").config
    den = es.from_diffusers(sana[0], uni)
    assert den.timestep == "floor"
    with pytest.raises(ValueError, match="fit more than one class"):
        flow_scheduler_sigmas(uni, 5)
    # A config's own sigmas, for N steps, as the built scheduler gives them.
    sched = diffusers_mod.FlowMatchEulerDiscreteScheduler(shift=3.0)
    sig = flow_scheduler_sigmas({**cfg, "_class_name": "FlowMatchEulerDiscreteScheduler"}, 5)
    torch.testing.assert_close(sig, flow_scheduler_sigmas(sched, 5), rtol=0, atol=0)
    assert sched.sigmas.numel() == 1000  # the scheduler passed is not changed (still its training levels)


@diffusers_mark
def test_flow_options_and_arguments_are_checked(sd3: Any, diffusers_mod: Any) -> None:
    model = sd3[0]
    fm = diffusers_mod.FlowMatchEulerDiscreteScheduler
    with pytest.raises(ValueError, match=r"cannot tell the time input of a function model .* pass time_scale="):
        es.from_diffusers(lambda **kw: kw["hidden_states"], fm())
    with pytest.raises(ValueError, match="stochastic_sampling=True"):
        es.from_diffusers(model, fm(stochastic_sampling=True))
    with pytest.raises(ValueError, match="invert_sigmas=True"):
        es.from_diffusers(model, fm(invert_sigmas=True))
    with pytest.raises(ValueError, match=r"schedules a velocity \(flow\) model; got prediction='eps'"):
        es.from_diffusers(model, fm(), prediction="eps")
    with pytest.raises(ValueError, match="timestep='quantize' applies to VP models"):
        es.from_diffusers(model, fm(), timestep="quantize")
    with pytest.raises(ValueError, match="time_scale= applies to flow-matching schedulers only"):
        es.from_diffusers(model, diffusers_mod.DDPMScheduler(), time_scale=1000.0)
    dpm = diffusers_mod.DPMSolverMultistepScheduler
    for sched, match in [
        (dpm(use_flow_sigmas=True), "mixes a flow-matching option"),
        (dpm(prediction_type="flow_prediction"), "mixes a flow-matching option"),
        (dpm(use_flow_sigmas=True, prediction_type="flow_prediction", use_karras_sigmas=True), "use_karras_sigmas"),
        (dpm(use_flow_sigmas=True, prediction_type="flow_prediction", final_sigmas_type="sigma_min"), "sigma_min"),
        (dpm(use_flow_sigmas=True, prediction_type="flow_prediction", thresholding=True), "thresholding"),
    ]:
        with pytest.raises(ValueError, match=match):
            es.from_diffusers(model, sched)
    dyn = fm(use_dynamic_shifting=True)
    with pytest.raises(ValueError, match=r"use_dynamic_shifting=True: .*flow_scheduler_sigmas\(scheduler, n"):
        flow_scheduler_sigmas(dyn, 4)
    with pytest.raises(ValueError, match="mu is given but"):
        flow_scheduler_sigmas(fm(), 4, mu=0.5)
    with pytest.raises(TypeError, match="must be a diffusers flow-matching scheduler"):
        flow_scheduler_sigmas(diffusers_mod.EulerDiscreteScheduler(), 4)


@diffusers_mark
def test_scheduler_sigmas_and_start_state_answer_for_flow_schedulers(diffusers_mod: Any) -> None:
    lat = torch.randn(1, 4, 2, 2)
    fm = diffusers_mod.FlowMatchEulerDiscreteScheduler(shift=3.0)
    torch.testing.assert_close(es.scheduler_sigmas(fm, 6), flow_scheduler_sigmas(fm, 6), rtol=0, atol=0)
    dpm = diffusers_mod.DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")
    sig = es.scheduler_sigmas(dpm, 6)
    torch.testing.assert_close(es.start_state(dpm, lat, sig), lat * (1 + float(sig[0])), rtol=0, atol=0)
    with pytest.raises(TypeError, match="FlowMatchLCMScheduler, a flow scheduler whose model this adapter does not"):
        es.from_diffusers(lambda x, t: x, diffusers_mod.FlowMatchLCMScheduler())


# ---- docs/diffusers.md ------------------------------------------------------------------------------------


def section_code(doc: str, heading: str) -> str:
    """The ```python blocks of one ``## heading`` section (other sections belong to other families)."""
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", doc, re.M | re.S)
    assert m is not None, f"docs/diffusers.md has no '## {heading}' section"
    blocks = re.findall(r"```python\n(.*?)```", m.group(1), re.S)
    assert blocks, f"the '{heading}' section has no python example"
    return "\n".join(blocks)


@diffusers_mark
def test_flow_matching_doc_example_runs(diffusers_mod: Any) -> None:
    code = section_code(DOC.read_text(), "Flow matching")
    namespace: dict[str, Any] = {"__name__": "doc_example"}
    exec(compile(code, str(DOC), "exec"), namespace)
    assert namespace["rel_diff"] <= TOL  # the example compares itself with diffusers' loops
