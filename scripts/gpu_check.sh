#!/usr/bin/env bash
# GPU check for a lent GPU machine (bench/gpu_check.py): one SRC iteration's heavy stages on a
# 7B-shaped LLaVA with random bf16 weights. Prints GPU model, candidate-search tokens/s,
# scoring pairs/s, DPO step time and peak GPU memory; writes them to ${OUT:-.}/gpu_check.json.
# Needs a Python with the project's packages (a CUDA torch): .venv if present, else python3.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PY" - <<'PY'
import importlib, sys
missing = [m for m in ("torch", "transformers", "peft", "trl", "datasets", "pandas") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: missing packages {missing}: pip install -e . (with a CUDA torch) first")
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA GPU")
print("gpu:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -m bench.gpu_check --shape 7b --device cuda --prompts "${PROMPTS:-16}" --dpo-steps "${DPO_STEPS:-3}" \
    --out "${OUT:-.}/gpu_check.json"
