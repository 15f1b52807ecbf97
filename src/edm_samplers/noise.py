"""Injected sources of standard-normal noise.

Samplers never touch a random generator themselves: every draw goes through a
:class:`~edm_samplers.NoiseSource` passed as ``noise=``.

- :class:`CounterNoise` (the default): the value at (seed, draw, position) is a pure function of the three
  (a counter-based generator, :mod:`._counter`), produced for the whole batch at once. A sample depends on
  its seed only (any batch, any position, any number of processes), draw k is the same whichever draws were
  skipped, and CPU and CUDA give the same bits. Step i of a sampler reads draw i, and samplers draw only on
  the steps that add noise.
- :class:`PerSampleNoise` keeps one generator per seed, so a row's draws (and hence its sample) depend
  only on its seed: never on batch size, batch position or the other rows. This is what makes
  results reproducible one image at a time and lets seeds be sharded across processes.
- :class:`GlobalNoise` draws from one ``torch.Generator`` (or the global RNG when none is given).
- :class:`PrecomputedNoise` replays a given tensor of draws (tests, debugging, graph capture).

The last three are *streams*: a stochastic sampler draws from them once per step, whatever its settings
(zero churn adds exactly nothing), so that changing ``s_churn`` or ``s_tmin`` does not shift their stream and
``PerSampleNoise`` reproduces EDM's reference code draw for draw. A sampler whose settings add no noise at
all (``s_churn=0``, ``eta=0``, ``s_noise=0``) draws nothing from any source.

Draws are made in float32 and then cast, so float32 and float64 sampling see the same noise values
(the paper's reference code does the same).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from . import _counter
from ._types import NoiseSource
from ._validate import check_device, check_flag, check_float_dtype, check_int_range

__all__ = ["CounterNoise", "GlobalNoise", "PerSampleNoise", "PrecomputedNoise", "as_noise_source", "step_drawer"]

_DRAW_DTYPE = torch.float32


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    # Each size must be an int: int() would truncate 2.5 to 2, map True to 1, and split the string "12".
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, torch.Size)):
        raise TypeError(f"shape must be a sequence of ints such as (batch, 3, 32, 32), got {shape!r}")
    out = tuple(check_int_range(s, "shape entries", minimum=0, maximum=2**62) for s in shape)
    if len(out) < 1:
        raise ValueError(f"shape must have a batch dimension and non-negative sizes, got {out}")
    return out


def _check_draw(
    shape: Sequence[int], dtype: object, device: object
) -> tuple[tuple[int, ...], torch.dtype, torch.device]:
    """The arguments of every ``randn``: a shape of ints, a floating dtype (an integer dtype would truncate
    the normal draws to mostly zeros) and a device."""
    shp = _check_shape(shape)
    dt = check_float_dtype(dtype)
    dev = check_device(device)
    if dev is None:
        raise TypeError("device must be a torch.device or a string such as 'cpu', got None")
    return shp, dt, dev


# torch.Generator.manual_seed takes [-2**63, 2**64) and maps a negative seed s to s + 2**64; we take the
# non-negative half only, so that every seed names one stream (-1 and 2**64 - 1 would be the same one).
_SEED_MAX = 2**64 - 1


def _check_seed(seed: object) -> int:
    if isinstance(seed, (bool, float)) or type(seed).__name__ == "bool_" or not hasattr(seed, "__index__"):
        raise TypeError(f"seeds must be ints in [0, 2**64), got {type(seed).__name__} {seed!r}")
    try:
        return check_int_range(seed, "seeds", minimum=0, maximum=_SEED_MAX)
    except ValueError:
        raise ValueError(
            f"seeds must be in [0, 2**64) (the range of torch.Generator.manual_seed without its wrap-around of "
            f"negative seeds), got {seed!r}; pass seed % 2**64 if you mean the wrapped value"
        ) from None


class PerSampleNoise:
    """One independent ``torch.Generator`` per batch row, seeded from ``seeds``.

    Row ``k`` of every draw comes from the generator seeded with ``seeds[k]``, so a sample depends on its
    own seed alone. Generators are created lazily on the device of the first draw (CPU and CUDA
    generators give different streams for the same seed; each device is consistent with itself).

    The object is stateful like a generator: each draw advances every row's stream. Build a new
    ``PerSampleNoise(seeds)`` to reproduce a run, or call :meth:`reset`.

    Args:
        seeds: the seeds, one per batch row, as ints in [0, 2**64) (e.g. ``range(16)``; numpy integers and
            0-d integer tensors are accepted). Negative seeds are rejected although ``manual_seed`` accepts
            them: it maps s to s + 2**64, so -1 and 2**64 - 1 would silently give the same stream.

    Raises:
        TypeError: for a non-iterable ``seeds`` or a seed that is not an int (bool and float included).
        ValueError: for no seeds or a seed outside [0, 2**64).
    """

    def __init__(self, seeds: Iterable[int]) -> None:
        if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
            raise TypeError(f"seeds must be an iterable of ints such as range(16), got {type(seeds).__name__}")
        seeds_t = [_check_seed(s) for s in seeds]
        if len(seeds_t) == 0:
            raise ValueError("seeds must hold at least one seed, got an empty sequence")
        self.seeds: tuple[int, ...] = tuple(seeds_t)
        self._gens: dict[torch.device, list[torch.Generator]] = {}

    def __len__(self) -> int:
        return len(self.seeds)

    def __repr__(self) -> str:
        return f"PerSampleNoise(seeds={list(self.seeds)!r})"

    def reset(self) -> None:
        """Restart every row's stream from its seed."""
        self._gens.clear()

    def _generators(self, device: torch.device) -> list[torch.Generator]:
        gens = self._gens.get(device)
        if gens is None:
            gens = [torch.Generator(device=device).manual_seed(s) for s in self.seeds]
            self._gens[device] = gens
        return gens

    def randn(self, shape: Sequence[int], *, dtype: torch.dtype, device: torch.device | str) -> Tensor:
        shape, dtype, device = _check_draw(shape, dtype, device)
        if shape[0] != len(self.seeds):
            raise ValueError(
                f"seeds has {len(self.seeds)} seeds but the batch has {shape[0]} rows; "
                "pass exactly one seed per batch row"
            )
        gens = self._generators(device)
        out = torch.empty(shape, dtype=_DRAW_DTYPE, device=device)
        for row, g in zip(out, gens, strict=True):
            torch.randn(shape[1:], generator=g, dtype=_DRAW_DTYPE, device=device, out=row)
        return out.to(dtype)


