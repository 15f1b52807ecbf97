"""Schedules: independent transcriptions of EDM Table 1 / Eq. 5, properties, and input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from edm_samplers import (
    append_zero,
    clamp_sigmas,
    iddpm_grid,
    iddpm_sigmas,
    karras_sigmas,
    loglinear_sigmas,
    ve_sigmas,
    vp_sigma,
    vp_sigma_inv,
    vp_sigmas,
)

BUILDERS = [karras_sigmas, loglinear_sigmas, ve_sigmas, iddpm_sigmas]


# ---- independent transcriptions (plain Python floats, written from the paper) ----------------


def ref_karras(n: int, lo: float, hi: float, rho: float) -> list[float]:
    out = []
    for i in range(n):
        frac = i / (n - 1) if n > 1 else 0.0
        out.append((hi ** (1 / rho) + frac * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho)
    return [*out, 0.0]


def ref_vp(n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> list[float]:
    out = []
    for i in range(n):
        t = 1 + (i / (n - 1) if n > 1 else 0.0) * (eps_s - 1)
        out.append(math.sqrt(math.exp(0.5 * beta_d * t * t + beta_min * t) - 1))
    return [*out, 0.0]


def ref_iddpm_grid(m: int = 1000, c1: float = 0.001, c2: float = 0.008) -> np.ndarray:
    def abar(j: int) -> float:
        return math.sin(0.5 * math.pi * j / m / (c2 + 1)) ** 2

    u = np.zeros(m + 1)
    for j in range(m, 0, -1):
        u[j - 1] = math.sqrt((u[j] ** 2 + 1) / max(abar(j - 1) / abar(j), c1) - 1)
    return u


def test_karras_matches_paper_eq5() -> None:
    for n in (1, 2, 5, 18, 64):
        got = karras_sigmas(n, 0.002, 80.0, 7.0)
        # float64 evaluation of the same formula in a different order: a few ulps apart.
        torch.testing.assert_close(
            got, torch.tensor(ref_karras(n, 0.002, 80.0, 7.0), dtype=torch.float64), rtol=1e-13, atol=0
        )


def test_karras_18_steps_documented_values() -> None:
    s = karras_sigmas(18)
    assert s.shape == (19,) and s.dtype == torch.float64
    assert s[0].item() == 80.0 and s[-2].item() == 0.002 and s[-1].item() == 0.0


def test_vp_matches_table1() -> None:
    # The library uses expm1; the naive exp(x) - 1 of the transcription cancels at small t and is off by
    # about eps / x ~ 2e-16 / 1e-4 = 2e-12 relative at t = eps_s, so compare at 1e-11.
    torch.testing.assert_close(vp_sigmas(18), torch.tensor(ref_vp(18), dtype=torch.float64), rtol=1e-11, atol=0)


def test_vp_sigma_inverse_roundtrip() -> None:
    t = torch.linspace(1e-3, 1, 200, dtype=torch.float64)
    torch.testing.assert_close(vp_sigma_inv(vp_sigma(t)), t, rtol=1e-10, atol=1e-13)


def test_ve_is_geometric_with_table1_endpoints() -> None:
    s = ve_sigmas(10)
    t = s[:-1] ** 2  # Table 1 writes VE in t = sigma^2: t_i = smax^2 (smin^2/smax^2)^(i/(N-1))
    ref = torch.tensor([100.0**2 * (0.02**2 / 100.0**2) ** (i / 9) for i in range(10)], dtype=torch.float64)
    torch.testing.assert_close(t, ref, rtol=1e-12, atol=0)


def test_iddpm_grid_matches_independent_recursion() -> None:
    torch.testing.assert_close(iddpm_grid(), torch.from_numpy(ref_iddpm_grid()), rtol=1e-12, atol=0)


def test_iddpm_sigmas_follow_table1_index_formula() -> None:
    u = ref_iddpm_grid()
    j0 = int(np.argmax(u <= 80.0))  # first index with u_j <= sigma_max
    m = 1000
    n = 18
    # Paper: t_i = u_{floor(j0 + (M-1-j0) i/(N-1) + 1/2)} (sigma_min = 0.002 lies below u_{M-1}).
    ref = [u[math.floor(j0 + (m - 1 - j0) * i / (n - 1) + 0.5)] for i in range(n)] + [0.0]
    assert u[m - 1] > 0.002
    torch.testing.assert_close(iddpm_sigmas(n), torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("builder", BUILDERS)
@given(n=st.integers(1, 60))
def test_schedule_properties(builder, n: int) -> None:  # type: ignore[no-untyped-def]
    s = builder(n)
    assert s.shape == (n + 1,)
    assert s.dtype == torch.float64
    assert s[-1].item() == 0.0
    assert bool((s[:-1] > 0).all())
    assert bool((s[1:] < s[:-1]).all()), "strictly decreasing"


@given(
    n=st.integers(1, 40),
    lo=st.floats(1e-4, 1.0),
    ratio=st.floats(1.5, 1e5),
    rho=st.floats(0.5, 12.0),
)
def test_karras_endpoints_and_monotone(n: int, lo: float, ratio: float, rho: float) -> None:
    hi = lo * ratio
    s = karras_sigmas(n, lo, hi, rho)
    assert s[0].item() == hi
    if n > 1:
        assert s[n - 1].item() == lo
    assert bool((s[1:] < s[:-1]).all())


@pytest.mark.parametrize("builder", [karras_sigmas, loglinear_sigmas, vp_sigmas, iddpm_sigmas])
def test_dtype_and_device_options(builder) -> None:  # type: ignore[no-untyped-def]
    s = builder(5, dtype=torch.float32, device="cpu")
    assert s.dtype == torch.float32 and s.device.type == "cpu"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_steps": 0}, "num_steps must be >= 1"),
        ({"num_steps": 2.5}, "num_steps must be an int"),
        ({"num_steps": 5, "sigma_min": 0.0}, "sigma_min must be > 0"),
        ({"num_steps": 5, "sigma_min": -1.0}, "sigma_min must be > 0"),
        ({"num_steps": 5, "sigma_min": 80.0, "sigma_max": 80.0}, "sigma_min must be < sigma_max"),
        ({"num_steps": 5, "sigma_min": 90.0}, "sigma_min must be < sigma_max"),
        ({"num_steps": 5, "rho": 0.0}, "rho must be > 0"),
        ({"num_steps": 5, "rho": float("nan")}, "rho must be finite"),
        ({"num_steps": 5, "sigma_max": float("inf")}, "sigma_max must be finite"),
        ({"num_steps": 5, "dtype": torch.int64}, "dtype must be a floating"),
    ],
)
def test_karras_bad_input(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        karras_sigmas(**kwargs)  # type: ignore[arg-type]


def test_vp_bad_input() -> None:
    with pytest.raises(ValueError, match="eps_s must be in"):
        vp_sigmas(5, eps_s=1.5)
    with pytest.raises(ValueError, match="beta_d must be > 0"):
        vp_sigmas(5, beta_d=0)


def test_iddpm_too_many_steps() -> None:
    with pytest.raises(ValueError, match="fewer than num_steps"):
        iddpm_sigmas(5, sigma_min=1.0, sigma_max=1.01)


def test_append_zero_and_clamp() -> None:
    s = append_zero(torch.tensor([10.0, 1.0, 0.1], dtype=torch.float64))
    assert s.tolist() == [10.0, 1.0, 0.1, 0.0]
    c = clamp_sigmas(karras_sigmas(10, 0.002, 80), 0.01, 20.0)
    assert c[0].item() == 20.0 and c[-2].item() == 0.01 and c[-1].item() == 0.0
    assert bool((c[1:] < c[:-1]).all()), "clamping must not leave zero-length steps"
    with pytest.raises(TypeError, match="1-D tensor"):
        append_zero([1.0])  # type: ignore[arg-type]
