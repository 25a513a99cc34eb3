#!/usr/bin/env bash
# Strong and weak scaling of HMC chains over N GPUs (one rank per device, NCCL for training,
# gloo on the host for the chain driver's block gathers), where such a machine exists:
#
#     bash benchmarks/gpu_scaling.sh [max_gpus] [L] [chains]
#
# Each job: phi4_2d on L x L (default 64), float32, 50 tuned warm-up trajectories, 500 kept,
# observables only. Strong: `chains` (default 4096) chains in all; weak: `chains` per rank.
# Prints chain-trajectories per second of production (rank 0's clock, from the file's timing).
set -euo pipefail
MAX=${1:-$(nvidia-smi -L | wc -l)}
L=${2:-64}
CHAINS=${3:-4096}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OMP_NUM_THREADS=1 THEORYC_CHAIN_STREAMS=${THEORYC_CHAIN_STREAMS:-8}

rate() {   # ranks chains -> chain-trajectories per second
  local out="$WORK/r$1_c$2.h5"
  torchrun --nproc-per-node "$1" --master-port $((29500 + RANDOM % 1000)) -m theoryc -- \
    sample phi4_2d --set L="$L" --sampler hmc --device cuda --dtype float32 --chains "$2" \
    --n 500 --warmup 50 --no-configs --quiet -o "$out" > /dev/null
  python - "$out" "$2" <<'PY'
import json, sys, h5py
with h5py.File(sys.argv[1]) as f:
    print(f"{int(sys.argv[2]) * 500 / json.loads(f.attrs['timing'])['seconds']:.0f}")
PY
}

printf "%5s %16s %14s\n" ranks "strong chains/s" "weak chains/s"
for ((n = 1; n <= MAX; n *= 2)); do
  printf "%5d %16s %14s\n" "$n" "$(rate "$n" "$CHAINS")" "$(rate "$n" $((CHAINS * n)))"
done
