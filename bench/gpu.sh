#!/usr/bin/env bash
# The GPU check in one command (docs/performance.md, "GPU"): configs/config.yaml's network trained by the
# Trainer on one CUDA device: bf16 step time, samples/s, peak memory, host syncs per step, bf16 vs fp32
# loss agreement, eager vs torch.compile. Writes bench/results/gpu.json and a copy of the console
# (bench/results/gpu.log); prints nvidia-smi first so the log names the GPU and the driver.
#
#   bash bench/gpu.sh                         # the full check (about 5 minutes on a recent GPU, estimate)
#   bash bench/gpu.sh --steps 100 --no-compile   # any flag of bench/gpu.py
#   bash bench/gpu.sh --smoke                 # CPU, tiny network, seconds (what the test suite runs)
#
# Python: $PYTHON, else the repository's .venv, else python3. Console copy: $GPU_LOG, else bench/results/gpu.log.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python="python3"; fi
fi
log="${GPU_LOG:-$root/bench/results/gpu.log}"
mkdir -p "$(dirname "$log")"
{
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    fi
    "$python" "$root/bench/gpu.py" "$@"
} 2>&1 | tee "$log"
