"""The library's samplers inside any diffusers pipeline: :class:`EDMSamplerScheduler`, a drop-in scheduler.

One line swaps it in, reading the model family from the scheduler it replaces::

    pipe.scheduler = EDMSamplerScheduler.from_config(pipe.scheduler.config, sampler="dpmpp_2m", schedule="karras")

**Inversion of control.** A sampler of the library is a *program* (:mod:`.solvers.runtime`) whose ``run``
loops over its steps and calls ``den(x, sigma)``; a pipeline instead calls the model itself and then
``step()``. Each ``step()`` converts the model's output to D with the model family's hooks (those of the
adapter :func:`~edm_samplers.from_diffusers` builds for the replaced scheduler's config), hands D to the
unchanged program, and returns the state of the program's *next* evaluation in the model's input
coordinates. Two drivers (:mod:`._reentry`) re-enter a program, chosen by probing it once per schedule:

- single-step solvers (Euler, Heun, churn, DPM-Solver-2, Euler ancestral, ...), whose state between steps
  is x alone, run one step at a time on the caller's thread; within a step the run is repeated with the
  evaluations answered so far until it asks for the next one (:class:`Stepper`; no thread switch);
- multistep solvers, whose steps read past outputs, run in a worker thread whose denoiser hands each
  ``(x, sigma)`` out and waits for D (:class:`Threaded`; two thread switches per model call). An abandoned
  worker (the pipeline raised) is ended by the next ``set_timesteps`` or when the scheduler is collected.

Either way every registered sampler, present or future, runs its own code: the pipeline's result is what
``<name>_sample`` computes on the same evaluations. Multi-evaluation solvers (Heun, DPM-Solver-2) list one
timestep per model call, as diffusers' ``HeunDiscreteScheduler`` does (``2N - 1`` entries).

**Coordinates.** The pipeline's ``sample`` is always the model's own input (x_t = x / sqrt(1 + sigma^2) for
VP models, x / (1 + sigma) for flow, c_in x for EDM, x for VE), so ``scale_model_input`` is the identity and
pipelines that never call it (``DDPMPipeline``, flow pipelines) work too; ``init_noise_sigma`` is the family's
start, that of :func:`~edm_samplers.start_state` (1 for VP and flow: the first state is
``latents * sqrt(1 + sigma_0^2)`` or ``latents * (1 + sigma_0)`` in EDM units, the unit latents themselves at
sigma_0 = inf). Between calls the
scheduler keeps its own state in ``dtype`` (float32 by default, whatever the model's dtype); the pipeline's
``sample`` is read at the first ``step`` only (the start, e.g. img2img's noised image), so pipelines that
edit the latents between steps (legacy inpainting with a 4-channel UNet) are not followed.

**Model families** (VP incl. zero terminal SNR, EDM, VE, flow) are one entry each of :data:`FAMILIES`
(:mod:`._scheduler_families`), keyed by the adapter class ``from_diffusers`` returns: its pipeline timesteps
for given noise levels, its ``init_noise_sigma`` and the replaced scheduler's own levels for the pipeline's
``sigmas`` / ``mu``. The schedules are read in :mod:`._scheduler_levels`. diffusers is imported lazily (the
``diffusers`` extra): the class is built on first access of ``EDMSamplerScheduler``; the protocol itself is
:class:`._scheduler_core.SchedulerCore`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._scheduler_core import SchedulerCore, output_class
from ._scheduler_families import FAMILIES, Family, Hooks, pipeline_config
from ._scheduler_levels import SCHEDULES

__all__ = ["FAMILIES", "SCHEDULES", "Family", "Hooks", "scheduler_class"]


_CLASS: type | None = None


def scheduler_class() -> type:
    """The :class:`EDMSamplerScheduler` class, built on first use (imports diffusers: the ``diffusers`` extra)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    try:
        from diffusers.configuration_utils import ConfigMixin, register_to_config
        from diffusers.schedulers.scheduling_utils import SchedulerMixin
    except ImportError:
        raise ImportError(
            "EDMSamplerScheduler needs the diffusers package: pip install 'edm-samplers[diffusers]' "
            "(or pip install diffusers)"
        ) from None

    class EDMSamplerScheduler(SchedulerCore, SchedulerMixin, ConfigMixin):  # type: ignore[misc]
        """Any sampler of the library, with any of its schedules, as a diffusers scheduler.

        Build it from the pipeline's scheduler, whose config describes the model (family, noise schedule,
        prediction type)::

            pipe.scheduler = EDMSamplerScheduler.from_config(pipe.scheduler.config, sampler="dpmpp_2m")

        Args:
            sampler: a registry name (``edm_samplers.solvers.registry.names()``) or a label with knobs,
                e.g. ``"unipc:order=2,order_rule=final"``.
            knobs: the sampler's knobs as a dict (merged over the label's); checked like the sampler's own.
            schedule: ``"karras"`` (EDM's rho schedule on the model's range, or on ``sigma_min``/``sigma_max``),
                ``"loglinear"``, ``"scheduler"`` (the replaced scheduler's own levels), the path of a schedule
                file written by :func:`~edm_samplers.save_schedule` (e.g. a tuned one), or a list of levels
                (EDM units; a final 0 is appended if missing).
            rho: the karras schedule's exponent.
            sigma_min, sigma_max: the range of "karras" / "loglinear" (default: the model's trained range, or
                the range of the replaced scheduler's levels for the pipeline's ``sigmas`` / ``mu`` when it passes
                them or when the model's range is open: flow, zero terminal SNR. Where those levels start at
                sigma = inf, pure noise, so does the schedule, unless ``sigma_max`` is given).
            model_config: the replaced scheduler's config (``from_config`` fills it in).
            dtype: the sampler's state dtype, "float32" or "float64".

        Raises:
            ValueError / TypeError: for an unknown sampler, schedule or knob (the message lists the valid
                ones), or a model_config of an unsupported model family.
        """

        @register_to_config  # type: ignore[untyped-decorator]
        def __init__(
            self,
            sampler: str = "euler",
            knobs: dict[str, Any] | None = None,
            schedule: str | list[float] = "karras",
            rho: float = 7.0,
            sigma_min: float | None = None,
            sigma_max: float | None = None,
            model_config: dict[str, Any] | None = None,
            dtype: str = "float32",
        ) -> None:
            self._setup(sampler, knobs, schedule, rho, sigma_min, sigma_max, model_config, dtype)

        @property
        def config(self) -> Any:
            """Our configuration; pipelines reading a key of the replaced scheduler's (SD3's ``use_dynamic_shifting``,
            Flux's ``base_shift``) get its value from ``model_config``."""
            own: Mapping[str, Any] = getattr(self, "_internal_dict")  # noqa: B009 (set by register_to_config)
            return pipeline_config(own)

        @classmethod
        def from_config(cls, config: Any = None, return_unused_kwargs: bool = False, **kwargs: Any) -> Any:
            """From the replaced scheduler's config (kept whole as ``model_config``), from the replaced scheduler
            itself (its class name included, which a scheduler built in code lacks in its config), or from one of
            our own configs.

            ``EDMSamplerScheduler.from_config(pipe.scheduler.config, sampler="heun", schedule="karras")``.
            """
            if hasattr(config, "config") and not isinstance(config, Mapping):  # the replaced scheduler itself
                config = {**config.config, "_class_name": type(config).__name__}
            cfg = dict(config or {})
            ours = cfg.get("_class_name") == cls.__name__ or "model_config" in cfg or "model_config" in kwargs
            if not ours:
                model_config = {k: v for k, v in cfg.items() if k not in ("_use_default_values", "_diffusers_version")}
                return super().from_config({}, return_unused_kwargs, model_config=model_config, **kwargs)
            if "sampler" in kwargs and "knobs" not in kwargs:
                kwargs["knobs"] = None  # another sampler: the stored knobs were the old one's
            return super().from_config(config, return_unused_kwargs, **kwargs)

    EDMSamplerScheduler.__module__ = __name__
    EDMSamplerScheduler.__qualname__ = "EDMSamplerScheduler"  # pickles, and diffusers saves it by this name
    _CLASS = EDMSamplerScheduler
    return _CLASS


def __getattr__(name: str) -> Any:
    if name == "EDMSamplerScheduler":
        return scheduler_class()
    if name == "EDMSamplerSchedulerOutput":
        return output_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
