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
