#!/usr/bin/env bash
# Fourier flow vs RealNVP towards the continuum: the anharmonic oscillator (lambda = 1) at fixed
# extent T = N a = 16 on N = 64, 128, 256 time sites, both flows with the same 16 coupling layers
# of 32 channels and the same training steps (benchmarks/bench_fourier_flow.py, one process per
# size). On the CPU (N = 64 and 128 at 8 x 16 and 600 steps) the Fourier flow kept ESS 0.92 -> 0.83
# while RealNVP's fell 0.17 -> 0.009 (BENCHMARKS.md).
#
# Meant for a GPU machine: `bash benchmarks/fourier_flow_gpu.sh`. Sizes through the environment,
# e.g. a quick CPU check of the commands: FF_DEVICE=cpu FF_SIZES=16 FF_STEPS=20 FF_N=200 \
#   FF_LAYERS=2 FF_HIDDEN=4 bash benchmarks/fourier_flow_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${FF_DEVICE:-cuda}
SIZES=${FF_SIZES:-"64 128 256"}
STEPS=${FF_STEPS:-5000}
LAYERS=${FF_LAYERS:-16}
HIDDEN=${FF_HIDDEN:-32}
N=${FF_N:-20000}               # IMH steps per chain (4 chains); HMC the same
for sites in $SIZES; do
  a=$(python -c "print(16 / $sites)")
  python benchmarks/bench_fourier_flow.py --device "$DEVICE" --sites "$sites" --a "$a" \
    --steps "$STEPS" --layers "$LAYERS" --hidden "$HIDDEN" --n "$N" --hmc-n "$N"
done
