"""Graph safety: compiled steps, allocation-free eager loops, and the graphed sampler.

CPU tests run in CI: ``torch.compile(fullgraph=True)`` of each step (a graph break fails), the eager
loop's buffer reuse (bitwise equal to the functional path, caller's x untouched, at most three
state-sized buffers for Heun), and :class:`GraphedSampler`'s CPU fallback. Tests marked ``cuda`` check
capture + replay against eager mode, the absence of host syncs, and per-seed reproducibility; they are
skipped without a GPU (see conftest.py).
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import edm_samplers
from edm_samplers import (
    GraphedSampler,
    PerSampleNoise,
    PrecomputedNoise,
    StepInfo,
    euler_sample,
    heun_sample,
    karras_sigmas,
    stochastic_sample,
)
from edm_samplers.evaluation import GaussianMixture
from edm_samplers.solvers import registry
from edm_samplers.solvers.runtime import prepare
from edm_samplers.solvers.steps import churn, euler_step, heun_step, step_table, unstack

Sampler = Callable[..., torch.Tensor]
KNOBS: dict[str, dict[str, Any]] = {"heun": {}, "euler": {}, "stochastic": {"s_churn": 20.0, "s_noise": 1.003}}
DRIVERS: dict[str, Sampler] = {"heun": heun_sample, "euler": euler_sample, "stochastic": stochastic_sample}


def tiny_denoiser(x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
    """A smooth, nonlinear stand-in for a network (elementwise, so cheap to compile)."""
    del cond
    s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return torch.tanh(x / (1 + s)) * 0.5 + 0.1 * x / (1 + s * s)


def mixture(dtype: torch.dtype = torch.float32) -> GaussianMixture:
    g = torch.Generator().manual_seed(0)
    return GaussianMixture(torch.randn(3, 2, 4, generator=g, dtype=dtype), 0.3)


def start(batch: int = 5, dtype: torch.dtype = torch.float32, device: str = "cpu") -> torch.Tensor:
    return (torch.randn(batch, 2, 4, generator=torch.Generator().manual_seed(1), dtype=dtype) * 80).to(device)


def round_off(x0: torch.Tensor) -> float:
    """Absolute float32 tolerance for a compiled-vs-eager sampling run started from ``x0``.

    Fused kernels reassociate and contract to FMA, so each op may differ by an ulp of its operands;
    the state starts at |x| ~ 250 and the updates cancel down to O(1) values, so the absolute error
    scales with max|x0|: ~10 ops * a few ulps (1.2e-7) of max|x0| < 1e-5 * max|x0|.
    """
    return 1e-5 * float(x0.abs().max())


# ---- torch.compile (CPU, CI) ------------------------------------------------------------------------


def test_steps_compile_fullgraph() -> None:
    # One test compiles all three steps (each compile costs seconds on 2 cores).
    x = torch.randn(3, 2, 4) * 10
    eps = torch.randn(3, 2, 4)
    s = karras_sigmas(4)
    c = unstack(step_table(s, batch=3, dtype=torch.float32, device=torch.device("cpu")))[1]
    eager = (
        churn(x, eps, c.noise_scale + 0.5),
        euler_step(tiny_denoiser, x, c, {}),
        heun_step(tiny_denoiser, x, c, {}),
    )
    compiled = (
        torch.compile(churn, fullgraph=True)(x, eps, c.noise_scale + 0.5),
        torch.compile(euler_step, fullgraph=True)(tiny_denoiser, x, c, {}),
        torch.compile(heun_step, fullgraph=True)(tiny_denoiser, x, c, {}),
    )
    # Inductor fuses and may reassociate/FMA-contract: a few float32 ulps of |x| ~ 10 (eps 1.2e-7 * 10).
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_whole_loop_compiles_fullgraph() -> None:
    # The prepared loop (validation done outside) traces as one graph: no syncs, host-float branching only.
    # float64, so round-off of the fused kernels is far below any real discrepancy.
    x = start(2, torch.float64)
    plan = prepare(registry.get("stochastic"), tiny_denoiser, x, karras_sigmas(3), {"s_churn": 5.0})
    draws = torch.randn(3, *x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def loop(x: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        return plan(x, {}, PrecomputedNoise(draws))

    with torch.no_grad():
        got = torch.compile(loop, fullgraph=True)(x, draws)
        want = loop(x, draws)
    # Reassociated/FMA-contracted float64 kernels differ by about an ulp of their operands per op; the state
    # starts at |x| ~ 300 and cancels down to O(1), so the absolute error is eps * max|x| * (ops per NFE ~ 20,
    # Heun's correction and churn included) * (5 NFE) = 2.2e-16 * 300 * 100 = 6.7e-12. Measured up to 3.3e-12
    # over 300 global RNG seeds (1e-12 failed 9 of them). A wrong formula changes the output by O(1).
    torch.testing.assert_close(got, want, rtol=1e-12, atol=float(torch.finfo(torch.float64).eps) * 300 * 100)


def test_compiled_denoiser_reduce_overhead_runs() -> None:
    den = torch.compile(tiny_denoiser, mode="reduce-overhead")
    x = start(2)
    for name, sampler in DRIVERS.items():
        got = sampler(den, x, karras_sigmas(3), noise=PerSampleNoise([0, 1]), **KNOBS[name])
        want = sampler(tiny_denoiser, x, karras_sigmas(3), noise=PerSampleNoise([0, 1]), **KNOBS[name])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=round_off(x))


def test_graphed_sampler_compile_option_matches_eager() -> None:
    x = start(2)
    gs = GraphedSampler(tiny_denoiser, karras_sigmas(3), x.shape, sampler="stochastic", s_churn=10.0, compile=True)
    got = gs(x, noise=PerSampleNoise([3, 4]))
    want = stochastic_sample(tiny_denoiser, x, karras_sigmas(3), s_churn=10.0, noise=PerSampleNoise([3, 4]))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=round_off(x))


# ---- buffer reuse in the eager loop ----------------------------------------------------------------


class StateAllocations(TorchDispatchMode):
    """Counts state-sized tensors the sampler allocates, and the peak number alive at once.

    A tensor counts when a non-mutating, non-view op returns it with the state's numel outside the
    denoiser (its own allocations are its business). Liveness is tracked with weakrefs.
    """

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel = numel
        self.in_denoiser = 0
        self.allocs = 0
        self.alive = 0
        self.peak = 0

    def _dead(self) -> None:
        self.alive -= 1

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        if self.in_denoiser or func._schema.is_mutable or func.is_view:
            return out
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() == self.numel:
                self.allocs += 1
                self.alive += 1
                self.peak = max(self.peak, self.alive)
                weakref.finalize(t, self._dead)
        return out

    def wrap(self, den: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def inner(x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
            self.in_denoiser += 1
            try:
                return den(x, sigma, **cond)
            finally:
                self.in_denoiser -= 1

        return inner


@pytest.mark.parametrize(("name", "buffers"), [("euler", 1), ("heun", 3), ("stochastic", 3)])
def test_reuse_allocates_only_its_buffers(name: str, buffers: int) -> None:
    x = start(4)
    n = 7  # step-table rows are [n, batch]: keep their numel (28) distinct from the state's (32)
    counter = StateAllocations(x.numel())
    den = counter.wrap(mixture())
    src = PrecomputedNoise(torch.randn(n, *x.shape))
    with torch.no_grad(), counter:
        DRIVERS[name](den, x, karras_sigmas(n), noise=src, check_finite=False, **KNOBS[name])
    # The whole run allocates exactly its workspace: none per step (the noise draws are the source's).
    assert counter.allocs == buffers
    # Without reuse (a callback may keep every step's tensors) the count grows with the steps.
    functional = StateAllocations(x.numel())
    den = functional.wrap(mixture())
    with torch.no_grad(), functional:
        DRIVERS[name](den, x, karras_sigmas(n), noise=PrecomputedNoise(src.draws), callback=lambda i: None,
                      check_finite=False, **KNOBS[name])  # fmt: skip
    assert functional.allocs >= n


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(sorted(DRIVERS)),
    n=st.integers(1, 6),
    batch=st.integers(1, 3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    grad=st.booleans(),
)
def test_reuse_is_bitwise_equal_and_leaves_x_alone(
    name: str, n: int, batch: int, dtype: torch.dtype, grad: bool
) -> None:
    x = start(batch, dtype)
    x_copy = x.clone()
    seeds = list(range(batch))
    infos: list[StepInfo] = []
    with torch.set_grad_enabled(grad):
        fast = DRIVERS[name](mixture(dtype), x, karras_sigmas(n), noise=PerSampleNoise(seeds), **KNOBS[name])
        # A callback turns reuse off (it may keep the step's tensors): the functional reference path.
        slow = DRIVERS[name](mixture(dtype), x, karras_sigmas(n), noise=PerSampleNoise(seeds),
                             callback=infos.append, **KNOBS[name])  # fmt: skip
    assert torch.equal(fast, slow)  # same kernels in the same order: bit for bit
    assert torch.equal(x, x_copy)
    # The callback's tensors stay valid (no later step overwrote them): each step starts where the last ended.
    assert torch.equal(infos[-1].x_next, slow)
    if name != "stochastic":  # (churn moves x_hat away from the previous x_next)
        assert all(torch.equal(a.x_next, b.x) for a, b in itertools.pairwise(infos))


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_reuse_with_aliasing_denoisers(name: str) -> None:
    x = start(3)
    x_copy = x.clone()
    cached = torch.randn(x.shape)
    cached_copy = cached.clone()

    def returns_cache(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        del x, sigma
        return cached  # the same tensor every call: the sampler must never write to it

    def returns_input(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        del sigma
        return x  # D aliases the state buffer

    for den in (returns_cache, returns_input):
        with torch.no_grad():
            fast = DRIVERS[name](den, x, karras_sigmas(4), noise=PerSampleNoise([0, 1, 2]), **KNOBS[name])
        slow = DRIVERS[name](den, x, karras_sigmas(4), noise=PerSampleNoise([0, 1, 2]), callback=lambda i: None,
                             **KNOBS[name])  # fmt: skip
        assert torch.equal(fast, slow)
    assert torch.equal(x, x_copy) and torch.equal(cached, cached_copy)


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_autograd_switches_to_functional_path(name: str) -> None:
    # Grad mode on and a parameter that requires grad: the denoiser saves its input for backward, so the
    # steps must not overwrite buffers; gradients equal those of the functional path.
    w = torch.tensor(0.3, requires_grad=True)

    def den(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.tanh(w * x) / (1 + sigma[:, None, None])

    x = start(2)
    out = DRIVERS[name](den, x, karras_sigmas(3), noise=PerSampleNoise([0, 1]), **KNOBS[name])
    (g,) = torch.autograd.grad(out.sum(), w)
    ref = DRIVERS[name](den, x, karras_sigmas(3), noise=PerSampleNoise([0, 1]), callback=lambda i: None,
                        **KNOBS[name])  # fmt: skip
    (g_ref,) = torch.autograd.grad(ref.sum(), w)
    assert torch.equal(out, ref) and torch.equal(g, g_ref)
    # Gradient with respect to x (x requires grad: decided at entry).
    xr = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(DRIVERS[name](mixture(), xr, karras_sigmas(3), **KNOBS[name]).sum(), xr)
    assert bool(torch.isfinite(gx).all())


# ---- GraphedSampler: CPU fallback and validation ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_graphed_cpu_fallback_equals_driver(name: str) -> None:
    x = start(4)
    x_copy = x.clone()
    gs = GraphedSampler(mixture(), karras_sigmas(5), x.shape, sampler=name, **KNOBS[name])  # type: ignore[arg-type]
    assert not gs.graphed
    for seeds in ([0, 1, 2, 3], [7, 8, 9, 10]):
        got = gs(x, noise=PerSampleNoise(seeds))
        want = DRIVERS[name](mixture(), x, karras_sigmas(5), noise=PerSampleNoise(seeds), **KNOBS[name])
        assert torch.equal(got, want)
    assert torch.equal(x, x_copy)


def test_graphed_cond_and_from_loop() -> None:
    def den(x: torch.Tensor, sigma: torch.Tensor, *, scale: torch.Tensor, shift: float) -> torch.Tensor:
        return torch.tanh(x / (1 + sigma[:, None, None])) * scale[:, None, None] + shift

    x = start(2)
    cond = {"scale": torch.tensor([0.5, 2.0]), "shift": 0.25}
    gs = GraphedSampler(den, karras_sigmas(4), x.shape, sampler="euler", cond_example=cond)
    assert torch.equal(gs(x, cond=cond), euler_sample(den, x, karras_sigmas(4), cond=cond))

    def loop(x: torch.Tensor, cond: Mapping[str, Any], noise: Any) -> torch.Tensor:
        return x * 2 + noise.randn(x.shape, dtype=x.dtype, device=x.device)

    custom = GraphedSampler.from_loop(loop, x.shape)
    assert torch.equal(custom(x, noise=PrecomputedNoise(torch.ones(1, *x.shape))), x * 2 + 1)


def test_graphed_validation() -> None:
    x = start(2)
    sig = karras_sigmas(3)
    gs = GraphedSampler(tiny_denoiser, sig, x.shape, cond_example={"label": torch.zeros(2), "flag": True})
    good = {"label": torch.zeros(2), "flag": True}
    with pytest.raises(ValueError, match="built for"):
        gs(start(3), cond=good)
    with pytest.raises(ValueError, match="dtype"):
        gs(x.double(), cond=good)
    with pytest.raises(ValueError, match="lives on"):
        gs(x.to("meta"), cond=good)
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        gs([1.0], cond=good)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keys"):
        gs(x)
    with pytest.raises(ValueError, match="same shape, dtype, device"):
        gs(x, cond={"label": torch.zeros(3), "flag": True})
    with pytest.raises(TypeError, match="must be a tensor"):
        gs(x, cond={"label": 0, "flag": True})
    with pytest.raises(ValueError, match="non-tensor cond is fixed"):
        gs(x, cond={"label": torch.zeros(2), "flag": False})
    with pytest.raises(ValueError, match="sampler must be"):
        GraphedSampler(tiny_denoiser, sig, x.shape, sampler="dpm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="solver must be"):
        GraphedSampler(tiny_denoiser, sig, x.shape, sampler="stochastic", solver="rk4")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'s_churn' is a knob of sampler='stochastic'"):
        GraphedSampler(tiny_denoiser, sig, x.shape, s_churn=10.0)
    with pytest.raises(TypeError, match="shape must be a sequence"):
        GraphedSampler(tiny_denoiser, sig, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape entries must be >= 1"):
        GraphedSampler(tiny_denoiser, sig, (0, 2))
    with pytest.raises(ValueError, match="at least the batch"):
        GraphedSampler(tiny_denoiser, sig, ())
    with pytest.raises(ValueError, match="non-increasing"):
        GraphedSampler(tiny_denoiser, sig.flip(0), x.shape)
    with pytest.raises(TypeError, match="device must be"):
        GraphedSampler(tiny_denoiser, sig, x.shape, device=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="warmup must be >= 1"):
        GraphedSampler(tiny_denoiser, sig, x.shape, warmup=0)
    with pytest.raises(ValueError, match="cond_example"):
        GraphedSampler(tiny_denoiser, sig, x.shape, cond_example={"label": torch.zeros(2, device="meta")})
    with pytest.raises(TypeError, match="loop must be callable"):
        GraphedSampler.from_loop(5, x.shape)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dtype must be a floating"):
        GraphedSampler(tiny_denoiser, sig, x.shape, dtype=torch.int64)


def test_graphed_check_finite() -> None:
    def bad(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x * float("nan")

    x = start(2)
    with pytest.raises(FloatingPointError, match="non-finite"):
        GraphedSampler(bad, karras_sigmas(3), x.shape, sampler="euler")(x)
    out = GraphedSampler(bad, karras_sigmas(3), x.shape, sampler="euler", check_finite=False)(x)
    assert bool(out.isnan().all())


# ---- CUDA (marked; skipped without a GPU) ------------------------------------------------------------


class TinyNet(torch.nn.Module):
    """A small conv denoiser: realistic kernels (cuDNN, elementwise) for capture tests."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma[:, None, None, None]
        h = torch.nn.functional.silu(self.conv1(x / torch.sqrt(s * s + 1)))
        return x / (s * s + 1) + self.conv2(h) * s / torch.sqrt(s * s + 1)


