"""GraphedSampler's capture and replay code on the CPU, through a stand-in for torch.cuda's graph API.

On CUDA, :class:`GraphedSampler` warms its loop up on a side stream, captures one run into a
``torch.cuda.CUDAGraph`` against static buffers (x, cond tensors, one noise buffer per draw) and then, per
call, copies the new inputs into those buffers and replays. A real graph replays *kernels*, not Python:
whatever the loop computed on the host during capture is frozen, each kernel reads the memory it read
during capture, and results land in the memory it wrote then. The stand-in below has exactly those
semantics on the CPU: ``torch.cuda.graph(g)`` records every ATen op run inside it (with the very tensors
it read and wrote, kept alive like the graph's private memory pool), and ``g.replay()`` re-runs the
recorded ops in order on the same tensors, copying fresh results into the recorded outputs. Host syncs
(``.item()``, ``bool(tensor)``), random ops and host-to-device constants (``torch.tensor(...)``) inside
the capture raise, as they would break or silently freeze a real capture.

It replaces the names graph.py's ``_capture`` looks up at call time (``torch.cuda.CUDAGraph``, ``graph``,
``Stream``, ``stream``, ``current_stream``) and ``GraphedSampler.graphed``; every test asserts that the
graph was captured and replayed, so a change in graph.py that bypasses the stand-in fails here rather
than silently testing the eager path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import edm_samplers
from edm_samplers import (
    GraphedSampler,
    PerSampleNoise,
    PrecomputedNoise,
    euler_sample,
    heun_sample,
    karras_sigmas,
    stochastic_sample,
)
from edm_samplers.evaluation import GaussianMixture
from edm_samplers.solvers import multistep, registry
from test_graph import MS_KNOBS

# ---- the stand-in -------------------------------------------------------------------------------------

_UNINITIALISED = {
    torch.ops.aten.empty.memory_format,
    torch.ops.aten.empty_strided.default,
    torch.ops.aten.empty_like.default,
    torch.ops.aten.new_empty.default,
    torch.ops.aten.new_empty_strided.default,
}
_H2D = {torch.ops.aten.lift_fresh.default, torch.ops.aten.lift_fresh_copy.default}


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


class FakeGraph:
    """Records the ops of one capture; ``replay()`` re-runs them on the recorded tensors."""

    def __init__(self) -> None:
        self.ops: list[tuple[Any, tuple[Any, ...], dict[str, Any], Any]] = []
        self.captured = False
        self.replays = 0
        self.used: tuple[bool, ...] | None = None  # the program's steps that add noise (set by the tests)

    def replay(self) -> None:
        assert self.captured, "replay() before capture"
        for func, args, kwargs, out in self.ops:
            if func in _UNINITIALISED:
                continue  # pool memory: keeps whatever the last replay left there, as on CUDA
            new = func(*args, **kwargs)
            for old, fresh in zip(_tensors(out), _tensors(new), strict=True):
                # views and in-place / out= results already are the recorded memory; fresh results are
                # copied into the memory that later ops (and the static output) read
                if fresh.data_ptr() != old.data_ptr() or fresh.stride() != old.stride():
                    old.copy_(fresh)
        self.replays += 1

    def read_ptrs(self) -> set[int]:
        """Storages of every tensor some recorded op takes as input (views included)."""
        return {_storage(t) for _, args, kwargs, _ in self.ops for t in _tensors((args, kwargs))}

    def written_ptrs(self) -> set[int]:
        """Storages some recorded op writes: fresh results, in-place and out= targets (not mere views)."""
        ptrs = set()
        for func, _, _, out in self.ops:
            schema = func._schema
            mutates = any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)
            views = any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns)
            if mutates or not views:
                ptrs.update(_storage(t) for t in _tensors(out))
        return ptrs


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


class _Recorder(TorchDispatchMode):
    def __init__(self, graph: FakeGraph) -> None:
        super().__init__()
        self.graph = graph

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if torch.Tag.nondeterministic_seeded in func.tags:
            raise RuntimeError(f"random op {func} during graph capture: noise must come from the static buffers")
        if func in _H2D:
            raise RuntimeError(f"{func} during graph capture: a host-to-device copy (torch.tensor(...) in the loop)")
        out = func(*args, **kwargs)
        if any(isinstance(v, (bool, int, float)) for v in tree_flatten(out)[0]):
            raise RuntimeError(f"host sync during graph capture: {func} reads a tensor value on the host")
        self.graph.ops.append((func, args, kwargs, out))
        return out


class FakeStream:
    def __init__(self, device: Any = None) -> None:
        self.device = device
        self.waited_on: list[FakeStream] = []

    def wait_stream(self, other: FakeStream) -> None:
        self.waited_on.append(other)


class FakeCuda:
    """The torch.cuda names graph.py uses, on the CPU; keeps every graph it hands out."""

    def __init__(self) -> None:
        self.default = FakeStream()
        self.current = self.default
        self.graphs: list[FakeGraph] = []
        self.capturing = False

    def CUDAGraph(self) -> FakeGraph:  # torch.cuda's names
        g = FakeGraph()
        self.graphs.append(g)
        return g

    def Stream(self, device: Any = None) -> FakeStream:
        return FakeStream(device)

    def current_stream(self, device: Any = None) -> FakeStream:
        del device
        return self.current

    @contextlib.contextmanager
    def stream(self, s: FakeStream) -> Iterator[None]:
        prev, self.current = self.current, s
        try:
            yield
        finally:
            self.current = prev

    @contextlib.contextmanager
    def graph(self, g: FakeGraph) -> Iterator[None]:
        assert not self.capturing and not g.captured, "nested or repeated capture"
        self.capturing = True
        try:
            with _Recorder(g):
                yield
        finally:
            self.capturing = False
        g.captured = True


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    fake = FakeCuda()
    for name in ("CUDAGraph", "graph", "Stream", "stream", "current_stream"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    monkeypatch.setattr(GraphedSampler, "graphed", property(lambda self: True))
    return fake


def _the_graph(fake: FakeCuda, replays: int) -> FakeGraph:
    assert len(fake.graphs) == 1, "captured once, on the first call"
    g = fake.graphs[0]
    assert g.captured and g.replays == replays, "every call replays the graph (no eager fallback)"
    return g


# ---- problems -----------------------------------------------------------------------------------------


def mixture() -> GaussianMixture:
    g = torch.Generator().manual_seed(0)
    return GaussianMixture(torch.randn(3, 2, 4, generator=g), 0.3)


def start(seed: int, batch: int = 4) -> torch.Tensor:
    return torch.randn(batch, 2, 4, generator=torch.Generator().manual_seed(seed)) * 80


CORE: dict[str, tuple[Callable[..., torch.Tensor], dict[str, Any]]] = {
    "heun": (heun_sample, {}),
    "euler": (euler_sample, {}),
    "stochastic": (stochastic_sample, {"s_churn": 20.0, "s_noise": 1.003}),
    "stochastic-euler": (stochastic_sample, {"solver": "euler", "s_churn": 20.0, "s_tmin": 0.5, "s_tmax": 30.0}),
}
MULTISTEP: dict[str, dict[str, Any]] = {
    **MS_KNOBS,  # the same knobs as the CUDA replay tests
    # the generalized sampler runs in the same runtime since issue 12: captured like the rest
    "generalized": {"schedule": "vp", "scaling": "vp", "alpha": 0.75, "s_churn": 20.0},
}
CALLS = [(1, [0, 1, 2, 3]), (2, [7, 8, 9, 10]), (3, [4, 4, 5, 5])]  # (x seed, per-sample noise seeds) per call


def test_every_multistep_sampler_is_covered() -> None:
    # every registered sampler: the core ones in CORE, the others (multistep, dpm2, generalized) here
    plain = {n for n in registry.names() if not registry.get(n).guided}  # CFG++ samplers: test_cfgpp.py
    assert sorted(MULTISTEP) == sorted(plain - {"heun", "euler", "stochastic"})


class CountingNoise:
    """Wraps a NoiseSource and counts its draws."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.draws = inner, 0

    def randn(self, shape: Any, *, dtype: torch.dtype, device: Any) -> torch.Tensor:
        self.draws += 1
        out: torch.Tensor = self.inner.randn(shape, dtype=dtype, device=device)
        return out


