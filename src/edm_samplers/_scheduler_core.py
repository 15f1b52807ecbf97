"""The diffusers scheduler protocol over the solver registry, without diffusers' base classes: what
:class:`~edm_samplers.diffusers_scheduler.EDMSamplerScheduler` adds to ``SchedulerMixin`` / ``ConfigMixin``
(``set_timesteps``, ``scale_model_input``, ``step``, ``add_noise``, the step driver). Private; the public class and
its lazy construction live in :mod:`edm_samplers.diffusers_scheduler`.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ._network import append_dims
from ._reentry import PROBES, Request, Stepper, Threaded, identity, probe_program
from ._scheduler_families import Hooks, PipelineNoise, build_hooks
from ._scheduler_families import family_of as _family
from ._scheduler_levels import check_schedule_option, levels_for
from .solvers.registry import SolverSpec, get, label, names, parse_label
from .solvers.runtime import prepare, schedule

__all__ = ["SchedulerCore", "output_class"]


def _plain_names() -> list[str]:
    """The registry samplers a pipeline can drive (not the CFG++ ones, which need both estimates)."""
    return [n for n in names() if not get(n).guided]


# ---- the schedule --------------------------------------------------------------------------------------


class _Plan(NamedTuple):
    """What ``set_timesteps`` fixes: the levels, and per model call its sigma row, scale and step."""

    levels: Tensor  # [N + 1] float64 CPU
    call_sigma: list[float]  # per model call, the state-dtype value as a float
    call_scale: list[float]  # per model call, s(sigma): sample = s x
    call_step: list[int]  # per model call, the solver step it belongs to
    steppable: bool  # the program can be re-entered step by step (Stepper), else it runs in a thread


def _check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class SchedulerCore:
    """The scheduler's logic, independent of diffusers' base classes (see :func:`scheduler_class`)."""

    order: int

    def _setup(
        self,
        sampler: str,
        knobs: Mapping[str, Any] | None,
        schedule: str | Sequence[float],
        rho: float,
        sigma_min: float | None,
        sigma_max: float | None,
        model_config: Mapping[str, Any] | None,
        dtype: str,
    ) -> None:
        if not isinstance(sampler, str):
            raise TypeError(f"sampler must be a registry name or label such as 'unipc:order=2', got {sampler!r}")
        name, from_label = parse_label(sampler)  # ValueError listing the registered names
        if knobs is not None and not isinstance(knobs, Mapping):
            raise TypeError(f"knobs must be a dict of the sampler's options, got {type(knobs).__name__}")
        given = {**from_label, **dict(knobs or {})}
        self._spec: SolverSpec = get(name)
        if self._spec.guided:
            raise ValueError(
                f"sampler={name!r} (CFG++) needs the conditional and unconditional estimates separately, but a "
                "pipeline combines them before it calls the scheduler; use it through the library (guided(...) and "
                f"{name}_sample), or pick a sampler for the pipeline: {', '.join(_plain_names())}"
            )
        self._knobs = self._spec.resolve(given)  # TypeError / ValueError listing the valid knobs
        if any(callable(v) for v in self._knobs.values()):
            raise TypeError("knobs holding callables (round_sigma) cannot be stored in a scheduler config")
        self._given = given
        self._schedule = check_schedule_option(schedule)
        from ._validate import check_float

        self._rho = check_float(rho, "rho", positive=True)
        self._range = (
            None if sigma_min is None else check_float(sigma_min, "sigma_min", positive=True),
            None if sigma_max is None else check_float(sigma_max, "sigma_max", positive=True),
        )
        self._dtype = _DTYPES[_check_choice(dtype, "dtype", tuple(_DTYPES))]
        # Evaluations per (non-final) step: what diffusers' pipelines read as the scheduler's order.
        self.order = self._spec.nfe(1, False, self._knobs)
        self._model_config = None if model_config is None else dict(model_config)
        self._hooks: Hooks | None = None
        if self._model_config is not None:
            self._hooks = build_hooks(self._model_config)
        self._plan: _Plan | None = None
        self._run: Stepper | Threaded | None = None
        self._finalizer: weakref.finalize[[], SchedulerCore] | None = None
        self._pending: Request | None = None
        self._noise = PipelineNoise()
        self._step_index: int | None = None
        self._begin_index: int | None = None
        self.num_inference_steps: int | None = None
        self.timesteps = torch.zeros(0)
        self.sigmas = torch.zeros(0)

    # ---- the diffusers protocol ----

    @property
    def sampler_label(self) -> str:
        """The sampler and its given knobs as one label, e.g. ``"unipc:order=2"``."""
        return label(self._spec.name, self._given)

    @property
    def init_noise_sigma(self) -> float:
        """Standard deviation of the pipeline's first sample (model input coordinates; 1 for VP models)."""
        hooks = self._require_hooks()
        s0 = float(self._plan.levels[0]) if self._plan is not None else hooks.sigma_max
        return _family(hooks).init_noise_sigma(hooks, s0)

    @property
    def step_index(self) -> int | None:
        """The index of the next model call in ``timesteps`` (None before the first ``step``)."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """The first model call a pipeline runs (``set_begin_index``; img2img), or None."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start at model call ``begin_index`` of ``timesteps`` (img2img: ``t_start * order``)."""
        plan = self._require_plan()
        k = int(begin_index)
        if not 0 <= k < len(plan.call_step) or (k > 0 and plan.call_step[k] == plan.call_step[k - 1]):
            starts = [i for i in range(len(plan.call_step)) if i == 0 or plan.call_step[i] != plan.call_step[i - 1]]
            raise ValueError(
                f"begin_index must be the first model call of a step, one of {starts[:20]}, got {begin_index}"
            )
        self._begin_index = k

    def scale_model_input(self, sample: Tensor, timestep: object = None) -> Tensor:
        """The identity: ``sample`` already is the model's input."""
        del timestep
        return sample

    def _require_hooks(self) -> Hooks:
        if self._hooks is None:
            raise ValueError(
                "this EDMSamplerScheduler has no model_config: build it from the pipeline's scheduler, "
                "EDMSamplerScheduler.from_config(pipe.scheduler.config, sampler=..., schedule=...)"
            )
        return self._hooks

    def _require_plan(self) -> _Plan:
        if self._plan is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before using the scheduler's steps")
        return self._plan

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: Sequence[float] | Tensor | None = None,
        mu: float | None = None,
    ) -> None:
        """Fix the schedule: ``num_inference_steps`` levels of ``schedule`` (or the pipeline's ``sigmas`` / ``mu``
        read as the replaced scheduler reads them), and one timestep per model call on ``device``."""
        if num_inference_steps is not None and (
            isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1
        ):
            raise ValueError(f"num_inference_steps must be an int >= 1, got {num_inference_steps!r}")
        self._cancel()
        hooks = self._require_hooks()
        levels = levels_for(
            self._schedule, hooks, self._model_config or {}, num_inference_steps, sigmas, mu, self._rho, self._range
        )
        levels = schedule(levels, strict=self._spec.strict).sigmas
        steppable, calls = PROBES.get(
            (self._spec, tuple(levels.tolist()), tuple(self._knobs.items()), self._dtype),
            lambda: probe_program(self._spec, levels, self._knobs, self._dtype),
        )
        if not torch.equal(calls[0].x, torch.full((1, 1), 0.7, dtype=self._dtype)):
            raise ValueError(
                f"sampler {self.sampler_label!r} changes the state before its first model call (churn at sigma_0 = "
                f"{float(levels[0]):.4g}), but the pipeline evaluates its first sample as it is; keep sigma_0 out of "
                "the churn range (s_tmax below sigma_0) or use s_churn=0"
            )
        rows = torch.cat([c.sigma.reshape(1) for c in calls])
        scale = hooks.model_input(torch.ones_like(rows), rows)
        t = _family(hooks).timesteps(hooks, rows).to(self._dtype)
        self._plan = _Plan(levels, rows.tolist(), scale.tolist(), [c.step for c in calls], steppable)
        dev = torch.device(device) if device is not None else None
        self.timesteps = t.to(device=dev, dtype=torch.float32)
        self.sigmas = levels.to(device=dev, dtype=torch.float32)
        self.num_inference_steps = levels.numel() - 1
        self._step_index = None
        self._begin_index = None

    def _cancel(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # ends an abandoned worker thread, if any
        self._run, self._pending, self._finalizer = None, None, None

    def _start(self, sample: Tensor) -> None:
        """Start the program at model call ``begin_index`` from the pipeline's ``sample``."""
        plan = self._require_plan()
        k = self._begin_index or 0
        levels = plan.levels[plan.call_step[k] :]
        # The state in EDM units: sample = s(sigma) x (at sigma = inf every family's s is 1: x is the unit noise).
        scale = plan.call_scale[k]
        x0 = sample.detach().to(self._dtype) * (1.0 / scale if scale > 0 else 1.0)
        program = prepare(self._spec, identity, x0, levels, self._knobs, dtype=self._dtype).program
        if not plan.steppable:  # re-entering it would replay every earlier step: a worker thread instead
            run = Threaded(program, x0, self._noise, levels.numel() - 1)
            self._finalizer = weakref.finalize(self, run.cancel)
            self._run = run
        else:
            self._run = Stepper(program, x0, self._noise, levels.numel() - 1)
        first = self._run.advance()
        if not isinstance(first, Request):  # pragma: no cover (every solver evaluates the model)
            raise RuntimeError(f"sampler {self._spec.name} returned without evaluating the model")
        self._pending = first
        self._step_index = k

    def step(
        self,
        model_output: Tensor,
        timestep: object,
        sample: Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> Any:
        """Take the model's output at ``timesteps[step_index]``; return the sample for the next model call.

        ``prev_sample`` is the state of the sampler's next evaluation in the model's input coordinates (after
        the last call: the result), in ``model_output``'s dtype; ``pred_original_sample`` is D, the denoised
        estimate (in the state dtype). ``generator`` (one, or one per sample) feeds stochastic samplers.
        """
        del timestep  # the scheduler counts the calls itself (the pipeline passes timesteps[step_index])
        plan = self._require_plan()
        if self._run is None:
            if self._step_index is not None and self._step_index >= len(plan.call_step):
                raise RuntimeError(
                    f"step() was called more often than the {len(plan.call_step)} model calls of the schedule; "
                    "call set_timesteps to sample again"
                )
            self._noise.generator = generator
            self._start(sample)
        req, run, k = self._pending, self._run, self._step_index
        if req is None or run is None or k is None:  # pragma: no cover (set by _start)
            raise RuntimeError("internal: no pending model call")
        hooks = self._require_hooks()
        out = model_output
        x = req.x
        if hooks.learned_variance and out.ndim >= 2 and out.shape[1] == 2 * x.shape[1]:
            out = out[:, : x.shape[1]]
        if out.shape != x.shape:
            raise ValueError(
                f"model_output has shape {tuple(model_output.shape)} but the sample has shape {tuple(x.shape)}; "
                "the scheduler needs the model's prediction for the sample it returned"
            )
        sb = append_dims(req.sigma, x.ndim)
        denoised = hooks.to_denoised(x, sb, out if out.dtype == x.dtype else out.to(x.dtype))
        self._noise.generator = generator
        run.answer(denoised)
        try:
            nxt = run.advance()
        except BaseException:
            self._cancel()  # a failed run cannot continue (a worker thread has ended): set_timesteps starts over
            self._step_index = None
            raise
        self._step_index = k + 1
        if isinstance(nxt, Tensor):  # the run's result: at the last level (0, or sigma_min without a final 0)
            self._cancel()
            last = plan.levels[-1].item()
            row = torch.full((nxt.shape[0],), last, dtype=nxt.dtype, device=nxt.device)
            prev = hooks.model_input(nxt, append_dims(row, nxt.ndim)) if last > 0 else nxt
        else:
            self._pending = nxt
            prev = hooks.model_input(nxt.x, append_dims(nxt.sigma, nxt.x.ndim))
        prev = prev.to(model_output.dtype)
        if not return_dict:
            return (prev, denoised)
        return output_class()(prev_sample=prev, pred_original_sample=denoised)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """``s(sigma) (x_0 + sigma noise)`` at the noise level of ``timesteps`` (img2img's starting latents).

        As diffusers' schedulers: at ``begin_index`` when the pipeline set one (before the first step), at the
        current model call after the first step, else at each timestep's first occurrence in ``timesteps``.
        """
        plan = self._require_plan()
        if self._begin_index is None:
            schedule_t = self.timesteps.to(original_samples.device)
            idx = []
            for t in torch.as_tensor(timesteps).reshape(-1).to(original_samples.device):
                hits = (schedule_t == t).nonzero()
                if hits.numel() == 0:
                    raise ValueError(f"add_noise: timestep {float(t)} is not one of the scheduler's timesteps")
                idx.append(int(hits[0]))
        else:
            k = self._step_index if self._step_index is not None else self._begin_index
            idx = [k] * int(torch.as_tensor(timesteps).reshape(-1).numel())
        sig = torch.tensor([plan.call_sigma[i] for i in idx], dtype=original_samples.dtype)
        scale = torch.tensor([plan.call_scale[i] for i in idx], dtype=original_samples.dtype)
        sig = append_dims(sig.to(original_samples.device), original_samples.ndim)
        scale = append_dims(scale.to(original_samples.device), original_samples.ndim)
        return (original_samples + noise * sig) * scale

    def __len__(self) -> int:
        return int((self._model_config or {}).get("num_train_timesteps", 1000))


_OUTPUT: type | None = None


def output_class() -> type:
    global _OUTPUT
    if _OUTPUT is None:
        from dataclasses import dataclass

        from diffusers.utils.outputs import BaseOutput

        @dataclass
        class EDMSamplerSchedulerOutput(BaseOutput):
            """``step``'s result: ``prev_sample`` for the next model call, ``pred_original_sample`` (D)."""

            prev_sample: Tensor
            pred_original_sample: Tensor | None = None

        EDMSamplerSchedulerOutput.__module__ = "edm_samplers.diffusers_scheduler"
        EDMSamplerSchedulerOutput.__qualname__ = "EDMSamplerSchedulerOutput"
        _OUTPUT = EDMSamplerSchedulerOutput
    return _OUTPUT
