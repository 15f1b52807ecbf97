"""Published Align-Your-Steps schedules (Sabour, Fidler, Kreis 2024) and their log-linear interpolation.

Align Your Steps (AYS, arXiv 2404.14507) optimised 10-step sampling schedules for three public models and
published them as lists of 11 noise levels (10 steps, from sigma_max down to the model's sigma_min):

- Stable Diffusion 1.5 and SDXL (discrete-time VP models, scaled-linear betas 0.00085..0.012, 1000 steps): the
  published *timesteps* ``[999, 850, 736, 645, 545, 455, 343, 233, 124, 24, 0]`` (SD 1.5) and
  ``[999, 845, 730, 587, 443, 310, 193, 116, 53, 13, 0]`` (SDXL), and the optimised sigmas to three decimals
  (``[14.615, 6.475, 3.861, ...]``), which :data:`AYS_SIGMAS` holds. Each published timestep is the model's
  discrete level nearest to the published sigma (within one timestep: the model's own
  sigma_t = sqrt((1 - abar_t) / abar_t) at the timesteps differs from the sigmas by up to 0.1 %, e.g.
  3.8637 at t = 736 for the published 3.861; ComfyUI ships those timestep levels instead).
- Stable Video Diffusion (an EDM-style continuous model): the published sigmas
  ``[700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002]``.

Sources: NVIDIA's project page and quick-start guide (research.nvidia.com/labs/toronto-ai/AlignYourSteps/,
``howto.html``: the lists and the ``loglinear_interp`` recipe for other step counts); the same numbers are in
diffusers' ``AysSchedules`` (``diffusers.schedulers.scheduling_utils``, final level written as 0) and
ComfyUI's ``AlignYourStepsScheduler`` (``comfy_extras/nodes_align_your_steps.py``, SD levels taken at the
timesteps). Other step counts come from the published recipe: log sigma interpolated piecewise-linearly in
the normalised index (``np.interp`` on ``linspace(0, 1, 11)``), then, as diffusers and ComfyUI do, the last
level (the model's sigma_min) is replaced by 0 so that the final step returns the denoised sample.

These schedules are for the models they were optimised for (combine them with the library's adapters for
diffusers' VP models, e.g. :func:`~edm_samplers.from_diffusers`, and :func:`~edm_samplers.clamp_sigmas` to
round onto a discrete model's levels); on other models they are just another hand-made schedule.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._validate import check_device, check_float_dtype, check_int, check_sigmas, check_strict_schedule

__all__ = ["AYS_SIGMAS", "AYS_TIMESTEPS", "ays_sigmas", "loglinear_interp"]

AYS_TIMESTEPS: dict[str, tuple[int, ...]] = {
    "sd15": (999, 850, 736, 645, 545, 455, 343, 233, 124, 24, 0),
    "sdxl": (999, 845, 730, 587, 443, 310, 193, 116, 53, 13, 0),
}
"""The published 10-step AYS timesteps of the discrete-time models (11 entries: 10 steps)."""

AYS_SIGMAS: dict[str, tuple[float, ...]] = {
    "sd15": (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029),
    "sdxl": (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029),
    "svd": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}
"""The published 10-step AYS noise levels (11 entries, the last one the model's sigma_min)."""


def loglinear_interp(levels: Tensor | Sequence[float], num_points: int) -> Tensor:
    """AYS's recipe for other step counts: ``num_points`` levels, log sigma piecewise-linear in the index.

    With K given levels s_0 > ... > s_{K-1} > 0 placed at u_k = k / (K - 1), the j-th new level is
    exp of the linear interpolation of ln s at u = j / (num_points - 1). Both end levels are kept, the result
    is strictly decreasing, and ``num_points = K`` returns the levels themselves (to round-off).

    Returns:
        ``num_points`` float64 levels on the CPU (no final 0 appended).

    Raises:
        ValueError / TypeError: unless ``levels`` has at least 2 positive, strictly decreasing finite values and
            ``num_points >= 2`` is an int.
    """
    s = check_sigmas(levels, name="levels", final_zero=False)
    if s.numel() < 2 or bool((s <= 0).any()) or bool((s[1:] >= s[:-1]).any()):
        raise ValueError(f"levels must be >= 2 positive, strictly decreasing values, got {s.tolist()}"[:300])
    n = check_int(num_points, "num_points", minimum=2)
    k = s.numel()
    logs = torch.log(s)
    u = torch.arange(n, dtype=torch.float64) * ((k - 1) / (n - 1))  # positions in units of the given spacing
    lo = u.floor().clamp(max=k - 2).to(torch.int64)
    frac = u - lo.to(torch.float64)
    out = torch.exp(torch.lerp(logs[lo], logs[lo + 1], frac))
    out[0], out[-1] = s[0], s[-1]  # the ends exactly (exp(log(s)) may differ in the last bit)
    return out


def ays_sigmas(
    model: str, num_steps: int = 10, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> Tensor:
    """The published Align-Your-Steps schedule of ``model`` with ``num_steps`` steps (levels, then 0).

    ``num_steps = 10`` gives the published list with its last level (the model's sigma_min) replaced by 0,
    exactly as diffusers' ``AysSchedules`` and ComfyUI's ``AlignYourStepsScheduler`` write it; other counts
    interpolate the published 11 levels to ``num_steps + 1`` with :func:`loglinear_interp` first (AYS's
    recipe). Like every builder of the library the result has ``num_steps`` positive levels then 0.

    Args:
        model: ``"sd15"`` (Stable Diffusion 1.5), ``"sdxl"`` or ``"svd"`` (Stable Video Diffusion).
        num_steps: N >= 1 steps.
        dtype, device: of the result (computed in float64).

    Raises:
        ValueError: for an unknown ``model`` (the message lists them) or ``num_steps < 1``.
    """
    if not isinstance(model, str) or model not in AYS_SIGMAS:
        raise ValueError(f"model must be one of {sorted(AYS_SIGMAS)} (the published AYS schedules), got {model!r}")
    n = check_int(num_steps, "num_steps", minimum=1)
    dt = check_float_dtype(dtype)
    dev = check_device(device)
    published = torch.tensor(AYS_SIGMAS[model], dtype=torch.float64)
    levels = published if n + 1 == published.numel() else loglinear_interp(published, n + 1)
    levels[-1] = 0.0
    what = f"ays_sigmas({model!r}, {n}) in {dt}"
    return check_strict_schedule(levels.to(dt), what, fix="use dtype=torch.float32 or torch.float64").to(device=dev)
