#!/usr/bin/env bash
# Speed on one GPU, in under 5 minutes (issue 13):
#   1. the compiled samplers equal the eager ones on the GPU (float64, CUDA graphs included);
#   2. HMC trajectories/s on phi4_2d 64x64 x 1024 chains, float32, 10 leapfrog steps: the
#      hand-written HMC eager and under torch.compile, theoryc eager and --compile (fused);
#   3. diffusion on phi4_2d 32x32: training steps/s (batch 256) and samples/s (1024 samples,
#      100 reverse-SDE steps), score and energy models.
#
#   bash benchmarks/gpu_speed.sh
# A dry run of the commands on a CPU in ~2 minutes:
#   DEVICE=cpu L=16 CHAINS=16 N=10 DM_STEPS=5 DM_BATCH=8 DM_N=16 DM_SAMPLE_STEPS=5 bash benchmarks/gpu_speed.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
L=${L:-64}
CHAINS=${CHAINS:-1024}
N=${N:-50}                          # trajectories per timing
export THEORYC_CACHE=${THEORYC_CACHE:-$(mktemp -d)}

echo "== compiled == eager on $DEVICE"
python benchmarks/bench_compile.py --check --device "$DEVICE"

echo "== HMC phi4_2d ${L}x${L} x $CHAINS chains"
python benchmarks/bench_compile.py --device "$DEVICE" --L "$L" --chains "$CHAINS" --n "$N" --reps 3 \
    --threads "$(nproc)"

echo "== diffusion phi4_2d 32x32"
python - "$DEVICE" <<'EOF'
import os, sys, time
import torch
import theoryc
from theoryc.runtime.models.diffusion import sample_diffusion, train_diffusion

device = sys.argv[1]
theory = theoryc.load("phi4_2d", L=32, kappa=0.21, **{"lambda": 0.022})
data = torch.randn(4096, *theory.shape)      # throughput does not depend on the data
steps, batch = int(os.environ.get("DM_STEPS", 200)), int(os.environ.get("DM_BATCH", 256))
n, sample_steps = int(os.environ.get("DM_N", 1024)), int(os.environ.get("DM_SAMPLE_STEPS", 100))
for flavour in ("score", "energy"):
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()
    start = time.perf_counter()
    model = train_diffusion(theory, data, schedule=theory.schedules["ve"], flavour=flavour,
                            steps=steps, batch_size=batch, warmup=10, progress=False, device=device)
    sync()
    train_s = time.perf_counter() - start
    sample_diffusion(model, 64, steps=5, progress=False)            # warm the kernels
    sync()
    start = time.perf_counter()
    sample_diffusion(model, n, steps=sample_steps, progress=False, batch_size=n)
    sync()
    sample_s = time.perf_counter() - start
    print(f"{flavour:>6}: train {steps / train_s:8.1f} steps/s (batch {batch}, incl. set-up), "
          f"sample {n / sample_s:8.1f} samples/s ({sample_steps} EM steps)", flush=True)
EOF
