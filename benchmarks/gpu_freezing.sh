#!/usr/bin/env bash
# Topological freezing on 2-d U(1), the bigger runs for a GPU machine (issue 10): tau_int(Q) of
# HMC against the gauge-equivariant flow after independent Metropolis (benchmarks/bench_freezing.py),
# at L = 8 with 10x the CPU table's statistics, then at L = 16 with plaquette couplings on top of
# the flow's marginal layer and a longer training.
#
#   bash benchmarks/gpu_freezing.sh [OUTDIR]
# Every size can be shrunk through the environment, e.g. a CPU check of the commands in a minute:
#   FREEZE_DEVICE=cpu FREEZE_N=200 FREEZE_CHAINS=4 FREEZE_STEPS=20 FREEZE_BIG_L=8 \
#     bash benchmarks/gpu_freezing.sh /tmp/freeze_small
set -euo pipefail

OUT=${1:-freezing}
DEVICE=${FREEZE_DEVICE:-cuda}
N=${FREEZE_N:-100000}                 # steps per chain (trajectories / IMH steps)
CHAINS=${FREEZE_CHAINS:-64}
STEPS=${FREEZE_STEPS:-5000}           # flow training steps
BIG_L=${FREEZE_BIG_L:-16}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"

python "$HERE/bench_freezing.py" --L 8 --betas 3 5 7 --n "$N" --chains "$CHAINS" \
    --flow-steps "$STEPS" --flow-layers 0 --device "$DEVICE" | tee "$OUT/freezing_L8.md"
python "$HERE/bench_freezing.py" --L "$BIG_L" --betas 3 5 7 --n "$N" --chains "$CHAINS" \
    --flow-steps "$STEPS" --flow-layers 8 --device "$DEVICE" | tee "$OUT/freezing_L$BIG_L.md"
