#!/usr/bin/env bash
# The checks that need a CUDA device, in one go (issue 6): the CUDA tests, the graphed U-Net benchmark,
# the sampler-overhead benchmark, batched vs two-call CFG, then the whole suite. Logs and JSON go to $OUT (default ./gpu_out).
# Usage: bash benchmarks/gpu_checks.sh   (from the repository root; uses src/ directly, no install needed)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
QUICK=${QUICK:-0}  # 1: a fast dry run of the script itself (CPU)
{ nvidia-smi -L 2>/dev/null; $PY -c 'import torch, platform; print("torch", torch.__version__, "cuda", torch.version.cuda, "python", platform.python_version(), torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")'; } | tee "$OUT/machine.txt"
echo "== CUDA tests"
timeout 150 $PY -m pytest -q -p no:cacheprovider -m cuda tests/test_graph.py 2>&1 | tee "$OUT/cuda_tests.log" | tail -15
echo "== graphed U-Net benchmark"
if [ "$QUICK" = 1 ]; then args=(--nets digits --batches 1 --samplers heun unipc --rounds 1 --reps 1 --steps 3); else args=(); fi
timeout 240 $PY benchmarks/graph_unet.py "${args[@]}" --json "$OUT/graph_unet.json" 2>&1 | tee "$OUT/graph_unet.log"
echo "== sampler overhead (free denoiser)"
if [ "$QUICK" = 1 ]; then args=(--shapes 1,3,32,32 --rounds 1); else args=(); fi
timeout 120 $PY benchmarks/overhead.py --no-compile "${args[@]}" --json "$OUT/overhead.json" 2>&1 | grep '^#' | tee "$OUT/overhead.log"
echo "== batched vs two-call classifier-free guidance (issue 13)"
if [ "$QUICK" = 1 ]; then args=(--nets digits --batches 1 --rounds 1 --reps 1); else args=(--rounds 7 --reps 5); fi
if $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() or "'"$QUICK"'" == "1" else 1)'; then
  timeout 150 $PY benchmarks/guidance_batch.py "${args[@]}" --json "$OUT/guidance_batch.json" 2>&1 | grep -v Warning | tee "$OUT/guidance_batch.log"
else
  echo "no CUDA device: skipped" | tee "$OUT/guidance_batch.log"
fi
echo "== counter noise (issue 15): graphed stochastic / 2M-SDE / ancestral at batch 64 vs the network graphed alone"
if [ "$QUICK" = 1 ]; then args=(--nets digits --batches 2 --rounds 1 --reps 1 --steps 3); else args=(--nets cifar digits --batches 64); fi
timeout 240 $PY benchmarks/graph_unet.py "${args[@]}" --samplers stochastic dpmpp_2m_sde euler_ancestral --noise counter \
  --json "$OUT/graph_unet_counter.json" 2>&1 | tee "$OUT/graph_unet_counter.log" | grep -E 'graphed_over_net_graph|sampler|batch' | head -40
echo "== counter noise: cost per draw and per eager sampling call on the GPU; CPU and CUDA give the same bits"
if [ "$QUICK" = 1 ]; then args=(--rounds 2 --steps 4); else args=(); fi
if $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  timeout 120 $PY benchmarks/noise_cost.py --device cuda "${args[@]}" --json "$OUT/noise_cost_cuda.json" 2>&1 | tee "$OUT/noise_cost_cuda.log" | tail -14
  timeout 60 $PY -c '
import torch, edm_samplers as E
src = E.CounterNoise(range(64), key=3)
for d in (0, 1, 17, 2**32 - 1):
    a = src.randn_at(d, (64, 3, 32, 32), dtype=torch.float32, device="cpu")
    b = src.randn_at(d, (64, 3, 32, 32), dtype=torch.float32, device="cuda").cpu()
    assert torch.equal(a, b), ("CPU and CUDA differ", d, (a - b).abs().max().item())
print("CounterNoise: CPU and CUDA bitwise equal")' 2>&1 | tee "$OUT/counter_cpu_cuda.log"
else
  echo "no CUDA device: skipped"
fi
if [ "$QUICK" != 1 ]; then
  echo "== whole test suite"
  timeout "${SUITE_TIMEOUT:-150}" $PY -m pytest -q -p no:cacheprovider -x 2>&1 | tee "$OUT/suite.log" | tail -15
fi
