"""CounterNoise (issue 15): noise as a pure function of (seed, draw, position).

Checked against an independent transcription (Python integers for SplitMix64, ``statistics.NormalDist`` for the
quantile), for batch, skip and rank invariance, for bitwise determinism (the CPU work-buffer path equals the
functional path that CUDA and ``torch.compile`` run), for statistical quality with margins that hold for
>= 999/1000 keys (``check_statistics``, also run over 1000 keys by benchmarks/seed_robustness.py), for graph
capture (the CPU stand-in of tests/test_graph_cpu_capture.py) and ``fullgraph`` compilation, and through the
samplers: draws only on the steps that add noise, draw i at step i, zero churn equals Heun bitwise.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import edm_samplers as es
from edm_samplers import CounterNoise, GraphedSampler, PerSampleNoise, karras_sigmas
from edm_samplers import _counter as counter
from edm_samplers.evaluation import GaussianMixture
from test_graph_cpu_capture import FakeCuda, _storage, _the_graph, fake_cuda  # noqa: F401  (fixture)

F32 = {"dtype": torch.float32, "device": torch.device("cpu")}
EDM_CHURN = {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}

# ---- an independent transcription: Python integers and the exact normal quantile ----------------------------

_U = (1 << 64) - 1


def _mix(z: int) -> int:
    # SplitMix64's finalizer (Steele, Lea, Flood 2014, the constants of Java's SplittableRandom)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U
    return z ^ (z >> 31)


def reference(seed: int, key: int, draw: int, position: int) -> float:
    """The documented construction, transcribed: row key, SplitMix64 at counter (draw << 32) + pair, the 32-bit
    half of the position's parity, u = |w + 1/2| / 2**32 (w + 1/2 rounded to float32), x = sign * -Phi^-1(u)."""
    row = _mix(seed ^ _mix(key ^ 0x5851F42D4C957F2D))
    z = _mix((row + ((draw << 32) + position // 2) * 0x9E3779B97F4A7C15) & _U)
    w = (z >> (32 * (position % 2))) & 0xFFFFFFFF
    w = w - (1 << 32) if w >> 31 else w  # the half as a signed int32
    f = float(np.float32(np.float32(w) + np.float32(0.5)))
    return math.copysign(-NormalDist().inv_cdf(abs(f) / 2**32), f)


# The table inversion: linear interpolation over 256 bins per octave of u (h^2 / 8 max |x''(u)|: ~1 / (8 x 4**8 x)
# in the tail, 9.3e-7 at worst near |x| = 1.1 over 12.8 million values) and 24-bit fixed point (6e-8): 1e-6 covers
# them; a wrong hash or a wrong half would be off by O(1).
TOL = 1e-6


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 5000)
)  # fmt: skip
def test_matches_the_transcription(seed: int, key: int, draw: int, position: int) -> None:
    got = CounterNoise([seed], key=key).randn_at(draw, (1, position + 1), **F32)[0, position]
    assert abs(float(got) - reference(seed, key, draw, position)) <= TOL


def test_table_accuracy_over_many_values() -> None:
    # every value of a large draw against the exact quantile of its own bits (float64 ndtri on the same f)
    keys = counter.row_keys(range(4), 7) + counter.draw_offset(3)
    pos = counter.positions(20_000, torch.device("cpu"))
    got = counter.normals(keys, pos, counter.tables(torch.device("cpu"))).double()
    z = keys[:, None] + pos[None, :]
    for shift, mult in counter._SHIFTS:
        z = z ^ ((z >> shift) & counter._mask(shift))
        if mult is not None:
            z = z * mult
    f = (z.view(torch.int32).float() + 0.5).double()
    want = -torch.special.ndtri(f.abs() / 2**32) * f.sign()
    assert float((got - want).abs().max()) <= TOL
    assert float(got.abs().max()) < 6.3  # -Phi^-1(2**-33) = 6.23: the largest magnitude there is


# ---- invariances --------------------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=6, unique=True), st.randoms(use_true_random=False))
def test_a_row_depends_on_its_seed_only(seeds: list[int], rnd: Any) -> None:
    shape = (3, 5)  # odd size: the last pair is cut
    full = CounterNoise(seeds).randn_at(4, (len(seeds), *shape), **F32)
    order = list(range(len(seeds)))
    rnd.shuffle(order)
    sub = order[: rnd.randint(1, len(seeds))]
    part = CounterNoise([seeds[i] for i in sub]).randn_at(4, (len(sub), *shape), **F32)
    assert torch.equal(part, full[sub])  # any batch, any position: bitwise
    alone = [CounterNoise([seeds[i]]).randn_at(4, (1, *shape), **F32)[0] for i in sub]
    assert torch.equal(torch.stack(alone), full[sub])


def test_draws_are_indexed_not_counted() -> None:
    src = CounterNoise(range(3), key=5)
    d2 = src.randn_at(2, (3, 8), **F32)
    src.randn_at(0, (3, 8), **F32)
    assert torch.equal(src.randn_at(2, (3, 8), **F32), d2)  # whatever was drawn before
    assert torch.equal(CounterNoise(range(3), key=5).randn_at(2, (3, 8), **F32), d2)  # a new object: the same
    seq = [src.randn((3, 8), **F32) for _ in range(3)]  # randn hands out draws 0, 1, 2 in turn
    assert torch.equal(seq[2], d2) and src.index == 3
    src.reset()
    assert torch.equal(src.randn((3, 8), **F32), seq[0])
    assert not torch.equal(src.randn_at(3, (3, 8), **F32), d2)
    assert not torch.equal(CounterNoise(range(3), key=6).randn_at(2, (3, 8), **F32), d2)
    # a sample is its flattened positions: the shape of the rest does not matter
    assert torch.equal(src.randn_at(2, (3, 2, 4), **F32).reshape(3, 8), d2)
    # float64 (and any dtype) is the float32 draw cast
    assert torch.equal(src.randn_at(2, (3, 8), dtype=torch.float64, device=torch.device("cpu")), d2.double())


def test_work_buffer_path_equals_the_functional_path() -> None:
    # CPU eager writes into reused buffers; CUDA and compiled code run the functional form: the same bits
    keys = counter.row_keys([0, 1, 2**63, 2**64 - 1], 3) + counter.draw_offset(9)
    pos = counter.positions(777, torch.device("cpu"))
    tab = counter.tables(torch.device("cpu"))
    work = counter.Work(4, 777)
    assert torch.equal(counter.normals_into(keys, pos, tab, work), counter.normals(keys, pos, tab))
    assert torch.equal(counter.normals_into(keys + 1, pos, tab, work), counter.normals(keys + 1, pos, tab))


def test_compiles_fullgraph_to_the_same_bits() -> None:
    src = CounterNoise([3, 1, 4], key=1)

    def f(x: torch.Tensor) -> torch.Tensor:
        return x + src.randn_at(5, x.shape, dtype=x.dtype, device=x.device)

    x = torch.zeros(3, 2, 7)
    # Dynamo's tracing only (backend="eager": any graph break fails here); most of this test's seconds are the
    # one-time start of torch._dynamo, shared with tests/test_graph.py's compile tests.
    compiled = torch.compile(f, fullgraph=True, backend="eager")
    assert torch.equal(compiled(x), f(x))


def test_compile_option_gives_the_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    # the option's plumbing, traced by dynamo without a C++ build (inductor's bits: benchmarks/noise_cost.py)
    monkeypatch.setattr(counter, "COMPILE_BACKEND", "eager")
    a = CounterNoise([5, 6], compile=True).randn_at(3, (2, 3, 9), **F32)
    assert torch.equal(a, CounterNoise([5, 6]).randn_at(3, (2, 3, 9), **F32))
    with pytest.raises(TypeError, match="compile must be True or False"):
        CounterNoise([1], compile=1)  # type: ignore[arg-type]


# ---- through the samplers -------------------------------------------------------------------------------------


def _gm(dim: int = 4) -> GaussianMixture:
    g = torch.Generator().manual_seed(0)
    return GaussianMixture(torch.randn(3, dim, generator=g, dtype=torch.float64), 0.4)


class Spy(CounterNoise):
    """Records which draws the sampler asks for."""

    def __init__(self, seeds: Any, key: int = 0) -> None:
        super().__init__(seeds, key=key)
        self.asked: dict[int, torch.Tensor] = {}

    def randn_at(self, draw: int, shape: Any, *, dtype: torch.dtype, device: Any) -> torch.Tensor:
        out = super().randn_at(draw, shape, dtype=dtype, device=device)
        self.asked[draw] = out
        return out


def test_churn_draws_only_where_gamma_is_positive_and_skipping_changes_no_draw() -> None:
    sig = karras_sigmas(12)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 80
    wide, narrow = Spy(range(3)), Spy(range(3))
    es.stochastic_sample(_gm(), x, sig, noise=wide, s_churn=40.0)
    es.stochastic_sample(_gm(), x, sig, noise=narrow, **EDM_CHURN)
    in_range = [i for i, s in enumerate(sig[:-1].tolist()) if 0.05 <= s <= 50]
    assert sorted(wide.asked) == list(range(12)) and sorted(narrow.asked) == in_range  # step i reads draw i
    assert all(torch.equal(narrow.asked[i], wide.asked[i]) for i in in_range)
    # the SDE and ancestral samplers skip their last step to 0 (it adds no noise)
    for sampler in (es.dpmpp_2m_sde_sample, es.euler_ancestral_sample):
        spy = Spy(range(3))
        sampler(_gm(), x, sig, noise=spy)
        assert sorted(spy.asked) == list(range(11))


def test_zero_churn_equals_heun_bitwise_and_draws_nothing() -> None:
    sig = karras_sigmas(10)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(2)) * 80
    heun = es.heun_sample(_gm(), x, sig)
    spy = Spy(range(2))
    assert torch.equal(es.stochastic_sample(_gm(), x, sig, s_churn=0.0, noise=spy), heun)
    es.stochastic_sample(_gm(), x, sig, s_churn=40.0, s_noise=0.0, noise=spy)  # raises sigma, adds no noise
    assert spy.asked == {}
    assert torch.equal(es.generalized_sample(_gm(), x, sig, noise=spy), es.generalized_sample(_gm(), x, sig))
    state = torch.random.get_rng_state()
    es.stochastic_sample(_gm(), x, sig)  # the default source: keyed from the global RNG only when it draws
    assert torch.equal(torch.random.get_rng_state(), state)


