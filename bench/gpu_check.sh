#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py does the work; its docstring says what it measures): the CUDA
# tests, backend agreement, frames/s per backend at 352x352 and 16 live sessions on a GPU server,
# ending with ONE JSON line. Under 5 minutes; on a machine without an NVIDIA GPU it prints
# {"bench": "gpu_check", "skipped": "no CUDA GPU: ..."} and exits 0 at once.
#
#   bash bench/gpu_check.sh                 # from the repository root or anywhere in the checkout
#   bash bench/gpu_check.sh | tail -n 1     # the JSON line alone
#
# Install beforehand (the GPU machine may have no internet; nothing here installs anything):
#   pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128   # the CUDA build
#   pip install -e ".[test]"                                                      # this checkout, pytest
# Optional, for ONNX Runtime on the GPU (without it those rows say it is missing, the rest runs):
#   pip uninstall -y onnxruntime && pip install onnxruntime-gpu   # one import name: not both at once
#   TensorRT's libraries, for ONNX Runtime's TensorRT provider (else it falls back to CUDA)
#
# Environment: PYTHON (default python3), GPU_CHECK_TIMEOUT_S (default 295: the hard stop, beyond the
# script's own 280 s budget). Arguments go to bench/gpu_check.py (e.g. --batches 1 8 32 --size 352).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
python=${PYTHON:-python3}
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo '{"bench": "gpu_check", "skipped": "no CUDA GPU: nvidia-smi not found"}'
    exit 0
fi
limit=${GPU_CHECK_TIMEOUT_S:-295}
timeout -k 10 "$limit" "$python" bench/gpu_check.py "$@"
status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "{\"bench\": \"gpu_check\", \"ok\": false, \"error\": \"bench/gpu_check.py did not finish within ${limit} s\"}"
fi
exit "$status"