def _cuda_case() -> tuple[TinyNet, torch.Tensor, torch.Tensor]:
    net = TinyNet().cuda().eval()
    x = (torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 80).cuda()
    return net, x, karras_sigmas(6)


# Replay runs the kernels eager mode runs; the tolerance only allows for a different cuDNN algorithm
# choice between the two (float32 round-off of the convolutions, relative 1e-5).
CUDA_TOL = {"rtol": 1e-5, "atol": 1e-4}


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_cuda_replay_equals_eager(name: str) -> None:
    net, x, sig = _cuda_case()
    x_copy = x.clone()
    gs = GraphedSampler(net, sig, x.shape, sampler=name, device="cuda", **KNOBS[name])  # type: ignore[arg-type]
    assert gs.graphed
    with torch.no_grad():
        for seeds in ([0, 1, 2, 3], [4, 5, 6, 7]):  # two replays with different seeds
            got = gs(x, noise=PerSampleNoise(seeds))
            want = DRIVERS[name](net, x, sig, noise=PerSampleNoise(seeds), **KNOBS[name])
            torch.testing.assert_close(got, want, **CUDA_TOL)
    assert torch.equal(x, x_copy)


@pytest.mark.cuda
def test_cuda_different_seeds_give_their_eager_results() -> None:
    net, x, sig = _cuda_case()
    gs = GraphedSampler(net, sig, x.shape, sampler="stochastic", s_churn=40.0, device="cuda")
    a = gs(x, noise=PerSampleNoise([0, 1, 2, 3]))
    b = gs(x, noise=PerSampleNoise([10, 11, 12, 13]))
    with torch.no_grad():
        ea = stochastic_sample(net, x, sig, s_churn=40.0, noise=PerSampleNoise([0, 1, 2, 3]))
        eb = stochastic_sample(net, x, sig, s_churn=40.0, noise=PerSampleNoise([10, 11, 12, 13]))
    torch.testing.assert_close(a, ea, **CUDA_TOL)
    torch.testing.assert_close(b, eb, **CUDA_TOL)
    assert not torch.allclose(a, b)


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_cuda_loop_has_no_host_syncs(name: str) -> None:
    net, x, sig = _cuda_case()
    plan = prepare(registry.get(name), net, x, sig, {"s_churn": 20.0} if name == "stochastic" else {})
    draws = torch.randn(6, *x.shape, device="cuda")
    gs = GraphedSampler(
        net,
        sig,
        x.shape,
        sampler=name,
        device="cuda",
        check_finite=False,
        **KNOBS[name],  # type: ignore[arg-type]
    )
    src = PerSampleNoise([0, 1, 2, 3])
    gs(x, noise=src)  # capture outside the check (warm-up initialises cuDNN, generators)
    torch.cuda.synchronize()
    with torch.no_grad():
        plan(x, {}, PrecomputedNoise(draws))  # eager warm-up of the same loop
        torch.cuda.set_sync_debug_mode("error")
        try:
            plan(x, {}, PrecomputedNoise(draws))  # eager loop, buffer-reuse path
            plan(x, {}, PrecomputedNoise(draws), callback=lambda i: None)  # functional path
            gs(x, noise=src)  # copies, noise fill, replay
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.cuda
def test_cuda_reuse_is_bitwise_equal() -> None:
    net, x, sig = _cuda_case()
    with torch.no_grad():
        fast = heun_sample(net, x, sig)
        slow = heun_sample(net, x, sig, callback=lambda i: None)
    assert torch.equal(fast, slow)


