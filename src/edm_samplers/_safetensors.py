"""A minimal, dependency-free reader and writer for the safetensors format.

The package ships its weights as ``.safetensors`` files but must not depend on the ``safetensors``
package at run time, so this module implements the (small, documented) format directly:

- 8 bytes: ``N``, the header length, an unsigned little-endian 64-bit integer;
- ``N`` bytes: a UTF-8 JSON object mapping each tensor name to
  ``{"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}`` (offsets relative to the start of
  the byte buffer that follows the header), plus an optional ``"__metadata__"`` object of str -> str;
  the header may be padded with spaces (we pad to a multiple of 8 so the data stays aligned);
- the byte buffer: every tensor's raw little-endian, row-major (C-contiguous) bytes, back to back.

Files written here load with ``safetensors.torch.load_file`` and vice versa (tested in
``tests/test_safetensors.py``). No pickle is involved at any point.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
import uuid
from collections.abc import Mapping

import torch
from torch import Tensor

from ._validate import check_path

__all__ = ["load", "load_file", "load_metadata", "save", "save_file"]

_TO_TORCH: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_FROM_TORCH: dict[torch.dtype, str] = {v: k for k, v in _TO_TORCH.items()}
# A header larger than this is almost certainly a corrupt or non-safetensors file (the reference
# implementation uses the same 100 MB bound).
_MAX_HEADER = 100_000_000


def _le_bytes(t: Tensor) -> bytes:
    """Raw little-endian bytes of a CPU tensor in row-major order."""
    t = t.detach().to("cpu").contiguous().reshape(-1)  # 1-D: a 0-d tensor cannot be viewed as bytes
    u8 = t.view(torch.uint8) if t.numel() > 0 else torch.empty(0, dtype=torch.uint8)
    if sys.byteorder == "big" and t.element_size() > 1 and t.numel() > 0:
        u8 = u8.reshape(-1, t.element_size()).flip(1).reshape(-1)
    return u8.numpy().tobytes()


def save(tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialise named tensors (and optional str -> str metadata) to safetensors bytes.

    Args:
        tensors: name -> tensor; any device, dtypes F64/F32/F16/BF16/I64/I32/I16/I8/U8/BOOL.
        metadata: optional free-form string metadata stored under ``"__metadata__"``.

    Returns:
        The file contents.

    Raises:
        TypeError: on a non-tensor value, an unsupported dtype, or non-string names or metadata.
        ValueError: on the reserved name ``"__metadata__"``.
    """
    header: dict[str, object] = {}
    if metadata is not None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("metadata must map str to str; convert values with str() or json.dumps()")
        header["__metadata__"] = dict(metadata)
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str, got {name!r}")
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved for metadata; rename the tensor")
        if not isinstance(t, Tensor):
            raise TypeError(f"tensors[{name!r}] must be a torch.Tensor, got {type(t).__name__}")
        code = _FROM_TORCH.get(t.dtype)
        if code is None:
            raise TypeError(f"tensors[{name!r}] has unsupported dtype {t.dtype}; use one of {sorted(_TO_TORCH)}")
        raw = _le_bytes(t)
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-len(hbytes) % 8)  # keep the byte buffer 8-byte aligned
    return struct.pack("<Q", len(hbytes)) + hbytes + b"".join(chunks)


def _fail(source: str, msg: str) -> ValueError:
    return ValueError(f"{source}: {msg}")


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"the header names {k!r} twice")
        out[k] = v
    return out