def _replays_match_eager(fake: FakeCuda, gs: GraphedSampler, eager: Callable[..., torch.Tensor]) -> FakeGraph:
    """Three calls with new x and new seeds each: every replay equals the eager driver bitwise."""
    side_calls: list[FakeStream] = []
    loop = gs._loop
    used = getattr(loop.program, "used", ())  # type: ignore[attr-defined]  # dpm2: deterministic, no table
    gs._loop = lambda x, cond, noise: (side_calls.append(fake.current), loop(x, cond, noise))[1]  # type: ignore[method-assign]
    outs = []
    for i, (xs, seeds) in enumerate(CALLS):
        x = start(xs)
        x_copy = x.clone()
        got = gs(x, noise=PerSampleNoise(seeds))
        counted = CountingNoise(PerSampleNoise(seeds))
        want = eager(x, counted)
        # the same kernels on the same values in the same order: bitwise, for every call's x and seeds
        assert torch.equal(got, want)
        assert torch.equal(x, x_copy)  # the caller's x is copied, never written
        assert len(gs._static_noise) == counted.draws  # one static buffer per draw of the eager loop
        outs.append(got)
        g = _the_graph(fake, replays=i + 1)
        g.used = used
    for out, (xs, seeds) in zip(outs, CALLS, strict=True):
        assert torch.equal(out, eager(start(xs), PerSampleNoise(seeds)))  # returned copies, not the static output
    # warm-up runs (2) on the side stream, then the capture on the default stream; Python ran only then
    assert len(side_calls) == gs.warmup + 1 and all(s is not fake.default for s in side_calls[:-1])
    assert side_calls[-1] is fake.default and fake.default.waited_on == [side_calls[0]]
    return g