# ---- multistep solvers: prepared loops are capturable too ------------------------------------------------

MS_KNOBS: dict[str, dict[str, Any]] = {
    "dpmpp_2m": {},
    "dpmpp_3m": {"order": 3},
    "dpmpp_2m_sde": {"eta": 0.7},
    "dpmpp_3m_sde": {"eta": 1.0, "order_rule": "final"},
    "deis": {"order": 3},
    "lms": {"order": 4},
    "ipndm": {"order": 4},
    "unipc": {"order": 2},
    "euler_ancestral": {"eta": 1.0},
    "dpm2": {"form": "data"},
}
MS_DRIVERS: dict[str, Sampler] = {name: getattr(edm_samplers, f"{name}_sample") for name in MS_KNOBS}


def test_every_sampler_is_listed() -> None:
    # every registered sampler is tested here (the generalized one in test_graphed_generalized_*)
    # (the CFG++ samplers, which take a guided denoiser, are captured in test_cfgpp.py)
    plain = [n for n in registry.names() if not registry.get(n).guided]
    assert sorted([*DRIVERS, *MS_KNOBS, "generalized"]) == sorted(plain)


@pytest.mark.parametrize("name", sorted(MS_KNOBS))
def test_graphed_multistep_cpu_fallback_equals_driver(name: str) -> None:
    x = start(4)
    x_copy = x.clone()
    gs = GraphedSampler(mixture(), karras_sigmas(6), x.shape, sampler=name, **MS_KNOBS[name])  # type: ignore[arg-type]
    for seeds in ([0, 1, 2, 3], [7, 8, 9, 10]):
        got = gs(x, noise=PerSampleNoise(seeds))
        want = MS_DRIVERS[name](mixture(), x, karras_sigmas(6), noise=PerSampleNoise(seeds), **MS_KNOBS[name])
        assert torch.equal(got, want)  # the same kernels in the same order: bitwise
    assert torch.equal(x, x_copy)


