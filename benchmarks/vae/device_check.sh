#!/usr/bin/env bash
# One GPU call: eoflow's ByteVAE next to Hugging Face's T5 at ByT5-small size (inputs 1024,
# targets 189, batch 64, bf16), compiled first (the target), then eager. One JSON file per run
# lands in $OUT; a run that does not finish in time leaves the earlier ones.
#   bash benchmarks/vae/device_check.sh PATH/TO/hf_byt5_bench.py
set -u
HF=${1:?path of hf_byt5_bench.py}
OUT=${OUT:-/tmp/eoflow-device}
mkdir -p "$OUT"
export PYTHONPATH=src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
COMMON=(--device cuda --batch-sizes 64 --steps 10 --warmup 3 --peak-tflops 790)
{ nvidia-smi -L; python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"; } | tee "$OUT/device.txt"
python3 -m benchmarks.vae.gpu_throughput "${COMMON[@]}" --compile --no-hf >"$OUT/eoflow_compile.json"
python3 "$HF" "${COMMON[@]}" --compile >"$OUT/hf_compile.json"
python3 -m benchmarks.vae.gpu_throughput "${COMMON[@]}" --no-hf >"$OUT/eoflow_eager.json"
python3 "$HF" "${COMMON[@]}" >"$OUT/hf_eager.json"
head -c 1500 "$OUT"/*.json