@pytest.mark.parametrize("name", sorted(CORE))
def test_core_replay_equals_eager(fake_cuda: FakeCuda, name: str) -> None:
    driver, knobs = CORE[name]
    sampler = name.split("-")[0]
    sig = karras_sigmas(5)
    gs = GraphedSampler(mixture(), sig, (4, 2, 4), sampler=sampler, **knobs)  # type: ignore[arg-type]
    g = _replays_match_eager(fake_cuda, gs, lambda x, noise: driver(mixture(), x, sig, noise=noise, **knobs))
    _check_buffers(gs, g)


@pytest.mark.parametrize("name", sorted(MULTISTEP))
def test_multistep_replay_equals_eager(fake_cuda: FakeCuda, name: str) -> None:
    driver = getattr(edm_samplers, f"{name}_sample")
    knobs = MULTISTEP[name]
    sig = karras_sigmas(6)
    gs = GraphedSampler(mixture(), sig, (4, 2, 4), sampler=name, **knobs)  # type: ignore[arg-type]
    g = _replays_match_eager(fake_cuda, gs, lambda x, noise: driver(mixture(), x, sig, noise=noise, **knobs))
    _check_buffers(gs, g)


def _check_buffers(gs: GraphedSampler, g: FakeGraph) -> None:
    """The graph reads x and noise only from the static buffers and writes its result into the static output."""
    assert gs._static_x is not None and gs._static_out is not None
    reads, writes = g.read_ptrs(), g.written_ptrs()
    assert _storage(gs._static_x) in reads
    # every draw of a step that adds noise is used; a stream's draws on the others are made and dropped (issue 15)
    used = g.used
    assert used is not None and len(gs._static_noise) == (len(used) if any(used) else 0)
    assert all((_storage(b) in reads) == u for b, u in zip(gs._static_noise, used, strict=False))
    assert _storage(gs._static_out) in writes
    assert _storage(gs._static_x) not in writes  # the input buffer is never written by the loop
    assert not any(_storage(b) in writes for b in gs._static_noise)


# ---- cond, static inputs, static output ---------------------------------------------------------------


