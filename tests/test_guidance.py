"""Guidance combinator: formula, call counts, sigma interval (mask / host), CFG conditions, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from edm_samplers import heun_sample, karras_sigmas
from edm_samplers.evaluation import GaussianMixture
from edm_samplers.guidance import guided, null_condition
from edm_samplers.precond import EDMPrecond
from edm_samplers.schedule_fit import clamp_sigmas


class Counting:
    """A denoiser D = scale * x + offset that counts its calls and records its cond."""

    def __init__(self, scale: float, offset: float) -> None:
        self.scale, self.offset = scale, offset
        self.calls = 0
        self.conds: list[dict[str, Any]] = []

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        self.calls += 1
        self.conds.append(cond)
        return self.scale * x + self.offset


@settings(max_examples=30, deadline=None)
@given(w=st.floats(min_value=-2.0, max_value=10.0))
def test_formula(w: float) -> None:
    main, guide = Counting(0.5, 1.0), Counting(0.25, -1.0)
    x = torch.randn(3, 4, dtype=torch.float64)
    d = guided(main, guide, w)(x, torch.ones(3, dtype=torch.float64))
    d_m, d_g = 0.5 * x + 1.0, 0.25 * x - 1.0
    # lerp vs the textbook form: a few ulps of |w (d_m - d_g)|.
    torch.testing.assert_close(d, d_g + w * (d_m - d_g), rtol=1e-14, atol=1e-13)


def test_w_one_costs_one_call() -> None:
    main, guide = Counting(1.0, 0.0), Counting(2.0, 0.0)
    g = guided(main, guide, 1.0)
    x = torch.randn(2, 3)
    torch.testing.assert_close(g(x, torch.ones(2)), x)
    assert (main.calls, guide.calls) == (1, 0)
    g0 = guided(main, guide, 0)
    torch.testing.assert_close(g0(x, torch.ones(2)), 2 * x)


def test_sigma_interval_mask_and_host() -> None:
    x = torch.randn(3, 2, dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    for mode in ("mask", "host", "auto"):
        main, guide = Counting(1.0, 0.0), Counting(0.0, 0.0)
        g = guided(main, guide, 3.0, sigma_interval=(0.5, 2.0), interval_check=mode)  # type: ignore[arg-type]
        d = g(x, sigma)
        # Row 1 is guided (D = 3 x); rows 0 and 2 are D_main = x.
        torch.testing.assert_close(d, torch.stack([x[0], 3 * x[1], x[2]]), rtol=0, atol=1e-15)
        # All rows outside: "host" and "auto" (eager) skip the guide network, "mask" still evaluates it.
        d_out = g(x, torch.full((3,), 50.0, dtype=torch.float64))
        torch.testing.assert_close(d_out, x, rtol=0, atol=0)
        assert guide.calls == (2 if mode == "mask" else 1)
        assert main.calls == 2
    # Interval ends are inclusive.
    main, guide = Counting(1.0, 0.0), Counting(0.0, 0.0)
    d = guided(main, guide, 2.0, sigma_interval=(0.5, 2.0))(x[:2], torch.tensor([0.5, 2.0], dtype=torch.float64))
    torch.testing.assert_close(d, 2 * x[:2])


def test_cfg_guide_cond_and_sampling() -> None:
    # CFG: the same network, the guide call overrides the condition.
    main = Counting(1.0, 0.0)
    g = guided(main, main, 2.0, guide_cond={"class_labels": None})
    g(torch.randn(2, 3), torch.ones(2), class_labels=torch.tensor([1, 2]), other=5)
    assert main.conds[0]["class_labels"] is not None and main.conds[1]["class_labels"] is None
    assert main.conds[1]["other"] == 5
    # Autoguidance with two exact denoisers of Gaussians: guiding with a wider Gaussian sharpens the samples.
    mu = torch.zeros(1, 2, dtype=torch.float64)
    sharp, wide = GaussianMixture(mu, 0.5), GaussianMixture(mu, 1.0)
    x = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80
    sig = karras_sigmas(32)
    plain = heun_sample(sharp, x, sig)
    auto = heun_sample(guided(sharp, wide, 2.0), x, sig)
    # The ODE maps N(0, 80^2) to N(0, 0.5^2) exactly for the sharp model; guidance must shrink the spread.
    assert float(plain.std()) == pytest.approx(0.5, rel=0.05)  # 4000 x 2 samples: std of std ~ 1%
    assert float(auto.std()) < 0.45


def test_guided_forwards_range_and_compiles() -> None:
    pre = EDMPrecond(lambda x_in, c: x_in, sigma_min=0.01, sigma_max=50.0)
    g = guided(pre, pre, 1.5, sigma_interval=(0.1, 5.0))
    assert (g.sigma_min, g.sigma_max) == (0.01, 50.0)
    assert float(clamp_sigmas(karras_sigmas(5), denoiser=g)[0]) == 50.0
    x = torch.randn(3, 4)
    sigma = torch.tensor([0.05, 1.0, 20.0])
    compiled = torch.compile(g, fullgraph=True, backend="eager")  # "mask" mode has no graph break
    torch.testing.assert_close(compiled(x, sigma), g(x, sigma), rtol=0, atol=0)


def test_errors() -> None:
    d = Counting(1.0, 0.0)
    with pytest.raises(TypeError, match="main must be a denoiser"):
        guided(3, d, 2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="guide must be a denoiser"):
        guided(d, None, 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="w must be finite"):
        guided(d, d, float("nan"))
    with pytest.raises(TypeError, match="w must be a real number"):
        guided(d, d, "2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma_interval must satisfy lo <= hi"):
        guided(d, d, 2.0, sigma_interval=(3.0, 1.0))
    with pytest.raises(TypeError, match="sigma_interval must be a pair"):
        guided(d, d, 2.0, sigma_interval=(1.0,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval_check must be 'auto', 'host' or 'mask'"):
        guided(d, d, 2.0, interval_check="always")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="guide_cond must be a mapping"):
        guided(d, d, 2.0, guide_cond=[1])  # type: ignore[arg-type]


# ---- batched classifier-free guidance ----------------------------------------------------------------------


class Net:
    """A nonlinear conditional "network": D = tanh(x W + emb[label] + ctx.mean + sigma); counts calls and rows."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(4, 4, generator=g)
        self.emb = torch.randn(11, 4, generator=g)
        self.calls: list[int] = []

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        self.calls.append(x.shape[0])
        out = x @ self.w + self.emb[cond["class_labels"]] + sigma[:, None]
        extra = cond.get("extra")
        if extra is not None:  # nested: a mapping holding a [batch, L, 4] context and a shared [L] weight
            out = out + (extra["ctx"] * extra["pos"][None, :, None]).mean(1)
        return torch.tanh(out) * cond.get("scale", 1.0)


