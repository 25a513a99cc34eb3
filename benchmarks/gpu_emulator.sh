#!/usr/bin/env bash
# Conditional diffusion as an emulator on a GPU: generated events per second for free fields
# conditioned on the mass (benchmarks/bench_emulator.py), on a chain of 8 sites and on 32x32,
# with batches that fill the device. The CPU figures are in BENCHMARKS.md ("Conditional
# diffusion").
#
# Meant for a GPU machine: `bash benchmarks/gpu_emulator.sh`. A quick CPU check of the commands:
#   EM_DEVICE=cpu EM_N=64 EM_TRAIN=5 EM_LATTICES=8 bash benchmarks/gpu_emulator.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${EM_DEVICE:-cuda}
N=${EM_N:-65536}
TRAIN=${EM_TRAIN:-500}
for lattice in ${EM_LATTICES:-"8 32x32"}; do
  python benchmarks/bench_emulator.py --device "$DEVICE" --lattice "$lattice" --n "$N" \
    --train-steps "$TRAIN" --batch-size 1024
done
