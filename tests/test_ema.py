"""EMA with a half-life in images, and EDM2's power-function EMA."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edm_samplers.training import EMA, PowerEMA
from edm_samplers.training.ema import gamma_to_sigma_rel, sigma_rel_to_gamma


def _lin(value: float) -> nn.Linear:
    m = nn.Linear(3, 2)
    with torch.no_grad():
        m.weight.fill_(value)
        m.bias.fill_(value)
    return m


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([1, 4, 32, 100]), st.floats(10.0, 1e4))
def test_half_life_in_images(batch: int, half_life: float) -> None:
    # Average starts at 0; the model is then held at 1. After k updates the remaining weight of the
    # initial value is beta^k = 0.5^(k batch / half_life) exactly: the half-life is counted in images.
    ema = EMA(_lin(0.0), half_life=half_life, rampup_ratio=None)
    target = _lin(1.0)
    k = 7
    for _ in range(k):
        ema.update(target, batch_size=batch)
    expect = 1 - 0.5 ** (k * batch / half_life)
    # float32 shadow: each lerp rounds at ~6e-8 relative; 7 of them stay far below 1e-5
    torch.testing.assert_close(ema.shadow["weight"], torch.full((2, 3), expect), rtol=1e-5, atol=1e-6)


def test_rampup_limits_half_life_and_constant_weights_stay() -> None:
    ema = EMA(_lin(0.5), half_life=1e6, rampup_ratio=0.05)
    # first update: h = min(1e6, 0.05 * 10) = 0.5 images, beta = 0.5 ** (10 / 0.5)
    assert ema.beta(10) == pytest.approx(0.5**20)
    for _ in range(5):
        ema.update(_lin(0.5), batch_size=10)
    assert torch.equal(ema.shadow["weight"], torch.full((2, 3), 0.5))
    assert ema.images_seen == 50


def test_copy_to_state_dict_roundtrip() -> None:
    src = _lin(2.0)
    ema = EMA(src, half_life=100)
    ema.update(_lin(4.0), batch_size=100)
    dst = _lin(0.0)
    ema.copy_to(dst)
    torch.testing.assert_close(dst.weight, ema.shadow["weight"])
    other = EMA(_lin(0.0), half_life=100)
    other.load_state_dict(ema.state_dict())
    assert other.images_seen == 100 and torch.equal(other.shadow["bias"], ema.shadow["bias"])


def test_non_float_buffers_are_copied() -> None:
    bn = nn.BatchNorm1d(2)
    ema = EMA(bn, half_life=10)
    bn.num_batches_tracked += 3
    ema.update(bn, batch_size=1)
    assert int(ema.shadow["num_batches_tracked"]) == 3


@settings(max_examples=30, deadline=None)
@given(st.floats(0.01, 0.28))
def test_sigma_rel_gamma_inverse(sigma_rel: float) -> None:
    g = sigma_rel_to_gamma(sigma_rel)
    assert g > -1
    assert gamma_to_sigma_rel(g) == pytest.approx(sigma_rel, rel=1e-9)


def test_sigma_rel_known_values() -> None:
    # gamma = 0 is the uniform average: std of U(0, 1) = sqrt(1/12); EDM2 (Sec. 3.1) pairs
    # sigma_rel = 0.05 and 0.10 with gamma = 16.97 and 6.94
    assert gamma_to_sigma_rel(0.0) == pytest.approx(math.sqrt(1 / 12))
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)


def test_power_ema_weights_follow_tau_power_gamma() -> None:
    # Feed theta_t = t (a scalar); the power EMA is sum_t t^gamma * t / sum_t t^gamma up to the
    # discretisation of the profile: compare with the recursion's exact closed form
    # theta_hat_T = sum_t w_t theta_t with w_t = (1 - beta_t) prod_{s > t} beta_s.
    gamma = 2.0
    ema = PowerEMA(_lin(0.0), gamma=gamma)
    betas = []
    for t in range(1, 51):
        betas.append(ema.beta())
        ema.update(_lin(float(t)))
    w = []
    for t in range(1, 51):
        prod = math.prod(betas[t:])
        w.append((1 - betas[t - 1]) * prod)
    expect = sum(wt * t for wt, t in zip(w, range(1, 51), strict=True))
    assert sum(w) == pytest.approx(1.0)
    assert float(ema.shadow["bias"][0]) == pytest.approx(expect, rel=1e-5)  # float32 accumulation
    # and the profile is ~ t^gamma: the weight ratio of steps 50 and 25 is ~ 2^gamma
    assert w[49] / w[24] == pytest.approx(2**gamma, rel=0.1)


def test_errors() -> None:
    with pytest.raises(ValueError, match="half_life"):
        EMA(_lin(0.0), half_life=0)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        EMA("net", half_life=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        EMA(_lin(0.0), half_life=1).update(_lin(0.0), batch_size=0)
    with pytest.raises(ValueError, match="at most one"):
        PowerEMA(_lin(0.0), sigma_rel=0.05, gamma=1.0)
    with pytest.raises(ValueError, match="sigma_rel must be in"):
        PowerEMA(_lin(0.0), sigma_rel=0.5)
    with pytest.raises(ValueError, match="does not match"):
        EMA(_lin(0.0), half_life=1).update(nn.Linear(4, 2), batch_size=1)
