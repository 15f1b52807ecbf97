"""The NFE-sweep harness behind ``benchmarks/bench.py`` (and accuracy.py, digits_fid.py): not installed.

- the samplers of the library, read from the solver registry (every registered name with its default knobs,
  plus the variants in :data:`EXTRA`), and peer samplers (k-diffusion, diffusers) driven on the same
  denoiser;
- the NFE sweep over the named problems of ``edm_samplers._named``: same seeds (per-seed noise), same
  initial noise and same NFE for everyone; global error against
  :func:`~edm_samplers.evaluation.ode_reference`, Frechet distance, sliced Wasserstein;
- sharding over ``torch.distributed`` ranks: seeds split into fixed chunks by global position, each rank
  samples its chunks, statistics are summed exactly across ranks (never gathered as samples).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import os
import platform
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from edm_samplers import PerSampleNoise, generate
from edm_samplers._dist import cpu_group, dist_info, shard_chunks
from edm_samplers._named import Problem, make_sigmas
from edm_samplers.evaluation import FeatureStats, GaussianMixture, frechet_distance_from_stats, sliced_wasserstein
from edm_samplers.solvers.registry import REGISTRY, get, parse_label

# ---- the library's samplers, from the registry --------------------------------------------------------

EXTRA = (
    "generalized:alpha=0.5",  # the explicit midpoint rule of EDM's generalized sampler
    "stochastic:s_churn=40,s_tmin=0.05,s_tmax=50",  # EDM's ImageNet-64 churn
)
"""Configurations swept besides every registry name with its defaults (labels :func:`parse_label` reads)."""


def library_samplers() -> list[str]:
    """Every sampler of the library for a plain denoiser as a label: registry names, then :data:`EXTRA`."""
    return [*(n for n, s in REGISTRY.items() if not s.guided), *EXTRA]  # CFG++ needs a guided denoiser


def _valid(text: str) -> bool:
    try:
        parse_label(text)
    except (TypeError, ValueError):
        return False
    return True


def run_label(text: str, den: Callable[..., Tensor], seeds: Sequence[int], shape: Sequence[int], sig: Tensor,
              dtype: torch.dtype) -> Tensor:  # fmt: skip
    """Samples of ``seeds`` with the sampler ``text`` (``"name"`` or ``"name:k=v,..."``), as generate() makes them."""
    name, knobs = parse_label(text)
    return generate(den, seeds, shape, sig, sampler=name, dtype=dtype, **knobs)


def nfe_of_label(text: str, sig: Tensor) -> int:
    name, knobs = parse_label(text)
    return get(name).count(sig, knobs)


def steps_for_nfe(nfe_of_steps: Callable[[int], int], targets: Sequence[int], max_steps: int = 400) -> list[int]:
    """For each target NFE, the largest step count whose NFE does not exceed it (deduplicated, sorted)."""
    cache: dict[int, int] = {}

    def nfe(n: int) -> int:
        if n not in cache:
            cache[n] = nfe_of_steps(n)
        return cache[n]

    out: set[int] = set()
    for t in targets:
        best = None
        for n in range(1, max_steps + 1):
            if nfe(n) > t:
                break
            best = n
        if best is not None:
            out.add(best)
    return sorted(out)


class CountingDenoiser:
    """Wraps a denoiser and counts its calls (network function evaluations): how peers are measured."""

    def __init__(self, fn: Callable[..., Tensor]) -> None:
        self.fn = fn
        self.calls = 0

    def __call__(self, x: Tensor, sigma: Tensor, /, **cond: Any) -> Tensor:
        self.calls += 1
        return self.fn(x, sigma, **cond)


# ---- peers ---------------------------------------------------------------------------------------


def _import_k_diffusion_sampling() -> types.ModuleType | None:
    """k_diffusion.sampling, or None. Its package ``__init__`` imports training extras (CLIP, kornia, ...);
    when that fails, only ``utils`` and ``sampling`` are loaded from the installed files."""
    try:
        return importlib.import_module("k_diffusion.sampling")
    except Exception:
        pass
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = [str(root)]
    saved = sys.modules.get("k_diffusion")
    sys.modules["k_diffusion"] = pkg
    try:
        for sub in ("utils", "sampling"):
            s = importlib.util.spec_from_file_location(f"k_diffusion.{sub}", root / f"{sub}.py")
            if s is None or s.loader is None:
                return None
            mod = importlib.util.module_from_spec(s)
            sys.modules[f"k_diffusion.{sub}"] = mod
            s.loader.exec_module(mod)
            setattr(pkg, sub, mod)
        return sys.modules["k_diffusion.sampling"]
    except Exception:
        if saved is not None:
            sys.modules["k_diffusion"] = saved
        return None


@dataclass(frozen=True)
class Peer:
    """A peer sampler: ``run(denoiser, x, steps, sigma_min, sigma_max, seed) -> samples``."""

    name: str
    run: Callable[[Callable[..., Tensor], Tensor, int, float, float, int], Tensor]
    stochastic: bool = False


def k_diffusion_peers() -> tuple[list[Peer], str]:
    ks = _import_k_diffusion_sampling()
    if ks is None:
        return [], "k-diffusion not importable: skipped"
    names = {
        "kdiff_euler": ("sample_euler", False), "kdiff_heun": ("sample_heun", False),
        "kdiff_dpm_2": ("sample_dpm_2", False), "kdiff_lms": ("sample_lms", False),
        "kdiff_dpmpp_2m": ("sample_dpmpp_2m", False), "kdiff_dpmpp_2s_a": ("sample_dpmpp_2s_ancestral", True),
        "kdiff_euler_a": ("sample_euler_ancestral", True), "kdiff_dpmpp_2m_sde": ("sample_dpmpp_2m_sde", True),
    }  # fmt: skip
    peers = []
    for peer, (fname, stoch) in names.items():
        fn = getattr(ks, fname, None)
        if fn is None:
            continue

        def run(den: Callable[..., Tensor], x: Tensor, steps: int, smin: float, smax: float, seed: int,
                _fn: Any = fn, _ks: Any = ks) -> Tensor:  # fmt: skip
            sig = _ks.get_sigmas_karras(steps, smin, smax, rho=7.0, device=x.device).to(x.dtype)
            torch.manual_seed(seed)  # k-diffusion draws its noise from the global RNG
            with torch.no_grad():
                out: Tensor = _fn(den, x, sig, disable=True)
            return out

        peers.append(Peer(peer, run, stoch))
    return peers, f"k-diffusion {getattr(sys.modules.get('k_diffusion'), '__version__', '0.1.1.post1')}"


def _logspaced_betas(smin: float, smax: float, m: int = 1000) -> Tensor:
    """Training betas whose sigmas sqrt((1 - abar) / abar) are log-spaced on [smin, smax] (m levels)."""
    sig = torch.exp(torch.linspace(math.log(smin), math.log(smax), m, dtype=torch.float64))
    abar = 1 / (1 + sig**2)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    return 1 - abar / prev


def diffusers_peers() -> tuple[list[Peer], str]:
    try:
        import diffusers
    except Exception:
        return [], "diffusers not importable: skipped"
    specs = {
        "diffusers_euler": ("EulerDiscreteScheduler", {}),
        "diffusers_heun": ("HeunDiscreteScheduler", {}),
        "diffusers_dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
        "diffusers_dpmpp_3m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 3}),
        "diffusers_unipc": ("UniPCMultistepScheduler", {"solver_order": 2}),
        "diffusers_deis": ("DEISMultistepScheduler", {"solver_order": 2}),
    }
    peers = []
    for peer, (cls_name, extra) in specs.items():
        cls = getattr(diffusers, cls_name, None)
        if cls is None:
            continue

        def run(den: Callable[..., Tensor], x: Tensor, steps: int, smin: float, smax: float, seed: int,
                _cls: Any = cls, _extra: Any = extra) -> Tensor:  # fmt: skip
            del seed
            return _run_diffusers(_cls, _extra, den, x, steps, smin, smax)

        peers.append(Peer(peer, run))
    return peers, f"diffusers {diffusers.__version__}"


def _run_diffusers(
    cls: Any, extra: dict[str, Any], den: Callable[..., Tensor], x: Tensor, steps: int, smin: float, smax: float
) -> Tensor:
    """Drive a diffusers scheduler on the exact denoiser as an eps-prediction model.

    The training grid is 1000 log-spaced sigmas on [smin, smax] (through ``trained_betas``) and
    ``use_karras_sigmas=True`` makes the sampling sigmas EDM's rho = 7 schedule on the same range, so
    the peer integrates the same ODE from the same x. diffusers maps a sigma to a fractional timestep by
    log-linear interpolation on the grid; on a log-spaced grid that inverts exactly, so the model sees the
    true sigma: eps(x_t, t) = (x - D(x; sigma)) / sigma with x = x_t sqrt(1 + sigma^2).
    """
    m = 1000
    betas = _logspaced_betas(smin, smax, m)
    kw: dict[str, Any] = {
        "num_train_timesteps": m, "trained_betas": betas.tolist(), "prediction_type": "epsilon",
        "use_karras_sigmas": True, "timestep_spacing": "linspace", **extra,
    }  # fmt: skip
    if "DPMSolver" in cls.__name__ or "UniPC" in cls.__name__:
        kw["final_sigmas_type"] = "zero"
        kw["lower_order_final"] = True
    sched = cls(**kw)
    sched.set_timesteps(steps)
    lo, hi = math.log(smin), math.log(smax)

    def sigma_of_t(t: Tensor) -> Tensor:
        return torch.exp(lo + t.to(torch.float64) / (m - 1) * (hi - lo))

    sigma_space = hasattr(sched, "init_noise_sigma") and float(sched.init_noise_sigma) > 1.0 + 1e-6
    sigmas0 = float(sched.sigmas[0])
    sample = x.clone() if sigma_space else x / math.sqrt(1 + sigmas0**2)
    with torch.no_grad():
        for t in sched.timesteps:
            sig = sigma_of_t(torch.as_tensor(t).reshape(1)).to(x.dtype).expand(x.shape[0])
            s4 = sig.reshape(-1, *([1] * (x.ndim - 1)))
            xin = sched.scale_model_input(sample, t)
            x_edm = sample if sigma_space else sample * torch.sqrt(1 + s4**2)
            del xin
            eps = (x_edm - den(x_edm, sig)) / s4
            sample = sched.step(eps, t, sample).prev_sample
    out: Tensor = sample  # at sigma 0 the VP-scaled and EDM states coincide
    return out


def all_peers(enabled: bool = True) -> tuple[list[Peer], list[str]]:
    if not enabled:
        return [], ["peers disabled (--no-peers)"]
    peers: list[Peer] = []
    notes = []
    for fn in (k_diffusion_peers, diffusers_peers):
        p, note = fn()
        peers += p
        notes.append(note)
    return peers, notes


# ---- the sweep -----------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def finish_report(results: Any, t_start: float, json_path: str | None) -> dict[str, Any]:
    """The closing lines of every benchmark script: machine, timing and command printed as one JSON line, and
    ``{"meta": ..., "results": ...}`` written to ``json_path`` when given."""
    import json
    import time

    meta = {**machine_info(), "seconds": round(time.time() - t_start, 1), "command": "python " + " ".join(sys.argv)}
    print(json.dumps(meta))
    if json_path:
        with open(json_path, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=1, default=float)
    return meta


def latents_for(seeds: Sequence[int], shape: Sequence[int], sigma0: float, dtype: torch.dtype) -> Tensor:
    """x at sigma0 for each seed: the first draw of that seed's generator (as ``generate()`` does)."""
    src = PerSampleNoise(seeds)
    return src.randn((len(seeds), *shape), dtype=dtype, device=torch.device("cpu")) * sigma0


