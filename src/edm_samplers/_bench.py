"""Machinery behind ``edm-samplers bench`` / ``generate`` and the scripts in ``benchmarks/``.

- a registry of the library's samplers and schedules (resolved lazily, so samplers added later appear
  automatically) and of peer samplers (k-diffusion, diffusers) driven on the same denoiser;
- named problems with a known data distribution (analytic mixtures, the empirical denoiser of the
  real digits) and the shipped digits model;
- the NFE sweep: same seeds (per-seed noise), same initial noise and same NFE for everyone; global
  error against :func:`~edm_samplers.reference.ode_reference`, Frechet distance, sliced Wasserstein;
- sharding over ``torch.distributed`` ranks: seeds split into fixed chunks by global position, each
  rank samples its chunks, statistics are summed exactly across ranks (never gathered as samples).

Private: the command line and the benchmark scripts are the public face.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import importlib
import importlib.util
import math
import os
import platform
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .analytic import GaussianMixture, empirical_denoiser
from .metrics import FeatureStats, _split_bins, frechet_distance_from_stats, sliced_wasserstein
from .noise import PerSampleNoise

SamplerFn = Callable[..., Tensor]

# ---- distributed helpers -------------------------------------------------------------------------


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> bool:
    """Initialise torch.distributed (gloo) from torchrun's environment; False if not launched by torchrun."""
    import torch.distributed as dist

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or not dist.is_available():
        return False
    if not dist.is_initialized():
        # gloo whatever the device: every collective here reduces small float64 CPU tensors (statistics,
        # error sums) and sampling itself needs no communication. Ranks take the node's GPUs round-robin,
        # so more processes than GPUs share them instead of failing (NCCL allows one rank per GPU).
        dist.init_process_group(backend="gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        # A process that exits with its group alive can abort (SIGABRT, "terminate called without an active
        # exception"): gloo's worker threads outlive the interpreter's teardown. Destroy it while Python lives.
        atexit.register(_destroy_process_group)
    return True


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@functools.cache
def cpu_group() -> object:
    """A process group that can all-reduce CPU tensors: None (the default) under gloo, a gloo group under nccl.

    Statistics and error sums are reduced as float64 CPU tensors, which nccl cannot do. Creating a group
    is collective: every rank calls this at the same points, once (cached).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_backend() == "gloo":
        return None
    return dist.new_group(backend="gloo")


def exact_sum_all_ranks(values: Tensor) -> Tensor:
    """Sum float64 ``values`` over all ranks exactly (binned sums), so the result is rank-count invariant."""
    import torch.distributed as dist

    parts = _split_bins(values.detach().to(device="cpu", dtype=torch.float64))
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(parts, op=dist.ReduceOp.SUM, group=cpu_group())
    return parts.sum(0)


def shard_chunks(num: int, chunk: int) -> list[tuple[int, int]]:
    """This rank's ``(start, stop)`` index ranges: global chunks of ``chunk`` items, dealt round-robin.

    Chunks depend on global position only, so every sample is computed in the same batch (hence
    bit-identically) whatever the number of ranks.
    """
    rank, world = dist_info()
    all_chunks = [(s, min(s + chunk, num)) for s in range(0, num, chunk)]
    return all_chunks[rank::world]


# ---- samplers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler of the library: module path, function, fixed knobs, whether it draws noise."""

    name: str
    module: str
    func: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    stochastic: bool = False

    def resolve(self) -> SamplerFn | None:
        try:
            mod = importlib.import_module(self.module)
        except ImportError:
            return None
        fn = getattr(mod, self.func, None)
        return fn if callable(fn) else None


_S = "edm_samplers.solvers.samplers"
_M = "edm_samplers.solvers.multistep"
_G = "edm_samplers.solvers.samplers"
_EDM_CHURN = {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.0}

SAMPLERS: tuple[SamplerSpec, ...] = (
    SamplerSpec("euler", _S, "euler_sample"),
    SamplerSpec("heun", _S, "heun_sample"),
    SamplerSpec("midpoint", _G, "generalized_sample", {"alpha": 0.5}),
    SamplerSpec("dpm2", _S, "dpm2_sample"),
    SamplerSpec("dpmpp_2m", _M, "dpmpp_2m_sample"),
    SamplerSpec("dpmpp_3m", _M, "dpmpp_3m_sample"),
    SamplerSpec("unipc", _M, "unipc_sample"),
    SamplerSpec("deis", _M, "deis_sample"),
    SamplerSpec("ipndm", _M, "ipndm_sample"),
    SamplerSpec("lms", _M, "lms_sample"),
    SamplerSpec("stochastic", _S, "stochastic_sample", dict(_EDM_CHURN), stochastic=True),
    SamplerSpec("euler_ancestral", _S, "euler_ancestral_sample", stochastic=True),
    SamplerSpec("dpmpp_2m_sde", _M, "dpmpp_2m_sde_sample", stochastic=True),
    SamplerSpec("dpmpp_3m_sde", _M, "dpmpp_3m_sde_sample", stochastic=True),
)


def available_samplers() -> dict[str, tuple[SamplerSpec, SamplerFn]]:
    """The registered samplers that this installation provides."""
    out = {}
    for spec in SAMPLERS:
        fn = spec.resolve()
        if fn is not None:
            out[spec.name] = (spec, fn)
    return out


def _schedule(name: str, steps: int, sigma_min: float, sigma_max: float) -> Tensor:
    from . import schedules as sch

    if name == "karras":
        return sch.karras_sigmas(steps, sigma_min, sigma_max)
    if name == "loglinear":
        return sch.loglinear_sigmas(steps, sigma_min, sigma_max)
    if name == "vp":
        return sch.vp_sigmas(steps)
    if name == "iddpm":
        return sch.iddpm_sigmas(steps, sigma_min, sigma_max)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")


SCHEDULES = ("karras", "loglinear", "vp", "iddpm")


def make_sigmas(name: str, steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0) -> Tensor:
    """A schedule by name: karras / loglinear (on [sigma_min, sigma_max]), vp (Table 1's), iddpm (its grid)."""
    return _schedule(name, steps, sigma_min, sigma_max)


class CountingDenoiser:
    """Wraps a denoiser and counts its calls (network function evaluations)."""

    def __init__(self, fn: Callable[..., Tensor]) -> None:
        self.fn = fn
        self.calls = 0

    def __call__(self, x: Tensor, sigma: Tensor, /, **cond: Any) -> Tensor:
        self.calls += 1
        return self.fn(x, sigma, **cond)


def measure_nfe(run: Callable[[Callable[..., Tensor]], object]) -> int:
    """NFE of one sampling run, measured by running it on a trivial denoiser (D = 0, batch 1)."""
    c = CountingDenoiser(lambda x, s, **k: torch.zeros_like(x))
    run(c)
    return c.calls


def _nfe_of(run_with: Callable[[Callable[..., Tensor], int], object]) -> Callable[[int], int]:
    def nfe(n: int) -> int:
        return measure_nfe(lambda d: run_with(d, n))

    return nfe


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
            v = nfe(n)
            if v > t:
                break
            best = n
        if best is not None:
            out.add(best)
    return sorted(out)


# ---- problems ------------------------------------------------------------------------------------


@dataclass
class Problem:
    """A denoiser with a known (or empirical) data distribution and a feature map for the metrics."""

    name: str
    denoiser: Callable[..., Tensor]
    shape: tuple[int, ...]
    true_samples: Callable[[int], Tensor]  # n -> [n, *shape] float64 draws of the data distribution
    features: Callable[[Tensor], Tensor]  # [n, *shape] -> [n, F] float64
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    dtype: torch.dtype = torch.float64
    exact: bool = True  # the denoiser is the exact one of the data distribution
    description: str = ""


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).to(torch.float64)