_MAX_DRAW = 2**32 - 1
_MAX_POSITIONS = 2**33


class CounterNoise:
    """Counter-based noise: the standard normal at (seed, draw, position) is a pure function of the three.

    Row ``k`` of draw ``d`` holds seed ``seeds[k]``'s draw ``d``, computed for the whole batch at once (no
    loop over rows) from SplitMix64 bits and an exact table inversion of the normal CDF (:mod:`._counter`:
    float32 values within 1e-6 of the exact quantile of their bits, magnitudes up to 6.2). Consequences:

    - a sample depends only on its seed: the same bits in any batch, at any position, on any number of
      processes (shard the seeds);
    - draw ``d`` is the same whichever other draws were made or skipped: samplers read draw ``i`` at step
      ``i`` (:meth:`randn_at`) and skip the steps that add no noise (churn steps with gamma = 0, the final step
      of the SDE and ancestral samplers) without changing any other draw;
    - CPU, CUDA and compiled code give the same bits (integer arithmetic, a table lookup and exactly rounded
      conversions only); the draws are capturable in a CUDA graph and compile with ``fullgraph=True``.

    The object keeps no random state: :meth:`randn` (for code that draws without an index) hands out draws
    0, 1, 2, ... in turn and :meth:`reset` restarts that count. On CPU it reuses three work buffers between draws
    (each the size of a float32 draw; like a ``torch.Generator``, one instance should not draw from two threads
    at once).

    Args:
        seeds: one int in [0, 2**64) per batch row (e.g. ``range(16)``); None: row k uses seed k (samples then
            depend on their batch position; what ``noise=None`` gives, with a random ``key``).
        key: a second 64-bit key in [0, 2**64) for independent families of streams (default 0); None: drawn once
            from torch's global CPU RNG at the first draw (so ``torch.manual_seed`` reproduces it).
        compile: draw through ``torch.compile`` (inductor fuses the 22 passes into one: on CPU about twice as
            fast as eager, then cheaper than ``torch.randn``; the same bits). The first draw of each shape compiles
            (seconds; a C++ compiler on CPU).

    Raises:
        TypeError: for non-iterable ``seeds`` or a seed / key that is not an int (bool and float included).
        ValueError: for no seeds, or a seed or key outside [0, 2**64).
    """

    def __init__(self, seeds: Iterable[int] | None = None, *, key: int | None = 0, compile: bool = False) -> None:
        if seeds is None:
            self.seeds: tuple[int, ...] | None = None
        else:
            if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
                raise TypeError(f"seeds must be an iterable of ints such as range(16), got {type(seeds).__name__}")
            self.seeds = tuple(_check_seed(s) for s in seeds)
            if len(self.seeds) == 0:
                raise ValueError("seeds must hold at least one seed, got an empty sequence")
        if key is not None:
            if isinstance(key, (bool, float)) or not hasattr(key, "__index__"):
                raise TypeError(f"key must be an int in [0, 2**64) or None, got {type(key).__name__} {key!r}")
            key = check_int_range(key, "key", minimum=0, maximum=_SEED_MAX)
        self.key = key
        self.compile = check_flag(compile, "compile")
        self.index = 0
        self._keys: dict[tuple[int, torch.device], Tensor] = {}
        self._pos: dict[tuple[int, torch.device], Tensor] = {}
        self._work: dict[tuple[int, int], _counter.Work] = {}

    def __repr__(self) -> str:
        seeds = "None" if self.seeds is None else repr(list(self.seeds))
        return f"CounterNoise(seeds={seeds}, key={self.key!r})"

    def reset(self) -> None:
        """Restart :meth:`randn`'s count at draw 0 (the values themselves never change)."""
        self.index = 0

    def resolved_key(self) -> int:
        """The key, drawn from torch's global CPU RNG the first time if it was None."""
        if self.key is None:
            self.key = int(torch.randint(0, 2**62, (1,), dtype=torch.int64).item())  # CPU: no device sync
        return self.key

    def row_keys(self, batch: int, device: torch.device) -> Tensor:
        """The ``[batch]`` int64 row keys on ``device`` (one host computation and one copy per device)."""
        got = self._keys.get((batch, device))
        if got is None:
            if self.seeds is not None and batch != len(self.seeds):
                raise ValueError(
                    f"seeds has {len(self.seeds)} seeds but the batch has {batch} rows; pass exactly one seed per row"
                )
            seeds = range(batch) if self.seeds is None else self.seeds
            with torch.inference_mode(False):
                got = _counter.row_keys(seeds, self.resolved_key(), device)
            self._keys[(batch, device)] = got
        return got

    def randn_at(self, draw: int, shape: Sequence[int], *, dtype: torch.dtype, device: torch.device | str) -> Tensor:
        """Draw ``draw`` (an int in [0, 2**32)) of every row's seed, shape ``shape`` (first dimension: the batch)."""
        shape, dtype, device = _check_draw(shape, dtype, device)
        draw = check_int_range(draw, "draw", minimum=0, maximum=_MAX_DRAW)
        return self._normals(self.row_keys(shape[0], device), draw, shape).to(dtype)

    def randn(self, shape: Sequence[int], *, dtype: torch.dtype, device: torch.device | str) -> Tensor:
        """The next draw in turn (0, 1, 2, ...): the :class:`~edm_samplers.NoiseSource` interface."""
        out = self.randn_at(self.index, shape, dtype=dtype, device=device)
        self.index += 1
        return out

    def _normals(self, keys: Tensor, draw: int, shape: tuple[int, ...]) -> Tensor:
        batch, device = shape[0], keys.device
        size = 1
        for s in shape[1:]:
            size *= s
        if size > _MAX_POSITIONS:
            raise ValueError(f"CounterNoise draws samples of at most 2**33 values, got shape {shape}")
        npairs = (size + 1) // 2
        pos = self._pos.get((npairs, device))
        if pos is None:
            with torch.inference_mode(False):
                pos = _counter.positions(npairs, device)
            if not _capturing(device):
                self._pos[(npairs, device)] = pos
        base = keys + _counter.draw_offset(draw)
        tab = _counter.tables(device)
        if self.compile and not torch.compiler.is_compiling():
            out = _counter.compiled_normals()(base, pos, tab)
        elif device.type == "cpu" and batch * npairs > 0 and not torch.compiler.is_compiling():
            work = self._work.get((batch, npairs))
            if work is None:
                with torch.inference_mode(False):
                    work = _counter.Work(batch, npairs)
                self._work[(batch, npairs)] = work
            out = _counter.normals_into(base, pos, tab, work)
        else:
            out = _counter.normals(base, pos, tab)
        if 2 * npairs != size:
            out = out[:, :size].contiguous()
        return out.view(shape)


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