GEN_KNOBS: dict[str, Any] = {"schedule": "vp", "scaling": "vp", "alpha": 0.75, "s_churn": 20.0}


def test_graphed_generalized_cpu_fallback_equals_driver() -> None:
    # The generalized sampler runs in the shared runtime like every other: cached, prepared, capturable.
    x = start(4)
    gs = GraphedSampler(mixture(), karras_sigmas(5), x.shape, sampler="generalized", **GEN_KNOBS)
    for seeds in ([0, 1, 2, 3], [7, 8, 9, 10]):
        want = edm_samplers.generalized_sample(mixture(), x, karras_sigmas(5), noise=PerSampleNoise(seeds), **GEN_KNOBS)
        assert torch.equal(gs(x, noise=PerSampleNoise(seeds)), want)
    a = prepare(registry.get("generalized"), mixture(), x, karras_sigmas(5), GEN_KNOBS)
    assert a.program is prepare(registry.get("generalized"), tiny_denoiser, x, karras_sigmas(5), GEN_KNOBS).program
    rounded = prepare(registry.get("generalized"), mixture(), x, karras_sigmas(5), {"round_sigma": torch.clone})
    again = prepare(registry.get("generalized"), mixture(), x, karras_sigmas(5), {"round_sigma": torch.clone})
    assert rounded.program is not again.program  # a callable knob is never cached