def _scaled(x: torch.Tensor, sigma: torch.Tensor, *, scale: torch.Tensor, shift: float) -> torch.Tensor:
    s = sigma[:, None, None]
    return torch.tanh(x / (1 + s)) * scale[:, None, None] + shift


@pytest.mark.parametrize("sampler", ["stochastic", "dpmpp_2m_sde"])
def test_cond_and_inputs_are_read_only_from_static_buffers(fake_cuda: FakeCuda, sampler: str) -> None:
    sig = karras_sigmas(4)
    knobs: dict[str, Any] = {"s_churn": 10.0} if sampler == "stochastic" else {"eta": 1.0}
    eager = stochastic_sample if sampler == "stochastic" else multistep.dpmpp_2m_sde_sample
    first = {"scale": torch.tensor([0.5, 2.0, 1.0, -1.0]), "shift": 0.25}
    gs = GraphedSampler(_scaled, sig, (4, 2, 4), sampler=sampler, cond_example=first, **knobs)  # type: ignore[arg-type]
    x1 = start(1)
    out1 = gs(x1, noise=PerSampleNoise([0, 1, 2, 3]), cond=first)
    g = _the_graph(fake_cuda, replays=1)
    assert torch.equal(out1, eager(_scaled, x1, sig, noise=PerSampleNoise([0, 1, 2, 3]), cond=first, **knobs))
    # The graph never touches the caller's tensors: it read copies of them (static x, static cond).
    reads = g.read_ptrs()
    assert _storage(x1) not in reads and _storage(first["scale"]) not in reads
    assert _storage(gs._static_cond["scale"]) in reads
    # Poison the first call's tensors: a graph that kept reading them would now produce NaN.
    x1.fill_(float("nan"))
    first["scale"].fill_(float("nan"))
    static_out = gs._static_out
    assert static_out is not None
    ptr = static_out.data_ptr()
    for i, (xs, seeds, scale) in enumerate([(2, [5, 6, 7, 8], [1.5, -0.5, 0.1, 3.0]), (3, [9, 9, 9, 9], [1, 1, 1, 1])]):
        cond = {"scale": torch.tensor(scale, dtype=torch.float32), "shift": 0.25}
        got = gs(start(xs), noise=PerSampleNoise(seeds), cond=cond)
        want = eager(_scaled, start(xs), sig, noise=PerSampleNoise(seeds), cond=cond, **knobs)
        assert torch.equal(got, want)  # new x, new cond values, new seeds: all reach the replay
        _the_graph(fake_cuda, replays=i + 2)
        # the result lands in the same static output tensor every replay; callers get a copy
        assert gs._static_out is static_out and static_out.data_ptr() == ptr and torch.equal(static_out, got)
        assert got.data_ptr() != ptr
    assert torch.equal(out1, eager(_scaled, start(1), sig, noise=PerSampleNoise([0, 1, 2, 3]), cond={
        "scale": torch.tensor([0.5, 2.0, 1.0, -1.0]), "shift": 0.25}, **knobs))  # fmt: skip


def test_non_finite_replay_is_reported(fake_cuda: FakeCuda) -> None:
    cond = {"scale": torch.ones(4), "shift": 0.0}
    gs = GraphedSampler(_scaled, karras_sigmas(3), (4, 2, 4), sampler="euler", cond_example=cond)
    assert bool(gs(start(1), cond=cond).isfinite().all())
    with pytest.raises(FloatingPointError, match="non-finite"):
        gs(start(1), cond={"scale": torch.full((4,), float("nan")), "shift": 0.0})
    _the_graph(fake_cuda, replays=2)


# ---- from_loop: what the graph freezes, and what capture refuses -------------------------------------------


def test_replay_runs_kernels_not_python(fake_cuda: FakeCuda) -> None:
    # Host-side values are frozen at capture, as in a real CUDA graph: the stand-in re-runs kernels only.
    factor = [2.0]

    def loop(x: torch.Tensor, cond: Mapping[str, Any], noise: Any) -> torch.Tensor:
        return x * factor[0] + noise.randn(x.shape, dtype=x.dtype, device=x.device)

    gs = GraphedSampler.from_loop(loop, (3,))
    x = torch.tensor([1.0, 2.0, 3.0])
    assert torch.equal(gs(x, noise=PrecomputedNoise(torch.ones(1, 3))), x * 2 + 1)
    factor[0] = 10.0
    assert torch.equal(gs(x + 1, noise=PrecomputedNoise(torch.zeros(1, 3))), (x + 1) * 2)  # still 2: frozen
    _the_graph(fake_cuda, replays=2)