def reference_cached(problem: Problem, seeds: Sequence[int], smin: float, smax: float,
                     cache_dir: Path | None, rtol: float | None = None) -> Tensor:  # fmt: skip
    """The exact-ODE limit for these seeds on [smin, smax] (float64), cached as .npy when ``cache_dir`` is set.

    Default tolerance: 1e-9 for closed-form denoisers (float64); 1e-5 for learned float32 models, whose
    outputs carry ~1e-7 relative round-off: a tighter tolerance only shrinks the adaptive steps forever.
    """
    if rtol is None:
        rtol = 1e-9 if problem.exact else 1e-5
    import numpy as np

    from edm_samplers.evaluation import ode_reference

    key = hashlib.sha256(
        f"{problem.name}|{list(seeds)}|{smin!r}|{smax!r}|{rtol!r}|{problem.shape}".encode()
    ).hexdigest()[:16]
    path = None if cache_dir is None else cache_dir / f"ref-{problem.name}-{key}.npy"
    if path is not None and path.is_file():
        return torch.from_numpy(np.load(path, allow_pickle=False))
    x0 = latents_for(seeds, problem.shape, smax, torch.float64)
    sig = torch.tensor([smax, smin, 0.0], dtype=torch.float64)
    ref = ode_reference(problem.denoiser, x0, sig, rtol=rtol, atol=rtol)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, ref.numpy(), allow_pickle=False)
    return ref