def _parse_header(
    data: bytes | bytearray | memoryview, source: str = "safetensors data"
) -> tuple[dict[str, object], int]:
    if len(data) < 8:
        raise _fail(source, f"not a safetensors file: {len(data)} bytes, shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    if n > _MAX_HEADER or 8 + n > len(data):
        raise _fail(source, f"not a safetensors file: header length {n} does not fit a file of {len(data)} bytes")
    try:
        header = json.loads(bytes(data[8 : 8 + n]).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise _fail(source, f"not a safetensors file: the header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise _fail(source, f"not a safetensors file: the header must be a JSON object, got {type(header).__name__}")
    meta = header.get("__metadata__")
    if meta is not None and not (
        isinstance(meta, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    ):
        raise _fail(source, f"__metadata__ must be a JSON object of strings, got {meta!r}")
    return header, 8 + n


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _entries(
    header: dict[str, object], buf_len: int, source: str
) -> list[tuple[str, torch.dtype, list[int], int, int]]:
    """Validate every tensor entry as the reference implementation does: known dtype, a shape of
    non-negative ints, offsets of non-negative ints whose length is numel * itemsize, and, sorted by offset,
    entries that tile the byte buffer exactly (no gap, no overlap, no trailing bytes)."""
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
            raise _fail(source, f"entry {name!r} must be an object with dtype, shape and data_offsets, got {info!r}")
        dtype = _TO_TORCH.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dtype is None:
            raise _fail(source, f"entry {name!r} has unsupported dtype {info['dtype']!r}; known: {sorted(_TO_TORCH)}")
        shape, offsets = info["shape"], info["data_offsets"]
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise _fail(source, f"entry {name!r} must have a shape of non-negative integers, got {shape!r}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
            raise _fail(
                source, f"entry {name!r} must have data_offsets [begin, end] of non-negative integers, got {offsets!r}"
            )
        begin, end = offsets
        numel = 1
        for d in shape:
            numel *= d
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if end < begin or end - begin != numel * itemsize:
            raise _fail(
                source,
                f"entry {name!r}: data_offsets {offsets} ({end - begin} bytes) do not match shape {shape} of "
                f"{info['dtype']} ({numel * itemsize} bytes)",
            )
        entries.append((name, dtype, shape, begin, end))
    pos = 0
    for name, _, _, begin, end in sorted(entries, key=lambda e: (e[3], e[4])):
        if begin != pos:
            what = "overlaps the previous tensor" if begin < pos else f"leaves a gap of {begin - pos} bytes"
            raise _fail(source, f"entry {name!r} starts at byte {begin} of the buffer, which {what}")
        pos = end
    if pos != buf_len:
        if pos > buf_len:
            raise _fail(source, f"the tensors need {pos} bytes after the header, but the file holds {buf_len}")
        raise _fail(source, f"{buf_len - pos} trailing bytes after the last tensor (the tensors end at byte {pos})")
    return entries


def _load(data: bytes | bytearray, device: torch.device | str, source: str) -> dict[str, Tensor]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    header, start = _parse_header(data, source)
    buf = memoryview(data)[start:]
    out: dict[str, Tensor] = {}
    for name, dtype, shape, begin, end in _entries(header, len(buf), source):
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if end == begin:
            t = torch.empty(shape, dtype=dtype)
        else:
            u8 = torch.frombuffer(bytearray(buf[begin:end]), dtype=torch.uint8)
            if sys.byteorder == "big" and itemsize > 1:
                u8 = u8.reshape(-1, itemsize).flip(1).reshape(-1).contiguous()
            t = u8.view(dtype).reshape(shape)
        out[name] = t.to(device)
    return out


def load(data: bytes | bytearray, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Deserialise safetensors bytes into a dict of tensors on ``device`` (copies; no memory sharing).

    Raises:
        ValueError: if the bytes are not a well-formed safetensors file: a header length past the end, a
            header that is not a JSON object (or names a tensor twice), an unknown dtype, a shape that is not a
            list of non-negative ints, offsets that do not match shape * itemsize, or tensors that do not tile
            the byte buffer exactly (overlaps, gaps, trailing bytes), as the reference implementation requires.
    """
    return _load(data, device, "safetensors data")


def load_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``"__metadata__"`` of a safetensors file (empty dict if absent); reads only the header.

    Raises:
        ValueError: naming the file, if its header is malformed (the tensor entries are not checked).
    """
    source = repr(os.fspath(path))
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _fail(source, "not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER:
            raise _fail(source, f"not a safetensors file (header length {n})")
        header, _ = _parse_header(head + f.read(n), source)
    meta = header.get("__metadata__", {})
    assert isinstance(meta, dict)  # checked by _parse_header
    return dict(meta)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is never left truncated: write a temporary file in the same
    directory, flush it to disk, then ``os.replace`` it over ``path`` (atomic on POSIX and Windows). On any
    error the temporary file is removed and an existing ``path`` is untouched. The new file gets the usual
    permissions (0o666 minus the umask), like ``open(path, "w")``."""
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    tmp = os.path.join(directory, f".{os.path.basename(target)}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_file(
    tensors: Mapping[str, Tensor], path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> None:
    """Write named tensors to ``path`` in the safetensors format (see :func:`save`); atomically (an existing
    file is replaced only once the new one is complete)."""
    check_path(path)
    write_atomic(path, save(tensors, metadata))


def load_file(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Read a safetensors file into a dict of tensors on ``device`` (see :func:`load`; errors name the file)."""
    check_path(path)
    with open(path, "rb") as f:
        data = f.read()
    return _load(data, device, repr(os.fspath(path)))
