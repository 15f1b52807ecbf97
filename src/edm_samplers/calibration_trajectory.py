"""Converged trajectories for :func:`~edm_samplers.calibrate`'s ``trajectory=`` objective: computing one
(:func:`reference_trajectory`), checking a given one, and reading its state at any level."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ._types import Denoiser, StepInfo
from ._validate import check_float, check_int, check_x
from .schedules import karras_sigmas
from .solvers import heun_sample

__all__ = ["reference_trajectory"]


class Path:
    """A checked trajectory: decreasing positive ``sigmas`` [L] (float64) and the ``states`` [L, *x.shape] there."""

    def __init__(self, sigmas: Tensor, states: Tensor) -> None:
        self.sigmas, self.states = sigmas, states
        self._ascending = sigmas.flip(0).tolist()  # host floats, once: bisect per lookup, no tensor per call

    def pair(self) -> tuple[Tensor, Tensor]:
        return self.sigmas, self.states

    def at(self, sigma: float) -> Tensor:
        """The state at ``sigma``: linear in sigma between the two nearest levels (clamped at the ends)."""
        n = len(self._ascending)
        j = n - bisect.bisect_right(self._ascending, sigma)  # sigmas[:j] > sigma >= sigmas[j:]
        if j <= 0:
            return self.states[0]
        if j >= n:
            return self.states[n - 1]
        a, b = self._ascending[n - j], self._ascending[n - 1 - j]  # sigmas[j - 1], sigmas[j]
        t = (a - sigma) / (a - b)
        out: Tensor = self.states[j - 1] * (1 - t) + self.states[j] * t
        return out


def resolve(
    trajectory: object, denoiser: Denoiser, x: Tensor, hi: float, cond: Mapping[str, Any] | None
) -> tuple[Path | None, Tensor | None]:
    """``calibrate``'s ``trajectory=`` as a checked :class:`Path` (or None), and the end point at sigma = 0 when
    the trajectory is computed here (else None)."""
    if trajectory is False or trajectory is None:
        return None, None
    if isinstance(trajectory, tuple):
        if len(trajectory) != 2 or not all(isinstance(t, Tensor) for t in trajectory):
            raise TypeError("trajectory must be True, a number of Heun steps, or a (sigmas, states) pair of tensors")
        sig, st = trajectory
        sig = sig.detach().to(torch.float64).reshape(-1)
        if sig.numel() < 2 or not bool((sig > 0).all()) or not bool((sig[1:] < sig[:-1]).all()):
            raise ValueError("trajectory sigmas must be >= 2 strictly decreasing positive levels (no final 0)")
        if tuple(st.shape) != (sig.numel(), *x.shape) or not bool(torch.isfinite(st).all()):
            raise ValueError(
                f"trajectory states must be finite, of shape [len(sigmas), *x.shape] = {[sig.numel(), *x.shape]}, "
                f"got {list(st.shape)}"
            )
        return Path(sig, st.detach()), None
    steps = 64 if trajectory is True else check_int(trajectory, "trajectory", minimum=2)
    sig, st, end = reference_trajectory(denoiser, x, steps, sigma_max=hi, sigma_min=min(0.002, hi / 2), cond=cond)
    return Path(sig, st), end


def reference_trajectory(
    denoiser: Denoiser,
    x: Tensor,
    steps: int = 64,
    *,
    sigma_max: float = 80.0,
    sigma_min: float = 0.002,
    cond: Mapping[str, Any] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The converged trajectory of ``x`` for :func:`calibrate`'s ``trajectory=`` (computed once, shared by calls).

    Heun on ``karras_sigmas(steps, sigma_min, sigma_max)`` from ``x`` at ``sigma_max``, every state kept.

    Returns:
        ``(sigmas, states, end)``: the positive levels ``[steps]`` (float64, decreasing, from ``sigma_max``), the
        states there ``[steps, *x.shape]`` (``states[0]`` is ``x``) and the end point at sigma = 0 (the reference):
        ``calibrate(..., reference=end, trajectory=(sigmas, states))``.
    """
    check_x(x)
    steps = check_int(steps, "steps", minimum=2)
    hi = check_float(sigma_max, "sigma_max", positive=True)
    lo = check_float(sigma_min, "sigma_min", positive=True)
    if not lo < hi:
        raise ValueError(f"sigma_min must be below sigma_max, got {lo} and {hi}")
    levels: list[float] = [hi]
    states: list[Tensor] = [x.detach().clone()]

    def keep(info: StepInfo) -> None:
        levels.append(info.sigma_next)
        states.append(info.x_next.detach().clone())

    with torch.no_grad():
        heun_sample(denoiser, x, karras_sigmas(steps, lo, hi), cond=cond, dtype=x.dtype, check_finite=False,
                    callback=keep)  # fmt: skip
    # the positive levels; the last entry, at 0, is the end point (the reference)
    return torch.tensor(levels[:-1], dtype=torch.float64), torch.stack(states[:-1]), states[-1]