def test_default_noise_is_counter_based_and_follows_manual_seed() -> None:
    sig = karras_sigmas(6)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 80
    torch.manual_seed(11)
    a = es.stochastic_sample(_gm(), x, sig, s_churn=30.0)
    torch.manual_seed(11)
    assert torch.equal(es.stochastic_sample(_gm(), x, sig, s_churn=30.0), a)
    torch.manual_seed(12)
    assert not torch.equal(es.stochastic_sample(_gm(), x, sig, s_churn=30.0), a)


def test_two_ranks_give_the_samples_of_one() -> None:
    # ranks are simulated by sharding the seeds (the torchrun mechanics are tested in tests/test_distributed.py);
    # the closed-form denoiser is row-wise, so every difference would come from the noise
    seeds = [5, 9, 2, 7, 11]
    shape = (4,)
    for sampler, knobs in (("stochastic", EDM_CHURN), ("dpmpp_2m_sde", {}), ("euler_ancestral", {})):
        one = es.generate(_gm(), seeds, shape, karras_sigmas(8), sampler=sampler, dtype=torch.float64, **knobs)
        ranks = [es.generate(_gm(), part, shape, karras_sigmas(8), sampler=sampler, dtype=torch.float64, **knobs)
                 for part in (seeds[0::2], seeds[1::2])]  # fmt: skip
        assert torch.equal(torch.cat(ranks)[[0, 3, 1, 4, 2]], one)


