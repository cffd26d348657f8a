#!/usr/bin/env bash
# The smallest study that settles "does NetAug make the tiny model better at convergence?" (issue 17)
# on one GPU: the CPU study's cell (search/evidence/, docs/results/convergence.md: MobileNetV2 width 0.1, 27,000
# Fashion-MNIST images at 16 px, 40 epochs, where plain training's train top-1 plateaus at 0.905),
# paired baseline vs NetAug over 5 seeds, then in the same run sort: augmented and the cheaper RKD
# teacher at 3 seeds. Every cell is its own process (in-memory data on the device, augmented there),
# many at once on the one GPU.
#
#   bench/gpu_evidence.sh [fashion-mnist root] [seconds, default 480]
#
# Sizing (no GPU measured yet; CPU figures in docs/results/convergence.md): 40 epochs x 210 steps = 8,400 steps
# per cell. At 16 px a step is a few thousand tiny kernels, so it is launch-bound: each process
# launches on its own CPU core, and the GPU runs the kernels of all of them. Assuming about 7 ms of
# GPU time per NetAug step and 2 ms per baseline step, the 10 must-cells need about 6.3 min of GPU
# time, under the 8 min default budget. The must-cells run first, on their own; the timeout ends the
# study and the report still prints every cell that finished; rerun the same command to continue.
set -uo pipefail
cd "$(dirname "$0")/.."
root=${1:-/usr/share/datasets/fashion-mnist}
budget=${2:-480}
out=${OUT:-runs}/evidence-gpu
jobs=${JOBS:-10}
study=(--out "$out" --set training.device=cuda --set "data.root=$root" --set data.subset=27000
       --bases mobilenetv2@0.1 --epochs 40 --curve-epochs --seeds 5)
must=(--arms baseline netaug)
more=(--arms baseline netaug netaug_sortaug netaug_rkd_sampled --arm-seeds netaug_sortaug=3 netaug_rkd_sampled=3)
echo "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
start=$(date +%s)
echo "== must-cells: baseline and netaug, 5 seeds ($jobs jobs, ${budget}s in all), $out"
timeout --signal=INT --kill-after=20 "$budget" python -m search.evidence "${study[@]}" "${must[@]}" --jobs "$jobs" --threads 1
status=$?
left=$(( budget - ($(date +%s) - start) ))
if [ $status -eq 0 ] && [ $left -gt 60 ]; then
  echo "== then sort: augmented and the sampled RKD teacher, 3 seeds (${left}s left)"
  timeout --signal=INT --kill-after=20 "$left" python -m search.evidence "${study[@]}" "${more[@]}" --jobs "$jobs" --threads 1
fi
echo "== study ended with status $status after $(( $(date +%s) - start )) s (124/130: timed out, rerun to continue)"
echo "== report"
python -m search.evidence "${study[@]}" "${more[@]}" --report
python - "$out" <<'EOF'
import sys
import pandas as pd
cells = pd.read_parquet(f"{sys.argv[1]}/evidence.parquet")
print(cells.groupby(["arm", "epochs"])[["cell_s", "mean_step_s"]].mean().to_string())
EOF
[ $? -eq 0 ] || echo "(no finished cell to time)"
exit $status