def test_capture_refuses_host_syncs_randomness_and_h2d_copies(fake_cuda: FakeCuda) -> None:
    del fake_cuda

    def sync(x: torch.Tensor, cond: Mapping[str, Any], noise: Any) -> torch.Tensor:
        return x * float(x.abs().max())

    def rand(x: torch.Tensor, cond: Mapping[str, Any], noise: Any) -> torch.Tensor:
        return x + torch.randn_like(x)

    def h2d(x: torch.Tensor, cond: Mapping[str, Any], noise: Any) -> torch.Tensor:
        return x * torch.tensor([1.0, 2.0, 3.0])

    x = torch.tensor([1.0, 2.0, 3.0])
    for loop, match in ((sync, "host sync"), (rand, "random op"), (h2d, "host-to-device")):
        with pytest.raises(RuntimeError, match=match):
            GraphedSampler.from_loop(loop, (3,))(x)


def test_capture_checks_the_loop_contract(fake_cuda: FakeCuda) -> None:
    del fake_cuda
    x = torch.tensor([1.0, 2.0, 3.0])
    runs = [0]

    def changing(x: torch.Tensor, cond: Mapping[str, Any], noise: Any) -> torch.Tensor:
        runs[0] += 1  # draws one more noise tensor on each run: not capturable
        return x + sum(noise.randn(x.shape, dtype=x.dtype, device=x.device) for _ in range(runs[0]))

    with pytest.raises(RuntimeError, match="drew more noise than during warm-up"):
        GraphedSampler.from_loop(changing, (3,))(x, noise=torch.Generator())  # a stream: static buffers

    def reshaped(x: torch.Tensor, cond: Mapping[str, Any], noise: Any) -> torch.Tensor:
        runs[0] += 1
        return x + noise.randn((3,) if runs[0] <= 10 else (1, 3), dtype=x.dtype, device=x.device).reshape(3)

    runs[0] = 8
    with pytest.raises(RuntimeError, match="changed its noise draws"):
        GraphedSampler.from_loop(reshaped, (3,))(x, noise=torch.Generator())

    def identity(x: torch.Tensor, cond: Mapping[str, Any], noise: Any) -> torch.Tensor:
        return x

    with pytest.raises(RuntimeError, match="returned its input x"):
        GraphedSampler.from_loop(identity, (3,))(x)


@pytest.mark.parametrize("sampler", ["heun", "stochastic", "unipc"])
def test_afs_and_per_evaluation_coefficients_replay_equals_eager(fake_cuda: FakeCuda, sampler: str) -> None:
    # issue 16: the analytical first step (a full-covariance closed form, whose tables must reach the device
    # before capture: an H2D copy inside it raises here) and the per-call scales come from a host-side call
    # counter; the capture records one run's call sequence, which every replay repeats.
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 8, generator=g)
    afs = edm_samplers.GaussianDenoiser(torch.randn(2, 4, generator=g), cov=a @ a.T / 8 + 0.1 * torch.eye(8))
    knobs: dict[str, Any] = {"s_churn": 20.0} if sampler == "stochastic" else {}
    sig = karras_sigmas(5)
    n = edm_samplers.count_nfe(sig, sampler, **knobs)
    opts = {"afs": afs, "direction_scale": [1.0 + 0.05 * k for k in range(n)], "sigma_scale": [0.97] * n}
    gs = GraphedSampler(mixture(), sig, (4, 2, 4), sampler=sampler, **knobs, **opts)  # type: ignore[arg-type]
    driver = getattr(edm_samplers, f"{sampler}_sample")
    g_ = _replays_match_eager(fake_cuda, gs, lambda x, noise: driver(mixture(), x, sig, noise=noise, **knobs, **opts))
    _check_buffers(gs, g_)