def test_generate_per_sample_keeps_the_old_streams() -> None:
    sig = karras_sigmas(6)
    a = es.generate(_gm(), [1, 2], (4,), sig, sampler="stochastic", noise="per_sample", **EDM_CHURN)
    x = PerSampleNoise([1, 2]).randn((2, 4), **F32) * sig[0].float()
    src = PerSampleNoise([1, 2])
    src.randn((2, 4), **F32)  # the latents
    assert torch.equal(a, es.stochastic_sample(_gm(), x, sig, noise=src, **EDM_CHURN))
    b = es.generate(_gm(), [1, 2], (4,), sig, sampler="stochastic", **EDM_CHURN)
    assert torch.equal(b, es.stochastic_sample(_gm(), x, sig, noise=CounterNoise([1, 2]), **EDM_CHURN))
    with pytest.raises(TypeError, match="do not pass noise="):
        es.generate(_gm(), [1], (4,), sig, noise=CounterNoise([1]))  # type: ignore[arg-type]


# ---- graph capture (the CPU stand-in of torch.cuda's graph API) ------------------------------------------------


@pytest.mark.parametrize(
    ("sampler", "knobs"), [("stochastic", EDM_CHURN), ("dpmpp_2m_sde", {}), ("euler_ancestral", {})]
)
def test_graph_computes_counter_noise_inside(fake_cuda: FakeCuda, sampler: str, knobs: dict[str, Any]) -> None:  # noqa: F811
    sig = karras_sigmas(8)
    gm = _gm()
    gs = GraphedSampler(gm, sig, (3, 4), sampler=sampler, **knobs)
    fn = es.solvers.api.sampler_function(sampler)
    for i, seeds in enumerate(([0, 1, 2], [7, 8, 9], [4, 4, 5])):
        x = torch.randn(3, 4, generator=torch.Generator().manual_seed(i)) * 80
        got = gs(x, noise=CounterNoise(seeds))
        assert torch.equal(got, fn(gm, x, sig, noise=CounterNoise(seeds), **knobs))
        g = _the_graph(fake_cuda, replays=i + 1)
    cg = gs._counter
    assert cg is not None and gs._static_noise == []  # no static noise buffers: the draws are graph kernels
    assert _storage(cg.keys) in g.read_ptrs() and _storage(cg.keys) not in g.written_ptrs()
    with pytest.raises(ValueError, match="one seed per row"):
        gs(x, noise=CounterNoise([1, 2]))


