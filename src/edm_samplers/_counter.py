"""Counter-based standard normals: the value at (seed, draw, position) is a pure function of the three.

**Bits.** A seed's row key is ``k = mix64(seed ^ mix64(key ^ SALT))`` (a bijection of the seed for a fixed
``key``; computed once, on the host). The pair of positions (2j, 2j + 1) of draw d reads the 64 bits

    z = mix64(k + (d * 2**32 + j) * GAMMA)  (mod 2**64),

SplitMix64's output at counter c = d * 2**32 + j (Steele, Lea and Flood 2014; ``mix64`` is Stafford's "Mix13"
finalizer, the one of Java's SplittableRandom). Within a seed every (draw, pair) is a distinct counter, so no
two of them share bits; seeds start at unrelated points of the same period-2**64 sequence. Draws d < 2**32
and samples of at most 2**33 positions.

**Normals.** Each 32-bit half w of z (the low half gives the even position) gives one normal by inversion:
f = w + 1/2 in float32, so that u = |f| / 2**32 lies in (0, 1/2] and the sign of f is the normal's sign;
|x| = -Phi^{-1}(u) is read from a table indexed by the top bits of |f|'s float32 pattern (its exponent and
:data:`MANT_BITS` leading mantissa bits: equal bins in each octave of u, hence ever finer towards the tail,
where the quantile function is steep) and linearly interpolated in the remaining bits; the sign bit is part of
the index (the table holds both signs). The interpolation runs in 24-bit fixed point on integers, and the result
is converted and scaled by 2**-24. Every step is integer arithmetic, a gather, a correctly rounded int-to-float
conversion (or addition of 1/2) or a multiplication by a power of two: CPU, CUDA and compiled code give the same
bits, whatever their FMA contraction. The largest magnitude is -Phi^{-1}(2**-33) = 6.2 (``torch.randn``'s
float32 Box-Muller stops at 5.8), and the interpolated quantile is within 1e-6 of the exact one (9.3e-7 over
12.8 million values; tests/test_counter_noise.py).

**Speed** (why these choices; benchmarks/noise_cost.py). Twenty-two elementwise passes over 4-byte words, no
transcendental function (the trigonometry and logarithm of Box-Muller cost more than the whole table path on
CPU). On CPU the eager path works in three reused state-sized buffers with ``out=`` and in-place kernels:
fresh multi-megabyte intermediates cost page faults that, on CPU, can exceed the arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["MANT_BITS", "normals", "row_keys"]

_U64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_SALT = 0x5851F42D4C957F2D

MANT_BITS = 8
"""Leading mantissa bits of |f| in the table index: 2**8 bins per octave of u (a 2**10 table is 4x the cache
footprint for ~9 % more time per draw on a shared CPU; the interpolation error is below 1e-6 either way)."""
_FRAC_BITS = 23 - MANT_BITS  # the bits interpolated
_LO = 0x3F000000 >> _FRAC_BITS  # index of |f| = 0.5 (u = 2**-33)
_HI = 0x4F000000 >> _FRAC_BITS  # index of |f| = 2**31 (u = 1/2)
_FIXED = 24  # fractional bits of the fixed-point values
_NEG = 1 << (31 - _FRAC_BITS)  # the sign bit of f, in the table index
_INDEX_MASK = (1 << (32 - _FRAC_BITS)) - 1  # a logical shift of the 32 bits by _FRAC_BITS


def _signed(v: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits (torch has no uint64 arithmetic)."""
    v &= _U64
    return v - (1 << 64) if v >> 63 else v


def _mix64_int(z: int) -> int:
    z &= _U64
    z = ((z ^ (z >> 30)) * _M1) & _U64
    z = ((z ^ (z >> 27)) * _M2) & _U64
    return z ^ (z >> 31)


def row_keys(seeds: Sequence[int], key: int, device: torch.device | None = None) -> Tensor:
    """``mix64(seed ^ mix64(key ^ SALT))`` per seed, as int64 (Python integers: traceable by torch.compile)."""
    k = _mix64_int(key ^ _SALT)
    return torch.tensor([_signed(_mix64_int(s ^ k)) for s in seeds], dtype=torch.int64, device=device)


# ---- the quantile table ---------------------------------------------------------------------------------


def _tables_cpu() -> tuple[Tensor, Tensor]:
    """Fixed-point x at the left edge of each bin (T) and its rise over the bin (S), int32, indexed by the top
    19 bits of f's float32 pattern (sign, exponent, leading mantissa bits): positive f at [_LO, _HI], negative f
    ``_NEG`` higher with the values negated (the sign comes with the lookup); other entries are never read."""
    idx = torch.arange(_LO, _HI + 2, dtype=torch.int64)
    edge = (idx << _FRAC_BITS).to(torch.int32).view(torch.float32).to(torch.float64)  # |f| at the bin's left edge
    mag = torch.round(-torch.special.ndtri(edge * 2.0**-32) * 2.0**_FIXED).to(torch.int64)  # computed in float64
    mag[-2:] = 0  # |f| = 2**31 (u = 1/2, x = 0) and the guard entry past it
    t = torch.zeros(_NEG + _HI + 1, dtype=torch.int32)
    s = torch.zeros(_NEG + _HI + 1, dtype=torch.int32)
    rise = mag[1:] - mag[:-1]  # T + S hits the next edge exactly: continuous interpolation
    t[_LO : _HI + 1], s[_LO : _HI + 1] = mag[:-1].to(torch.int32), rise.to(torch.int32)
    t[_NEG + _LO :], s[_NEG + _LO :] = -t[_LO : _HI + 1], -s[_LO : _HI + 1]
    return t, s


