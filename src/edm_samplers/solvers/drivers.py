"""Sampling loops: thin drivers over the pure steps of :mod:`.steps`.

All samplers share one signature and one contract::

    <name>_sample(denoiser, x, sigmas, *, <method knobs>, cond=None, noise=None, callback=None,
                  dtype=None, progress=False, check_finite=True) -> Tensor

- ``x`` is already at noise level ``sigmas[0]`` (use :func:`initial_x` to scale unit latents).
- ``sigmas`` is any non-increasing schedule; the step to a final 0 is always an Euler step (it
  returns D exactly).
- The state integrates in x's dtype promoted to at least float32 (``dtype=`` overrides; float64
  reproduces the paper's reference numerics). The result is returned in that dtype.
- Randomness only through ``noise`` (a NoiseSource, a ``torch.Generator`` or None for torch's global
  RNG). Deterministic samplers draw nothing; stochastic ones draw once per step, whatever the churn.
- Gradient mode is the caller's: nothing here disables autograd.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor

from .._types import Callback, Denoiser, NoiseSource, StepInfo
from .._validate import (
    check_callback,
    check_cond,
    check_cond_batch,
    check_denoised_on,
    check_denoiser,
    check_float,
    check_has_data,
    check_round_sigma,
    check_sampler_fn,
    check_shape,
    check_sigmas,
    check_sigmas_fit,
    check_x,
    state_dtype,
)
from ..noise import PerSampleNoise, as_noise_source
from .steps import StepCoeffs, churn, churn_gammas, churn_sigma_hat, euler_step, heun_step, step_table, unstack

_T = TypeVar("_T")

__all__ = [
    "count_nfe",
    "euler_sample",
    "generate",
    "heun_sample",
    "initial_x",
    "stochastic_sample",
]


def initial_x(latents: Tensor, sigmas: Tensor) -> Tensor:
    """Scale unit-variance latents to the first noise level: x_0 = latents * sigmas[0].

    The multiplication runs in float64 when ``latents`` is float64; otherwise in the promoted dtype.
    """
    check_x(latents, "latents")
    check_has_data(sigmas, "sigmas")
    s = check_sigmas(sigmas)
    dt = torch.promote_types(latents.dtype, torch.float32)
    return latents.to(dt) * float(s[0])


_ONE_NFE_PER_STEP = frozenset(
    {
        "euler",
        "euler_ancestral",
        "dpmpp_2m",
        "dpmpp_2m_sde",
        "dpmpp_3m",
        "dpmpp_3m_sde",
        "unipc",
        "deis",
        "lms",
        "ipndm",
    }
)
_TWO_NFE_PER_STEP = frozenset({"heun", "dpm2"})


def count_nfe(sigmas: Tensor | Sequence[float], method: str) -> int:
    """Network evaluations of one sampling run with N = len(sigmas) - 1 steps.

    ``method`` is a sampler's name without ``_sample``. One evaluation per step (N) for ``"euler"``,
    ``"euler_ancestral"``, the multistep solvers (``"dpmpp_2m"``, ``"dpmpp_2m_sde"``, ``"dpmpp_3m"``,
    ``"dpmpp_3m_sde"``, ``"unipc"``, ``"deis"``, ``"lms"``, ``"ipndm"``); two per step for ``"heun"`` and
    ``"dpm2"``, less one when the schedule ends in 0 (that last step is Euler). ``stochastic_sample``
    counts as ``"heun"`` (``solver="euler"``: as ``"euler"``).
    """
    check_has_data(sigmas, "sigmas")
    s = check_sigmas(sigmas)
    n = s.numel() - 1
    if method in _ONE_NFE_PER_STEP:
        return n
    if method in _TWO_NFE_PER_STEP:
        return 2 * n - int(s[-1] == 0)
    names = ", ".join(repr(m) for m in sorted(_ONE_NFE_PER_STEP | _TWO_NFE_PER_STEP))
    raise ValueError(f"method must be one of {names}, got {method!r}")


class _Checked:
    """Wraps the user's denoiser: static shape check and dtype cast of its output (no device sync)."""

    __slots__ = ("dtype", "fn")

    def __init__(self, fn: Denoiser, dtype: torch.dtype) -> None:
        self.fn = fn
        self.dtype = dtype

    def __call__(self, x: Tensor, sigma: Tensor, /, **cond: Any) -> Tensor:
        out = check_denoised_on(self.fn(x, sigma, **cond), x)
        return out if out.dtype == self.dtype else out.to(self.dtype)