class GlobalNoise:
    """Draws from one ``torch.Generator`` for the whole batch, or from torch's global RNG if None.

    Reproducible for a fixed batch composition; use :class:`PerSampleNoise` when a sample must not
    depend on the other rows.
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator

    def randn(self, shape: Sequence[int], *, dtype: torch.dtype, device: torch.device | str) -> Tensor:
        shape, dtype, device = _check_draw(shape, dtype, device)
        if self.generator is not None and self.generator.device.type != device.type:
            raise ValueError(
                f"the generator lives on {self.generator.device} but the draw is for {device}; "
                f"create it with torch.Generator(device={str(device)!r})"
            )
        return torch.randn(shape, generator=self.generator, dtype=_DRAW_DTYPE, device=device).to(dtype)


def _can_read(t: Tensor) -> bool:
    """Whether one read-back is allowed: not while compiling, tracing or capturing a CUDA graph, not on meta."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():  # type: ignore[attr-defined,no-untyped-call]
        return False
    if t.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return False
    return t.device.type != "meta"


class PrecomputedNoise:
    """Hands out ``draws[0]``, ``draws[1]``, ... in order; raises once they run out.

    Args:
        draws: a finite floating tensor whose first dimension indexes the draws, e.g. ``[num_steps, *x.shape]``
            (checked once here, one read-back, skipped while compiling or capturing; a NaN draw would silently
            poison a sample).
    """

    def __init__(self, draws: Tensor) -> None:
        if not isinstance(draws, Tensor) or not draws.is_floating_point() or draws.ndim < 2:
            got = (
                f"dtype {draws.dtype}, shape {tuple(draws.shape)}"
                if isinstance(draws, Tensor)
                else type(draws).__name__
            )
            raise TypeError(f"draws must be a floating tensor of shape [num_draws, batch, ...], got {got}")
        if _can_read(draws) and not bool(torch.isfinite(draws).all()):
            raise ValueError("draws must be finite, got NaN/inf entries; pass standard-normal draws")
        self.draws = draws
        self.index = 0

    def randn(self, shape: Sequence[int], *, dtype: torch.dtype, device: torch.device | str) -> Tensor:
        shape, dtype, device = _check_draw(shape, dtype, device)
        if self.index >= self.draws.shape[0]:
            raise ValueError(f"PrecomputedNoise is exhausted: all {self.draws.shape[0]} draws were used")
        d = self.draws[self.index]
        if tuple(d.shape) != shape:
            raise ValueError(f"PrecomputedNoise draw has shape {tuple(d.shape)}, the sampler asked for {shape}")
        self.index += 1
        return d.to(device=device, dtype=dtype)


