"""The package's own safetensors reader/writer against the reference ``safetensors`` package."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edm_samplers import _safetensors as sft

safetensors_torch = pytest.importorskip("safetensors.torch")  # a test extra; always installed in CI

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
          torch.int8, torch.uint8, torch.bool]  # fmt: skip


def _make(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g, dtype=torch.float64) * 100).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    info = torch.iinfo(dtype)
    return torch.randint(max(info.min, -(2**31)), min(info.max, 2**31 - 1), shape, generator=g, dtype=torch.int64).to(
        dtype
    )


shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(DTYPES), shapes), min_size=1, max_size=5), st.integers(0, 2**16))
def test_roundtrip_both_directions(specs: list[tuple[torch.dtype, tuple[int, ...]]], seed: int) -> None:
    tensors = {f"t{i}.w": _make(d, s, seed + i) for i, (d, s) in enumerate(specs)}
    meta = {"format": "pt", "note": "x"}
    ours = sft.save(tensors, meta)
    # reference reads ours, bit-exactly
    theirs_loaded = safetensors_torch.load(ours)
    for k, v in tensors.items():
        assert theirs_loaded[k].dtype == v.dtype and torch.equal(theirs_loaded[k], v)
    # we read the reference's output, bit-exactly
    ref_bytes = safetensors_torch.save(tensors, metadata=meta)
    ours_loaded = sft.load(ref_bytes)
    assert ours_loaded.keys() == tensors.keys()
    for k, v in tensors.items():
        assert ours_loaded[k].dtype == v.dtype and ours_loaded[k].shape == v.shape and torch.equal(ours_loaded[k], v)


def test_files_and_metadata(tmp_path: Path) -> None:
    t = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    path = tmp_path / "x.safetensors"
    sft.save_file(t, path, metadata={"k": "v"})
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"k": "v"}
        assert torch.equal(f.get_tensor("a"), t["a"])
    assert sft.load_metadata(path) == {"k": "v"}
    ref_path = tmp_path / "ref.safetensors"
    safetensors_torch.save_file(t, str(ref_path), metadata={"q": "1"})
    assert sft.load_metadata(ref_path) == {"q": "1"}
    loaded = sft.load_file(ref_path)
    assert torch.equal(loaded["a"], t["a"]) and torch.equal(loaded["b"], t["b"])


def test_layout_is_aligned_and_non_contiguous_inputs_work() -> None:
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4).T  # non-contiguous view
    data = sft.save({"x": x})
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0  # the data buffer starts 8-byte aligned
    header = json.loads(data[8 : 8 + n])
    assert header["x"] == {"dtype": "F32", "shape": [4, 3], "data_offsets": [0, 48]}
    assert torch.equal(sft.load(data)["x"], x)


def test_errors() -> None:
    with pytest.raises(TypeError, match="unsupported dtype"):
        sft.save({"c": torch.zeros(2, dtype=torch.complex64)})
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor"):
        sft.save({"a": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="reserved"):
        sft.save({"__metadata__": torch.zeros(1)})
    with pytest.raises(TypeError, match="metadata must map str to str"):
        sft.save({"a": torch.zeros(1)}, metadata={"a": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="shorter than"):
        sft.load(b"123")
    with pytest.raises(ValueError, match="does not fit"):
        sft.load(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(ValueError, match="not valid JSON"):
        sft.load(struct.pack("<Q", 2) + b"{x")
    bad = json.dumps({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()
    with pytest.raises(ValueError, match="do not match shape"):
        sft.load(struct.pack("<Q", len(bad)) + bad + bytes(8))
