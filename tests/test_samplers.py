"""Sampler contract: exactness on analytic denoisers, convergence order, invariances, errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from edm_samplers import (
    PerSampleNoise,
    StepInfo,
    count_nfe,
    euler_sample,
    generate,
    heun_sample,
    initial_x,
    karras_sigmas,
    loglinear_sigmas,
    stochastic_sample,
)
from edm_samplers.evaluation import GaussianMixture, PointMass, gaussian_ode_solution
from edm_samplers.solvers import registry
from strategies import sample_shapes, schedules

SAMPLERS = [euler_sample, heun_sample, stochastic_sample]
CPU = torch.device("cpu")


class Counting:
    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.calls = 0
        self.sigmas: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        self.calls += 1
        self.sigmas.append(sigma)
        return self.fn(x, sigma, **cond)


# ---- exactness -----------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", [euler_sample, heun_sample])
@given(sig=schedules(), shape=sample_shapes, seed=st.integers(0, 1000))
def test_point_mass_lands_exactly_on_mu(sampler: Any, sig: torch.Tensor, shape: tuple[int, ...], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(shape, generator=g, dtype=torch.float64)
    x = torch.randn((3, *shape), generator=g, dtype=torch.float64) * sig[0]
    steps: list[StepInfo] = []
    out = sampler(PointMass(mu), x, sig, callback=steps.append)
    # The last step to 0 is Euler, written D + 0 * (x - D): exactly D = mu, bit for bit.
    assert torch.equal(out, mu.expand_as(out))
    # Every intermediate state is mu + (x - mu) sigma_next / sigma, to float64 round-off (each step
    # loses a few ulps relative to |x - mu|, which is at most ~ sigma_max * few).
    for info in steps[:-1]:
        ratio = info.sigma_next / info.sigma
        expect = mu + (info.x - mu) * ratio
        torch.testing.assert_close(info.x_next, expect, rtol=1e-12, atol=1e-12 * max(1.0, info.sigma))


def _order(method: str, ns: list[int]) -> float:
    mu, s = 0.3, 0.5
    x0 = torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80.0
    errs = []
    for n in ns:
        # Stop at sigma_min (no final step to 0): every step is a true Heun/Euler step, and the
        # exact ODE solution at sigma_min is known in closed form.
        sig = karras_sigmas(n, 0.002, 80.0)[:-1]
        den = GaussianMixture(torch.full((1, 4), mu, dtype=torch.float64), s)
        out = (heun_sample if method == "heun" else euler_sample)(den, x0, sig)
        exact = gaussian_ode_solution(x0, 80.0, float(sig[-1]), mu, s)
        errs.append(float((out - exact).abs().max()))
    slope = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
    return float(slope)


def test_euler_converges_at_order_1() -> None:
    # Asymptotic regime; diffrax-style acceptance: measured slope within 0.25 of the order.
    assert abs(_order("euler", [64, 128, 256, 512]) - 1.0) < 0.25


def test_heun_converges_at_order_2() -> None:
    assert abs(_order("heun", [32, 64, 128, 256]) - 2.0) < 0.25


def test_final_step_returns_denoised_exactly() -> None:
    gm = GaussianMixture(torch.randn(3, 5, dtype=torch.float64), 0.2)
    x = torch.randn(4, 5, dtype=torch.float64)
    sig = torch.tensor([0.7, 0.0], dtype=torch.float64)
    for sampler in SAMPLERS:
        assert torch.equal(sampler(gm, x, sig), gm(x, torch.full((4,), 0.7, dtype=torch.float64)))


# ---- NFE and call contract ----------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 18])
def test_nfe_counts(n: int) -> None:
    sig = karras_sigmas(n)
    mu = torch.zeros(3)
    x = torch.randn(2, 3) * 80
    for sampler, expect in [(euler_sample, n), (heun_sample, 2 * n - 1), (stochastic_sample, 2 * n - 1)]:
        c = Counting(PointMass(mu))
        sampler(c, x, sig)
        assert c.calls == expect == count_nfe(sig, "euler" if sampler is euler_sample else "heun")
    c = Counting(PointMass(mu))
    stochastic_sample(c, x, sig, solver="euler", s_churn=10)
    assert c.calls == n
    # A schedule not ending in 0: Heun corrects every step.
    c = Counting(PointMass(mu))
    heun_sample(c, x, sig[:-1] if n > 1 else torch.tensor([80.0, 1.0]))
    assert c.calls == count_nfe(sig[:-1] if n > 1 else [80.0, 1.0], "heun")


# Every registered sampler, plus the knobs that change the count (the inner step of the churn samplers).
_ALL_SAMPLERS = [(name, {}) for name in registry.names() if not registry.get(name).guided] + [  # CFG++: test_cfgpp
    ("stochastic", {"solver": "euler", "s_churn": 5.0}), ("generalized", {"solver": "euler"}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "knobs"), _ALL_SAMPLERS)
@pytest.mark.parametrize("n", [1, 2, 3, 10])
@pytest.mark.parametrize("end_zero", [True, False])
def test_count_nfe_matches_every_sampler(name: str, knobs: dict[str, Any], n: int, end_zero: bool) -> None:
    import edm_samplers

    sig = karras_sigmas(n) if end_zero else karras_sigmas(n + 1)[:-1]
    sampler = getattr(edm_samplers, f"{name}_sample")
    kw: dict[str, Any] = {"noise": torch.Generator().manual_seed(0)} if registry.get(name).stochastic else {}
    c = Counting(PointMass(torch.zeros(3)))
    sampler(c, torch.randn(2, 3) * 80, sig, **kw, **knobs)
    assert c.calls == count_nfe(sig, name, **knobs)


def test_count_nfe_rejects_unknown_sampler() -> None:
    with pytest.raises(ValueError, match=r"sampler must be one of .*'ipndm'.*got 'rk4'"):
        count_nfe(karras_sigmas(4), "rk4")


def test_denoiser_gets_batch_sigma_on_device_and_cond() -> None:
    seen: dict[str, Any] = {}

    def den(x: torch.Tensor, sigma: torch.Tensor, *, class_labels: torch.Tensor) -> torch.Tensor:
        seen["sigma"] = sigma
        seen["labels"] = class_labels
        return torch.zeros_like(x)

    labels = torch.tensor([1, 2, 3])
    heun_sample(den, torch.randn(3, 2), karras_sigmas(3), cond={"class_labels": labels})
    assert seen["sigma"].shape == (3,) and seen["sigma"].device == CPU and seen["sigma"].dtype == torch.float32
    assert seen["labels"] is labels


def test_callback_records() -> None:
    infos: list[StepInfo] = []
    sig = karras_sigmas(5)
    heun_sample(PointMass(torch.zeros(2)), torch.randn(4, 2), sig, callback=infos.append)
    assert [i.i for i in infos] == list(range(5))
    assert [i.sigma for i in infos] == sig[:-1].tolist()
    assert [i.sigma_next for i in infos] == sig[1:].tolist()
    assert all(isinstance(i, StepInfo) and i.x.shape == (4, 2) for i in infos)


def test_progress_bar_option() -> None:
    out = euler_sample(PointMass(torch.zeros(2)), torch.randn(1, 2), karras_sigmas(3), progress=True)
    assert out.shape == (1, 2)


# ---- dtype, rank, autograd ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("in_dtype", "opt", "state"),
    [
        (torch.float16, None, torch.float32),
        (torch.bfloat16, None, torch.float32),
        (torch.float32, None, torch.float32),
        (torch.float64, None, torch.float64),
        (torch.float32, torch.float64, torch.float64),
    ],
)
def test_state_dtype(in_dtype: torch.dtype, opt: torch.dtype | None, state: torch.dtype) -> None:
    seen = []

    def den(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        seen.append((x.dtype, sigma.dtype))
        return torch.zeros_like(x, dtype=torch.float16)  # a low-precision output is promoted

    out = heun_sample(den, torch.randn(2, 3).to(in_dtype), karras_sigmas(3), dtype=opt)
    assert out.dtype == state
    assert set(seen) == {(state, state)}


@given(shape=st.lists(st.integers(1, 3), min_size=0, max_size=4).map(tuple), batch=st.integers(1, 3))
def test_any_rank(shape: tuple[int, ...], batch: int) -> None:
    means = torch.randn((2, *shape), dtype=torch.float64) if shape else torch.randn(2, 1, dtype=torch.float64)
    gm = GaussianMixture(means, 0.3)
    sample_shape = shape if shape else (1,)
    x = torch.randn((batch, *sample_shape), dtype=torch.float64) * 80
    for sampler in SAMPLERS:
        assert sampler(gm, x, karras_sigmas(4)).shape == x.shape


def test_gradients_flow_through_sampling() -> None:
    mu = torch.tensor([0.5, -0.5], requires_grad=True)

    def den(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return mu.expand_as(x) + 0.1 * x / (1 + sigma[:, None] ** 2)

    x = torch.randn(3, 2) * 5
    out = heun_sample(den, x, karras_sigmas(4, 0.01, 5.0))
    out.sum().backward()
    assert mu.grad is not None and bool(torch.isfinite(mu.grad).all())


def test_gradients_flow_through_heun_sample_to_x_and_follow_grad_mode() -> None:
    # Gaussian data: D is linear in x, so the whole sampler is a linear map x -> c x (zero mean) and its
    # gradient is the response to a unit shift of x. float64 outputs ~0.5, shift ~6e-3: round-off of the
    # difference is ~1e-16 * 0.5 / 6e-3 ~ 1e-14 relative, so rtol 1e-9 leaves a wide margin.
    gm = GaussianMixture(torch.zeros(1, 3, dtype=torch.float64), 0.5)
    sig = karras_sigmas(6)
    x = (torch.randn(2, 3, dtype=torch.float64) * 80).requires_grad_(True)
    out = heun_sample(gm, x, sig)
    assert out.grad_fn is not None  # the caller's grad mode (on) is honoured
    out.sum().backward()
    with torch.no_grad():
        shift = heun_sample(gm, x + 1, sig) - heun_sample(gm, x, sig)
        assert not heun_sample(gm, x, sig).requires_grad  # and so is torch.no_grad()
    assert x.grad is not None and bool((x.grad != 0).all())
    torch.testing.assert_close(x.grad, shift, rtol=1e-9, atol=0)


def test_generate_builds_no_autograd_graph() -> None:
    w = torch.nn.Parameter(torch.tensor(0.9, dtype=torch.float64))
    gm = _gm()

    def den(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return w * gm(x, sigma)

    for sampler in ("heun", "stochastic", "unipc"):
        out = generate(den, [0, 1], (2, 2), karras_sigmas(4), sampler=sampler, dtype=torch.float64)
        assert not out.requires_grad and out.grad_fn is None
    # the *_sample functions, called directly, record (gradients through sampling stay possible)
    assert heun_sample(den, torch.ones(2, 2, 2, dtype=torch.float64), karras_sigmas(4)).grad_fn is not None


# ---- randomness -----------------------------------------------------------------------------


def _gm() -> GaussianMixture:
    g = torch.Generator().manual_seed(5)
    return GaussianMixture(torch.randn(3, 2, 2, generator=g, dtype=torch.float64), 0.2)


@pytest.mark.parametrize("solver", ["heun", "euler"])
@given(n=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_zero_churn_is_bitwise_deterministic(solver: str, n: int, seed: int) -> None:
    gm = _gm()
    sig = karras_sigmas(n)
    x = torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(seed)) * 80
    det = (heun_sample if solver == "heun" else euler_sample)(gm, x, sig)
    sto = stochastic_sample(gm, x, sig, s_churn=0, solver=solver, noise=PerSampleNoise([1, 2, 3]))  # type: ignore[arg-type]
    assert torch.equal(det, sto)
    # Churn outside [s_tmin, s_tmax] is zero churn as well.
    sto2 = stochastic_sample(gm, x, sig, s_churn=40, s_tmin=500, s_tmax=600, solver=solver)  # type: ignore[arg-type]
    assert torch.equal(det, sto2)


@given(
    seeds=st.lists(st.integers(0, 10_000), min_size=2, max_size=5, unique=True),
    pick=st.integers(0, 4),
)
def test_batch_invariance_per_seed(seeds: list[int], pick: int) -> None:
    pick %= len(seeds)
    gm = _gm()
    sig = karras_sigmas(6)
    kw = {"sampler": stochastic_sample, "dtype": torch.float64, "s_churn": 30, "s_tmin": 0.05, "s_tmax": 50}
    batch = generate(gm, seeds, (2, 2), sig, **kw)
    alone = generate(gm, [seeds[pick]], (2, 2), sig, **kw)
    # The noise is bitwise identical (tested in test_noise); the mixture denoiser's matmul may block
    # differently for different batch sizes, so allow float64 round-off.
    torch.testing.assert_close(batch[pick], alone[0], rtol=1e-12, atol=1e-12)


def test_same_seeds_same_output_and_churn_draws_do_not_shift() -> None:
    gm = _gm()
    sig = karras_sigmas(6)
    a = generate(gm, [1, 2], (2, 2), sig, sampler=stochastic_sample, s_churn=20)
    b = generate(gm, [1, 2], (2, 2), sig, sampler=stochastic_sample, s_churn=20)
    assert torch.equal(a, b)
    drawn: list[int] = []

    class Spy(PerSampleNoise):
        def randn(self, shape: Any, *, dtype: torch.dtype, device: Any) -> torch.Tensor:
            drawn.append(1)
            return super().randn(shape, dtype=dtype, device=device)

    for churn in (5.0, 80.0):
        drawn.clear()
        stochastic_sample(gm, torch.randn(2, 2, 2), sig, s_churn=churn, s_tmin=1.0, noise=Spy([1, 2]))
        assert len(drawn) == 6, "a stream: one draw per step, whatever the churn and its range"
    drawn.clear()
    stochastic_sample(gm, torch.randn(2, 2, 2), sig, s_churn=0.0, noise=Spy([1, 2]))
    assert drawn == [], "no churn at all: a deterministic program draws nothing (issue 15)"


def test_generator_is_accepted() -> None:
    gm = _gm()
    x = torch.randn(2, 2, 2) * 80
    sig = karras_sigmas(5)
    a = stochastic_sample(gm, x, sig, s_churn=10, noise=torch.Generator().manual_seed(0))
    b = stochastic_sample(gm, x, sig, s_churn=10, noise=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_initial_x_and_generate_shape() -> None:
    lat = torch.randn(2, 3)
    sig = karras_sigmas(4)
    torch.testing.assert_close(initial_x(lat, sig), lat * 80)
    out = generate(PointMass(torch.zeros(3)), [0, 1, 2], (3,), loglinear_sigmas(4))
    assert out.shape == (3, 3) and torch.equal(out, torch.zeros(3, 3))


# ---- errors ---------------------------------------------------------------------------------

GOOD_X = torch.randn(2, 3)


@pytest.mark.parametrize(
    ("sigmas", "exc", "match"),
    [
        (torch.tensor([1.0]), ValueError, "at least 2 entries"),
        (torch.tensor([[1.0, 0.0]]), ValueError, "must be 1-D"),
        (torch.tensor([1.0, float("nan"), 0.0]), ValueError, "must be finite"),
        (torch.tensor([1.0, 2.0, 0.0]), ValueError, "non-increasing"),
        (torch.tensor([1.0, 0.0, 0.0]), ValueError, "0 only at the end"),
        (torch.tensor([1.0, -1.0]), ValueError, ">= 0"),
        (torch.tensor([3, 0]), TypeError, "floating-point"),
        ("abc", TypeError, "1-D tensor or a sequence"),
        ([True, False], TypeError, "got booleans"),  # read as [1.0, 0.0] before
    ],
)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_bad_sigmas(sampler: Any, sigmas: Any, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        sampler(PointMass(torch.zeros(3)), GOOD_X, sigmas)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_bad_x_and_denoiser(sampler: Any) -> None:
    sig = karras_sigmas(3)
    den = PointMass(torch.zeros(3))
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        sampler(den, [1.0, 2.0], sig)
    with pytest.raises(TypeError, match="floating-point"):
        sampler(den, torch.ones(2, 3, dtype=torch.int64), sig)
    with pytest.raises(ValueError, match="batch dimension"):
        sampler(den, torch.ones(0, 3), sig)
    with pytest.raises(TypeError, match="denoiser must be callable"):
        sampler(3, GOOD_X, sig)
    with pytest.raises(ValueError, match=r"denoiser returned shape \(2, 1\)"):
        sampler(lambda x, s: x[:, :1], GOOD_X, sig)
    with pytest.raises(TypeError, match=r"denoiser must return a torch\.Tensor"):
        sampler(lambda x, s: 0.0, GOOD_X, sig)
    with pytest.raises(TypeError, match="cond must be a dict"):
        sampler(den, GOOD_X, sig, cond=[1])
    with pytest.raises(TypeError, match="dtype must be a floating"):
        sampler(den, GOOD_X, sig, dtype=torch.int32)
    with pytest.raises(TypeError, match="callback must be callable"):
        sampler(den, GOOD_X, sig, callback=5)
    with pytest.raises(TypeError, match="noise must be a NoiseSource"):
        sampler(den, GOOD_X, sig, noise="seed")


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"s_churn": -1.0}, ValueError, "s_churn must be >= 0"),
        ({"s_noise": float("nan")}, ValueError, "s_noise must be finite"),
        ({"s_tmin": 5.0, "s_tmax": 1.0}, ValueError, "s_tmin must be <= s_tmax"),
        ({"s_tmin": -1.0}, ValueError, "s_tmin must be >= 0"),
        ({"solver": "rk4"}, ValueError, "solver must be 'heun' or 'euler'"),
        ({"round_sigma": 3}, TypeError, "round_sigma must be a callable"),
        ({"s_churn": "40"}, TypeError, "s_churn must be a real number"),
    ],
)
def test_bad_churn(kw: dict[str, Any], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        stochastic_sample(PointMass(torch.zeros(3)), GOOD_X, karras_sigmas(3), **kw)


def test_mismatched_seeds_and_batch() -> None:
    with pytest.raises(ValueError, match="one seed per batch row"):
        stochastic_sample(PointMass(torch.zeros(3)), GOOD_X, karras_sigmas(3), s_churn=1, noise=PerSampleNoise([1]))
    with pytest.raises(TypeError, match="do not pass noise="):
        generate(PointMass(torch.zeros(3)), [1], (3,), karras_sigmas(3), noise=PerSampleNoise([1]))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_nan_denoiser_is_not_silently_an_image(sampler: Any) -> None:
    def bad(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        out[1] = float("nan")
        return out

    with pytest.raises(FloatingPointError, match=r"non-finite values .* in 1 of 2 samples \(rows \[1\]\)"):
        sampler(bad, GOOD_X, karras_sigmas(3))
    raw = sampler(bad, GOOD_X, karras_sigmas(3), check_finite=False)
    assert bool(torch.isnan(raw[1]).all()) and bool(torch.isfinite(raw[0]).all())


def test_round_sigma_is_applied_to_sigma_hat() -> None:
    c = Counting(PointMass(torch.zeros(3)))

    def to_integers_above_one(s: torch.Tensor) -> torch.Tensor:
        return torch.where(s > 1, torch.round(s), s)

    stochastic_sample(c, GOOD_X, karras_sigmas(4), s_churn=100, round_sigma=to_integers_above_one)
    first = c.sigmas[0]
    assert first[0].item() == math.floor(80 * (1 + min(100 / 4, math.sqrt(2) - 1)) + 0.5)
    with pytest.raises(ValueError, match="round_sigma returned non-positive"):
        stochastic_sample(c, GOOD_X, karras_sigmas(4), s_churn=100, round_sigma=torch.round)
    with pytest.raises(TypeError, match="round_sigma must map"):
        stochastic_sample(c, GOOD_X, karras_sigmas(4), s_churn=100, round_sigma=lambda s: s[:1])


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_meta_tensors_and_foreign_device_outputs_are_named(sampler: Any) -> None:
    den = PointMass(torch.zeros(3))
    sig = karras_sigmas(3)
    with pytest.raises(ValueError, match="x is a meta tensor"):
        sampler(den, torch.empty(2, 3, device="meta"), sig)
    with pytest.raises(ValueError, match="sigmas is a meta tensor"):
        sampler(den, GOOD_X, sig.to("meta"))
    with pytest.raises(ValueError, match=r"denoiser returned a tensor on meta for an input on cpu"):
        sampler(lambda x, s: torch.empty(x.shape, device="meta"), GOOD_X, sig)
    with pytest.raises(ValueError, match=r"cond\['y'\] is a meta tensor"):
        sampler(lambda x, s, y: x, GOOD_X, sig, cond={"y": torch.empty(2, device="meta")})


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_cond_batch_must_match_x(sampler: Any) -> None:
    sig = karras_sigmas(3)

    def den(x: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x) + y.reshape(-1, 1)

    with pytest.raises(ValueError, match=r"cond\['y'\] has shape \(3,\) but x has batch size 2"):
        sampler(den, GOOD_X, sig, cond={"y": torch.ones(3)})
    # One row is shared by the batch (broadcast), a 0-d tensor has no batch dimension: both accepted.
    for y in (torch.ones(1), torch.tensor(1.0), torch.ones(2)):
        out = sampler(den, GOOD_X, sig, cond={"y": y})
        torch.testing.assert_close(out, torch.ones(2, 3), rtol=0, atol=0)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_levels_whose_squares_overflow_are_rejected(sampler: Any) -> None:
    den = PointMass(torch.zeros(3))
    # float32 (the state of float32 x): squares overflow above ~1.8e19, underflow below ~1.1e-19.
    with pytest.raises(ValueError, match=r"sigmas\[0\] = 1e\+20 is out of the range .* torch\.float32"):
        sampler(den, GOOD_X, [1e20, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"sigmas\[1\] = 1e-20 is out of the range .* dtype=torch\.float64"):
        sampler(den, GOOD_X, [1.0, 1e-20, 0.0])
    # The same levels are fine in float64, whose limits are 1.3e154 and 1.5e-154.
    out = sampler(den, GOOD_X.double() * 1e20, [1e20, 1.0, 1e-20, 0.0], dtype=torch.float64)
    assert torch.equal(out, torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"sigmas\[0\] = 1e\+300 .* \[1\.49e-154, 1\.34e\+154\]"):
        sampler(den, GOOD_X, [1e300, 1.0, 0.0], dtype=torch.float64)
    # A float16 state: sigmas reach the denoiser in float16, whose largest finite value is 65504.
    with pytest.raises(ValueError, match=r"sigmas\[0\] = 100000 .* torch\.float16"):
        sampler(den, GOOD_X, [1e5, 1.0, 0.0], dtype=torch.float16)


@pytest.mark.parametrize(
    ("shape", "exc", "match"),
    [
        ((2.5,), TypeError, r"shape\[0\] must be an int, got float 2\.5"),
        ("12", TypeError, "shape must be a tuple of ints"),
        ((True, 2), TypeError, r"shape\[0\] must be an int, got bool True"),
        ((3, 0), ValueError, r"shape\[1\] must be >= 1, got 0"),
        (3, TypeError, "shape must be a tuple of ints"),
        (None, TypeError, "shape must be a tuple of ints"),
    ],
)
def test_generate_rejects_bad_shapes(shape: Any, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        generate(PointMass(torch.zeros(3)), [1, 2], shape, karras_sigmas(3))


def test_generate_accepts_integer_like_shapes() -> None:
    den = PointMass(torch.zeros(2, 3))
    ref = generate(den, [1, 2], (2, 3), karras_sigmas(3))
    for shape in ([2, 3], torch.Size([2, 3]), (np.int64(2), 3)):
        assert torch.equal(generate(den, [1, 2], shape, karras_sigmas(3)), ref)


def test_generate_names_bad_sampler_device_and_dtype() -> None:
    den = PointMass(torch.zeros(3))
    # generate() takes registry names (issue 12); a function's name instead of the registry name is named
    with pytest.raises(ValueError, match=r"sampler must be one of .*got 'heun_sample'; did you mean 'heun'"):
        generate(den, [1], (3,), karras_sigmas(3), sampler="heun_sample")
    with pytest.raises(TypeError, match="sampler must be a registry name such as 'heun' or a sampler function"):
        generate(den, [1], (3,), karras_sigmas(3), sampler=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="device is the meta device"):
        generate(den, [1], (3,), karras_sigmas(3), device="meta")
    with pytest.raises(TypeError, match=r"dtype must be a floating torch\.dtype"):
        generate(den, [1], (3,), karras_sigmas(3), dtype=torch.int64)
    with pytest.raises(ValueError, match=r"cond\['y'\] has shape \(2,\) but x has batch size 1"):
        generate(lambda x, s, y: x, [1], (3,), karras_sigmas(3), cond={"y": torch.ones(2)})


@pytest.mark.parametrize("bad", [lambda s: s * 0, lambda s: -s, lambda s: s * float("nan")])
def test_round_sigma_output_is_checked(bad: Any) -> None:
    with pytest.raises(ValueError, match="round_sigma returned non-positive or non-finite noise levels: it mapped"):
        stochastic_sample(PointMass(torch.zeros(3)), GOOD_X, karras_sigmas(4), s_churn=1, round_sigma=bad)


def test_helpers_name_meta_sigmas() -> None:
    with pytest.raises(ValueError, match="sigmas is a meta tensor"):
        initial_x(GOOD_X, karras_sigmas(3).to("meta"))
    with pytest.raises(ValueError, match="sigmas is a meta tensor"):
        count_nfe(karras_sigmas(3).to("meta"), "heun")
