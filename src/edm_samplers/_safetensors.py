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

import json
import os
import struct
import sys
from collections.abc import Mapping

import torch
from torch import Tensor

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


def _parse_header(data: bytes | bytearray | memoryview) -> tuple[dict[str, object], int]:
    if len(data) < 8:
        raise ValueError("not a safetensors file: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    if n > _MAX_HEADER or 8 + n > len(data):
        raise ValueError(f"not a safetensors file: header length {n} does not fit a file of {len(data)} bytes")
    try:
        header = json.loads(bytes(data[8 : 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not a safetensors file: the header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file: the header must be a JSON object")
    return header, 8 + n


def load(data: bytes | bytearray, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Deserialise safetensors bytes into a dict of tensors on ``device`` (copies; no memory sharing).

    Raises:
        ValueError: if the bytes are not a well-formed safetensors file (bad header, offsets out of
            range or not matching the shape, unknown dtype).
    """
    header, start = _parse_header(data)
    buf = memoryview(data)[start:]
    out: dict[str, Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
            raise ValueError(f"safetensors entry {name!r} must have dtype, shape and data_offsets")
        dtype = _TO_TORCH.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"safetensors entry {name!r} has unsupported dtype {info['dtype']!r}")
        shape = [int(s) for s in info["shape"]]
        begin, end = (int(o) for o in info["data_offsets"])
        numel = 1
        for s in shape:
            numel *= s
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if not 0 <= begin <= end <= len(buf) or end - begin != numel * itemsize:
            raise ValueError(
                f"safetensors entry {name!r}: data_offsets {[begin, end]} do not match shape {shape} of "
                f"{info['dtype']} in a buffer of {len(buf)} bytes"
            )
        u8 = torch.frombuffer(bytearray(buf[begin:end]), dtype=torch.uint8) if end > begin else None
        if u8 is None:
            t = torch.empty(shape, dtype=dtype)
        else:
            if sys.byteorder == "big" and itemsize > 1:
                u8 = u8.reshape(-1, itemsize).flip(1).reshape(-1).contiguous()
            t = u8.view(dtype).reshape(shape)
        out[name] = t.to(device)
    return out


def load_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``"__metadata__"`` of a safetensors file (empty dict if absent); reads only the header."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{os.fspath(path)!r} is not a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER:
            raise ValueError(f"{os.fspath(path)!r} is not a safetensors file (header length {n})")
        header, _ = _parse_header(head + f.read(n))
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict):
        raise ValueError("__metadata__ must be a JSON object of strings")
    return {str(k): str(v) for k, v in meta.items()}


def save_file(
    tensors: Mapping[str, Tensor], path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> None:
    """Write named tensors to ``path`` in the safetensors format (see :func:`save`)."""
    data = save(tensors, metadata)
    with open(path, "wb") as f:
        f.write(data)


def load_file(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Read a safetensors file into a dict of tensors on ``device`` (see :func:`load`)."""
    with open(path, "rb") as f:
        data = f.read()
    return load(data, device=device)
