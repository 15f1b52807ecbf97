"""Running a sampler program one model evaluation at a time, for callers that evaluate the model themselves
(:class:`~edm_samplers.diffusers_scheduler` hands each evaluation to a diffusers pipeline).

A program's ``run`` (:mod:`.solvers.runtime`) loops over its steps and calls ``den(x, sigma)``. Two drivers
turn that loop inside out without changing it, chosen by probing the program (:func:`probe_program`):

- :class:`Stepper`, for programs whose state between steps is x alone (single-step solvers): step i runs
  alone from x_i, and within a step the run is repeated with the evaluations answered so far until it asks
  for the next one. On the caller's thread; only the arithmetic before a step's last evaluation runs twice.
- :class:`Threaded`, for programs whose steps read past outputs (multistep solvers): the run executes in a
  worker thread whose denoiser hands each evaluation out and waits for the answer (two thread switches per
  evaluation).

Both expose ``advance() -> Request | Tensor`` (the next evaluation the program asks for, or its result) and
``answer(denoised)``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .solvers.registry import SolverSpec
from .solvers.runtime import Program, TableCache, prepare

__all__ = ["PROBES", "Request", "StepNoise", "Stepper", "Threaded", "identity", "probe_program"]


def identity(x: Tensor, sigma: Tensor, /, **cond: Any) -> Tensor:
    """A placeholder denoiser for :func:`~.solvers.runtime.prepare`, which only checks that it is callable."""
    del sigma, cond
    return x


class Request(NamedTuple):
    """A model evaluation the program asks for: the state, its ``[batch]`` sigma row and the solver step."""

    x: Tensor
    sigma: Tensor
    step: int


class NeedEval(BaseException):
    """Raised by the stepper's denoiser at the first evaluation not answered yet: it ends that replay."""

    def __init__(self, request: Request) -> None:
        super().__init__()
        self.request = request


class Steps:
    """``range(steps)`` that remembers the step being run."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.current = 0

    def __iter__(self) -> Iterator[int]:
        for i in range(self.steps):
            self.current = i
            yield i


class StepNoise:
    """Deterministic, distinct draws (by ``key``, else in order): the probe runs' noise (:func:`is_steppable`)."""

    def __init__(self) -> None:
        self.count = 0

    def randn(
        self, shape: Sequence[int], *, dtype: torch.dtype, device: torch.device, key: int | None = None
    ) -> Tensor:
        if key is None:
            key, self.count = self.count, self.count + 1
        return torch.full(tuple(shape), 0.37 + 0.11 * key, dtype=dtype, device=device)


class Stepper:
    """A program whose state between steps is x alone, advanced one model evaluation at a time on the caller's
    thread.

    A program's ``run`` only ever asks ``den(x, sigma)`` and draws noise, so it can be re-entered: step i runs
    alone (``steps=(i,)``) from the state x_i it started from, and within the step the run is repeated with
    the evaluations answered so far until it asks for the next one (raising :class:`NeedEval` there).
    Answers and noise draws are remembered for the step, so a repeat computes exactly what the first pass
    computed; only the arithmetic before a step's last evaluation runs twice (Heun's predictor: one
    elementwise pass). :func:`is_steppable` decides which programs qualify.
    """

    def __init__(self, program: Program, x0: Tensor, noise: Any, steps: int) -> None:
        self.program, self.noise, self.steps = program, noise, steps
        self.i = 0
        self.x = x0
        self.answers: list[Tensor] = []
        self.draws: list[Tensor] = []
        self._used = 0
        self._drawn = 0

    def _den(self, x: Tensor, sigma: Tensor, /, **cond: Any) -> Tensor:
        del cond
        j = self._used
        self._used += 1
        if j < len(self.answers):
            return self.answers[j]
        raise NeedEval(Request(x, sigma, self.i))

    def randn(self, shape: Sequence[int], *, dtype: torch.dtype, device: torch.device) -> Tensor:
        j = self._drawn
        self._drawn += 1
        if j == len(self.draws):
            if isinstance(self.noise, StepNoise):
                self.draws.append(self.noise.randn(shape, dtype=dtype, device=device, key=7 * self.i + j))
            else:
                self.draws.append(self.noise.randn(shape, dtype=dtype, device=device))
        return self.draws[j]

    def advance(self) -> Request | Tensor:
        """The next evaluation the program asks for, or (after the last one) the program's result."""
        while True:
            self._used = self._drawn = 0
            try:
                x = self.program.run(self._den, self.x, {}, self if self.program.stochastic else None, None, (self.i,))
            except NeedEval as e:
                return e.request
            self.i += 1
            self.x, self.answers, self.draws = x, [], []
            if self.i == self.steps:
                return x

    def answer(self, denoised: Tensor) -> None:
        """D for the evaluation :meth:`advance` returned last."""
        self.answers.append(denoised)


class Cancelled(BaseException):
    """Raised inside the worker's denoiser to end an abandoned run (BaseException: no solver catches it)."""


class Failed(NamedTuple):
    error: BaseException


class Slot:
    """A one-item handoff between two threads: a lock used as a binary semaphore (CPython's cheapest wakeup)."""

    __slots__ = ("_ready", "_value")

    def __init__(self) -> None:
        self._ready = threading.Lock()
        self._ready.acquire()
        self._value: Any = None

    def put(self, value: Any) -> None:
        self._value = value
        self._ready.release()

    def get(self) -> Any:
        self._ready.acquire()
        value, self._value = self._value, None
        return value


