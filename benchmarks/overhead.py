"""Sampler overhead per network evaluation: what a sampling loop costs beyond its denoiser calls.

Question: with a nearly free denoiser (it returns a cached tensor), how much time and memory does each
sampling loop add per NFE? overhead/NFE = (loop time - the same number of bare denoiser calls) / NFE.

Compared in the same process, interleaved round by round (the median over rounds is reported):

- this library: ``euler_sample``, ``heun_sample``, ``stochastic_sample`` (s_churn=40, Heun),
  ``dpmpp_2m_sample`` and ``unipc_sample(order=3)`` in eager mode; the same through
  ``GraphedSampler(compile=True)`` ("compiled"); on CUDA also ``GraphedSampler`` replay ("graphed");
- peers written here: a straightforward float64 loop in the style of the EDM paper's reference code
  (Algorithm 2 with S_churn = 0, noise drawn every step as there), and a naive float32 Heun loop;
- diffusers' ``EDMEulerScheduler`` and ``EDMDPMSolverMultistepScheduler`` loops (if importable);
- k-diffusion's ``sample_heun`` and ``sample_dpmpp_2m`` (if installed; only its ``sampling`` module is
  loaded, so its training-only dependencies need not be present).

Also reported: one fused elementwise pass over the state (``torch.lerp(..., out=)``), the yardstick of
the compiled target, and the peak number of state-sized tensors each loop keeps alive beyond the
denoiser's own (counted with a TorchDispatchMode: every tensor of the state's numel returned by a
non-mutating, non-view op outside the denoiser call is tracked by weakref until it dies; the peak of
that live count, in units of one state).

Usage::

    python benchmarks/overhead.py                       # all three shapes, JSON on stdout
    python benchmarks/overhead.py --shapes 64,3,32,32 --rounds 30 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import math
import pathlib
import platform
import statistics
import sys
import time
import types
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import edm_samplers as E

Loop = Callable[[], Any]


# ---- the nearly free denoiser -------------------------------------------------------------------


class FreeDenoiser:
    """Returns a cached tensor: costs one Python call, so a loop's time is its own overhead."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
        self.out = torch.randn(shape, dtype=dtype, device=device) * 0.5

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, *args: Any, **cond: Any) -> torch.Tensor:
        return self.out


# ---- peers written here ---------------------------------------------------------------------------


