#!/usr/bin/env bash
# The smallest study that settles "does NetAug make the tiny model better at convergence?" (issue 17)
# on one GPU: the CPU study's must-cells (bench/evidence.py, docs/results.md), paired baseline vs
# NetAug over 5 seeds at the plateau schedule, plus the baseline curve at twice that schedule; then,
# while the time lasts, sort: augmented and the cheaper RKD teacher at 3 seeds. Every cell is its own
# process (in-memory Fashion-MNIST on the device, augmented there), many at once on the one GPU.
#
#   bench/gpu_evidence.sh [fashion-mnist root] [seconds, default 480]
#
# Sizing (no GPU measured yet; CPU figures in docs/results.md): at 16 px a step is launch-bound, so
# jobs share the GPU well; 13 cells of up to 20 epochs x 421 steps at an assumed <= 25 ms per NetAug
# step on a shared GPU are under 4 min each, all at once. The timeout ends the study and the report
# still prints every cell that finished; rerun the same command to continue it.
set -uo pipefail
cd "$(dirname "$0")/.."
root=${1:-/usr/share/datasets/fashion-mnist}
budget=${2:-480}
out=${OUT:-runs}/evidence-gpu
jobs=${JOBS:-14}
study=(--out "$out" --set training.device=cuda --set "data.root=$root" --bases mobilenetv2@0.1
       --epochs 20 --curve-epochs 40 --arms baseline netaug netaug_sortaug netaug_rkd_sampled
       --seeds 5 --arm-seeds netaug_sortaug=3 netaug_rkd_sampled=3)
echo "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
echo "== study ($jobs jobs, ${budget}s), $out"
start=$(date +%s)
timeout --signal=INT --kill-after=20 "$budget" python bench/evidence.py "${study[@]}" --jobs "$jobs" --threads 1
status=$?
echo "== study ended with status $status after $(( $(date +%s) - start )) s (124/130: timed out, rerun to continue)"
echo "== report"
python bench/evidence.py "${study[@]}" --report
python - "$out" <<'EOF'
import sys
import pandas as pd
cells = pd.read_parquet(f"{sys.argv[1]}/evidence.parquet")
print(cells.groupby(["arm", "epochs"])[["cell_s", "mean_step_s"]].mean().to_string())
EOF
[ $? -eq 0 ] || echo "(no finished cell to time)"
exit $status