def _progress(n: int, enabled: bool, desc: str) -> Iterable[int]:
    if not enabled:
        return range(n)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError("progress=True needs tqdm: pip install 'edm-samplers[cli]' (or pip install tqdm)") from None
    bar: Iterable[int] = tqdm(range(n), desc=desc, leave=False)
    return bar


def _finite_or_raise(x: Tensor, name: str) -> None:
    if x.numel() == 0:
        return
    # One reduction pass and one sync, after the loop, with no state-sized temporaries (isfinite would
    # allocate four); min and max propagate NaN and expose +-inf. Details only on failure.
    lo, hi = torch.aminmax(x.detach())
    if bool(torch.isfinite(lo) & torch.isfinite(hi)):
        return
    bad = ~torch.isfinite(x.detach()).reshape(x.shape[0], -1).all(dim=1)
    if bool(bad.any()):  # one sync, after the loop
        rows = torch.nonzero(bad).flatten().tolist()
        raise FloatingPointError(
            f"{name}: the result has non-finite values (NaN/Inf) in {len(rows)} of {x.shape[0]} samples "
            f"(rows {rows[:10]}{' ...' if len(rows) > 10 else ''}); the denoiser returned or produced "
            "non-finite values. Check the network and the schedule's range; pass check_finite=False "
            "to get the raw result anyway."
        )


