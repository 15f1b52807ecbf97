"""Preconditioning (EDM Table 1): coefficient identities, wrapper behaviour, mixed precision, errors."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from edm_samplers import clamp_sigmas, iddpm_grid, karras_sigmas
from edm_samplers.precond import (
    EDMPrecond,
    Scalings,
    VEPrecond,
    VPPrecond,
    edm_scalings,
    iddpm_scalings,
    iDDPMPrecond,
    ve_scalings,
    vp_scalings,
)

sigmas_st = st.floats(min_value=1e-4, max_value=1e3, allow_nan=False)
sigma_data_st = st.floats(min_value=0.05, max_value=5.0)


# ---- independent transcriptions of Table 1 (scalar Python math) ---------------------------------


def table1_edm(sigma: float, sd: float) -> tuple[float, float, float, float]:
    return (
        sd**2 / (sigma**2 + sd**2),
        sigma * sd / math.sqrt(sigma**2 + sd**2),
        1 / math.sqrt(sigma**2 + sd**2),
        0.25 * math.log(sigma),
    )


def table1_vp(sigma: float, beta_d: float = 19.9, beta_min: float = 0.1, m: int = 1000) -> tuple[float, ...]:
    # Table 1's sigma^-1, written as the paper writes it; ln(1 + sigma^2) via log1p: math.log(sigma**2 + 1) rounds
    # 1 + sigma^2 first (relative error ~1e-16 / sigma^2: 3e-11 at sigma = 0.002, above the 1e-12 compared).
    t = (math.sqrt(beta_min**2 + 2 * beta_d * math.log1p(sigma**2)) - beta_min) / beta_d
    return (1.0, -sigma, 1 / math.sqrt(sigma**2 + 1), (m - 1) * t)


def as_floats(sc: Scalings) -> tuple[float, ...]:
    return tuple(float(v) for v in sc)


@settings(max_examples=40, deadline=None)
@given(sigma=sigmas_st, sd=sigma_data_st)
def test_edm_scalings_identities(sigma: float, sd: float) -> None:
    sc = edm_scalings(torch.tensor(sigma, dtype=torch.float64), sd)
    # Table 1, transcribed separately; float64 evaluation of the same closed forms: rtol 1e-12.
    assert as_floats(sc) == pytest.approx(table1_edm(sigma, sd), rel=1e-12, abs=1e-15)
    c_skip, c_out, c_in, _ = (float(v) for v in sc)
    # Unit-variance network input: c_in^2 (sigma^2 + sigma_data^2) = 1.
    assert c_in**2 * (sigma**2 + sd**2) == pytest.approx(1.0, rel=1e-12)
    # Unit-variance effective training target F_target = (y - c_skip (y + n)) / c_out.
    assert ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * sigma**2) / c_out**2 == pytest.approx(1.0, rel=1e-10)


@settings(max_examples=30, deadline=None)
@given(sigma=sigmas_st, sd=sigma_data_st)
def test_edm_target_has_unit_variance_empirically(sigma: float, sd: float) -> None:
    g = torch.Generator().manual_seed(0)
    y = sd * torch.randn(200_000, generator=g, dtype=torch.float64)
    n = sigma * torch.randn(200_000, generator=g, dtype=torch.float64)
    c_skip, c_out, _, _ = edm_scalings(torch.tensor(sigma, dtype=torch.float64), sd)
    target = (y - c_skip * (y + n)) / c_out
    # Monte Carlo with 2e5 samples: the std of the sample variance is ~ sqrt(2/2e5) = 0.003; allow 5 sigma.
    assert float(target.var()) == pytest.approx(1.0, abs=0.016)


@settings(max_examples=30, deadline=None)
@given(sigma=sigmas_st)
def test_vp_ve_scalings_match_table1(sigma: float) -> None:
    s = torch.tensor(sigma, dtype=torch.float64)
    assert as_floats(vp_scalings(s)) == pytest.approx(table1_vp(sigma), rel=1e-12, abs=1e-12)
    assert as_floats(vp_scalings(s, beta_d=5.0, beta_min=0.3, M=10)) == pytest.approx(
        table1_vp(sigma, 5.0, 0.3, 10), rel=1e-12, abs=1e-12
    )
    assert as_floats(ve_scalings(s)) == pytest.approx((1.0, sigma, 1.0, math.log(sigma / 2)), rel=1e-12)


def test_iddpm_scalings_use_nearest_trained_level() -> None:
    u = iddpm_grid()
    j = torch.tensor([0, 1, 500, 998, 999])
    sigma = u[j]
    sc = iddpm_scalings(sigma)
    assert torch.equal(sc.c_noise, (999 - j).to(torch.float64))
    assert torch.equal(sc.c_out, -sigma)
    torch.testing.assert_close(sc.c_in, 1 / torch.sqrt(sigma**2 + 1), rtol=1e-15, atol=0)
    # Between two levels, the nearer one wins (brute force over the trained levels u_0 .. u_999).
    mid = 0.3 * u[500] + 0.7 * u[501]
    assert float(iddpm_scalings(mid).c_noise) == 999 - 501
    # Far below the grid: the smallest trained level u_999 (c_noise 0), never u_1000 = 0.
    assert float(iddpm_scalings(torch.tensor(1e-9)).c_noise) == 0


def test_scalings_accept_python_floats_and_keep_shape() -> None:
    assert edm_scalings(1.0).c_in.dtype == torch.float64
    s = torch.rand(3, 2, dtype=torch.float32) + 0.1
    for sc in (edm_scalings(s), vp_scalings(s), ve_scalings(s), iddpm_scalings(s)):
        assert all(v.shape == s.shape for v in sc)


# ---- wrappers ----------------------------------------------------------------------------------


class TinyNet(nn.Module):
    """F(x_in, c_noise) = conv(x_in) + c_noise: a small differentiable network for any 4-D input."""

    def __init__(self, ch: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor, c_noise: Tensor, class_labels: Tensor | None = None) -> Tensor:
        out = self.conv(x) + c_noise.reshape(-1, 1, 1, 1).to(x.dtype)
        if class_labels is not None:
            out = out + class_labels.reshape(-1, 1, 1, 1).to(x.dtype)
        return out


class Recorder:
    """A plain callable F that records what it was called with and returns a fixed output."""

    def __init__(self, out: Tensor | None = None) -> None:
        self.calls: list[tuple[Tensor, Tensor, dict[str, Any]]] = []
        self.out = out

    def __call__(self, x: Tensor, c_noise: Tensor, **cond: Any) -> Tensor:
        self.calls.append((x, c_noise, cond))
        return torch.zeros_like(x) if self.out is None else self.out


@pytest.mark.parametrize("shape", [(4,), (4, 5), (4, 3, 6), (4, 2, 3, 3), (4, 1, 2, 2, 2)])
@pytest.mark.parametrize("cls", [EDMPrecond, VPPrecond, VEPrecond, iDDPMPrecond])
def test_wrapper_formula_any_rank(cls: type, shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    f_out = torch.randn(shape, generator=g, dtype=torch.float64)
    rec = Recorder(f_out)
    pre = cls(rec)
    sigma = torch.tensor([0.05, 0.5, 2.0, 30.0], dtype=torch.float64)
    d = pre(x, sigma, class_labels=torch.arange(4))
    sc = pre.scalings(sigma)
    b = (-1,) + (1,) * (len(shape) - 1)
    x_in, c_noise, cond = rec.calls[0]
    # Same float64 operations in the same order: exact up to a few ulps.
    torch.testing.assert_close(x_in, sc.c_in.reshape(b) * x, rtol=1e-15, atol=0)
    torch.testing.assert_close(c_noise, sc.c_noise, rtol=0, atol=0)
    assert set(cond) == {"class_labels"}
    torch.testing.assert_close(d, sc.c_skip.reshape(b) * x + sc.c_out.reshape(b) * f_out, rtol=1e-15, atol=1e-15)
    assert d.dtype == torch.float64 and d.shape == x.shape


def test_scalar_sigma_broadcasts() -> None:
    x = torch.randn(3, 2, 4, 4)
    pre = EDMPrecond(TinyNet(2))
    torch.testing.assert_close(pre(x, 0.7), pre(x, torch.full((3,), 0.7)), rtol=0, atol=0)
    torch.testing.assert_close(pre(x, torch.tensor(0.7)), pre(x, torch.full((3,), 0.7)), rtol=0, atol=0)


@settings(max_examples=25, deadline=None)
@given(sd=sigma_data_st)
def test_edm_identity_output_gives_d_equal_x_as_sigma_to_0(sd: float) -> None:
    # F's "identity" output: the target F = (y - c_skip x) / c_out for y = x... at sigma -> 0, c_skip -> 1 and
    # c_out -> 0, so D -> x for any bounded F. Use F = x_in (bounded in x) and check |D - x| = O(sigma).
    x = torch.randn(2, 3, dtype=torch.float64)
    pre = EDMPrecond(lambda x_in, c: x_in, sigma_data=sd)
    errs = []
    for s in (1e-2, 1e-4, 1e-6, 1e-8):
        errs.append(float((pre(x, s) - x).abs().max()))
    # |D - x| = |(c_skip - 1) + c_out c_in| |x| = O(sigma / sd) -> 0 linearly.
    assert errs[-1] < 1e-7 / sd * 10
    assert all(b < a for a, b in itertools.pairwise(errs))


def test_vp_and_iddpm_wrappers_are_eps_predictors() -> None:
    # D = x - sigma * eps for VP and iDDPM, with eps = F's output (c_out = -sigma, c_skip = 1).
    x = torch.randn(3, 4, dtype=torch.float64)
    eps = torch.randn(3, 4, dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    for cls in (VPPrecond, iDDPMPrecond):
        d = cls(lambda x_in, c, _e=eps: _e)(x, sigma)
        torch.testing.assert_close(d, x - sigma[:, None] * eps, rtol=1e-15, atol=1e-15)


def test_wrapper_holds_the_users_module() -> None:
    net = TinyNet()
    pre = EDMPrecond(net)
    assert pre.net is net
    assert [id(p) for p in pre.parameters()] == [id(p) for p in net.parameters()]
    sd = {k: torch.randn_like(v) for k, v in net.state_dict().items()}
    pre.net.load_state_dict(sd)
    assert torch.equal(net.conv.weight, sd["conv.weight"])
    # The wrapper's own state dict is the net's with a "net." prefix; it round-trips through load_state_dict.
    pre.load_state_dict({f"net.{k}": v * 2 for k, v in sd.items()})
    assert torch.equal(net.conv.weight, 2 * sd["conv.weight"])
    # Training the wrapper trains the user's net.
    x = torch.randn(2, 3, 4, 4)
    pre(x, torch.tensor([1.0, 2.0])).square().sum().backward()
    assert net.conv.weight.grad is not None
    # iDDPM's grid is a non-persistent buffer: not in the state dict.
    assert set(iDDPMPrecond(TinyNet()).state_dict()) == {"net.conv.weight", "net.conv.bias"}


def test_bf16_network_keeps_float32_arithmetic() -> None:
    torch.manual_seed(0)
    net = TinyNet().to(torch.bfloat16)
    rec_in: list[Tensor] = []

    def f(x_in: Tensor, c_noise: Tensor) -> Tensor:
        rec_in.append(x_in)
        return net(x_in, c_noise)

    pre = EDMPrecond(f, net_dtype=torch.bfloat16)
    x = torch.randn(2, 3, 4, 4)
    sigma = torch.tensor([0.3, 3.0])
    d = pre(x, sigma)
    assert rec_in[0].dtype == torch.bfloat16
    assert d.dtype == torch.float32
    sc = edm_scalings(sigma)
    f_out = net(rec_in[0], sc.c_noise).float()
    # D is formed in float32 from x (not from a bf16-rounded x): matches the float32 formula to round-off.
    expect = sc.c_skip.reshape(-1, 1, 1, 1) * x + sc.c_out.reshape(-1, 1, 1, 1) * f_out
    torch.testing.assert_close(d, expect, rtol=1e-6, atol=1e-6)
    # The skip path is not quantised: with F = 0, D = c_skip x exactly in float32 (bf16 would lose ~3 digits).
    d0 = EDMPrecond(lambda x_in, c: torch.zeros_like(x_in), net_dtype=torch.bfloat16)(x, sigma)
    torch.testing.assert_close(d0, sc.c_skip.reshape(-1, 1, 1, 1) * x, rtol=1e-7, atol=0)


def test_half_input_computes_in_float32() -> None:
    x = torch.randn(2, 3, 4, 4).to(torch.bfloat16)
    d = EDMPrecond(lambda x_in, c: x_in)(x, torch.tensor([1.0, 2.0]))
    assert d.dtype == torch.float32


def test_wrapper_under_torch_compile() -> None:
    torch.manual_seed(0)
    pre = EDMPrecond(TinyNet())
    x = torch.randn(2, 3, 4, 4)
    sigma = torch.tensor([0.5, 5.0])
    compiled = torch.compile(pre, fullgraph=True, backend="eager")
    # Same ops in the same order: the eager backend reproduces eager mode exactly.
    torch.testing.assert_close(compiled(x, sigma), pre(x, sigma), rtol=0, atol=0)


def test_round_sigma() -> None:
    s = torch.tensor([0.1, 3.0], dtype=torch.float64)
    for cls in (EDMPrecond, VPPrecond, VEPrecond):
        assert torch.equal(cls(Recorder()).round_sigma(s), s)
    pre = iDDPMPrecond(Recorder())
    u = iddpm_grid()[:-1]
    r = pre.round_sigma(s)
    assert r.dtype == s.dtype
    for v, rv in zip(s.tolist(), r.tolist(), strict=True):
        assert rv == float(u[(u - v).abs().argmin()])
    assert pre.sigma_min == float(u[-1]) and pre.sigma_max == float(u[0])


def test_ranges() -> None:
    vp = VPPrecond(Recorder())
    # sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) at t = 1e-5 and t = 1 (Table 1 parameters).
    assert vp.sigma_min == pytest.approx(math.sqrt(math.expm1(19.9 * 1e-10 / 2 + 0.1 * 1e-5)), rel=1e-12)
    assert vp.sigma_max == pytest.approx(math.sqrt(math.expm1(19.9 / 2 + 0.1)), rel=1e-12)
    ve = VEPrecond(Recorder())
    assert (ve.sigma_min, ve.sigma_max) == (0.02, 100.0)
    edm = EDMPrecond(Recorder())
    assert (edm.sigma_min, edm.sigma_max) == (0.0, math.inf)


def test_clamp_sigmas_to_a_denoiser() -> None:
    s = karras_sigmas(10, 0.002, 200.0)
    ve = VEPrecond(Recorder())
    out = clamp_sigmas(s, denoiser=ve)
    assert float(out[0]) == 100.0 and float(out[-2]) == 0.02 and float(out[-1]) == 0.0
    assert bool((out[1:-1] < out[:-2]).all())  # strictly decreasing: duplicates removed
    pre = iDDPMPrecond(Recorder())
    r = clamp_sigmas(karras_sigmas(18), denoiser=pre)
    u = set(iddpm_grid().tolist())
    assert all(v in u for v in r.tolist()) and r[-1] == 0
    assert torch.equal(clamp_sigmas(s, denoiser=EDMPrecond(Recorder())), s)
    assert clamp_sigmas(s.float(), denoiser=ve).dtype == torch.float32
    # explicit bounds win over the denoiser's; rounding still applies
    assert float(clamp_sigmas(s, 0.05, denoiser=ve)[-2]) == 0.05
    assert float(clamp_sigmas(s, sigma_max=20.0, denoiser=ve)[0]) == 20.0
    with pytest.raises(ValueError, match="sigma_min must be < sigma_max"):
        clamp_sigmas(s, 200.0, denoiser=ve)


# ---- errors ------------------------------------------------------------------------------------


def test_bad_inputs() -> None:
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="net returned shape"):
        EDMPrecond(lambda x_in, c: x_in[:, :2])(x, 1.0)
    with pytest.raises(TypeError, match="net must return a floating-point"):
        EDMPrecond(lambda x_in, c: x_in.long())(x, 1.0)
    with pytest.raises(TypeError, match=r"net must return a torch\.Tensor"):
        EDMPrecond(lambda x_in, c: [x_in])(x, 1.0)
    with pytest.raises(ValueError, match=r"sigma must have shape \[batch\]"):
        EDMPrecond(lambda x_in, c: x_in)(x, torch.ones(3))
    with pytest.raises(TypeError, match=r"net must be an nn\.Module or a callable"):
        EDMPrecond(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma_data must be > 0"):
        EDMPrecond(Recorder(), sigma_data=0.0)
    with pytest.raises(TypeError, match="net_dtype must be None or a floating"):
        EDMPrecond(Recorder(), net_dtype=torch.int8)
    with pytest.raises(ValueError, match="sigma_min must be < sigma_max"):
        VEPrecond(Recorder(), sigma_min=5.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="epsilon_t must be in"):
        VPPrecond(Recorder(), epsilon_t=2.0)
    with pytest.raises(TypeError, match="sigma must be a tensor or a real number"):
        edm_scalings("1.0")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sigma must be a floating-point tensor"):
        edm_scalings(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="grid must be iddpm_grid"):
        iddpm_scalings(1.0, grid=torch.ones(5))
    with pytest.raises(ValueError, match="learned-variance model must return twice"):
        iDDPMPrecond(lambda x_in, c: x_in, learned_variance=True)(torch.randn(2, 3, 4), 1.0)
    # With learned variance the first half of the channels is the eps prediction.
    xx = torch.randn(2, 3, 4, dtype=torch.float64)
    d = iDDPMPrecond(lambda x_in, c: torch.cat([torch.ones_like(x_in), 5 + x_in], 1), learned_variance=True)(xx, 0.5)
    torch.testing.assert_close(d, xx - 0.5, rtol=0, atol=1e-15)


def test_float64_sampling_feeds_a_float32_network_float32() -> None:
    # The paper's reference integrates in float64 around a float32 network: the wrapper must cast F's
    # input (and c_noise) to the network's parameter dtype, and D back to float64.
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 4)
    seen: list[tuple[torch.dtype, torch.dtype]] = []

    def f(x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        seen.append((x_in.dtype, c_noise.dtype))
        return net(x_in) * c_noise[:, None]

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = net

        def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
            return f(x_in, c_noise)

    from edm_samplers import heun_sample, karras_sigmas

    pre = EDMPrecond(Wrapped())
    x = torch.randn(3, 4, dtype=torch.float64) * 80
    out64 = heun_sample(pre, x, karras_sigmas(4), dtype=torch.float64)
    assert out64.dtype == torch.float64
    assert set(seen) == {(torch.float32, torch.float32)}
    out32 = heun_sample(pre, x.float(), karras_sigmas(4))
    # Same float32 network; the float64 state only changes round-off of the skip arithmetic.
    torch.testing.assert_close(out64.float(), out32, rtol=1e-4, atol=1e-4)


# ---- issue 11: no bad input gives a silent wrong answer -----------------------------------------


def _lin_net(x_in: Tensor, c_noise: Tensor, **cond: Any) -> Tensor:
    del cond
    return 0.5 * x_in + c_noise.reshape(-1, *([1] * (x_in.ndim - 1)))


WRAPPERS = [EDMPrecond, VPPrecond, VEPrecond, iDDPMPrecond]
SCALINGS = [edm_scalings, vp_scalings, ve_scalings, iddpm_scalings]


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_wrappers_reject_bad_sigma(wrapper) -> None:  # type: ignore[no-untyped-def]
    den = wrapper(_lin_net)
    x = torch.ones(2, 3)
    # VP and iDDPM gave a finite, wrong D for sigma = -1 (they see only sigma^2 or |u_j - sigma|); EDM/VE NaN.
    for bad, shown in [(-1.0, "-1.0"), (float("nan"), "nan"), (float("inf"), "inf"), (0.0, "0.0")]:
        with pytest.raises(ValueError, match=rf"sigma must be finite and > 0, got sigma = {shown}"):
            den(x, bad)
        with pytest.raises(ValueError, match=r"sigma must be finite and > 0, got sigma\[1\]"):
            den(x, torch.tensor([1.0, bad]))
    with pytest.raises(TypeError, match=r"sigma must be a floating-point tensor, got dtype torch\.int64"):
        den(x, torch.tensor([1, 2]))
    with pytest.raises(TypeError, match=r"sigma must be a tensor or a real number, got bool"):
        den(x, True)
    # float64 1e-50 is 0 in x's float32 compute dtype: checked after that cast.
    with pytest.raises(ValueError, match=r"sigma must be finite and > 0"):
        den(x, torch.tensor([1.0, 1e-50], dtype=torch.float64))


@pytest.mark.parametrize("scalings", SCALINGS)
def test_scalings_reject_negative_sigma_and_allow_zero(scalings) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"sigma must be finite and >= 0, got sigma\[0\] = -2\.0"):
        scalings(torch.tensor([-2.0, 1.0]))
    with pytest.raises(ValueError, match=r"sigma must be finite and >= 0, got sigma = nan"):
        scalings(float("nan"))
    sc = scalings(0.0)  # the exact limit: c_skip = 1, c_out = 0 (c_noise may be -inf)
    assert sc.c_skip.item() == 1.0 and sc.c_out.item() == 0.0


def test_no_sync_path_turns_bad_sigma_into_nan(monkeypatch: pytest.MonkeyPatch) -> None:
    # On an accelerator (or under compile/vmap) nothing is read back: bad entries become NaN, good rows stay exact.
    import edm_samplers._validate_values as v

    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([-1.0, 0.7, float("nan")])
    good = {w: w(_lin_net)(x, torch.tensor([0.7, 0.7, 0.7])) for w in WRAPPERS}
    monkeypatch.setattr(v, "values_on_host", lambda t: False)
    for w in WRAPPERS:
        d = w(_lin_net)(x, sigma)
        assert bool(d[0].isnan().all()) and bool(d[2].isnan().all()), w.__name__
        assert torch.equal(d[1], good[w][1]), w.__name__
    assert bool(vp_scalings(torch.tensor([-1.0])).c_out.isnan().all())
    monkeypatch.undo()
    # the same through torch.vmap, which cannot read values back
    c_out = torch.vmap(lambda s: vp_scalings(s).c_out)(torch.tensor([-1.0, 1.0]))
    assert bool(c_out[0].isnan()) and c_out[1].item() == -1.0


def test_devices_of_sigma_and_net_output_are_checked() -> None:
    den = EDMPrecond(_lin_net)
    x = torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"sigma is on meta but x is on cpu; move it with sigma\.to\(x\.device\)"):
        den(x, torch.ones(2, device="meta"))
    with pytest.raises(ValueError, match=r"net returned a tensor on meta for an input on cpu"):
        EDMPrecond(lambda x_in, c: _lin_net(x_in, c).to("meta"))(x, 1.0)
    assert den(x, torch.tensor(1.0)).shape == x.shape  # a 0-d CPU tensor is a scalar, as in torch


def test_clamp_sigmas_checks_round_sigma_and_the_range() -> None:
    sig = karras_sigmas(6)

    class Den:
        sigma_min, sigma_max = 0.01, 50.0

        def __init__(self, rs: Any) -> None:
            self.round_sigma = rs

    for rs, match in [
        (lambda s: -s, "non-positive or non-finite"),  # gave a negative schedule
        (lambda s: 0 * s, "non-positive or non-finite"),  # gave zeros before the end
        (lambda s: s.flip(0), "reversed the order"),
        (lambda s: s[:2], r"must map a \[N\] float tensor"),
        (lambda s: s.long(), r"must map a \[N\] float tensor"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            clamp_sigmas(sig, denoiser=Den(rs))
    assert torch.equal(
        clamp_sigmas(sig, denoiser=Den(lambda s: s.tolist())), clamp_sigmas(sig, denoiser=Den(lambda s: s))
    )

    class Bad:
        sigma_min = "0.1"

    with pytest.raises(TypeError, match=r"denoiser\.sigma_min must be a real number, got str"):
        clamp_sigmas(sig, denoiser=Bad())
    Bad.sigma_min = float("nan")  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"denoiser\.sigma_min must not be NaN"):
        clamp_sigmas(sig, denoiser=Bad())
    s16 = torch.tensor([2.0, 0.5, 0.0], dtype=torch.float16)
    with pytest.raises(ValueError, match=r"clamp_sigmas.*float16.*not strictly decreasing"):
        clamp_sigmas(s16, denoiser=EDMPrecond(_lin_net, sigma_min=1.0001, sigma_max=1.0002))


def test_scalings_do_not_overflow_at_huge_sigma() -> None:
    # sigma^2 overflows float32 at 1.8e19: the direct forms gave c_in = c_out = 0 there (a finite, wrong D).
    s32 = torch.tensor([1e20, 3e30])
    s64 = s32.double()
    for fn in (edm_scalings, iddpm_scalings):
        got, want = fn(s32), fn(s64)
        for name, g, w in zip(Scalings._fields, got, want, strict=True):
            # float32 round-off of a few operations; c_skip ~ 1e-41 is subnormal in float32: absolute bound
            torch.testing.assert_close(g.double(), w, rtol=1e-6, atol=1e-44, msg=f"{fn.__name__}.{name}")
    assert edm_scalings(s32).c_out[0].item() == pytest.approx(0.5, rel=1e-6)
    assert iddpm_scalings(s32).c_in[0].item() == pytest.approx(1e-20, rel=1e-6)
    # VP's time needs ln(sigma^2 + 1), which float32 cannot form there: a clear error, not NaN.
    with pytest.raises(ValueError, match=r"sigma\^2 overflows torch\.float32"):
        vp_scalings(s32)
    torch.testing.assert_close(vp_scalings(s64).c_in, 1 / s64, rtol=1e-15, atol=0)


@pytest.mark.parametrize("sigma_data", [1e-300, 1e-30, 0.5, 1e30, 1e300])
def test_edm_scalings_with_extreme_sigma_data_in_float32(sigma_data: float) -> None:
    # float32 sigma: sigma_data never becomes a float32 constant it does not fit in (it raised or gave inf).
    s = torch.tensor([1e-3, 1.0, 1e3])
    got, want = edm_scalings(s, sigma_data), edm_scalings(s.double(), sigma_data)
    for name, g, w in zip(Scalings._fields, got, want, strict=True):
        # float32 round-off; values below float32's smallest subnormal (1.4e-45) round to 0
        torch.testing.assert_close(g.double(), w, rtol=1e-6, atol=1e-44, msg=name)


def test_wrapper_scalings_method_uses_its_own_constants() -> None:
    # The public scalings() of a wrapper (what training code calls) and its forward pass agree, with the
    # wrapper's own sigma_data (a wrapper that forgot it would silently use 0.5).
    s = torch.tensor([0.3, 2.0, 40.0], dtype=torch.float64)
    pre = EDMPrecond(Recorder(), sigma_data=2.0)
    for got, want in zip(pre.scalings(s), edm_scalings(s, 2.0), strict=True):
        assert torch.equal(got, want)
    assert not torch.equal(pre.scalings(s).c_skip, edm_scalings(s).c_skip)


def test_edm_v_prediction_scalings_are_what_forward_applies() -> None:
    # diffusers' EDM schedulers with prediction_type="v_prediction": D = c_skip x - c_out F (c_out's sign flips).
    # The public scalings() must describe the forward pass exactly, for callers that run F themselves.
    def net(x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x_in) + c_noise.reshape(-1, 1)

    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = torch.tensor([0.1, 1.0, 20.0], dtype=torch.float64)
    for prediction, sign in (("edm", 1.0), ("v", -1.0)):
        den = EDMPrecond(net, sigma_data=0.7, prediction=prediction)
        sc = den.scalings(s)
        ref = edm_scalings(s, 0.7)
        torch.testing.assert_close(sc.c_out, sign * ref.c_out, rtol=1e-15, atol=0)
        by_hand = sc.c_skip[:, None] * x + sc.c_out[:, None] * net(sc.c_in[:, None] * x, sc.c_noise)
        torch.testing.assert_close(den(x, s), by_hand, rtol=1e-12, atol=1e-12)  # float64 round-off
