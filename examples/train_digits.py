"""Train the built-in digits model: a compact U-Net with the EDM loss on scikit-learn's 8x8 digits.

Single process (what produced the shipped weights; see docs/training.md)::

    python examples/train_digits.py --minutes 10 --seed 0 --out src/edm_samplers/models/digits.safetensors

Data-parallel on CPU with 2 processes (gloo)::

    torchrun --nproc_per_node=2 examples/train_digits.py --iters 2000 --out digits.safetensors

Under ``torchrun`` the process group is initialised from the environment (RANK, WORLD_SIZE, ...). The
network starts from the same seed on every rank (and DDP broadcasts rank 0's weights), each rank draws
its own minibatches, noise levels and noise from a generator seeded with ``seed`` and its rank (the
randomness is sharded, not repeated), DDP averages the gradients, so the parameters, and hence the
EMA, stay identical across ranks. Only rank 0 writes files. ``--batch`` is the global batch size.

Writes the EMA weights as float16 safetensors (``--out``) and ``<out>.json`` holding the architecture,
the preconditioner settings and the training record (command, seed, iterations, wall time, loss).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import cast

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from edm_samplers._safetensors import save_file
from edm_samplers.models.digits import (
    DEFAULT_PRECOND_CONFIG,
    DEFAULT_UNET_CONFIG,
    build_digits_unet,
    load_digits_images,
)
from edm_samplers.precond import EDMPrecond
from edm_samplers.training import EMA, AugmentPipe, EDMLoss


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output .safetensors path (config goes to <out>.json)")
    p.add_argument("--iters", type=int, default=None, help="number of optimizer steps")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget instead of --iters")
    p.add_argument("--batch", type=int, default=128, help="global batch size (split over ranks)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=200, help="linear learning-rate warm-up steps")
    p.add_argument("--decay-frac", type=float, default=0.3, help="final fraction of training with cosine lr decay")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ema-half-life", type=float, default=20_000, help="EMA half-life in images")
    p.add_argument("--augment-p", type=float, default=0.0, help="non-leaky augmentation probability (0: off)")
    p.add_argument("--model-channels", type=int, default=DEFAULT_UNET_CONFIG["model_channels"])
    p.add_argument("--num-blocks", type=int, default=DEFAULT_UNET_CONFIG["num_blocks"])
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--save-dtype", choices=["float16", "float32"], default="float16")
    args = p.parse_args(argv)
    if (args.iters is None) == (args.minutes is None):
        p.error("pass exactly one of --iters and --minutes")
    return args


def param_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = world > 1
    if distributed:
        dist.init_process_group("gloo")  # reads MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE set by torchrun
    rank = dist.get_rank() if distributed else 0
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} must be divisible by the number of processes {world}")
    local_batch = args.batch // world

    images = cast(torch.Tensor, load_digits_images())
    unet_cfg = dict(DEFAULT_UNET_CONFIG)
    unet_cfg["model_channels"] = args.model_channels
    unet_cfg["num_blocks"] = args.num_blocks
    if args.augment_p > 0:
        unet_cfg["augment_dim"] = AugmentPipe.label_dim
    torch.manual_seed(args.seed)  # identical initialisation on every rank
    net = build_digits_unet(unet_cfg)
    n_params = sum(p.numel() for p in net.parameters())
    model: torch.nn.Module = DistributedDataParallel(net) if distributed else net
    denoiser = EDMPrecond(model, sigma_data=DEFAULT_PRECOND_CONFIG["sigma_data"])
    loss_fn = EDMLoss(sigma_data=DEFAULT_PRECOND_CONFIG["sigma_data"])
    augment = AugmentPipe(p=args.augment_p) if args.augment_p > 0 else None
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(0.9, 0.99), eps=1e-8)
    ema = EMA(net, half_life=args.ema_half_life, rampup_ratio=0.05)
    gen = torch.Generator().manual_seed(args.seed * 1_000_003 + rank)  # sharded randomness

    if rank == 0:
        print(f"world={world} params={n_params} batch={args.batch} images={images.shape[0]}", flush=True)
    t0 = time.time()
    losses: list[float] = []
    step = 0
    stop = False
    budget_s = None if args.minutes is None else 60 * args.minutes
    while not stop:
        # learning rate: warm-up, constant, cosine decay over the final decay_frac (of iters, or of time)
        frac = step / args.iters if budget_s is None else (time.time() - t0) / budget_s
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        if frac > 1 - args.decay_frac:
            lr *= 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - 1 + args.decay_frac) / args.decay_frac)))
            lr = max(lr, 0.02 * args.lr)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(images.shape[0], (local_batch,), generator=gen)
        loss = loss_fn(denoiser, images[idx], augment_pipe=augment, generator=gen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        ema.update(net, batch_size=args.batch)
        losses.append(float(loss.detach()))
        step += 1
        if args.iters is not None:
            stop = step >= args.iters
        elif step % 10 == 0:
            flag = torch.tensor([float(time.time() - t0 >= budget_s)])
            if distributed:
                dist.all_reduce(flag)  # rank-consistent stop decision
            stop = bool(flag.item() > 0)
        if rank == 0 and (step % args.log_every == 0 or stop):
            recent = sum(losses[-args.log_every :]) / len(losses[-args.log_every :])
            print(f"step {step} loss {recent:.4f} lr {lr:.2e} {time.time() - t0:.0f}s", flush=True)

    wall = time.time() - t0
    final_loss = sum(losses[-200:]) / len(losses[-200:])
    digest = param_digest(net)
    if distributed:
        digests: list[str | None] = [None] * world
        dist.all_gather_object(digests, digest)
        same = all(d == digest for d in digests)
        if rank == 0:
            print(f"params identical across ranks: {same}", flush=True)
            if not same:
                raise SystemExit("parameter mismatch across ranks")
    if rank == 0:
        ema_net = build_digits_unet(unet_cfg)
        ema.copy_to(ema_net)
        dtype = getattr(torch, args.save_dtype)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.to(dtype) for k, v in ema_net.state_dict().items()}, args.out)
        record = {
            "unet": unet_cfg,
            "precond": DEFAULT_PRECOND_CONFIG,
            "training": {
                "command": "python " + " ".join(sys.argv)
                if world == 1
                else f"torchrun x{world}: " + " ".join(sys.argv),
                "seed": args.seed,
                "world_size": world,
                "iterations": step,
                "images_seen": step * args.batch,
                "batch": args.batch,
                "lr": args.lr,
                "ema_half_life_images": args.ema_half_life,
                "augment_p": args.augment_p,
                "wall_time_s": round(wall, 1),
                "final_loss_mean_last_200": round(final_loss, 5),
                "params": n_params,
                "torch": torch.__version__,
                "weights_dtype": args.save_dtype,
            },
        }
        args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"done: {step} steps in {wall:.0f}s, final loss {final_loss:.4f}; wrote {args.out}", flush=True)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
