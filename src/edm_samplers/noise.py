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

__all__ = ["GlobalNoise", "PerSampleNoise", "PrecomputedNoise", "as_noise_source"]

_DRAW_DTYPE = torch.float32


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a sequence of ints, got {shape!r}") from None
    if len(out) < 1 or any(s < 0 for s in out):
        raise ValueError(f"shape must have a batch dimension and non-negative sizes, got {out}")
    return out


class PerSampleNoise:
    """One independent ``torch.Generator`` per batch row, seeded from ``seeds``.

    Row ``k`` of every draw comes from the generator seeded with ``seeds[k]``, so a sample depends on its
    own seed alone. Generators are created lazily on the device of the first draw (CPU and CUDA
    generators give different streams for the same seed; each device is consistent with itself).

    The object is stateful like a generator: each draw advances every row's stream. Build a new
    ``PerSampleNoise(seeds)`` to reproduce a run, or call :meth:`reset`.

    Args:
        seeds: the seeds, one per batch row, as non-negative ints (e.g. ``range(16)``).
    """

    def __init__(self, seeds: Iterable[int]) -> None:
        seeds_t = list(seeds)
        if len(seeds_t) == 0:
            raise ValueError("seeds must hold at least one seed, got an empty sequence")
        for s in seeds_t:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise TypeError(f"seeds must be non-negative ints, got {s!r}")
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
        shape = _check_shape(shape)
        if shape[0] != len(self.seeds):
            raise ValueError(
                f"seeds has {len(self.seeds)} seeds but the batch has {shape[0]} rows; "
                "pass exactly one seed per batch row"
            )
        device = torch.device(device)
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
        shape = _check_shape(shape)
        device = torch.device(device)
        if self.generator is not None and self.generator.device.type != device.type:
            raise ValueError(
                f"the generator lives on {self.generator.device} but the draw is for {device}; "
                f"create it with torch.Generator(device={str(device)!r})"
            )
        return torch.randn(shape, generator=self.generator, dtype=_DRAW_DTYPE, device=device).to(dtype)


class PrecomputedNoise:
    """Hands out ``draws[0]``, ``draws[1]``, ... in order; raises once they run out.

    Args:
        draws: a tensor whose first dimension indexes the draws, e.g. ``[num_steps, *x.shape]``.
    """

    def __init__(self, draws: Tensor) -> None:
        if not isinstance(draws, Tensor) or not draws.is_floating_point() or draws.ndim < 2:
            raise TypeError("draws must be a floating tensor of shape [num_draws, batch, ...]")
        self.draws = draws
        self.index = 0

    def randn(self, shape: Sequence[int], *, dtype: torch.dtype, device: torch.device | str) -> Tensor:
        shape = _check_shape(shape)
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