def _cfg_inputs(batch: int = 5) -> tuple[Tensor, Tensor, dict[str, Any], dict[str, Any]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 4, generator=g)
    sigma = torch.rand(batch, generator=g) * 3
    ctx = torch.randn(batch, 3, 4, generator=g)
    pos = torch.rand(3, generator=g)  # no batch dimension: shared by both calls, passed once
    cond = {"class_labels": torch.arange(batch) % 10, "extra": {"ctx": ctx, "pos": pos}, "scale": 2.0}
    null = {"class_labels": torch.full((batch,), 10), "extra": {"ctx": torch.zeros_like(ctx), "pos": pos}}
    return x, sigma, cond, null


@pytest.mark.parametrize("w", [0.0, 0.5, 3.0])
@pytest.mark.parametrize("interval", [None, (0.5, 2.0), (10.0, 20.0)])
@pytest.mark.parametrize("mode", ["auto", "host", "mask"])
def test_batched_equals_two_calls(w: float, interval: tuple[float, float] | None, mode: str) -> None:
    x, sigma, cond, null = _cfg_inputs()
    net = Net()
    kw: dict[str, Any] = {"guide_cond": null, "sigma_interval": interval, "interval_check": mode}
    two = guided(net, net, w, batched=False, **kw)
    one = guided(net, net, w, **kw)
    want = two(x, sigma, **cond)
    n_two = len(net.calls)
    got = one(x, sigma, **cond)
    # One [2B] matmul vs two [B] ones: the same dot products, possibly blocked differently by the CPU kernel;
    # float32 round-off of a sum of 4 products, then tanh (contracting) times 2.
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    skipped = interval == (10.0, 20.0) and mode != "mask"  # no row inside: the guide is never called
    assert net.calls[n_two:] == ([5] if skipped else [10]) and net.calls[:n_two] == ([5] if skipped else [5, 5])
    d, u = one.both(x, sigma, **cond)
    d2, u2 = two.both(x, sigma, **cond)
    torch.testing.assert_close((d, u), (d2, u2), rtol=1e-6, atol=1e-6)  # same bound as above


