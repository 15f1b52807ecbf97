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


# ---- issue 11: no bad input gives a silent wrong answer -----------------------------------------


def _strict(s: torch.Tensor) -> bool:
    return bool((s[:-1] > 0).all() and (s[1:-1] < s[:-2]).all() and s[-1] == 0 and torch.isfinite(s).all())


def test_karras_extreme_rho_follows_eq5() -> None:
    # rho = 1e-3: sigma_max^(1/rho) overflows, so the direct form gave [0.2, 0, 0.1, 0]. Transcription in
    # the normalised form sigma_max (1 - f + f (sigma_min/sigma_max)^(1/rho))^rho (0.5^1000 is representable).
    s = karras_sigmas(3, 0.1, 0.2, rho=1e-3)
    ref = [0.2 * (1 - f + f * 0.5**1000.0) ** 1e-3 for f in (0.0, 0.5, 1.0)] + [0.0]
    # log-space evaluation vs the power form: a few ulps of a log of order 1
    torch.testing.assert_close(s, torch.tensor(ref, dtype=torch.float64), rtol=1e-13, atol=0)
    # rho -> inf is the geometric (log-linear) schedule; rho = 1e300 gave repeated levels.
    torch.testing.assert_close(karras_sigmas(5, 0.1, 0.2, rho=1e300), loglinear_sigmas(5, 0.1, 0.2), rtol=1e-15, atol=0)
    for rho in (1e-6, 1e-2, 1e6, 1e20):
        assert _strict(karras_sigmas(8, 0.002, 80.0, rho=rho))


def test_karras_rho_is_used() -> None:
    # Value check at a non-default rho (a builder ignoring rho passed every other test).
    ref = ref_karras(6, 0.01, 10.0, 3.0)
    torch.testing.assert_close(
        karras_sigmas(6, 0.01, 10.0, 3.0), torch.tensor(ref, dtype=torch.float64), rtol=1e-13, atol=0
    )


def test_levels_too_close_raise_or_stay_strict() -> None:
    s = karras_sigmas(5, 1.0, 1.0 + 1e-15)  # 4 ulps apart: 5 distinct levels just fit
    assert _strict(s)
    with pytest.raises(ValueError, match=r"karras_sigmas\(num_steps=9.*not strictly decreasing"):
        karras_sigmas(9, 1.0, 1.0 + 1e-15)
    with pytest.raises(ValueError, match=r"loglinear_sigmas.*not strictly decreasing"):
        loglinear_sigmas(50, 1.0, 1.0 + 1e-14)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_dtype_is_checked_after_the_cast(dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match=rf"cast to dtype={dtype}.*underflow"):
        karras_sigmas(4, 1e-50, 80.0, dtype=dtype)  # 1e-50 is 0 in both
    with pytest.raises(ValueError, match=rf"cast to dtype={dtype}.*not strictly decreasing"):
        karras_sigmas(20000, dtype=dtype)  # neighbours near 80 round to the same value
    s = karras_sigmas(18, dtype=dtype)
    assert s.dtype == dtype and _strict(s.double())


def test_vp_sigmas_extreme_betas() -> None:
    with pytest.raises(ValueError, match=r"vp_sigmas\(.*beta_d=10000.0.*beyond float64"):
        vp_sigmas(3, beta_d=1e4)
    with pytest.raises(ValueError, match=r"cast to dtype=torch.float16.*overflow"):
        vp_sigmas(3, beta_d=50.0, dtype=torch.float16)  # sigma(1) = e^12.5 > 65504
    with pytest.raises(ValueError, match=r"cast to dtype=torch.float32.*underflow"):
        vp_sigmas(3, beta_d=1e-300, beta_min=0.0, dtype=torch.float32)
    tiny = vp_sigmas(3, beta_d=1e-300, beta_min=0.0)  # representable in float64: a valid answer
    assert _strict(tiny)
    with pytest.raises(ValueError, match=r"not strictly decreasing"):
        vp_sigmas(200, eps_s=1 - 1e-15)