@dataclass
class Result:
    problem: str
    sampler: str
    schedule: str
    steps: int
    nfe: int
    stochastic: bool
    peer: bool
    global_error: float | None
    frechet: float
    sliced_w2: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def evaluate(problem: Problem, samples: Tensor, truth_stats: FeatureStats, truth_feats: Tensor | None,
             ref: Tensor | None, gathered: bool) -> tuple[float | None, float, float | None]:  # fmt: skip
    """(global RMS error vs reference, Frechet vs truth, sliced W2 vs truth) for local ``samples``.

    Under torch.distributed the error and the statistics are summed exactly over ranks; sliced W needs
    every sample, so it is computed only in single-process runs (``gathered``).
    """
    feats = problem.features(samples)
    st = FeatureStats(feats.shape[1]).update(feats).all_reduce(group=cpu_group())
    fd = frechet_distance_from_stats(st, truth_stats)
    err = None
    if ref is not None:
        d2 = (samples.to(torch.float64) - ref).reshape(samples.shape[0], -1).square().sum(1)
        # Exact float64 sums over ranks (FeatureStats' binned sums): rank-count invariant.
        tot = FeatureStats(1).update(d2[:, None]).all_reduce(group=cpu_group())
        dim = math.prod(problem.shape)
        err = math.sqrt(float(tot.sums()[0][0]) / tot.n / dim)  # RMS per coordinate
    sw = sliced_wasserstein(feats, truth_feats, num_projections=128) if gathered and truth_feats is not None else None
    return err, fd, sw