class Threaded:
    """A program whose steps read past outputs (multistep history), advanced one evaluation at a time.

    Such a program cannot be re-entered at step i without replaying every step before it, so its unchanged
    ``run`` executes in a worker thread whose denoiser hands each request out and waits for D (two thread
    switches per model call). The worker inherits the caller's grad / inference mode and CUDA stream (all
    thread-local in torch), holds no reference to the scheduler, and is cancelled when the scheduler starts
    another run or is garbage-collected.
    """

    def __init__(self, program: Program, x0: Tensor, noise: Any, steps: int) -> None:
        self._out = Slot()
        self._in = Slot()
        self._iter = Steps(steps)
        modes = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
        stream = torch.cuda.current_stream(x0.device) if x0.is_cuda else None
        self._thread = threading.Thread(
            target=self._work, args=(program, x0, noise, modes, stream), daemon=True, name="EDMSamplerScheduler"
        )
        self._thread.start()

    def _den(self, x: Tensor, sigma: Tensor, /, **cond: Any) -> Tensor:
        del cond
        self._out.put(Request(x, sigma, self._iter.current))
        d: Tensor | None = self._in.get()
        if d is None:
            raise Cancelled
        return d

    def _work(self, program: Program, x0: Tensor, noise: Any, modes: tuple[bool, bool], stream: Any) -> None:
        with ExitStack() as stack:
            stack.enter_context(torch.inference_mode(modes[1]))
            stack.enter_context(torch.set_grad_enabled(modes[0]))
            if stream is not None:
                stack.enter_context(torch.cuda.device(x0.device))
                stack.enter_context(torch.cuda.stream(stream))
            try:
                self._out.put(program.run(self._den, x0, {}, noise if program.stochastic else None, None, self._iter))
            except Cancelled:
                pass
            except BaseException as e:  # handed to the pipeline's thread, raised there
                self._out.put(Failed(e))

    def advance(self) -> Request | Tensor:
        msg = self._out.get()
        if isinstance(msg, Failed):
            raise msg.error
        out: Request | Tensor = msg
        return out

    def answer(self, denoised: Tensor) -> None:
        self._in.put(denoised)

    def cancel(self) -> None:
        if self._thread.is_alive():
            self._in.put(None)


def stand_in(x: Tensor, sigma: Tensor, /, **cond: Any) -> Tensor:
    """A smooth, non-trivial stand-in denoiser for the probe runs."""
    del cond
    return torch.tanh(x) * 0.5 + 0.01 * torch.log(sigma).reshape(-1, *([1] * (x.ndim - 1)))


def is_steppable(program: Program, x0: Tensor, steps: int) -> bool:
    """Whether :class:`Stepper` reproduces the program's own run: its state between steps is x alone.

    Decided by trying, on a [1, 1] state: the uninterrupted run with a stand-in denoiser and fixed per-step
    noise against the step-by-step run. Single-step solvers qualify; multistep ones (their steps read past
    outputs) fail, with an IndexError or a different result.
    """
    stepper = Stepper(program, x0, StepNoise(), steps)
    try:
        for _ in range(4 * steps + 8):  # a bound: more evaluations per step than any solver takes
            req = stepper.advance()
            if isinstance(req, Tensor):
                break
            stepper.answer(stand_in(req.x, req.sigma))
        else:
            return False
    except (IndexError, KeyError, RuntimeError, ValueError):
        return False

    class _Keyed:  # the same draws, in the uninterrupted run, keyed by the step being run
        def __init__(self) -> None:
            self.i, self.j = -1, 0

        def steps(self) -> Iterator[int]:
            for i in range(steps):
                self.i, self.j = i, 0
                yield i

        def randn(self, shape: Sequence[int], *, dtype: torch.dtype, device: torch.device) -> Tensor:
            self.j += 1
            return StepNoise().randn(shape, dtype=dtype, device=device, key=7 * self.i + self.j - 1)

    keyed = _Keyed()
    reference = program.run(stand_in, x0, {}, keyed if program.stochastic else None, None, keyed.steps())
    return torch.equal(req, reference)


def probe_program(
    spec: SolverSpec, levels: Tensor, knobs: Mapping[str, Any], dtype: torch.dtype
) -> tuple[bool, list[Request]]:
    """Probe runs of the program on a [1, 1] state (x = 0.7): whether it can be re-entered step by step, and
    each model call it makes (its sigma row, solver step and state)."""
    n = levels.numel() - 1
    x0 = torch.full((1, 1), 0.7, dtype=dtype)
    program = prepare(spec, identity, x0, levels, knobs, dtype=dtype).program
    steppable = is_steppable(program, x0, n)
    run = Stepper(program, x0, StepNoise(), n) if steppable else Threaded(program, x0, StepNoise(), n)
    calls: list[Request] = []
    while not isinstance(req := run.advance(), Tensor):
        calls.append(req)
        run.answer(stand_in(req.x, req.sigma))
    return steppable, calls


PROBES = TableCache(16)
"""(sampler, levels, knobs, dtype) -> :func:`probe_program`'s answer: pipelines set the same timesteps on
every call, and the probes cost a few sampling runs on a [1, 1] state."""