def test_graph_default_noise_is_keyed_per_call(fake_cuda: FakeCuda) -> None:  # noqa: F811
    gs = GraphedSampler(_gm(), karras_sigmas(5), (2, 4), sampler="stochastic", s_churn=20.0)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0)) * 80
    torch.manual_seed(0)
    a = gs(x)
    torch.manual_seed(0)
    assert torch.equal(gs(x), a)
    assert not torch.equal(gs(x), a)
    _the_graph(fake_cuda, replays=3)
    heun = GraphedSampler(_gm(), karras_sigmas(5), (2, 4), sampler="stochastic", s_churn=0.0)
    state = torch.random.get_rng_state()
    heun(x)  # draws nothing: the default source is never keyed, the global RNG untouched
    assert torch.equal(torch.random.get_rng_state(), state) and heun._counter is None


# ---- statistics: margins that hold for >= 999/1000 keys ----------------------------------------------------------

# Each statistic below is (asymptotically) normal with a known standard error under the null; |stat| <= Z se
# fails with probability 2 (1 - Phi(5.3)) = 1.2e-7 each, and the KS distance obeys the Dvoretzky-Kiefer-Wolfowitz
# bound P(D_n > eps) <= 2 exp(-2 n eps^2) = ALPHA = 1e-6: eleven checks fail together for < 2e-6 of keys.
Z = 5.3
ALPHA = 1e-6
SEEDS, DRAWS, SIZE = 64, 4, 784  # n = 200,704 values per key


