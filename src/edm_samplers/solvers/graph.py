"""Graphed sampling: capture a whole sampling loop once, replay it per batch.

For a fixed (schedule, shape, dtype, device, knobs) the sampling loop is the same sequence of kernels
every time; only the initial state, the conditioning and the churn noise change. On CUDA,
:class:`GraphedSampler` records that sequence once into a ``torch.cuda.CUDAGraph`` and each call then

1. validates the inputs on the host (shape, dtype, device, cond keys),
2. copies x and the cond tensors into static input buffers,
3. provides the noise: for a :class:`~edm_samplers.CounterNoise` (the default) the noise is computed inside
   the graph from a static buffer of row keys, which the call fills (one ``[batch]`` copy: no per-step host
   work); for any other source it fills one static buffer per draw from the caller's
   :class:`~edm_samplers.NoiseSource` (the same draws, in the same order and shapes, as the eager driver
   makes). Either way a seed gives the same sample as the eager driver,
4. replays the graph (one launch for the whole loop) and returns a copy of the static output.

On CPU (or any non-CUDA device) the same prepared loop runs eagerly: identical results to the drivers,
minus their per-call validation and step-table work.

Writing a capturable solver (the pattern for step authors)
----------------------------------------------------------
A solver plugs in through :meth:`GraphedSampler.from_loop` with a *loop*
``loop(x, cond, noise) -> Tensor`` built once from the schedule. Everything host-side happens before the
loop is built: validation, precomputing per-step coefficients in float64 and copying them to the device
(``step_table``), choosing the step kind per index from the host copy of the schedule. Inside the loop:

- no ``.item()``, ``float(tensor)``, ``bool(tensor)``, printing or Python ``if`` on tensor values;
  branch only on Python ints/floats and on host flags (``requires_grad``, shapes);
- no host-to-device copies (``torch.tensor(...)``, ``.to(device)`` of CPU data): read coefficients from
  the precomputed device tables;
- draw randomness only through ``noise.randn(shape, dtype=..., device=...)`` or, for step i of a source with
  ``randn_at``, ``noise.randn_at(i, ...)`` (:func:`~edm_samplers.noise.step_drawer`), the same number and shapes
  of draws on every run (for streams the graphed sampler records them during warm-up and replaces them by
  slices of a static buffer; a ``CounterNoise`` is computed inside the graph);
- never write to ``x``, to cond tensors or to denoiser outputs; reuse private state-sized buffers with
  ``out=``/in-place kernels when autograd is not recording (see :mod:`.steps`).

The loop must return a tensor it owns (not ``x``). Multistep solvers keep their history in buffers
allocated inside the loop: during capture they come from the graph's private memory pool and stay
valid across replays.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .._types import Denoiser, NoiseSource
from .._validate import check_cond, check_cond_batch, check_has_data, check_int, state_dtype
from ..noise import CounterNoise, as_noise_source
from .registry import get
from .runtime import finite_or_raise, prepare

__all__ = ["GraphedSampler", "Loop"]

Loop = Callable[[Tensor, Mapping[str, Any], NoiseSource], Tensor]
"""``loop(x, cond, noise) -> x_final``: a sync-free sampling loop for one fixed schedule and shape."""


class _RecordingNoise:
    """Warm-up noise: records each draw's (shape, dtype) and returns standard-normal values."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.draws: list[tuple[tuple[int, ...], torch.dtype]] = []
        self.generator = generator

    def randn(self, shape: Sequence[int], *, dtype: torch.dtype, device: torch.device) -> Tensor:
        shp = tuple(int(s) for s in shape)
        self.draws.append((shp, dtype))
        return torch.randn(shp, dtype=dtype, device=device, generator=self.generator)


class _StaticNoise:
    """Hands out the static noise buffers in order (host bookkeeping only: capturable)."""

    def __init__(self, buffers: Sequence[Tensor]) -> None:
        self.buffers = buffers
        self.index = 0

    def randn(self, shape: Sequence[int], *, dtype: torch.dtype, device: torch.device) -> Tensor:
        del device
        if self.index >= len(self.buffers):
            raise RuntimeError("the sampling loop drew more noise than during warm-up; it must be deterministic")
        b = self.buffers[self.index]
        if tuple(b.shape) != tuple(int(s) for s in shape) or b.dtype != dtype:
            raise RuntimeError("the sampling loop changed its noise draws between warm-up and capture")
        self.index += 1
        return b