def test_vp_sigma_and_inverse_domain_and_range() -> None:
    with pytest.raises(ValueError, match=r"t must be finite and >= 0, got t\[1\] = -0.5"):
        vp_sigma(torch.tensor([0.5, -0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"sigma must be finite and >= 0"):
        vp_sigma_inv(torch.tensor([-1.0]))  # gave t(1), a finite wrong answer
    with pytest.raises(ValueError, match=r"sigma must be finite and >= 0"):
        vp_sigma_inv(float("nan"))
    with pytest.raises(TypeError, match=r"t must be a floating-point tensor"):
        vp_sigma(torch.tensor([1]))
    with pytest.raises(ValueError, match=r"overflows torch.float32"):
        vp_sigma(torch.tensor([1000.0]))
    with pytest.raises(ValueError, match=r"beta_d must be > 0"):
        vp_sigma(0.5, beta_d=0.0)
    # No overflow where the result is representable: float32 sigma(3.5) = e^61.1 (expm1 alone overflows at 88).
    t = torch.tensor([3.5, 0.3, 1e-4])
    # The float32 exponent z ~ 122 carries a rounding error up to z 2^-24 ~ 7e-6, which exp(z/2) turns into
    # a relative error of about 4e-6: compare at 1e-5.
    torch.testing.assert_close(vp_sigma(t), vp_sigma(t.double()).float(), rtol=1e-5, atol=0)
    too_big = r"sigma must be <= 1\.845e\+19 here, got sigma\[0\] = 1\.00\d*e\+20; sigma\^2 overflows torch\.float32"
    with pytest.raises(ValueError, match=too_big):
        vp_sigma_inv(torch.tensor([1e20, 0.5]))  # sigma^2 overflows float32 (gave inf/inf = NaN)
    s = torch.tensor([1e19, 1e10, 0.5])  # below the limit: float32 agrees with float64 to its round-off
    torch.testing.assert_close(vp_sigma_inv(s), vp_sigma_inv(s.double()).float(), rtol=2e-6, atol=0)
    # Both agree with the Table 1 transcription across the switch between their two branches (z = 1, sigma = 1).
    tt = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    ref = torch.tensor([math.sqrt(math.expm1(0.5 * 19.9 * v * v + 0.1 * v)) for v in tt.tolist()], dtype=torch.float64)
    torch.testing.assert_close(vp_sigma(tt), ref, rtol=1e-14, atol=0)
    torch.testing.assert_close(vp_sigma_inv(ref), tt, rtol=1e-12, atol=1e-15)


def test_iddpm_grid_bad_constants() -> None:
    with pytest.raises(ValueError, match=r"c1 must be in"):
        iddpm_grid(c1=1.0)
    with pytest.raises(ValueError, match=r"iddpm_grid\(.*c2=1e\+300.*not in \(0, 1\)"):
        iddpm_grid(c2=1e300)
    with pytest.raises(ValueError, match=r"m must be <= 1000000"):
        iddpm_grid(m=10**7)
    with pytest.raises(TypeError, match=r"m must be an int"):
        iddpm_grid(m=1000.0)  # type: ignore[arg-type]


def test_num_steps_limits_and_options() -> None:
    with pytest.raises(ValueError, match=r"num_steps must be <= 10000000"):
        karras_sigmas(2**62)
    with pytest.raises(TypeError, match=r"num_steps must be an int"):
        loglinear_sigmas(True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"device must name a device"):
        vp_sigmas(3, device="gpu0")
    with pytest.raises(TypeError, match=r"dtype must be a floating"):
        iddpm_sigmas(3, dtype=torch.bool)


def test_append_zero_checks_its_input() -> None:
    with pytest.raises(ValueError, match=r"must not end in 0"):
        append_zero(torch.tensor([2.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match=r"not strictly decreasing"):
        append_zero(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"no positive noise level"):
        append_zero(torch.tensor([]))
    with pytest.raises(ValueError, match=r"non-finite"):
        append_zero(torch.tensor([math.inf, 1.0]))
    with pytest.raises(TypeError, match=r"floating-point tensor"):
        append_zero(torch.tensor([3, 2, 1]))
    s = append_zero(torch.tensor([3.0, 2.0], dtype=torch.float16))
    assert s.dtype == torch.float16 and s.tolist() == [3.0, 2.0, 0.0]


def test_clamp_sigmas_output_is_checked_in_its_dtype() -> None:
    s16 = torch.tensor([2.0, 0.5, 0.0], dtype=torch.float16)
    with pytest.raises(ValueError, match=r"clamp_sigmas.*torch.float16.*not strictly decreasing"):
        clamp_sigmas(s16, 1.0001, 1.0002)  # distinct in float64, one float16 value
    out = clamp_sigmas([8.0, 4.0, 2.0], 3.0, 5.0)  # a list: float64 on the CPU, no final 0 added
    assert out.dtype == torch.float64 and out.tolist() == [5.0, 4.0, 3.0]


def test_vp_sigma_inv_rationalised_form() -> None:
    # Small sigma: sqrt(beta_min^2 + 2 beta_d L) - beta_min cancelled (10% error at sigma = 1e-8); the series
    # t = L / beta_min - beta_d L^2 / (2 beta_min^3) + ... with L = ln(1 + sigma^2) is exact to 1e-13 here.
    sig = torch.tensor([1e-8, 1e-6], dtype=torch.float64)
    big_l = torch.log1p(sig**2)
    series = big_l / 0.1 - 19.9 * big_l**2 / (2 * 0.1**3)
    torch.testing.assert_close(vp_sigma_inv(sig), series, rtol=1e-12, atol=0)
    # A huge beta_min: beta_min^2 overflowed (OverflowError, or inf - inf = NaN); t = L / beta_min rounds to 0.
    assert vp_sigma_inv(torch.tensor([1.0, 50.0]), beta_min=1e300).tolist() == [0.0, 0.0]
    assert vp_sigma_inv(torch.tensor([1.0]), beta_d=1.0, beta_min=2.0**64).item() == pytest.approx(math.log(2) / 2**64)