def check_statistics(key: int) -> dict[str, float]:
    src = CounterNoise(range(SEEDS), key=key)
    x = torch.stack([src.randn_at(d, (SEEDS, SIZE), **F32) for d in range(DRAWS)]).double()  # [draw, seed, pos]
    v = x.flatten()
    n = v.numel()
    out: dict[str, float] = {}

    def within(name: str, value: float, se: float) -> None:
        out[name] = value / (Z * se)
        assert abs(value) <= Z * se, f"{name} = {value:.3e}, more than {Z} standard errors ({se:.3e})"

    within("mean", float(v.mean()), 1 / math.sqrt(n))
    within("variance - 1", float(v.var()) - 1, math.sqrt(2 / n))
    within("skewness", float((v**3).mean()), math.sqrt(15 / n))  # E x^6 = 15 (mean 0 taken as known)
    within("kurtosis - 3", float((v**4).mean()) - 3, math.sqrt(96 / n))  # Var x^4 = 105 - 9
    p3 = 2 * (1 - NormalDist().cdf(3.0))  # the tails beyond 3: a binomial count
    within("tail > 3", float((v.abs() > 3).double().mean()) - p3, math.sqrt(p3 * (1 - p3) / n))
    # no correlation between neighbours: product means, standard error 1 / sqrt(pairs)
    for name, a, b in (
        ("neighbouring seeds", x[:, :-1], x[:, 1:]),
        ("neighbouring draws", x[:-1], x[1:]),
        ("positions 2j, 2j+1 (one 64-bit word)", x[..., 0::2], x[..., 1::2]),
        ("positions 2j+1, 2j+2 (two words)", x[..., 1:-1:2], x[..., 2::2]),
        ("squares of neighbouring seeds", x[:, :-1] ** 2 - 1, (x[:, 1:] ** 2 - 1) / math.sqrt(2)),
    ):
        prod = (a * b).flatten()
        within(name, float(prod.mean()), float(prod.std()) / math.sqrt(prod.numel()))
    srt = torch.sort(v).values
    cdf = torch.special.ndtr(srt)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    d = float(torch.maximum(i / n - cdf, cdf - (i - 1) / n).max())
    eps = math.sqrt(math.log(2 / ALPHA) / (2 * n))
    out["KS / eps"] = d / eps
    assert d <= eps, f"KS distance {d:.4f} > {eps:.4f}"
    # negative control on the same event: a 6 % scale error moves the CDF by 0.0142 >= 2 eps = 0.0119
    cdf_wrong = torch.special.ndtr(srt / 1.06)
    assert float(torch.maximum(i / n - cdf_wrong, cdf_wrong - (i - 1) / n).max()) > eps
    return out


@pytest.mark.parametrize("key", [0, 1, 2**64 - 1])
def test_statistics(key: int) -> None:
    check_statistics(key)


# ---- bad input -----------------------------------------------------------------------------------------------------


def test_bad_input() -> None:
    with pytest.raises(TypeError, match="seeds must be an iterable"):
        CounterNoise(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one seed"):
        CounterNoise([])
    with pytest.raises(ValueError, match=r"seeds must be in \[0, 2\*\*64\)"):
        CounterNoise([-1])
    with pytest.raises(TypeError, match="key must be an int"):
        CounterNoise(key=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key"):
        CounterNoise(key=2**64)
    src = CounterNoise([1, 2])
    with pytest.raises(ValueError, match="one seed per row"):
        src.randn_at(0, (3, 4), **F32)
    with pytest.raises(ValueError, match="draw"):
        src.randn_at(2**32, (2, 4), **F32)
    with pytest.raises(ValueError, match="draw"):
        src.randn_at(-1, (2, 4), **F32)
    with pytest.raises(TypeError, match="dtype"):
        src.randn_at(0, (2, 4), dtype=torch.int64, device=torch.device("cpu"))
    assert repr(CounterNoise([1], key=2)) == "CounterNoise(seeds=[1], key=2)"