@pytest.mark.cuda
def test_cuda_generalized_replay_equals_eager_without_syncs() -> None:
    net, x, sig = _cuda_case()
    gs = GraphedSampler(net, sig, x.shape, sampler="generalized", device="cuda", check_finite=False, **GEN_KNOBS)
    loop = prepare(registry.get("generalized"), net, x, sig, GEN_KNOBS)
    draws = torch.randn(len(sig) - 1, *x.shape, device="cuda")
    with torch.no_grad():
        for seeds in ([0, 1, 2, 3], [4, 5, 6, 7]):
            got = gs(x, noise=PerSampleNoise(seeds))
            want = edm_samplers.generalized_sample(net, x, sig, noise=PerSampleNoise(seeds), **GEN_KNOBS)
            torch.testing.assert_close(got, want, **CUDA_TOL)
        loop(x, {}, PrecomputedNoise(draws))  # eager warm-up
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            loop(x, {}, PrecomputedNoise(draws))
            gs(x, noise=PerSampleNoise([0, 1, 2, 3]))
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_multistep_loops_compile_fullgraph() -> None:
    # One compile for four loop shapes: UniPC (corrector, history ring), DPM-Solver-2 (two calls per step),
    # 3M SDE (noise) and the generalized sampler (VP coordinates, churn, alpha rule). float64, so inductor's
    # reassociation stays far below any real discrepancy.
    x = start(2, torch.float64)
    sig = karras_sigmas(4)
    loops = [
        prepare(registry.get("unipc"), tiny_denoiser, x, sig, {"order": 3}),
        prepare(registry.get("dpm2"), tiny_denoiser, x, sig, {}),
        prepare(registry.get("dpmpp_3m_sde"), tiny_denoiser, x, sig, {"eta": 1.0}),
        prepare(registry.get("generalized"), tiny_denoiser, x, sig, GEN_KNOBS),
    ]
    draws = torch.randn(4, *x.shape, dtype=torch.float64)

    def run(x: torch.Tensor, draws: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(loop(x, {}, PrecomputedNoise(draws)) for loop in loops)

    with torch.no_grad():
        got = torch.compile(run, fullgraph=True)(x, draws)
        want = run(x, draws)
    # |x| <= ~300 over ~10 fused float64 ops: 2.2e-16 * 300 * 10 < 1e-12.
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_graphed_multistep_compile_option_matches_eager() -> None:
    x = start(2)
    sig = karras_sigmas(3)
    gs = GraphedSampler(tiny_denoiser, sig, x.shape, sampler="dpmpp_2m_sde", eta=1.0, s_noise=1.01, compile=True)
    got = gs(x, noise=PerSampleNoise([3, 4]))
    want = edm_samplers.dpmpp_2m_sde_sample(tiny_denoiser, x, sig, eta=1.0, s_noise=1.01, noise=PerSampleNoise([3, 4]))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=round_off(x))


