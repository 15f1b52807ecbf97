"""Noise sources: batch invariance, determinism, validation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from edm_samplers import GlobalNoise, PerSampleNoise, PrecomputedNoise
from edm_samplers.noise import as_noise_source

F32 = {"dtype": torch.float32, "device": torch.device("cpu")}


@given(
    seeds=st.lists(st.integers(0, 2**31), min_size=1, max_size=6, unique=True),
    pick=st.integers(0, 5),
    shape=st.lists(st.integers(1, 3), max_size=3).map(tuple),
)
def test_per_sample_rows_depend_only_on_their_seed(seeds: list[int], pick: int, shape: tuple[int, ...]) -> None:
    pick %= len(seeds)
    batch = PerSampleNoise(seeds)
    alone = PerSampleNoise([seeds[pick]])
    for _ in range(3):  # successive draws stay aligned, too
        b = batch.randn((len(seeds), *shape), **F32)
        a = alone.randn((1, *shape), **F32)
        assert torch.equal(b[pick], a[0])  # bitwise: the same generator produced both


def test_per_sample_is_deterministic_and_reset() -> None:
    n = PerSampleNoise(range(4))
    first = n.randn((4, 3), **F32)
    n.reset()
    assert torch.equal(n.randn((4, 3), **F32), first)
    assert torch.equal(PerSampleNoise(range(4)).randn((4, 3), **F32), first)
    assert not torch.equal(n.randn((4, 3), **F32), first), "the stream advances"


def test_per_sample_float64_sees_the_float32_values() -> None:
    a = PerSampleNoise([7]).randn((1, 5), dtype=torch.float64, device=torch.device("cpu"))
    b = PerSampleNoise([7]).randn((1, 5), **F32)
    assert torch.equal(a, b.double())


def test_per_sample_errors() -> None:
    with pytest.raises(ValueError, match="one seed per batch row"):
        PerSampleNoise(range(3)).randn((4, 2), **F32)
    with pytest.raises(ValueError, match="at least one seed"):
        PerSampleNoise([])
    with pytest.raises(ValueError, match=r"seeds must be in \[0, 2\*\*64\).*got -2"):
        PerSampleNoise([1, -2])
    with pytest.raises(TypeError, match="seeds must be ints.*got float 1.5"):
        PerSampleNoise([1.5])  # type: ignore[list-item]


def test_global_noise_uses_generator() -> None:
    a = GlobalNoise(torch.Generator().manual_seed(3)).randn((2, 3), **F32)
    b = GlobalNoise(torch.Generator().manual_seed(3)).randn((2, 3), **F32)
    assert torch.equal(a, b)
    with pytest.raises(TypeError, match=r"torch\.Generator"):
        GlobalNoise(3)  # type: ignore[arg-type]


def test_precomputed_noise_replays_and_exhausts() -> None:
    draws = torch.randn(2, 3, 4)
    p = PrecomputedNoise(draws)
    assert torch.equal(p.randn((3, 4), **F32), draws[0])
    assert torch.equal(p.randn((3, 4), **F32), draws[1])
    with pytest.raises(ValueError, match="exhausted"):
        p.randn((3, 4), **F32)
    with pytest.raises(ValueError, match="shape"):
        PrecomputedNoise(draws).randn((3, 5), **F32)


def test_as_noise_source() -> None:
    assert isinstance(as_noise_source(None), GlobalNoise)
    assert isinstance(as_noise_source(torch.Generator()), GlobalNoise)
    src = PerSampleNoise([1])
    assert as_noise_source(src) is src
    with pytest.raises(TypeError, match="noise must be a NoiseSource"):
        as_noise_source(42)
