"""Injected sources of standard-normal noise.

Samplers never touch a random generator themselves: every draw goes through a
:class:`~edm_samplers.NoiseSource` passed as ``noise=``. The number and shapes of the draws depend
only on the schedule length and the shape of x, never on churn settings, so changing ``s_churn``
does not shift the random stream.

- :class:`PerSampleNoise` keeps one generator per seed, so a row's draws (and hence its sample) depend
  only on its seed: never on batch size, batch position or the other rows. This is what makes
  results reproducible one image at a time and lets seeds be sharded across processes.
- :class:`GlobalNoise` draws from one ``torch.Generator`` (or the global RNG when none is given).
- :class:`PrecomputedNoise` replays a given tensor of draws (tests, debugging, graph capture).

Draws are made in float32 and then cast, so float32 and float64 sampling see the same noise values
(the paper's reference code does the same).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ._types import NoiseSource
from ._validate import check_device, check_float_dtype, check_int_range

__all__ = ["GlobalNoise", "PerSampleNoise", "PrecomputedNoise", "as_noise_source"]

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
    """Accept a NoiseSource, a ``torch.Generator`` or None (torch's global RNG)."""
    if noise is None:
        return GlobalNoise()
    if isinstance(noise, torch.Generator):
        return GlobalNoise(noise)
    if isinstance(noise, NoiseSource):
        return noise
    raise TypeError(
        f"{name} must be a NoiseSource (e.g. PerSampleNoise(seeds)), a torch.Generator or None, "
        f"got {type(noise).__name__}"
    )
