"""Hypothesis strategies shared by the tests."""

from __future__ import annotations

import torch
from hypothesis import strategies as st


@st.composite
def schedules(draw: st.DrawFn, min_steps: int = 1, max_steps: int = 12, final_zero: bool = True) -> torch.Tensor:
    """Arbitrary strictly decreasing positive schedules (log-spaced draws), optionally ending in 0."""
    n = draw(st.integers(min_steps, max_steps))
    logs = draw(
        st.lists(st.floats(-6.0, 4.5, allow_nan=False), min_size=n, max_size=n, unique=True).map(
            lambda v: sorted(v, reverse=True)
        )
    )
    s = torch.tensor(logs, dtype=torch.float64).exp()
    # Distinct floats can collapse after exp at the ulp level; keep strictly decreasing ones.
    keep = torch.cat([torch.tensor([True]), s[1:] < s[:-1]])
    s = s[keep]
    if final_zero:
        s = torch.cat([s, s.new_zeros(1)])
    elif s.numel() < 2:
        s = torch.cat([s, s / 2])
    return s


sample_shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


# ---- bad input (issue 11): values a caller might pass by mistake ---------------------------------

# NaN, +-inf, huge, tiny, subnormal, negative, zero, one ulp above 1, and everything in between.
weird_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, -1.0, 1e-300, 5e-324, 1e300, 1.7976931348623157e308, 1.0 + 2**-52, 0.5]),
)
# Small ints (zero, negative) and ints past every machine limit.
weird_ints = st.one_of(st.integers(-3, 24), st.sampled_from([-(2**63), 2**31, 2**63, 2**64, 2**70]))
# Wrong types: None, bool, str, containers, an arbitrary object, a float where an int is expected.
weird_objects = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.sampled_from([[], (), {}, [1.0, 0.0], object(), 2.5, b"1"]),
)
weird_dtypes = st.sampled_from(
    [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.bool, torch.uint8,
     torch.complex64, "float32", None, float, 3]
)  # fmt: skip


@st.composite
def weird_tensors(draw: st.DrawFn, max_len: int = 5) -> torch.Tensor:
    """Tensors of any dtype and a few shapes (0-d, empty, 1-D, 2-D) holding weird values."""
    shape = draw(st.sampled_from([(), (0,), (1,), (2,), (max_len,), (2, 2), (1, 3)]))
    numel = 1
    for d in shape:
        numel *= d
    vals = draw(st.lists(weird_floats, min_size=numel, max_size=numel))
    dtype = draw(st.sampled_from([torch.float64, torch.float32, torch.float16, torch.int64, torch.bool]))
    t = torch.tensor(vals, dtype=torch.float64).reshape(shape)
    if dtype in (torch.int64, torch.bool):
        t = torch.nan_to_num(t, nan=0.0, posinf=7.0, neginf=-7.0).clamp(-(2**40), 2**40)
    return t.to(dtype)


weird_values = st.one_of(weird_floats, weird_ints, weird_objects, weird_tensors())


def maybe(default: object, bad: st.SearchStrategy[object] = weird_values) -> st.SearchStrategy[object]:
    """The default (a valid value) half the time, a weird value otherwise."""
    return st.one_of(st.just(default), bad)


@st.composite
def corrupted(
    draw: st.DrawFn,
    defaults: dict[str, object],
    bad: dict[str, st.SearchStrategy[object]] | None = None,
    max_bad: int = 2,
) -> dict[str, object]:
    """Keyword arguments: valid ``defaults`` with 0 .. ``max_bad`` of them replaced by weird values (per-name
    strategies in ``bad``, else :data:`weird_values`). Zero corrupted arguments keeps the success path covered;
    one isolates each argument's check; two probe interactions (e.g. sigma_min and sigma_max)."""
    names = sorted(defaults)
    k = draw(st.integers(0, min(max_bad, len(names))))
    picked = draw(st.lists(st.sampled_from(names), min_size=k, max_size=k, unique=True)) if k else []
    out = dict(defaults)
    for name in picked:
        out[name] = draw((bad or {}).get(name, weird_values))
    return out
