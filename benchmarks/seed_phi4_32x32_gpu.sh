#!/usr/bin/env bash
# Reproduces the seed talk's table "DM on 2d scalar phi^4 model" (symmetric phase, 32x32,
# kappa = 0.21, lambda = 0.022): <M>, chi2 and U_L of
#   Training (HMC)  0.0012 +- 0.0007   2.5160 +- 0.0457    0.1042 +- 0.0367
#   Testing (HMC)   0.0018 +- 0.0015   2.4463 +- 0.1099   -0.0198 +- 0.1035
#   Generated (DM)  0.0017 +- 0.0015   2.4227 +- 0.1035    0.0484 +- 0.0959
# with theoryc: an HMC training ensemble of 5120 configurations (4 chains x 1280), an independent
# HMC test ensemble (another seed), a score-based diffusion model (VE schedule, sigma = 20) trained
# on the first, 5120 generated configurations, and the measurement of all three. The model starts
# as the Gaussian of the training set's power spectrum and has the network's zero-mode head
# (--two-point --zero-mode-head: without them the CPU run's chi2 came out 19% low; SEED_PLAIN=1
# trains the plain model). xi2 needs many samples (G0/G1 - 1 ~ 0.03: about 10^4 for a 30% error),
# which the GPU gives.
#
# Meant for a GPU machine: `bash benchmarks/seed_phi4_32x32_gpu.sh [OUTDIR]`. Every size can be
# shrunk through the environment, e.g. a CPU check of the commands in a minute:
#   SEED_DEVICE=cpu SEED_L=8 SEED_N=64 SEED_WARMUP=50 SEED_TRAIN_STEPS=20 SEED_SAMPLE_STEPS=20 \
#     bash benchmarks/seed_phi4_32x32_gpu.sh /tmp/seed_small
set -euo pipefail

OUT=${1:-seed_phi4_32x32}
DEVICE=${SEED_DEVICE:-cuda}
L=${SEED_L:-32}
CHAINS=${SEED_CHAINS:-4}
N=${SEED_N:-1280}                        # per chain: 4 x 1280 = 5120 configurations
EVERY=${SEED_EVERY:-5}                   # trajectories between kept configurations
WARMUP=${SEED_WARMUP:-1000}
TRAIN_STEPS=${SEED_TRAIN_STEPS:-20000}
SAMPLE_STEPS=${SEED_SAMPLE_STEPS:-500}   # reverse-SDE steps
N_GENERATED=$((CHAINS * N))

mkdir -p "$OUT"
THEORY=(phi4_2d --set "L=$L" --set kappa=0.21 --set lambda=0.022)

run() { echo "+ $*" >&2; /usr/bin/time -f "  %e s" "$@"; }

run theoryc sample "${THEORY[@]}" --sampler hmc --chains "$CHAINS" --n "$N" --every "$EVERY" \
    --warmup "$WARMUP" --seed 1 --device "$DEVICE" --quiet -o "$OUT/train.h5"
run theoryc sample "${THEORY[@]}" --sampler hmc --chains "$CHAINS" --n "$N" --every "$EVERY" \
    --warmup "$WARMUP" --seed 2 --device "$DEVICE" --quiet -o "$OUT/test.h5"
RECIPE=(--two-point --zero-mode-head)
[ -n "${SEED_PLAIN:-}" ] && RECIPE=()
run theoryc train "${THEORY[@]}" --model diffusion --schedule ve --data "$OUT/train.h5" \
    --steps "$TRAIN_STEPS" --seed 3 --device "$DEVICE" "${RECIPE[@]}" --quiet -o "$OUT/dm.pt"
run theoryc sample "${THEORY[@]}" --sampler diffusion --model "$OUT/dm.pt" --n "$N_GENERATED" \
    --steps "$SAMPLE_STEPS" --seed 4 --device "$DEVICE" --quiet -o "$OUT/generated.h5"

for set in train test generated; do
    theoryc measure "$OUT/$set.h5" --json --cumulants 2 > "$OUT/$set.json"
done

python - "$OUT" "$L" <<'EOF'
import json, sys
out = sys.argv[1]
# The seed's chi2 is V (<M^2> - <M>^2) = V kappa_2(M); phi4_2d.theory's own estimate chi2 is
# LANGUAGE.md's V (<M^2> - <|M|>^2). Both are printed.
volume = int(sys.argv[2]) ** 2
# xi2 (issue 11): the second-moment correlation length, HMC against the generated samples
print(f"{'data-set':<12}{'<M>':>22}{'V kappa2(M)':>22}{'chi2 (|M|)':>22}{'U_L':>22}{'xi2':>22}")
for name in ("train", "test", "generated"):
    s = json.load(open(f"{out}/{name}.json"))
    k2 = s["cumulants"]["M"]["kappa2"]
    seed_chi2 = {"mean": volume * k2["mean"], "error": volume * k2["error"]}
    cells = [s["observables"]["M"], seed_chi2, s["estimates"]["chi2_abs"], s["estimates"]["U_L"],
             s["estimates"]["xi2"]]
    print(f"{name:<12}" + "".join(f"{c['mean']:>12.4f} +- {c['error']:<6.4f}" for c in cells))
EOF