def _gm_problem(name: str, gm: GaussianMixture, description: str) -> Problem:
    def truth(n: int) -> Tensor:
        return gm.sample(n, generator=torch.Generator().manual_seed(123_456))

    return Problem(name, gm, gm.sample_shape, truth, _flat, description=description)


def ring2d() -> Problem:
    """8 Gaussians (std 0.05) on the unit circle: sharp, well separated modes in 2-D."""
    ang = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    gm = GaussianMixture(torch.stack([ang.cos(), ang.sin()], 1), stds=0.05)
    return _gm_problem("ring2d", gm, "2-D: 8 Gaussians of std 0.05 on the unit circle")


def mixture64d() -> Problem:
    """16 Gaussians in 64-D with means ~ N(0, 0.25 I) and stds in [0.05, 0.3], unequal weights."""
    g = torch.Generator().manual_seed(64)
    means = torch.randn(16, 64, generator=g, dtype=torch.float64) * 0.5
    stds = 0.05 + 0.25 * torch.rand(16, generator=g, dtype=torch.float64)
    weights = 0.5 + torch.rand(16, generator=g, dtype=torch.float64)
    gm = GaussianMixture(means, stds, weights)
    return _gm_problem("mixture64d", gm, "64-D: 16 Gaussians, stds 0.05..0.3, unequal weights")


def digits_empirical() -> Problem:
    """The ideal denoiser of the 1797 real 8x8 digits (needs scikit-learn: benchmark only)."""
    from .models.digits import load_digits_images

    data = load_digits_images()
    assert isinstance(data, Tensor)
    emp = empirical_denoiser(data.to(torch.float64))

    def truth(n: int) -> Tensor:
        idx = torch.randint(0, data.shape[0], (n,), generator=torch.Generator().manual_seed(7))
        return data.to(torch.float64)[idx]

    return Problem(
        "digits-empirical", emp, (1, 8, 8), truth, _flat,
        description="empirical denoiser of the 1797 real 8x8 digits (sampling returns training images)",
    )  # fmt: skip