def sweep(
    problem: Problem,
    *,
    samplers: Sequence[str] | None,
    schedules: Sequence[str],
    nfes: Sequence[int],
    num_samples: int,
    seed0: int = 0,
    peers: bool = True,
    cache_dir: Path | None = None,
    chunk: int = 1000,
    progress: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> tuple[list[Result], dict[str, Any]]:
    """Run every (sampler, schedule, NFE) on ``problem`` for seeds seed0 .. seed0 + num_samples - 1."""
    rank, world = dist_info()
    lib = library_samplers()
    names = lib if samplers is None else [s for s in samplers if s.startswith(("kdiff", "diff")) or _valid(s)]
    seeds_all = list(range(seed0, seed0 + num_samples))
    mine = [i for a, b in shard_chunks(num_samples, chunk) for i in range(a, b)]
    my_seeds = [seeds_all[i] for i in mine]
    n_truth = max(num_samples, 2)
    truth = problem.true_samples(n_truth)
    truth_feats = problem.features(truth)
    truth_stats = FeatureStats(truth_feats.shape[1]).update(truth_feats)
    # Finite-sample floor: a fresh set of true samples of the same size scored like a sampler.
    floor_set = problem.true_samples(n_truth + 7)[7:] if problem.name.startswith("digits") else None
    meta: dict[str, Any] = {"problem": problem.name, "description": problem.description,
                            "num_samples": num_samples, "world_size": world, "samplers": names}  # fmt: skip
    if floor_set is None and isinstance(problem.denoiser, GaussianMixture):
        fresh = problem.denoiser.sample(n_truth, generator=torch.Generator().manual_seed(999))
        ff = problem.features(fresh)
        meta["floor"] = {
            "frechet": frechet_distance_from_stats(FeatureStats(ff.shape[1]).update(ff), truth_stats),
            "sliced_w2": sliced_wasserstein(ff, truth_feats, num_projections=128),
        }
    results: list[Result] = []
    refs: dict[tuple[float, float], Tensor] = {}
    peer_list, notes = all_peers(peers)
    meta["peers"] = notes
    jobs: list[tuple[str, str, int]] = []

    for sched in schedules:
        probe = make_sigmas(sched, 10, problem.sigma_min, problem.sigma_max)
        smin, smax = float(probe[-2]), float(probe[0])
        if problem.exact or problem.name == "digits-model":
            key = (round(smin, 12), round(smax, 12))
            if key not in refs and (problem.exact or sched == schedules[0]):
                refs[key] = reference_cached(problem, my_seeds, smin, smax, cache_dir)
        for name in names:
            if name.startswith(("kdiff", "diff")):
                continue

            def nfe_of(n: int, _name: str = name, _sched: str = sched) -> int:
                return nfe_of_label(_name, make_sigmas(_sched, n, problem.sigma_min, problem.sigma_max))

            try:
                steps = steps_for_nfe(nfe_of, nfes)
            except ValueError:
                steps = []
            for n in steps:
                jobs.append((name, sched, n))
    bar = _bar(len(jobs), progress and rank == 0, problem.name)
    for name, sched, n in jobs:
        stochastic = get(parse_label(name)[0]).stochastic
        try:
            sig = make_sigmas(sched, n, problem.sigma_min, problem.sigma_max)
        except ValueError:
            bar.update(1)
            continue
        with torch.no_grad():
            outs = [run_label(name, problem.denoiser, my_seeds[a : a + chunk], problem.shape, sig, problem.dtype)
                    for a in range(0, len(my_seeds), chunk)]  # fmt: skip
        out = torch.cat(outs) if outs else torch.zeros(0, *problem.shape, dtype=problem.dtype)
        nfe = nfe_of_label(name, sig)
        ref = None if stochastic else refs.get((round(float(sig[-2]), 12), round(float(sig[0]), 12)))
        err, fd, sw = evaluate(problem, out, truth_stats, truth_feats, ref, world == 1)
        results.append(Result(problem.name, name, sched, n, nfe, stochastic, False, err, fd, sw))
        log(f"{problem.name} {name} {sched} steps={n} nfe={nfe} err={err} fd={fd:.4g}")
        bar.update(1)
    bar.close()
    # Peers: karras schedule on the problem's range, same latents, NFE measured by counting.
    key = (round(problem.sigma_min, 12), round(problem.sigma_max, 12))
    ref_k = refs.get(key)
    for peer in peer_list:
        x0 = latents_for(my_seeds, problem.shape, problem.sigma_max, problem.dtype)

        def peer_nfe(n: int, _p: Peer = peer, _x: Tensor = x0) -> int:
            c = CountingDenoiser(problem.denoiser)
            _p.run(c, _x[:1].clone(), n, problem.sigma_min, problem.sigma_max, 0)
            return c.calls

        try:
            steps = steps_for_nfe(peer_nfe, nfes, max_steps=max(nfes))
        except Exception as e:  # a peer that cannot run this configuration is reported, not fatal
            meta.setdefault("peer_errors", {})[peer.name] = repr(e)[:300]
            continue
        for n in steps:
            counter = CountingDenoiser(problem.denoiser)
            out = peer.run(counter, x0.clone(), n, problem.sigma_min, problem.sigma_max, seed0 + rank)
            ref = None if peer.stochastic else ref_k
            err, fd, sw = evaluate(problem, out.to(torch.float64), truth_stats, truth_feats, ref, world == 1)
            results.append(
                Result(problem.name, peer.name, "karras", n, peer_nfe(n), peer.stochastic, True, err, fd, sw)
            )
            log(f"{problem.name} {peer.name} karras steps={n} err={err} fd={fd:.4g}")
    return results, meta


class _NullBar:
    def update(self, n: int) -> None:
        del n

    def close(self) -> None:
        pass


def _bar(total: int, enabled: bool, desc: str) -> Any:
    """A tqdm bar when enabled, stderr is a terminal and tqdm is installed; else a silent stand-in."""
    if not enabled or not sys.stderr.isatty():
        return _NullBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NullBar()
    return tqdm(total=total, desc=desc, leave=False)


def nfe_to_reach(results: Sequence[Result], metric: str, threshold: float) -> dict[tuple[str, str], int | None]:
    """Smallest NFE at which each (sampler, schedule) has ``metric`` <= ``threshold`` (None if never)."""
    out: dict[tuple[str, str], int | None] = {}
    for r in sorted(results, key=lambda r: r.nfe):
        key = (r.sampler, r.schedule)
        out.setdefault(key, None)
        v = getattr(r, metric)
        if out[key] is None and v is not None and v <= threshold:
            out[key] = r.nfe
    return out


def format_table(results: Sequence[Result], metric: str, nfes: Sequence[int]) -> str:
    """A sampler x NFE table of ``metric`` (value at the largest measured NFE <= each column's NFE)."""
    rows: dict[tuple[str, str], dict[int, float | None]] = {}
    for r in results:
        rows.setdefault((r.sampler, r.schedule), {})[r.nfe] = getattr(r, metric)
    cols = sorted(set(nfes))
    head = f"{'sampler':<22}{'schedule':<10}" + "".join(f"{c:>9}" for c in cols)
    lines = [head, "-" * len(head)]
    for (s, sc), vals in rows.items():
        if all(v is None for v in vals.values()):
            continue
        cells = []
        for c in cols:
            le = [n for n in vals if n <= c]
            v = vals[max(le)] if le else None
            cells.append(f"{v:>9.2e}" if v is not None else f"{'-':>9}")
        lines.append(f"{s:<22}{sc:<10}" + "".join(cells))
    return "\n".join(lines)


def plot(results: Sequence[Result], metric: str, path: Path, title: str) -> bool:
    """Log-log plot of ``metric`` against NFE, one line per (sampler, schedule); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 5.5))
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for r in results:
        v = getattr(r, metric)
        if v is not None and v > 0:
            series.setdefault((r.sampler, r.schedule), []).append((r.nfe, v))
    for (s, sc), pts in sorted(series.items()):
        pts.sort()
        style = "--" if s.startswith(("kdiff", "diffusers")) else "-"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker=".", label=f"{s} ({sc})", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
