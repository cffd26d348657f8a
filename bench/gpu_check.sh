#!/usr/bin/env bash
# One script for a GPU machine: the CUDA-marked tests, then the step and loader benchmarks, each under
# a timeout, printing the figures. Usage: bench/gpu_check.sh [seconds, default 480]
# (needs this package installed with a CUDA build of torch: pip install -e ".[dev]")
set -uo pipefail
cd "$(dirname "$0")/.."
budget=${1:-480}
status=0
echo "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || status=1
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
echo "== CUDA tests"
timeout $((budget / 4)) python -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider || status=1
echo "== trainer step per mode, MobileNetV2-Tiny 144 px, batch 128 (fp32 / channels_last / +bf16)"
timeout $((budget / 2)) python bench/gpu_steps.py --device cuda --res 144 --batch 128 --steps 10 \
    --space spaces/netaug-official.yaml --set data.root=/tmp || status=1
echo "== streaming loader, images/s per DataLoader worker (144 px)"
timeout $((budget / 4)) python bench/loader.py --images 2000 --size 400 --resolution 144 --workers 1 4 8 || status=1
exit $status