def test_graphed_multistep_validation() -> None:
    x = start(2)
    sig = karras_sigmas(4)
    with pytest.raises(
        TypeError, match=r"unknown option.*'eta'.*accepts order \(int\), order_rule \('auto' \| 'full' \| 'final'\)"
    ):
        GraphedSampler(tiny_denoiser, sig, x.shape, sampler="unipc", eta=1.0)
    with pytest.raises(TypeError, match=r"'order' is a knob of sampler='dpmpp_3m', 'deis'"):
        GraphedSampler(tiny_denoiser, sig, x.shape, sampler="heun", order=2)
    with pytest.raises(TypeError, match="'s_churn' is a knob of sampler='stochastic', 'generalized'"):
        GraphedSampler(tiny_denoiser, sig, x.shape, sampler="dpmpp_2m", s_churn=10.0)
    with pytest.raises(TypeError, match="'solver' is a knob of"):  # solver= only chooses the churn samplers' steps
        GraphedSampler(tiny_denoiser, sig, x.shape, sampler="heun", solver="euler")
    with pytest.raises(TypeError, match=r"deis_sample got unknown option.*'s_noise'"):  # not a deterministic knob
        GraphedSampler(tiny_denoiser, sig, x.shape, sampler="deis", s_noise=1.01)
    with pytest.raises(ValueError, match="order must be between 1 and 3"):
        GraphedSampler(tiny_denoiser, sig, x.shape, sampler="unipc", order=4)
    with pytest.raises(ValueError, match=r"sampler must be one of.*'dpm2'"):
        GraphedSampler(tiny_denoiser, sig, x.shape, sampler="dpm3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="strictly decreasing"):
        GraphedSampler(tiny_denoiser, [80.0, 1.0, 1.0, 0.0], x.shape, sampler="lms")
    with pytest.raises(TypeError, match="dpmpp_2m_sample got unknown option"):
        prepare(registry.get("dpmpp_2m"), tiny_denoiser, x, sig, {"order": 3})
    assert registry.get("dpmpp_2m_sde").knob_names == ("eta", "s_noise", "order_rule")


def test_multistep_tables_are_cached_but_never_skip_validation() -> None:
    x = start(2)
    sig = karras_sigmas(5)
    a = prepare(registry.get("unipc"), tiny_denoiser, x, sig, {"order": 3})
    b = prepare(registry.get("unipc"), mixture(), x, sig, {"order": 3})
    assert a.program is b.program  # device tables reused: no transfer on a repeat call
    assert prepare(registry.get("unipc"), tiny_denoiser, x, sig, {"order": 2}).program is not a.program
    assert prepare(registry.get("unipc"), tiny_denoiser, start(3), sig, {"order": 3}).program is not a.program
    with pytest.raises(TypeError, match="order"):  # equal to a cached key's 3, but not an int
        prepare(registry.get("unipc"), tiny_denoiser, x, sig, {"order": 3.0})
    with pytest.raises(ValueError, match="order_rule must be"):
        prepare(registry.get("unipc"), tiny_denoiser, x, sig, {"order": 3, "order_rule": 1})
    with pytest.raises(TypeError, match="order"):  # unhashable: not cached, still validated
        prepare(registry.get("unipc"), tiny_denoiser, x, sig, {"order": [3]})


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(MS_KNOBS))
def test_cuda_multistep_replay_equals_eager_without_syncs(name: str) -> None:
    net, x, sig = _cuda_case()
    gs = GraphedSampler(net, sig, x.shape, sampler=name, device="cuda", check_finite=False, **MS_KNOBS[name])  # type: ignore[arg-type]
    loop = prepare(registry.get(name), net, x, sig, MS_KNOBS[name])
    draws = torch.randn(len(sig) - 1, *x.shape, device="cuda")
    with torch.no_grad():
        for seeds in ([0, 1, 2, 3], [4, 5, 6, 7]):  # two replays with different seeds
            got = gs(x, noise=PerSampleNoise(seeds))
            want = MS_DRIVERS[name](net, x, sig, noise=PerSampleNoise(seeds), **MS_KNOBS[name])
            torch.testing.assert_close(got, want, **CUDA_TOL)
        loop(x, {}, PrecomputedNoise(draws))  # eager warm-up
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            loop(x, {}, PrecomputedNoise(draws))  # the prepared eager loop
            gs(x, noise=PerSampleNoise([0, 1, 2, 3]))  # copies, noise fill, replay
        finally:
            torch.cuda.set_sync_debug_mode("default")