class _StaticCounter(CounterNoise):
    """Counter noise whose row keys are a static device buffer: the graph computes every draw from it."""

    def __init__(self, keys: Tensor) -> None:
        super().__init__(None)
        self.static_keys = keys

    def row_keys(self, batch: int, device: torch.device) -> Tensor:
        del batch, device
        return self.static_keys


class _CounterGraph:
    """The capture for counter noise: its graph and static buffers (x, cond, row keys, output)."""

    def __init__(self, graph: torch.cuda.CUDAGraph, x: Tensor, cond: dict[str, Any], keys: Tensor, out: Tensor) -> None:
        self.graph, self.x, self.cond, self.keys, self.out = graph, x, cond, keys, out


class GraphedSampler:
    """A sampler for one fixed (schedule, shape, dtype, device), replayed as one CUDA graph.

    Example::

        gs = GraphedSampler(net, karras_sigmas(18), (16, 3, 32, 32), sampler="stochastic", s_churn=40,
                            device="cuda", cond_example={"class_labels": labels})
        x0 = gs(latents * 80.0, noise=PerSampleNoise(range(16)), cond={"class_labels": labels})

    ``gs(x, noise=..., cond=...)`` returns what the sampler's ``*_sample`` function returns for the same
    arguments (bitwise on CPU; on CUDA the replay runs the
    same kernels as eager mode). The graph is built lazily on the first call (warm-up on a side stream,
    then capture), so building the object is cheap. Sampling runs without autograd; the denoiser must
    be capturable (no host syncs, static shapes: a plain ``nn.Module`` in eval mode usually is).

    Args:
        denoiser: D(x, sigma, **cond).
        sigmas: the schedule (N + 1 entries), validated once.
        shape: the full state shape ``[batch, ...]``; every call must pass x of exactly this shape.
        sampler: any registry name (``"heun"`` for :func:`heun_sample`, ``"stochastic"``, ``"generalized"``,
            ``"unipc"``, ...: the public function's name without ``_sample``).
        dtype: the state dtype; x must have it.
        device: where sampling runs (default CPU); x must live there. CUDA graphs are used on CUDA only.
        cond_example: cond as it will be passed on every call (tensors are copied into static buffers
            of the same shape/dtype/device; other values must compare equal on each call).
        check_finite: raise ``FloatingPointError`` if a result is not finite (one sync after the loop).
        compile: run through ``torch.compile``: each step of EDM's Euler/Heun/churn loop, the whole loop of the
            other solvers (library kernels fused; the denoiser is traced with them, graph breaks in it are
            allowed). Results then match eager to round-off only.
        warmup: eager warm-up runs on a side stream before capture (CUDA only), >= 1.
        **knobs: the sampler's knobs (e.g. ``s_churn=40`` for ``"stochastic"``, ``order=2`` for ``"unipc"``),
            checked like the sampler checks them.

    Raises:
        TypeError / ValueError: on invalid arguments, here or on each call.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        sigmas: Tensor | Sequence[float],
        shape: Sequence[int],
        *,
        sampler: str = "heun",
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        cond_example: Mapping[str, Any] | None = None,
        check_finite: bool = True,
        compile: bool = False,
        warmup: int = 2,
        **knobs: Any,
    ) -> None:
        spec = get(sampler)
        shp = _check_shape(shape)
        dev = _device(device)
        check_has_data(dev, "device")
        sdt = state_dtype(torch.empty(0), dtype)
        example = torch.empty(shp, dtype=sdt, device=dev)
        # afs / direction_scale / sigma_scale are run options (the denoiser's wrapper), not knobs
        run_opts = {k: knobs.pop(k) for k in ("afs", "direction_scale", "sigma_scale") if k in knobs}
        prepared = prepare(spec, denoiser, example, sigmas, knobs, dtype=sdt, **run_opts)
        loop: Loop = prepared  # deterministic solvers ignore the noise source
        if compile:
            step_compiled = getattr(prepared.program, "compiled", None)
            if step_compiled is not None:  # EDM's loop: each step compiled (the denoiser traced once per step kind)
                prepared.program = step_compiled()
            else:  # the whole loop (N unrolled steps, the denoiser inside) as one compiled region
                loop = torch.compile(prepared, dynamic=False)
        self._init(loop, shp, sdt, dev, cond_example, check_finite, warmup, f"{spec.name}_sample")

    @classmethod
    def from_loop(
        cls,
        loop: Loop,
        shape: Sequence[int],
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        cond_example: Mapping[str, Any] | None = None,
        check_finite: bool = True,
        warmup: int = 2,
    ) -> GraphedSampler:
        """Graph any sync-free sampling loop (see the module docstring for the rules it must follow)."""
        if not callable(loop):
            raise TypeError(f"loop must be callable as loop(x, cond, noise), got {type(loop).__name__}")
        self = cls.__new__(cls)
        dev = _device(device)
        self._init(loop, _check_shape(shape), state_dtype(torch.empty(0), dtype), dev, cond_example, check_finite,
                   warmup, getattr(loop, "__name__", "loop"))  # fmt: skip
        return self

    def _init(
        self,
        loop: Loop,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        cond_example: Mapping[str, Any] | None,
        check_finite: bool,
        warmup: int,
        name: str,
    ) -> None:
        self.shape = shape
        self.dtype = dtype
        self.device = device
        self.check_finite = bool(check_finite)
        self.warmup = check_int(warmup, "warmup", minimum=1)
        self._name = name
        self._loop = loop
        # Whether the loop may draw: a deterministic program never reads its source (so a default CounterNoise is
        # never keyed from the global RNG); a loop of from_loop may.
        self._draws = bool(getattr(loop, "stochastic", True))
        self._cond_example = check_cond(None if cond_example is None else dict(cond_example))
        check_cond_batch(self._cond_example, shape[0], "cond_example")
        for k, v in self._cond_example.items():
            if isinstance(v, Tensor) and v.device != device:
                raise ValueError(f"cond_example[{k!r}] lives on {v.device}, the sampler on {device}; move it there")
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_x: Tensor | None = None
        self._static_cond: dict[str, Any] = {}
        self._static_noise: list[Tensor] = []
        self._static_out: Tensor | None = None
        self._counter: _CounterGraph | None = None

    @property
    def graphed(self) -> bool:
        """Whether calls replay a CUDA graph (CUDA device) rather than run the loop eagerly."""
        return self.device.type == "cuda"

    def __repr__(self) -> str:
        return f"GraphedSampler({self._name}, shape={self.shape}, dtype={self.dtype}, device={self.device})"

    # ---- validation --------------------------------------------------------------------------------

    def _check_x(self, x: object) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape) != self.shape:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but this GraphedSampler was built for {self.shape}; "
                "build another GraphedSampler for that shape"
            )
        if x.dtype != self.dtype:
            raise ValueError(f"x has dtype {x.dtype}, the sampler integrates in {self.dtype}; pass x.to({self.dtype})")
        if x.device != self.device:
            raise ValueError(f"x lives on {x.device}, the sampler on {self.device}; pass x.to({str(self.device)!r})")
        return x

    def _check_cond(self, cond: object) -> dict[str, Any]:
        c = check_cond(cond)
        ex = self._cond_example
        if set(c) != set(ex):
            raise ValueError(
                f"cond has keys {sorted(c)} but cond_example had {sorted(ex)}; pass the same keys on every call"
            )
        for k, v in c.items():
            e = ex[k]
            if isinstance(e, Tensor):
                if not isinstance(v, Tensor):
                    raise TypeError(f"cond[{k!r}] must be a tensor like cond_example[{k!r}], got {type(v).__name__}")
                if v.shape != e.shape or v.dtype != e.dtype or v.device != e.device:
                    raise ValueError(
                        f"cond[{k!r}] is {tuple(v.shape)} {v.dtype} on {v.device}, but cond_example[{k!r}] was "
                        f"{tuple(e.shape)} {e.dtype} on {e.device}; the graph needs the same shape, dtype, device"
                    )
            elif isinstance(v, Tensor) or v != e:
                raise ValueError(
                    f"cond[{k!r}] = {v!r} differs from cond_example[{k!r}] = {e!r}; non-tensor cond is fixed"
                )
        return c

    # ---- running -----------------------------------------------------------------------------------

    def __call__(
        self,
        x: Tensor,
        *,
        noise: NoiseSource | torch.Generator | None = None,
        cond: Mapping[str, Any] | None = None,
    ) -> Tensor:
        """Sample from ``x`` (at noise level ``sigmas[0]``); returns a new tensor of x's shape and dtype.

        Args:
            x: initial state, exactly the built shape, dtype and device (not modified).
            noise: NoiseSource, ``torch.Generator`` or None (:class:`~edm_samplers.CounterNoise` keyed from torch's
                global RNG), used by stochastic sampling only; its draws match the eager driver's draw for draw.
                A ``CounterNoise`` is computed inside the graph; any other source fills static buffers.
            cond: keyword arguments for the denoiser, matching ``cond_example``.
        """
        x = self._check_x(x)
        c = self._check_cond(cond)
        src = as_noise_source(noise)
        with torch.no_grad():
            if not self.graphed:
                out = self._loop(x, c, src)
            elif self._draws and isinstance(src, CounterNoise):
                keys = src.row_keys(self.shape[0], self.device)  # checks the seeds against the batch
                if self._counter is None:
                    self._counter = self._capture_counter(x, c, keys)
                out = self._replay_counter(x, c, keys)
            else:
                if self._graph is None:
                    self._capture(x, c)
                out = self._replay(x, c, src)
        if self.check_finite:
            finite_or_raise(out, self._name)
        return out

    def _capture(self, x: Tensor, cond: dict[str, Any]) -> None:
        static_x = x.clone()
        static_cond = {k: v.clone() if isinstance(v, Tensor) else v for k, v in cond.items()}
        # Warm-up on a side stream (torch.cuda.graphs docs): lazy initialisation (cuBLAS handles,
        # compilation, allocator pools) must not happen during capture. It also records the noise draws.
        gen = torch.Generator(device=self.device).manual_seed(0)
        side = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                rec = _RecordingNoise(gen)
                self._loop(static_x, static_cond, rec)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self._static_noise = [torch.empty(shp, dtype=dt, device=self.device) for shp, dt in rec.draws]
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._loop(static_x, static_cond, _StaticNoise(self._static_noise))
        if out is static_x:
            raise RuntimeError("the sampling loop returned its input x; it must return a tensor it owns")
        self._graph, self._static_x, self._static_cond, self._static_out = graph, static_x, static_cond, out

    def _warm_up_and_capture(self, x: Tensor, cond: dict[str, Any], noise: NoiseSource) -> tuple[Any, Tensor]:
        # Warm-up on a side stream (torch.cuda.graphs docs): lazy initialisation (cuBLAS handles, compilation,
        # allocator pools, the counter noise's tables and position constants) must not happen during capture.
        side = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self._loop(x, cond, noise)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._loop(x, cond, noise)
        if out is x:
            raise RuntimeError("the sampling loop returned its input x; it must return a tensor it owns")
        return graph, out

    def _capture_counter(self, x: Tensor, cond: dict[str, Any], keys: Tensor) -> _CounterGraph:
        static_x = x.clone()
        static_cond = {k: v.clone() if isinstance(v, Tensor) else v for k, v in cond.items()}
        static_keys = keys.clone()
        graph, out = self._warm_up_and_capture(static_x, static_cond, _StaticCounter(static_keys))
        return _CounterGraph(graph, static_x, static_cond, static_keys, out)

    def _replay_counter(self, x: Tensor, cond: dict[str, Any], keys: Tensor) -> Tensor:
        cg = self._counter
        assert cg is not None
        cg.x.copy_(x)
        for k, v in cond.items():
            if isinstance(v, Tensor):
                cg.cond[k].copy_(v)
        cg.keys.copy_(keys)  # the only noise input: every draw is computed inside the graph
        cg.graph.replay()
        return cg.out.clone()

    def _replay(self, x: Tensor, cond: dict[str, Any], src: NoiseSource) -> Tensor:
        assert self._graph is not None and self._static_x is not None and self._static_out is not None
        self._static_x.copy_(x)
        for k, v in cond.items():
            if isinstance(v, Tensor):
                self._static_cond[k].copy_(v)
        # Same draws in the same order as the eager loop makes them (drawing ahead is equivalent as
        # long as the denoiser itself consumes no randomness from the same generator).
        for b in self._static_noise:
            b.copy_(src.randn(b.shape, dtype=b.dtype, device=self.device))
        self._graph.replay()
        return self._static_out.clone()


def _device(device: torch.device | str | None) -> torch.device:
    """The device with its index made explicit ("cuda" -> "cuda:<current>"), as tensors report it."""
    if device is not None and not isinstance(device, (torch.device, str)):
        raise TypeError(f"device must be a torch.device, a string such as 'cuda' or None, got {device!r}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _check_shape(shape: object) -> tuple[int, ...]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise TypeError(f"shape must be a sequence of ints such as (16, 3, 32, 32), got {shape!r}")
    out = tuple(check_int(v, "shape entries", minimum=1) for v in shape)
    if len(out) < 1:
        raise ValueError("shape must have at least the batch dimension, got ()")
    return out