class _Plan:
    """A validated sampling run for one (schedule, batch, dtype, device): the host-side work is done.

    Built by :func:`_prepare` (validation, step table on the device, host copy of the schedule); calling
    it runs the loop, which is sync-free (no ``.item()``, no branching on tensor values, no host-device
    copies), so the same object serves the eager drivers and CUDA-graph capture (:mod:`.graph`).
    """

    __slots__ = (
        "_churn", "_euler", "_heun", "compiled", "den", "device", "dtype", "host", "host_hat", "method", "n", "name",
        "stochastic", "table",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        den: _Checked,
        table: list[StepCoeffs],
        host: list[float],
        host_hat: list[float],
        method: Literal["euler", "heun"],
        stochastic: bool,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.name = name
        self.den = den
        self.table = table
        self.host = host
        self.host_hat = host_hat
        self.method = method
        self.stochastic = stochastic
        self.dtype = dtype
        self.device = device
        self.n = len(table)
        self.compiled = False
        self._churn: Callable[..., Tensor] = churn
        self._euler: Callable[..., tuple[Tensor, Tensor]] = euler_step
        self._heun: Callable[..., tuple[Tensor, Tensor]] = heun_step

    def compile(self) -> None:
        """Route every step through ``torch.compile`` (functional form: inductor fuses and plans memory).

        The denoiser is traced inside the steps; graph breaks in it are allowed (``fullgraph=False``),
        the library's own step code has none (tested with ``fullgraph=True``).
        """
        self.compiled = True
        # Own, contiguous copies of the coefficients: the shared table rows are views at different
        # storage offsets, which would make the compiled steps re-specialise (recompile) per step.
        self.table = [StepCoeffs(*(f.clone() for f in c)) for c in self.table]
        self._churn = torch.compile(churn, dynamic=False)
        self._euler = torch.compile(euler_step, dynamic=False)
        self._heun = torch.compile(heun_step, dynamic=False)

    def num_buffers(self) -> int:
        """State-sized buffers the allocation-free loop keeps (beyond the denoiser's and noise outputs)."""
        return 3 if self.method == "heun" and any(h > 0 for h in self.host[1:]) else 1

    def __call__(
        self,
        x: Tensor,
        cond: Mapping[str, Any],
        src: NoiseSource | None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Run the loop from ``x`` (already validated, any dtype: cast to the state dtype here)."""
        sdt, device, host, table = self.dtype, self.device, self.host, self.table
        den = self.den
        x = x.to(sdt)
        # Buffer reuse, decided once on the host: not when a callback may keep the step's tensors, nor
        # when autograd records through x (the steps also fall back by themselves if a denoiser output
        # requires grad). Buffers are private: the caller's x is only ever read.
        bufs: tuple[Tensor, Tensor, Tensor] | None = None
        out: Tensor | None = None
        if callback is None and not self.compiled and not (torch.is_grad_enabled() and x.requires_grad):
            out = torch.empty(x.shape, dtype=sdt, device=device)
            if self.num_buffers() == 3:
                bufs = (out, torch.empty_like(out), torch.empty_like(out))

        # ---- the loop: no syncs; the step choice is made on host floats ----------------------------
        for i in _progress(self.n, progress, self.name):
            c: StepCoeffs = table[i]
            if src is not None:
                eps = src.randn(x.shape, dtype=sdt, device=device)
                x_hat = self._churn(x, eps, c.noise_scale, out=out)
                del eps  # free the draw before the next one: one noise tensor alive at a time
            else:
                x_hat = x
            if self.method == "heun" and host[i + 1] > 0:
                x_next, denoised = self._heun(den, x_hat, c, cond, buffers=bufs)
            else:
                x_next, denoised = self._euler(den, x_hat, c, cond, out=out)
            if callback is not None:
                callback(StepInfo(i, host[i], self.host_hat[i], host[i + 1], x_hat, denoised, x_next))
            x = x_next
        return x


def _prepare(
    name: str,
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    method: Literal["euler", "heun"],
    stochastic: bool,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
    round_sigma: Callable[[Tensor], Tensor] | None,
    dtype: torch.dtype | None,
) -> _Plan:
    """Validate the denoiser, x, the schedule, dtype and churn knobs once, and build the step table;
    may synchronise (it looks at the schedule)."""
    check_denoiser(denoiser)
    check_has_data(x, "x")
    check_has_data(sigmas, "sigmas")
    x = check_x(x)
    s = check_sigmas(sigmas)
    sdt = state_dtype(x, dtype)
    check_sigmas_fit(s, sdt)
    if round_sigma is not None and not callable(round_sigma):
        raise TypeError("round_sigma must be a callable mapping a tensor of sigmas to supported sigmas")
    if stochastic:
        s_churn = check_float(s_churn, "s_churn", nonnegative=True)
        s_tmin = check_float(s_tmin, "s_tmin", nonnegative=True)
        s_tmax = check_float(s_tmax, "s_tmax", nonnegative=True, allow_inf=True)
        s_noise = check_float(s_noise, "s_noise", nonnegative=True)
        if s_tmin > s_tmax:
            raise ValueError(f"s_tmin must be <= s_tmax, got s_tmin={s_tmin}, s_tmax={s_tmax}")
    host = s.tolist()

    def build() -> tuple[list[StepCoeffs], list[float]]:
        sigma_hat = None
        if stochastic:
            gammas = churn_gammas(s, s_churn, s_tmin, s_tmax)
            sigma_hat = churn_sigma_hat(s, gammas, None)
            sigma_hat = sigma_hat if round_sigma is None else check_round_sigma(sigma_hat, round_sigma(sigma_hat))
        table = unstack(
            step_table(s, batch=x.shape[0], dtype=sdt, device=x.device, sigma_hat=sigma_hat, s_noise=s_noise)
        )
        return table, host[:-1] if sigma_hat is None else sigma_hat.tolist()

    # The table depends only on these values; building and splitting it costs ~0.3 ms of small tensor
    # ops, several us per NFE on short runs. round_sigma is an arbitrary callable: never cached.
    churn_key = (s_churn, s_tmin, s_tmax, s_noise) if stochastic else None
    key = None if round_sigma is not None else ("step_table", tuple(host), churn_key, x.shape[0], sdt, x.device)
    table, host_hat = TABLES.get(key, build)
    return _Plan(name, _Checked(denoiser, sdt), table, host, host_hat, method, stochastic, sdt, x.device)


class TableCache:
    """A small LRU of read-only coefficient tables, keyed by everything they depend on.

    Building a sampler's device tables costs small host ops and a host-to-device copy (a sync on CUDA);
    a repeat call with the same schedule, knobs, batch, dtype and device reuses them. Tables are never
    written after they are built. Used by the core drivers and :mod:`.multistep`.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._entries: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: tuple[Any, ...] | None, build: Callable[[], _T]) -> _T:
        """The entry for ``key``, built (and kept) on a miss; ``key=None`` or unhashable: built, not kept."""
        if key is None:
            return build()
        try:
            hit = self._entries.get(key)
        except TypeError:  # an unhashable part (e.g. a list option): no caching; validation in build() decides
            return build()
        if hit is not None:
            self._entries.move_to_end(key)
            value: _T = hit
            return value
        value = build()
        self._entries[key] = value
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value


TABLES = TableCache()


def _run(
    name: str,
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    method: Literal["euler", "heun"],
    stochastic: bool,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
    round_sigma: Callable[[Tensor], Tensor] | None,
    cond: Mapping[str, Any] | None,
    noise: NoiseSource | torch.Generator | None,
    callback: Callback | None,
    dtype: torch.dtype | None,
    progress: bool,
    check_finite: bool,
) -> Tensor:
    # ---- validation: once, before the loop (the rest in _prepare) ----------------------------
    cond_d = check_cond(cond)
    check_callback(callback)
    src = as_noise_source(noise) if stochastic else None
    if noise is not None and not stochastic:
        as_noise_source(noise)  # still type-check it; deterministic samplers draw nothing
    plan = _prepare(
        name, denoiser, x, sigmas, method=method, stochastic=stochastic, s_churn=s_churn, s_tmin=s_tmin,
        s_tmax=s_tmax, s_noise=s_noise, round_sigma=round_sigma, dtype=dtype,
    )  # fmt: skip
    check_cond_batch(cond_d, x.shape[0])
    x = plan(x, cond_d, src, callback, progress)
    if check_finite:
        _finite_or_raise(x, name)
    return x


def euler_sample(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    cond: Mapping[str, Any] | None = None,
    noise: NoiseSource | torch.Generator | None = None,
    callback: Callback | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    """Deterministic Euler sampler of the probability-flow ODE (order 1, 1 NFE per step, N NFE).

    Args:
        denoiser: D(x, sigma, **cond) with sigma of shape ``[batch]``.
        x: initial state at noise level ``sigmas[0]``, any shape ``[batch, ...]``.
        sigmas: non-increasing schedule, e.g. :func:`~edm_samplers.karras_sigmas`; zero only at the end.
        cond: keyword arguments passed to every denoiser call (class labels, ...).
        noise: accepted for a uniform signature; deterministic samplers draw nothing.
        callback: called with a :class:`~edm_samplers.StepInfo` after each step.
        dtype: integration dtype (default: x's dtype promoted to at least float32).
        progress: show a tqdm progress bar.
        check_finite: raise ``FloatingPointError`` if the result holds NaN/Inf (one sync at the end).

    Returns:
        The final state (at ``sigmas[-1]``; the clean sample when it is 0), in the integration dtype.

    Raises:
        TypeError / ValueError: on invalid arguments, or a denoiser output of the wrong shape.
        FloatingPointError: if ``check_finite`` and the result is not finite.
    """
    return _run(
        "euler_sample", denoiser, x, sigmas, method="euler", stochastic=False,
        s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0, round_sigma=None,
        cond=cond, noise=noise, callback=callback, dtype=dtype, progress=progress, check_finite=check_finite,
    )  # fmt: skip


def heun_sample(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    cond: Mapping[str, Any] | None = None,
    noise: NoiseSource | torch.Generator | None = None,
    callback: Callback | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    """EDM Algorithm 1: Heun's 2nd-order method, Euler on the last step to sigma = 0.

    Order 2; 2 NFE per step except the final step to 0 (1 NFE): 2N - 1 NFE, e.g. 35 for N = 18.
    Arguments, return value and errors as in :func:`euler_sample`.
    """
    return _run(
        "heun_sample", denoiser, x, sigmas, method="heun", stochastic=False,
        s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0, round_sigma=None,
        cond=cond, noise=noise, callback=callback, dtype=dtype, progress=progress, check_finite=check_finite,
    )  # fmt: skip


def stochastic_sample(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    solver: Literal["heun", "euler"] = "heun",
    round_sigma: Callable[[Tensor], Tensor] | None = None,
    cond: Mapping[str, Any] | None = None,
    noise: NoiseSource | torch.Generator | None = None,
    callback: Callback | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    check_finite: bool = True,
) -> Tensor:
    """EDM Algorithm 2: the stochastic "churn" sampler.

    At each step i, gamma_i = min(s_churn / N, sqrt(2) - 1) if s_tmin <= sigma_i <= s_tmax else 0;
    the state is raised to sigma_hat = sigma_i (1 + gamma_i) by adding fresh noise
    x_hat = x + s_noise sqrt(sigma_hat^2 - sigma_i^2) eps_i, then one ODE step (Heun, or Euler with
    ``solver="euler"``) goes from sigma_hat to sigma_{i+1}; the step to 0 is Euler. Noise is drawn on
    every step, so the random stream does not depend on the churn settings, and ``s_churn = 0``
    returns bit for bit what :func:`heun_sample` / :func:`euler_sample` return.

    Args:
        s_churn: overall stochasticity S_churn >= 0 (EDM ImageNet-64: 40).
        s_tmin, s_tmax: the sigma range [S_tmin, S_tmax] in which churn is applied (0.05, 50).
        s_noise: noise inflation S_noise (1.003).
        solver: inner ODE step, "heun" (order 2, 2N - 1 NFE) or "euler" (N NFE).
        round_sigma: optional map of sigma_hat onto levels a discrete model supports
            (e.g. a preconditioner's ``round_sigma``).
        noise: NoiseSource (e.g. :class:`~edm_samplers.PerSampleNoise`), ``torch.Generator`` or None.
        Other arguments as in :func:`euler_sample`.
    """
    if solver not in ("heun", "euler"):
        raise ValueError(f"solver must be 'heun' or 'euler', got {solver!r}")
    return _run(
        "stochastic_sample", denoiser, x, sigmas, method=solver, stochastic=True,
        s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise, round_sigma=round_sigma,
        cond=cond, noise=noise, callback=callback, dtype=dtype, progress=progress, check_finite=check_finite,
    )  # fmt: skip


def generate(
    denoiser: Denoiser,
    seeds: Iterable[int],
    shape: Sequence[int],
    sigmas: Tensor | Sequence[float],
    *,
    sampler: Callable[..., Tensor] = heun_sample,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    cond: Mapping[str, Any] | None = None,
    **sampler_kwargs: Any,
) -> Tensor:
    """Sample one image per seed, like EDM's ``generate.py``: latents, scaling and sampling in one call.

    Each seed gets its own generator (:class:`~edm_samplers.PerSampleNoise`): its unit latent is drawn
    first, scaled by ``sigmas[0]``, and the same generator feeds any churn noise, so every sample
    depends only on its seed.

    Args:
        denoiser: D(x, sigma, **cond).
        seeds: one int per sample.
        shape: the shape of one sample, e.g. ``(3, 32, 32)``.
        sigmas: the schedule.
        sampler: any sampler of the library (default :func:`heun_sample`).
        device: where to sample (default CPU).
        dtype: integration dtype (float64 reproduces the reference numerics).
        cond: keyword arguments for the denoiser.
        **sampler_kwargs: method knobs of ``sampler`` (e.g. ``s_churn=40``).

    Returns:
        Tensor ``[len(seeds), *shape]`` in ``dtype``.
    """
    check_sampler_fn(sampler)
    src = PerSampleNoise(seeds)
    shp = check_shape(shape)
    if "noise" in sampler_kwargs:
        raise TypeError("generate() builds the noise source from seeds; do not pass noise=")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    check_has_data(dev, "device")
    dtype = state_dtype(torch.empty(0), dtype)
    check_has_data(sigmas, "sigmas")
    s = check_sigmas(sigmas)
    latents = src.randn((len(src), *shp), dtype=dtype, device=dev)
    x = latents * s[0].to(dtype)
    return sampler(denoiser, x, s, cond=cond, noise=src, dtype=dtype, **sampler_kwargs)