def test_batched_falls_back_and_w_one_is_one_call() -> None:
    x, sigma, cond, null = _cfg_inputs()
    net = Net()
    guided(net, net, 1.0, guide_cond=null)(x, sigma, **cond)
    assert net.calls == [5]
    # A condition the two calls cannot share (a tensor vs None) falls back to two calls, decided statically.
    g = guided(net, net, 2.0, guide_cond={"extra": None})
    g(x, sigma, **cond)
    assert net.calls[1:] == [5, 5]
    with pytest.raises(ValueError, match=r"batched=True, but .* cond\['extra'\]: dict / NoneType"):
        guided(net, net, 2.0, guide_cond={"extra": None}, batched=True)(x, sigma, **cond)
    # Autoguidance (two networks) is always two calls; batched=True is an error there.
    other = Net()
    guided(net, other, 2.0)(x, sigma, **cond)
    assert net.calls[-1] == 5 and other.calls == [5]
    with pytest.raises(ValueError, match="batched=True needs main and guide to be the same denoiser"):
        guided(net, other, 2.0, batched=True)
    with pytest.raises(TypeError, match="batched must be None"):
        guided(net, net, 2.0, batched="yes")  # type: ignore[arg-type]
    # A scalar sigma is broadcast to the rows; a denoiser returning the wrong batch is named.
    torch.testing.assert_close(
        guided(net, net, 2.0, guide_cond=null)(x, torch.tensor(1.5), **cond),
        guided(net, net, 2.0, guide_cond=null, batched=False)(x, torch.full((5,), 1.5), **cond),
        rtol=1e-6, atol=1e-6,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"returned \(5, 4\) for a batch of 2 x 5"):
        bad = lambda x, s, **c: x[:5]  # noqa: E731
        guided(bad, bad, 2.0)(x, sigma)


def test_null_condition_conventions() -> None:
    labels = torch.tensor([1, 2, 3])
    net = Net()
    with pytest.raises(ValueError, match="cannot tell the null class of Net: pass null_class="):
        null_condition(net, {"class_labels": labels})
    out = null_condition(net, {"class_labels": labels, "scale": 2.0}, null_class=10)
    assert set(out) == {"class_labels"} and out["class_labels"].tolist() == [10, 10, 10]
    assert out["class_labels"].dtype == labels.dtype
    # Text models: the empty-prompt embedding is the caller's; a [1, ...] one expands to the batch (a view).
    text = {"encoder_hidden_states": torch.randn(3, 7, 8)}
    with pytest.raises(ValueError, match=r"text condition \['encoder_hidden_states'\].*empty prompt"):
        null_condition(net, text)
    empty = torch.randn(1, 7, 8)
    out = null_condition(net, text, encoder_hidden_states=empty)
    ehs = out["encoder_hidden_states"]
    assert ehs.shape == (3, 7, 8) and ehs.data_ptr() == empty.data_ptr()
    with pytest.raises(ValueError, match=r"not keys of cond"):
        null_condition(net, text, encoder_hidden_state=empty)
    with pytest.raises(ValueError, match="null_class was given but cond has no 'class_labels'"):
        null_condition(net, text, null_class=3, encoder_hidden_states=empty)
    with pytest.raises(TypeError, match="cond must be the mapping"):
        null_condition(net, [1])  # type: ignore[arg-type]


def test_guided_forwards_support_for_an_infinite_first_level() -> None:
    # A guided eps-prediction adapter would be NaN at sigma = inf: the samplers' entry must refuse it as it
    # refuses the adapter alone; a guided pair of denoisers defined at inf samples from it.
    import math

    from edm_samplers import euler_sample
    from edm_samplers.adapters import DDPMDenoiser
    from edm_samplers.evaluation import GaussianMixture

    abar = torch.linspace(0.99, 0.01, 10, dtype=torch.float64)
    eps_model = DDPMDenoiser(lambda x, t: torch.zeros_like(x), abar, prediction="eps")
    g = guided(eps_model, eps_model, 2.0)
    assert g.supports_infinite_sigma is False
    with pytest.raises(ValueError, match="sigma = inf"):
        euler_sample(g, torch.zeros(2, 3), [math.inf, 1.0, 0.0])
    gm = GaussianMixture(torch.tensor([[1.0, 0.0, -1.0]], dtype=torch.float64), 0.5)
    out = euler_sample(guided(gm, gm, 2.0), torch.ones(2, 3, dtype=torch.float64), [math.inf, 1.0, 0.0])
    assert bool(torch.isfinite(out).all())