_TABLES: dict[torch.device, tuple[Tensor, Tensor]] = {}


def tables(device: torch.device) -> tuple[Tensor, Tensor]:
    """The tables on ``device`` (built once on CPU, in float64, then copied: the same integers everywhere)."""
    got = _TABLES.get(device)
    if got is None:
        cpu = _TABLES.get(torch.device("cpu"))
        if cpu is None:
            with torch.inference_mode(False):
                cpu = _tables_cpu()
            _TABLES[torch.device("cpu")] = cpu
        with torch.inference_mode(False):
            got = (cpu[0].to(device), cpu[1].to(device))
        _TABLES[device] = got
    return got


# ---- the kernels ----------------------------------------------------------------------------------------

_SHIFTS = ((30, _signed(_M1)), (27, _signed(_M2)), (31, None))
_HALF = torch.tensor(0.5, dtype=torch.float32)  # a 0-d float32 operand: int32 + it is float32 whatever the default
_SCALE = torch.tensor(2.0**-_FIXED, dtype=torch.float32)
_FRAC_MASK = (1 << _FRAC_BITS) - 1


def _mask(shift: int) -> int:
    """Keeps the low 64 - shift bits: an arithmetic right shift followed by it is a logical one."""
    return (1 << (64 - shift)) - 1


def draw_offset(draw: int) -> int:
    """``draw * 2**32 * GAMMA`` as an int64 constant: added to the row keys, it selects the draw."""
    return _signed((draw << 32) * GAMMA)


def positions(npairs: int, device: torch.device) -> Tensor:
    """``j * GAMMA`` for the pairs j < npairs (int64, wrapping)."""
    return torch.arange(npairs, dtype=torch.int64, device=device).mul_(_signed(GAMMA))


def normals(base: Tensor, pos: Tensor, tab: tuple[Tensor, Tensor]) -> Tensor:
    """``[B, 2 * npairs]`` float32 normals for the row bases ``[B]`` (row key + draw offset) and ``pos``.

    Functional form (fresh tensors): what runs on CUDA, under ``torch.compile`` and on other devices.
    """
    z = base[:, None] + pos[None, :]
    for shift, mult in _SHIFTS:
        z = z ^ ((z >> shift) & _mask(shift))
        if mult is not None:
            z = z * mult
    bits = torch.add(z.view(torch.int32), _HALF).view(torch.int32)
    frac = bits & _FRAC_MASK
    flat = ((bits >> _FRAC_BITS) & _INDEX_MASK).reshape(-1)
    rise = torch.index_select(tab[1], 0, flat).view(bits.shape)
    val = torch.index_select(tab[0], 0, flat).view(bits.shape) + ((rise * frac) >> _FRAC_BITS)
    return val * _SCALE


COMPILE_BACKEND = "inductor"
"""The ``torch.compile`` backend of :func:`compiled_normals` (tests swap in ``"eager"``: no C++ build)."""
_COMPILED: dict[str, Callable[[Tensor, Tensor, tuple[Tensor, Tensor]], Tensor]] = {}


def compiled_normals() -> Callable[[Tensor, Tensor, tuple[Tensor, Tensor]], Tensor]:
    """:func:`normals` through ``torch.compile`` (one fused pass; integer operations and exactly rounded
    conversions only, so the same bits as eager: benchmarks/noise_cost.py checks it); compiled once per shape."""
    fn = _COMPILED.get(COMPILE_BACKEND)
    if fn is None:
        fn = torch.compile(normals, fullgraph=True, dynamic=False, backend=COMPILE_BACKEND)
        _COMPILED[COMPILE_BACKEND] = fn
    return fn


class Work:
    """Three reused ``[B, npairs]`` int64 buffers and the views :func:`normals_into` reads them through (made
    once: on CPU each view is a few microseconds of dispatch, and a draw makes two dozen calls)."""

    def __init__(self, batch: int, npairs: int) -> None:
        za, zb, zc = (torch.empty(batch, npairs, dtype=torch.int64) for _ in range(3))
        self.z, self.t = za, zc
        self.bits, self.bits_f = za.view(torch.int32), za.view(torch.float32)
        self.frac = zb.view(torch.int32)
        self.frac_flat = self.frac.view(-1)
        self.index_flat = self.bits.view(-1)
        self.val = zc.view(torch.int32)
        self.val_flat = self.val.view(-1)


def normals_into(base: Tensor, pos: Tensor, tab: tuple[Tensor, Tensor], w: Work) -> Tensor:
    """:func:`normals` computed in the reused buffers of ``w`` (CPU): the same operations, hence the same bits;
    only the returned ``[B, 2 * npairs]`` float32 tensor is new."""
    z, t = w.z, w.t
    torch.add(base[:, None], pos[None, :], out=z)
    for shift, mult in _SHIFTS:
        torch.bitwise_right_shift(z, shift, out=t)
        t.bitwise_and_(_mask(shift))
        z.bitwise_xor_(t)
        if mult is not None:
            z.mul_(mult)
    torch.add(w.bits, _HALF, out=w.bits_f)  # in place: int32 w -> the bits of float32 w + 1/2
    torch.bitwise_and(w.bits, _FRAC_MASK, out=w.frac)
    w.bits.bitwise_right_shift_(_FRAC_BITS).bitwise_and_(_INDEX_MASK)  # now the table index
    torch.index_select(tab[1], 0, w.index_flat, out=w.val_flat)
    w.val.mul_(w.frac).bitwise_right_shift_(_FRAC_BITS)
    torch.index_select(tab[0], 0, w.index_flat, out=w.frac_flat)  # frac is spent: its buffer takes T
    w.val.add_(w.frac)
    return torch.mul(w.val, _SCALE)  # fixed point -> float32
