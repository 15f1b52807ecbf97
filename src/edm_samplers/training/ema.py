"""Exponential moving averages of network weights, for sampling from a smoothed model.

- :class:`EMA`: the EDM recipe. The decay per step is chosen so that the weight of past values halves
  every ``half_life`` training *images* (not steps), so changing the batch size does not change the
  averaging horizon: beta = 0.5 ** (batch_size / h), with an optional ramp-up
  h = min(half_life, rampup_ratio * images_seen) that keeps early averages from being dominated by
  the random initialisation.
- :class:`PowerEMA`: EDM2's power-function EMA (Karras et al. 2024, "Analyzing and Improving the
  Training Dynamics of Diffusion Models", Sec. 3). After t steps it weighs past steps tau by
  tau^gamma, i.e. beta_t = (1 - 1/t)^(gamma + 1); its width is given as the relative standard
  deviation sigma_rel of that profile, sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)).

Both keep an fp32 (or the parameter's dtype, if wider) copy of every floating parameter and buffer;
``copy_to(module)`` writes the average into a module of the same architecture (for sampling or
saving), and ``state_dict()`` / ``load_state_dict()`` checkpoint the average itself.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._validate import check_float, check_int

__all__ = ["EMA", "PowerEMA", "gamma_to_sigma_rel", "sigma_rel_to_gamma"]


def _init_shadow(module: nn.Module) -> dict[str, Tensor]:
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    out: dict[str, Tensor] = {}
    for name, t in module.state_dict().items():
        t = t.detach()
        out[name] = t.to(torch.promote_types(t.dtype, torch.float32)).clone() if t.is_floating_point() else t.clone()
    return out


class _Averager:
    shadow: dict[str, Tensor]

    @torch.no_grad()
    def _blend(self, module: nn.Module, beta: float) -> None:
        # Non-floating entries (e.g. BatchNorm counters) are copied, floating ones averaged:
        # shadow <- beta * shadow + (1 - beta) * current.
        for name, t in module.state_dict().items():
            s = self.shadow.get(name)
            if s is None or s.shape != t.shape:
                raise ValueError(
                    f"module entry {name!r} does not match the averaged copy; use the module the average was built from"
                )
            if s.is_floating_point():
                s.lerp_(t.detach().to(device=s.device, dtype=s.dtype), 1.0 - beta)
            else:
                s.copy_(t.detach())

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Write the averaged weights into ``module`` (same architecture), cast to its dtypes."""
        module.load_state_dict({k: v.to(module.state_dict()[k].dtype) for k, v in self.shadow.items()})

    def to(self, device: torch.device | str) -> None:
        """Move the averaged copy to ``device`` (in place)."""
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}