def as_noise_source(noise: object, name: str = "noise") -> NoiseSource:
    """Accept a NoiseSource, a ``torch.Generator`` (a :class:`GlobalNoise` stream) or None: a
    :class:`CounterNoise` with row k on seed k and a key drawn from torch's global RNG at its first draw (so
    ``torch.manual_seed`` reproduces it; deterministic samplers draw nothing and leave the global RNG alone)."""
    if noise is None:
        return CounterNoise(key=None)
    if isinstance(noise, torch.Generator):
        return GlobalNoise(noise)
    if isinstance(noise, NoiseSource):
        return noise
    raise TypeError(
        f"{name} must be a NoiseSource (e.g. CounterNoise(seeds)), a torch.Generator or None, "
        f"got {type(noise).__name__}"
    )


Drawer = Callable[[int, bool, Sequence[int], torch.dtype, torch.device], "Tensor | None"]
"""``draw(i, used, shape, dtype, device)``: step i's noise, or None where the step adds none."""


def step_drawer(noise: NoiseSource) -> Drawer:
    """How a sampling loop reads step ``i``'s noise; ``used`` (a host bool, fixed when the program is built)
    says whether step ``i`` adds noise.

    A source with ``randn_at`` (:class:`CounterNoise`) gives its draw ``i``, and nothing where ``used`` is False:
    skipping changes no other draw. A stream (any other source) is drawn on every step, whatever ``used``, so
    that its later draws do not depend on which steps add noise; an unused draw is dropped.
    """
    at = getattr(noise, "randn_at", None)
    if callable(at):

        def indexed(
            i: int, used: bool, shape: Sequence[int], dtype: torch.dtype, device: torch.device
        ) -> Tensor | None:
            return at(i, shape, dtype=dtype, device=device) if used else None

        return indexed

    def stream(i: int, used: bool, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor | None:
        del i
        eps = noise.randn(shape, dtype=dtype, device=device)
        return eps if used else None

    return stream