def paper_loop(
    net: Callable[..., torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor, s_churn: float = 0.0
) -> torch.Tensor:
    """EDM Algorithm 2 as the paper's reference code runs it: float64, 0-d tensor sigmas, noise every step."""
    n = len(sigmas) - 1
    t = sigmas.to(torch.float64)
    x_next = x.to(torch.float64)
    for i in range(n):
        t_cur, t_nxt = t[i], t[i + 1]
        x_cur = x_next
        gamma = min(s_churn / n, math.sqrt(2) - 1) if 0 <= t_cur <= math.inf else 0.0
        t_hat = t_cur + gamma * t_cur
        x_hat = x_cur + (t_hat**2 - t_cur**2).sqrt() * torch.randn_like(x_cur)
        denoised = net(x_hat.to(torch.float32), t_hat.expand(x.shape[0]).to(torch.float32)).to(torch.float64)
        d_cur = (x_hat - denoised) / t_hat
        x_next = x_hat + (t_nxt - t_hat) * d_cur
        if i < n - 1:
            denoised = net(x_next.to(torch.float32), t_nxt.expand(x.shape[0]).to(torch.float32)).to(torch.float64)
            d_prime = (x_next - denoised) / t_nxt
            x_next = x_hat + (t_nxt - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next


def naive_heun(net: Callable[..., torch.Tensor], x: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """A plain float32 Heun loop, k-diffusion style (sigma batch = s_in * sigma each call)."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = (x - net(x, s * s_in)) / s
        x_next = x + (s_next - s) * d
        if s_next > 0:
            d2 = (x_next - net(x_next, s_next * s_in)) / s_next
            x_next = x + (s_next - s) * (d + d2) / 2
        x = x_next
    return x


def diffusers_loop(sched: Any, net: Callable[..., torch.Tensor], x: torch.Tensor, n: int) -> torch.Tensor:
    sched.set_timesteps(n, device=x.device)
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t)
        x = sched.step(net(x_in, t), t, x, return_dict=False)[0]
    return x


def load_k_diffusion() -> Any | None:
    """k-diffusion's sampling module without its package __init__ (which needs its training deps)."""
    try:
        root = pathlib.Path(str(importlib.metadata.distribution("k-diffusion").locate_file("k_diffusion")))
    except importlib.metadata.PackageNotFoundError:
        return None
    import diffusers  # noqa: F401  (imported first: it must not see the stub below)

    stubs: list[str] = []
    if importlib.util.find_spec("torchvision") is None:
        # k_diffusion.utils imports torchvision's functional transforms at import time; sampling never
        # calls them, so a stub (removed again right after the import) avoids installing torchvision.
        for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
            mod = types.ModuleType(name)
            mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
            sys.modules[name] = mod
            stubs.append(name)
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = [str(root)]
    sys.modules.setdefault("k_diffusion", pkg)
    try:
        from k_diffusion import sampling  # type: ignore[import-not-found]
    except ImportError as e:
        print(f"# k-diffusion not importable ({e}); skipped", file=sys.stderr)
        return None
    finally:
        for name in stubs:
            sys.modules.pop(name, None)
    return sampling


# ---- memory accounting ----------------------------------------------------------------------------


class StateAllocations(TorchDispatchMode):
    """Peak bytes of state-sized tensors alive that the loop (not the denoiser) allocated.

    Any dtype counts (a float64 copy is two float32 states, a bool mask a quarter); the peak is
    reported in units of one float32 state.
    """

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel = numel
        self.in_denoiser = 0
        self.alive = 0
        self.peak = 0

    def _dead(self, nbytes: int) -> None:
        self.alive -= nbytes

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        if self.in_denoiser or func._schema.is_mutable or func.is_view:
            return out
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() == self.numel:
                nbytes = t.numel() * t.element_size()
                self.alive += nbytes
                self.peak = max(self.peak, self.alive)
                weakref.finalize(t, self._dead, nbytes)
        return out


class CountingDenoiser:
    def __init__(self, inner: FreeDenoiser, counter: StateAllocations) -> None:
        self.inner, self.counter = inner, counter

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.counter.in_denoiser += 1
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.counter.in_denoiser -= 1


# ---- the benchmark --------------------------------------------------------------------------------


def candidates(
    shape: tuple[int, ...], device: torch.device, steps: int, net: Any, kd: Any, compile_: bool
) -> dict[str, tuple[Loop, int]]:
    """name -> (run once, NFE). Every loop starts from the same x at sigma_max."""
    sig = E.karras_sigmas(steps)
    host = sig.tolist()
    sig_dev = sig.to(device=device, dtype=torch.float32)
    x = torch.randn(shape, device=device) * host[0]
    gen = torch.Generator(device=device).manual_seed(0)
    n_heun = E.count_nfe(sig, "heun")
    out: dict[str, tuple[Loop, int]] = {
        "edm_samplers.euler": (lambda: E.euler_sample(net, x, sig), steps),
        "edm_samplers.heun": (lambda: E.heun_sample(net, x, sig), n_heun),
        "edm_samplers.stochastic": (lambda: E.stochastic_sample(net, x, sig, s_churn=40.0, noise=gen), n_heun),
        "edm_samplers.dpmpp_2m": (lambda: E.dpmpp_2m_sample(net, x, sig), steps),
        "edm_samplers.unipc": (lambda: E.unipc_sample(net, x, sig, order=3), steps),
    }
    if compile_ or device.type == "cuda":
        knobs: tuple[tuple[str, dict[str, Any]], ...] = (
            ("euler", {}), ("heun", {}), ("stochastic", {"s_churn": 40.0}), ("dpmpp_2m", {}), ("unipc", {"order": 3}),
        )  # fmt: skip
        for name, kw in knobs:
            modes = ([("compiled", True)] if compile_ else []) + ([("graphed", False)] if device.type == "cuda" else [])
            for mode, comp in modes:
                gs = E.GraphedSampler(net, sig, shape, sampler=name, device=device, compile=comp, **kw)
                out[f"edm_samplers.{name}.{mode}"] = ((lambda gs=gs: gs(x, noise=gen)), E.count_nfe(sig, name, **kw))
    out["peer.paper_float64"] = (lambda: paper_loop(net, x, sig), n_heun)
    out["peer.naive_float32_heun"] = (lambda: naive_heun(net, x, host), n_heun)
    try:
        from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler

        eul, dpm = EDMEulerScheduler(), EDMDPMSolverMultistepScheduler()
        out["peer.diffusers_edm_euler"] = (lambda: diffusers_loop(eul, net, x, steps), steps)
        out["peer.diffusers_edm_dpmpp_2m"] = (lambda: diffusers_loop(dpm, net, x, steps), steps)
    except ImportError:
        print("# diffusers not installed; its schedulers skipped", file=sys.stderr)
    if kd is not None:
        out["peer.k_diffusion_heun"] = (lambda: kd.sample_heun(net, x, sig_dev, disable=True), n_heun)
        out["peer.k_diffusion_dpmpp_2m"] = (lambda: kd.sample_dpmpp_2m(net, x, sig_dev, disable=True), steps)
    return out


def timed(fn: Loop, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def run_shape(
    shape: tuple[int, ...], device: torch.device, steps: int, rounds: int, kd: Any, compile_: bool
) -> dict[str, Any]:
    net = FreeDenoiser(shape, torch.float32, device)
    cands = candidates(shape, device, steps, net, kd, compile_)
    x = torch.randn(shape, device=device)
    sigma = torch.ones(shape[0], device=device)
    calls = 200
    buf = torch.empty_like(x)
    w = torch.tensor(0.3, device=device)

    def bare_calls() -> None:
        for _ in range(calls):
            net(x, sigma)

    gen = torch.Generator(device=device).manual_seed(1)

    def noise_draws() -> None:
        for _ in range(calls):
            torch.randn(shape, generator=gen, device=device)

    def fused_pass() -> None:
        for _ in range(calls):
            torch.lerp(net.out, x, w, out=buf)

    with torch.no_grad():
        for fn, _ in cands.values():  # warm-up (compiles, captures, first-touch of buffers)
            fn()
            fn()
        times: dict[str, list[float]] = {k: [] for k in cands}
        call_t: list[float] = []
        pass_t: list[float] = []
        draw_t: list[float] = []
        for _ in range(rounds):  # interleaved: every candidate once per round
            call_t.append(timed(bare_calls, device) / calls)
            pass_t.append(timed(fused_pass, device) / calls)
            draw_t.append(timed(noise_draws, device) / calls)
            for k, (fn, _) in cands.items():
                times[k].append(timed(fn, device))
        call = statistics.median(call_t)
        results: dict[str, Any] = {}
        for k, (_fn, nfe) in cands.items():
            med = statistics.median(times[k])
            results[k] = {
                "nfe": nfe,
                "loop_us": med * 1e6,
                "overhead_per_nfe_us": (med - nfe * call) / nfe * 1e6,
            }
        # Peak live state-sized tensors beyond the denoiser's (eager and peers; CPU-side accounting).
        for k in results:
            if k.endswith((".compiled", ".graphed")):
                continue
            counter = StateAllocations(math.prod(shape))
            net_c = CountingDenoiser(net, counter)
            fn, _ = candidates(shape, device, steps, net_c, kd, False)[k]
            with counter:
                r = fn()
            del r
            results[k]["peak_state_buffers"] = counter.peak / (math.prod(shape) * 4)
    peers = {k: v["overhead_per_nfe_us"] for k, v in results.items() if k.startswith("peer.")}
    cheapest = min(peers, key=lambda k: peers[k])
    for v in results.values():
        v["ratio_vs_cheapest_peer"] = v["overhead_per_nfe_us"] / peers[cheapest]
    fused_us = statistics.median(pass_t) * 1e6
    for k, v in results.items():
        if k.endswith(".compiled"):
            steps_per_nfe = steps / v["nfe"]
            v["overhead_per_step_vs_fused_pass"] = v["overhead_per_nfe_us"] / steps_per_nfe / fused_us
    return {
        "shape": list(shape),
        "steps": steps,
        "bare_denoiser_call_us": call * 1e6,
        "fused_pass_us": fused_us,
        "noise_draw_us": statistics.median(draw_t) * 1e6,
        "cheapest_peer": cheapest,
        "results": results,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="1,3,32,32;64,3,32,32;16,4,64,64", help="';'-separated, e.g. 64,3,32,32")
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads (default 1: shared cores stall OpenMP kernels)"
    )
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    p.add_argument("--json", default=None, help="also write the JSON report to this file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    shapes = [tuple(int(v) for v in s.split(",")) for s in a.shapes.split(";") if s]
    kd = load_k_diffusion()
    print(
        f"# device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor()})"
    )
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, python {platform.python_version()}")
    report: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "k_diffusion": kd is not None,
        "shapes": [],
    }
    for shape in shapes:
        r = run_shape(shape, device, a.steps, a.rounds, kd, not a.no_compile)
        report["shapes"].append(r)
        print(f"# shape {shape}: bare call {r['bare_denoiser_call_us']:.2f} us, fused pass {r['fused_pass_us']:.1f} us,"
              f" noise draw {r['noise_draw_us']:.1f} us, cheapest peer {r['cheapest_peer']}")  # fmt: skip
        for k, v in r["results"].items():
            extra = v.get("overhead_per_step_vs_fused_pass")
            print(
                f"#   {k:34s} nfe {v['nfe']:3d}  overhead/NFE {v['overhead_per_nfe_us']:8.1f} us  "
                f"x{v['ratio_vs_cheapest_peer']:.2f} of cheapest peer  "
                f"peak bufs {v.get('peak_state_buffers', float('nan')):.2f}"
                + (f"  per step = {extra:.2f} fused passes" if extra is not None else "")
            )
    text = json.dumps(report, indent=1)
    print(text)
    if a.json:
        with contextlib.suppress(OSError), open(a.json, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
