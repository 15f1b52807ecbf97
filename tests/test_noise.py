"""Noise sources: batch invariance, determinism, validation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from edm_samplers import CounterNoise, GlobalNoise, PerSampleNoise, PrecomputedNoise
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
    with pytest.raises(TypeError, match=r"seeds must be ints.*got float 1\.5"):
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
    default = as_noise_source(None)  # issue 15: counter-based, keyed from the global RNG at its first draw
    assert isinstance(default, CounterNoise) and default.seeds is None and default.key is None
    assert isinstance(as_noise_source(torch.Generator()), GlobalNoise)
    src = PerSampleNoise([1])
    assert as_noise_source(src) is src
    with pytest.raises(TypeError, match="noise must be a NoiseSource"):
        as_noise_source(42)


# ---- issue 11: no bad input gives a silent wrong answer -----------------------------------------


SOURCES = [
    lambda: PerSampleNoise([3, 4]),
    lambda: GlobalNoise(torch.Generator()),
    lambda: PrecomputedNoise(torch.randn(2, 2, 3, generator=torch.Generator().manual_seed(0))),
]


@pytest.mark.parametrize("make", SOURCES)
def test_every_source_rejects_non_floating_dtypes(make) -> None:  # type: ignore[no-untyped-def]
    for dtype in (torch.int64, torch.bool, torch.uint8, "float32"):
        # PerSampleNoise(dtype=torch.int64) truncated the normal draws to (mostly zero) integers.
        with pytest.raises(TypeError, match=r"dtype must be a floating torch\.dtype"):
            make().randn((2, 3), dtype=dtype, device="cpu")
    out = make().randn((2, 3), dtype=torch.float16, device="cpu")
    assert out.dtype == torch.float16 and out.shape == (2, 3)


@pytest.mark.parametrize("make", SOURCES)
def test_every_source_rejects_non_int_shapes(make) -> None:  # type: ignore[no-untyped-def]
    for shape, err, match in [
        ((2.5, 3), TypeError, r"shape entries must be an int, got float 2\.5"),  # int() truncated it to 2
        ((True, 3), TypeError, r"shape entries must be an int, got bool"),
        ("23", TypeError, r"shape must be a sequence of ints"),  # int() split it into (2, 3)
        ((2, -3), ValueError, r"shape entries must be in \[0, "),
        ((), ValueError, r"shape must have a batch dimension"),
    ]:
        with pytest.raises(err, match=match):
            make().randn(shape, dtype=torch.float32, device="cpu")
    with pytest.raises(ValueError, match=r"device must name a device"):
        make().randn((2, 3), dtype=torch.float32, device="gpu")


def test_seeds_are_checked_at_construction() -> None:
    # 2**64 was accepted and failed at the first draw ("Overflow when unpacking long long").
    with pytest.raises(ValueError, match=r"seeds must be in \[0, 2\*\*64\).*got 18446744073709551616"):
        PerSampleNoise([0, 2**64])
    with pytest.raises(TypeError, match=r"seeds must be ints in \[0, 2\*\*64\), got bool True"):
        PerSampleNoise([True])
    with pytest.raises(TypeError, match=r"seeds must be an int, got a tensor of dtype torch\.float32"):
        PerSampleNoise([torch.tensor(1.0)])
    with pytest.raises(TypeError, match=r"seeds must be an iterable of ints"):
        PerSampleNoise(7)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"seeds must be an iterable of ints"):
        PerSampleNoise("01")  # type: ignore[arg-type]
    top = PerSampleNoise([2**64 - 1]).randn((1, 3), **F32)  # the largest seed manual_seed takes
    assert torch.equal(top[0], torch.randn(3, generator=torch.Generator().manual_seed(2**64 - 1)))


def test_numpy_and_tensor_integer_seeds_are_ints() -> None:
    np = pytest.importorskip("numpy")
    a = PerSampleNoise(np.arange(3)).randn((3, 4), **F32)
    b = PerSampleNoise(torch.arange(3)).randn((3, 4), **F32)
    assert torch.equal(a, PerSampleNoise(range(3)).randn((3, 4), **F32)) and torch.equal(a, b)
    assert all(type(s) is int for s in PerSampleNoise(np.arange(3)).seeds)


def test_precomputed_noise_rejects_non_finite_draws() -> None:
    d = torch.randn(2, 2, 3, generator=torch.Generator().manual_seed(0))
    d[1, 0, 2] = float("nan")
    with pytest.raises(ValueError, match="draws must be finite"):
        PrecomputedNoise(d)
    with pytest.raises(TypeError, match=r"draws must be a floating tensor .*got dtype torch\.int64"):
        PrecomputedNoise(torch.zeros(2, 2, 3, dtype=torch.int64))