class EMA(_Averager):
    """EMA with a half-life measured in training images (EDM's ``ema_halflife_kimg``).

    Each :meth:`update` after a step on ``batch_size`` images uses
    beta = 0.5 ** (batch_size / h), h = min(half_life, rampup_ratio * images_seen) (no ramp-up when
    ``rampup_ratio`` is None), so the contribution of a set of weights halves every h images.

    Args:
        module: the trained network; its floating state is copied (at least fp32).
        half_life: half-life in images (EDM: 500k for CIFAR-10; a few tens of thousands for small sets).
        rampup_ratio: ramp-up fraction (EDM: 0.05) or None.

    Example::

        ema = EMA(net, half_life=50_000)
        for images in loader:
            ...; opt.step()
            ema.update(net, batch_size=images.shape[0])  # total batch over all processes
        ema.copy_to(net_for_sampling)
    """

    def __init__(self, module: nn.Module, half_life: float, rampup_ratio: float | None = 0.05) -> None:
        self.half_life = check_float(half_life, "half_life", positive=True)
        self.rampup_ratio = None if rampup_ratio is None else check_float(rampup_ratio, "rampup_ratio", positive=True)
        self.shadow = _init_shadow(module)
        self.images_seen = 0

    def beta(self, batch_size: int) -> float:
        """The decay the next :meth:`update` with ``batch_size`` images will use."""
        h = self.half_life
        n = self.images_seen + batch_size
        if self.rampup_ratio is not None:
            h = min(h, self.rampup_ratio * n)
        return float(0.5 ** (batch_size / max(h, 1e-8)))

    def update(self, module: nn.Module, batch_size: int) -> None:
        """Blend the current weights of ``module`` in, after a step on ``batch_size`` images."""
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        beta = self.beta(batch_size)
        self.images_seen += batch_size
        self._blend(module, beta)

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged weights plus ``__images_seen__`` (an int64 scalar)."""
        return {**self.shadow, "__images_seen__": torch.tensor(self.images_seen, dtype=torch.int64)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        state = dict(state)
        self.images_seen = int(state.pop("__images_seen__", torch.tensor(0)))
        if state.keys() != self.shadow.keys():
            raise ValueError("state does not match this EMA's module (different parameter names)")
        self.shadow = {k: v.clone() for k, v in state.items()}


def gamma_to_sigma_rel(gamma: float) -> float:
    """Relative std of the power-function profile tau^gamma on [0, 1]:
    sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3)))."""
    g = check_float(gamma, "gamma")
    if g <= -1:
        raise ValueError(f"gamma must be > -1, got {g}")
    return math.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3)))


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """Invert :func:`gamma_to_sigma_rel`: the largest real root of
    gamma^3 + 7 gamma^2 + (16 - sigma_rel^-2) gamma + (12 - sigma_rel^-2) = 0.

    The cubic follows from squaring sigma_rel and clearing denominators; sigma_rel must lie in
    (0, sqrt(1/12)) (sqrt(1/12) = 0.2887 is the std of the uniform profile, gamma = 0).
    """
    s = check_float(sigma_rel, "sigma_rel", positive=True)
    if not s < math.sqrt(1 / 12):
        raise ValueError(f"sigma_rel must be in (0, {math.sqrt(1 / 12):.4f}) (EDM2 uses 0.05 to 0.10), got {s}")
    import numpy as np

    k = s**-2
    roots = np.roots([1.0, 7.0, 16.0 - k, 12.0 - k])
    return float(roots.real[np.abs(roots.imag) < 1e-9].max())


class PowerEMA(_Averager):
    """EDM2's power-function EMA with relative width ``sigma_rel`` (e.g. 0.05 to 0.10).

    After the t-th :meth:`update` (t counted in steps, starting at 1) the average is
    theta_hat_t = beta_t theta_hat_{t-1} + (1 - beta_t) theta_t with beta_t = (1 - 1/t)^(gamma + 1),
    which weighs the step-tau weights proportionally to tau^gamma (the first update copies the
    weights). Unlike :class:`EMA`, its length scales with training, so no half-life is needed.

    Args:
        module: the trained network.
        sigma_rel: relative std of the averaging profile (default 0.05; or pass ``gamma`` instead).
        gamma: the exponent directly (> -1).
    """

    def __init__(self, module: nn.Module, sigma_rel: float | None = None, *, gamma: float | None = None) -> None:
        if sigma_rel is not None and gamma is not None:
            raise ValueError("pass at most one of sigma_rel (e.g. 0.05) and gamma (e.g. 6.94)")
        if sigma_rel is None and gamma is None:
            sigma_rel = 0.05
        if sigma_rel is not None:
            self.gamma = sigma_rel_to_gamma(sigma_rel)
        else:
            g = check_float(gamma, "gamma")
            if g <= -1:
                raise ValueError(f"gamma must be > -1, got {g}")
            self.gamma = g
        self.shadow = _init_shadow(module)
        self.steps = 0

    def beta(self) -> float:
        """The decay the next :meth:`update` will use: (1 - 1/t)^(gamma + 1) for t = steps + 1."""
        t = self.steps + 1
        return float((1.0 - 1.0 / t) ** (self.gamma + 1.0))

    def update(self, module: nn.Module) -> None:
        beta = self.beta()
        self.steps += 1
        self._blend(module, beta)

    def state_dict(self) -> dict[str, Tensor]:
        return {**self.shadow, "__steps__": torch.tensor(self.steps, dtype=torch.int64)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        state = dict(state)
        self.steps = int(state.pop("__steps__", torch.tensor(0)))
        if state.keys() != self.shadow.keys():
            raise ValueError("state does not match this EMA's module (different parameter names)")
        self.shadow = {k: v.clone() for k, v in state.items()}
