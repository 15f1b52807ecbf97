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


# ---- issue 11: malformed files are rejected, as the reference implementation rejects them ----------


def _raw(header: object, body: bytes, n: int | None = None) -> bytes:
    h = header.encode() if isinstance(header, str) else json.dumps(header).encode()
    return struct.pack("<Q", len(h) if n is None else n) + h + body


def _f32(shape: list[object], begin: int, end: int) -> dict[str, object]:
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


MALFORMED = [
    ("fractional shape", _raw({"a": _f32([1.5], 0, 4)}, bytes(4)), r"shape of non-negative integers, got \[1\.5\]"),
    ("negative dim", _raw({"a": _f32([-1], 0, 4)}, bytes(4)), r"shape of non-negative integers, got \[-1\]"),
    ("bool dim", _raw({"a": _f32([True], 0, 4)}, bytes(4)), r"shape of non-negative integers, got \[True\]"),
    ("overlap", _raw({"a": _f32([2], 0, 8), "b": _f32([2], 4, 12)}, bytes(12)), "overlaps the previous tensor"),
    ("gap", _raw({"a": _f32([1], 4, 8)}, bytes(8)), "leaves a gap of 4 bytes"),
    ("trailing bytes", _raw({"a": _f32([1], 0, 4)}, bytes(8)), "4 trailing bytes after the last tensor"),
    ("past the end", _raw({"a": _f32([2], 0, 8)}, bytes(4)), r"do not match shape|need 8 bytes"),
    ("offsets vs shape", _raw({"a": _f32([3], 0, 8)}, bytes(8)), r"\(8 bytes\) do not match shape \[3\] of F32 \(12"),
    ("end before begin", _raw({"a": _f32([0], 8, 4)}, bytes(8)), "do not match shape"),
    (
        "one offset",
        _raw({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, bytes(4)),
        r"data_offsets \[begin, end\]",
    ),
    (
        "unknown dtype",
        _raw({"a": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}, bytes(4)),
        "unsupported dtype 'F99'",
    ),
    (
        "missing key",
        _raw({"a": {"dtype": "F32", "shape": [1]}}, bytes(4)),
        "must be an object with dtype, shape and data_offsets",
    ),
    ("bad JSON", _raw('{"a": ', b""), "not valid JSON"),
    ("not an object", _raw("[1, 2]", b""), "must be a JSON object, got list"),
    ("header past the file", _raw("{}", b"", n=10**6), r"header length 1000000 does not fit a file of 10 bytes"),
    ("non-string metadata", _raw({"__metadata__": {"k": 1}}, b""), "__metadata__ must be a JSON object of strings"),
]


@pytest.mark.parametrize(("case", "data", "match"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_files_are_rejected_like_the_reference(case: str, data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sft.load(data)
    with pytest.raises(Exception):  # noqa: B017 -- the reference raises its own SafetensorError
        safetensors_torch.load(data)


def test_reference_accepts_what_we_accept() -> None:
    # Zero-size tensors (empty offsets), padding spaces in the header, tensors listed out of offset order.
    header = {"b": _f32([2], 4, 12), "a": _f32([1], 0, 4), "z": _f32([0, 3], 12, 12), "__metadata__": {"k": "v"}}
    body = struct.pack("<3f", 1.0, 2.0, 3.0)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    data = struct.pack("<Q", len(h)) + h + body
    ours, ref = sft.load(data), safetensors_torch.load(data)
    assert ours.keys() == ref.keys()
    for k in ours:
        assert ours[k].shape == ref[k].shape and torch.equal(ours[k], ref[k])


def test_duplicate_names_and_file_names_in_errors(tmp_path: Path) -> None:
    entry = '{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'
    dup = _raw(f'{{"a": {entry}, "a": {entry}}}', bytes(4))
    with pytest.raises(ValueError, match="names 'a' twice"):
        sft.load(dup)
    p = tmp_path / "weights.safetensors"
    p.write_bytes(MALFORMED[0][1])
    with pytest.raises(ValueError, match=r"'.*weights\.safetensors': entry 'a' must have a shape"):
        sft.load_file(p)
    p.write_bytes(_raw('{"__metadata__": {"k": 1}}', b""))
    with pytest.raises(ValueError, match=r"weights\.safetensors': __metadata__ must be"):
        sft.load_metadata(p)
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike"):
        sft.load_file(0)  # type: ignore[arg-type]  # open(0) would read stdin
    with pytest.raises(TypeError, match="data must be bytes"):
        sft.load("not bytes")  # type: ignore[arg-type]


def test_save_file_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    p = tmp_path / "w.safetensors"
    sft.save_file({"a": torch.ones(2)}, p)
    before = p.read_bytes()
    monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        sft.save_file({"a": torch.zeros(3)}, p)
    monkeypatch.undo()
    assert p.read_bytes() == before and [q.name for q in tmp_path.iterdir()] == ["w.safetensors"]
    with pytest.raises(TypeError, match="unsupported dtype"):
        sft.save_file({"c": torch.zeros(2, dtype=torch.complex64)}, p)
    assert p.read_bytes() == before
    assert (os.stat(p).st_mode & 0o777) == 0o666 & ~_umask()  # like open(path, "wb"), not mkstemp's 0o600


def _umask() -> int:
    import os

    m = os.umask(0)
    os.umask(m)
    return m