def digits_model() -> Problem:
    """The shipped digits U-Net; truth = the real digits, metrics in the shipped classifier's features."""
    from .models import digits, digits_features
    from .models.digits import load_digits_images

    den = digits()

    def truth(n: int) -> Tensor:
        del n  # the data set is what it is: all 1797 images (loaded only here: needs scikit-learn)
        data = load_digits_images()
        assert isinstance(data, Tensor)
        return data.to(torch.float64)

    def model(x: Tensor, sigma: Tensor, /, **cond: Any) -> Tensor:
        with torch.no_grad():
            out: Tensor = den(x.to(torch.float32), sigma.to(torch.float32), **cond)
        return out.to(x.dtype)

    return Problem(
        "digits-model", model, (1, 8, 8), truth, lambda x: digits_features(x.to(torch.float32)),
        dtype=torch.float32, exact=False,
        description="shipped digits U-Net; Frechet distance in the shipped classifier's 64-D features",
    )  # fmt: skip


digits_model_nodata = digits_model  # the real data are loaded only when a metric needs them

PROBLEMS: dict[str, Callable[[], Problem]] = {
    "ring2d": ring2d,
    "mixture64d": mixture64d,
    "digits-empirical": digits_empirical,
    "digits-model": digits_model,
}


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


def latents_for(seeds: Sequence[int], shape: Sequence[int], sigma0: float, dtype: torch.dtype) -> Tensor:
    """x at sigma0 for each seed: the first draw of that seed's generator (as ``generate()`` does)."""
    src = PerSampleNoise(seeds)
    return src.randn((len(seeds), *shape), dtype=torch.float64, device=torch.device("cpu")).to(dtype) * sigma0


def reference_cached(problem: Problem, seeds: Sequence[int], smin: float, smax: float,
                     cache_dir: Path | None, rtol: float | None = None) -> Tensor:  # fmt: skip
    """The exact-ODE limit for these seeds on [smin, smax] (float64), cached as .npy when ``cache_dir`` is set.

    Default tolerance: 1e-9 for closed-form denoisers (float64); 1e-5 for learned float32 models, whose
    outputs carry ~1e-7 relative round-off: a tighter tolerance only shrinks the adaptive steps forever.
    """
    if rtol is None:
        rtol = 1e-9 if problem.exact else 1e-5
    import numpy as np

    from .reference import ode_reference

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
        tot = exact_sum_all_ranks(torch.stack([d2.sum(), torch.tensor(float(d2.shape[0]), dtype=torch.float64)]))
        dim = math.prod(problem.shape)
        err = math.sqrt(float(tot[0]) / float(tot[1]) / dim)  # RMS per coordinate
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
    avail = available_samplers()
    names = list(avail) if samplers is None else [s for s in samplers if s in avail or s.startswith(("kdiff", "diff"))]
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
            if name not in avail:
                continue
            spec, fn = avail[name]

            def run_with(den: Callable[..., Tensor], n: int, _fn: SamplerFn = fn, _spec: SamplerSpec = spec,
                         _sched: str = sched) -> Tensor:  # fmt: skip
                sig = make_sigmas(_sched, n, problem.sigma_min, problem.sigma_max)
                x = latents_for([0], problem.shape, float(sig[0]), problem.dtype)
                return _fn(den, x, sig, noise=PerSampleNoise([0]), dtype=problem.dtype, **_spec.kwargs)

            try:
                steps = steps_for_nfe(_nfe_of(run_with), nfes)
            except ValueError:
                steps = []
            for n in steps:
                jobs.append((name, sched, n))
    bar = _bar(len(jobs), progress and rank == 0, problem.name)
    for name, sched, n in jobs:
        spec, fn = avail[name]
        try:
            sig = make_sigmas(sched, n, problem.sigma_min, problem.sigma_max)
        except ValueError:
            bar.update(1)
            continue
        src = PerSampleNoise(my_seeds)
        x0 = src.randn((len(my_seeds), *problem.shape), dtype=torch.float64, device=torch.device("cpu"))
        x0 = x0.to(problem.dtype) * float(sig[0])
        counter = CountingDenoiser(problem.denoiser)
        outs = []
        for a in range(0, len(my_seeds), chunk):
            part = PerSampleNoise(my_seeds[a : a + chunk])
            part.randn((len(part), *problem.shape), dtype=torch.float64, device=torch.device("cpu"))  # the latent draw
            with torch.no_grad():
                outs.append(fn(counter, x0[a : a + chunk], sig, noise=part, dtype=problem.dtype, **spec.kwargs))
        out = torch.cat(outs)
        nfe = counter.calls // max(1, math.ceil(len(my_seeds) / chunk))
        ref = None if spec.stochastic else refs.get((round(float(sig[-2]), 12), round(float(sig[0]), 12)))
        err, fd, sw = evaluate(problem, out, truth_stats, truth_feats, ref, world == 1)
        results.append(Result(problem.name, name, sched, n, nfe, spec.stochastic, False, err, fd, sw))
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


def iter_chunks(seeds: Sequence[int], chunk: int) -> Iterator[tuple[int, list[int]]]:
    """This rank's chunks of ``seeds`` as (global start index, seeds)."""
    for a, b in shard_chunks(len(seeds), chunk):
        yield a, list(seeds[a:b])
