#!/usr/bin/env bash
# One GPU call: pretrain + fine-tune eoflow's byte-level VAE on Presto fuel moisture (Presto's
# split) and print the test RMSE.  Run from the repository root, carrying .whl/ (cp312 manylinux
# wheels of zarr, numcodecs, donfig, google-crc32c, pydantic, pydantic-core, annotated-types,
# typing-inspection, typing-extensions, packaging: the device image lacks the first eight):
#
#   bash benchmarks/vae/device_finetune.sh
#
# 1. A calibration run (CALIB_STEPS pretrain + fine-tune steps, its own out dir) measures the
#    steady-state time of a step of each phase on this machine (data loading included) and the
#    fixed cost (setup, checkpoints, test evaluation).
# 2. The main run uses the config's step counts scaled by one factor (at most 2) so that its
#    predicted time (steps x step time + fixed cost) is min(TRAIN_BUDGET, time left - 45 s); the
#    fine-tune steps count every member, twice with finetune.refit (selection, then refit).
# Everything, calibration included, stays inside LIMIT seconds from the start of this script; a
# run cut off by its timeout still leaves its logs and metrics in $OUT.
#
# Environment (defaults): OUT=/tmp/eoflow-device, CONFIG=benchmarks/vae/fuel_moisture_gpu.yaml,
# LIMIT=420, TRAIN_BUDGET=300, CALIB_STEPS=100, PRETRAIN_STEPS + FINETUNE_STEPS (both set: these
# steps, no calibration), PY=python3, WHEELS=.whl, SITE=/tmp/site.
set -u
START=$SECONDS
OUT=${OUT:-/tmp/eoflow-device}
CONFIG=${CONFIG:-benchmarks/vae/fuel_moisture_gpu.yaml}
LIMIT=${LIMIT:-420}
TRAIN_BUDGET=${TRAIN_BUDGET:-300}
CALIB_STEPS=${CALIB_STEPS:-100}
PY=${PY:-python3}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/site}
WORK=benchmarks/.work/vae-fuel-moisture-gpu
CALIB=$WORK-calib
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

left() { echo $((LIMIT - (SECONDS - START))); }

# run_vae TIMEOUT_S OUT_DIR LOG_NAME [fuel_moisture arguments...]
run_vae() {
    local t=$1 dir=$2 name=$3
    shift 3
    ((t < 10)) && t=10
    echo "== $name: timeout ${t}s, $*"
    timeout -k 10 "$t" "$PY" -m benchmarks.vae.fuel_moisture --config "$CONFIG" --skip-baselines \
        --out "$dir" "$@" >"$OUT/$name.stdout" 2>"$OUT/$name.stderr"
    local rc=$?
    cat "$OUT/$name.stdout"
    # tqdm writes \r-separated updates: show the last few of each bar, then any traceback
    tr '\r' '\n' <"$OUT/$name.stderr" | grep -v '^\s*$' | tail -n 12
    echo "== $name: exit $rc after $((SECONDS - START)) s (script clock)"
    return $rc
}

"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl || echo "WARNING: wheel install failed"
export PYTHONPATH=$SITE:src
{
    nvidia-smi -L || echo "(no nvidia-smi)"
    "$PY" -c "import sys, torch, numpy, zarr, pydantic; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), 'numpy', numpy.__version__, 'zarr', zarr.__version__, 'pydantic', pydantic.__version__)"
} 2>&1 | tee "$OUT/device.txt"

if [[ -n ${PRETRAIN_STEPS:-} && -n ${FINETUNE_STEPS:-} ]]; then
    P=$PRETRAIN_STEPS F=$FINETUNE_STEPS
    echo "== steps from the environment (no calibration)"
else
    rm -rf "$CALIB"
    run_vae $(($(left) < 120 ? $(left) : 120)) "$CALIB" calibration \
        --pretrain-steps "$CALIB_STEPS" --finetune-steps "$CALIB_STEPS"
    cp "$CALIB/results.json" "$OUT/calibration_results.json" 2>/dev/null
    budget=$(($(left) - 45 < TRAIN_BUDGET ? $(left) - 45 : TRAIN_BUDGET))
    plan=$(
        "$PY" - "$CALIB/results.json" "$CONFIG" "$budget" <<'PYEOF'
import json
import sys

import yaml

cfg = yaml.safe_load(open(sys.argv[2]))
P, F = cfg["pretrain"]["steps"], cfg["finetune"]["steps"]
# every member trains up to F steps, and once more (at most F) when refit picks a common step
work = F * cfg["finetune"].get("members", 1) * (2 if cfg["finetune"].get("refit") else 1)
budget = float(sys.argv[3])
try:
    r = next(iter(json.load(open(sys.argv[1]))["results"].values()))
    tp, tf, fixed = r["pretrain_step_s"], r["finetune_step_s"], max(r["overhead_s"], 0.0)
    f = min(2.0, (budget - fixed) / (P * tp + work * tf))
    msg = (f"{tp * 1e3:.1f} ms/pretrain step, {tf * 1e3:.1f} ms/fine-tune step, {fixed:.1f} s "
           f"fixed; config steps {P} + {F} ({work} fine-tune steps at most, all members) -> "
           f"{P * tp + work * tf + fixed:.0f} s predicted; budget {budget:.0f} s")
except (OSError, ValueError, KeyError, StopIteration, ZeroDivisionError) as exc:
    f, msg = 0.25, f"no usable calibration ({exc!r}): config steps / 4"
print(max(1, round(P * f)), max(1, round(F * f)), f"{msg} -> factor {f:.3f}")
PYEOF
    )
    read -r P F MSG <<<"$plan"
    [[ $P =~ ^[0-9]+$ && $F =~ ^[0-9]+$ ]] || { P=250 F=400 MSG="estimator failed: 250 + 400"; }
    echo "== plan: $MSG" | tee "$OUT/plan.txt"
fi
echo "== main run: $P pretrain + $F fine-tune steps"

rm -rf "$WORK"
run_vae $(($(left) - 15)) "$WORK" main --pretrain-steps "$P" --finetune-steps "$F"
rc=$?
cp "$WORK/results.json" "$OUT/results.json" 2>/dev/null
for phase in pretrain finetune; do
    for f in metrics.jsonl manifest.json eval.json; do
        [[ -f $WORK/$phase/$f ]] && cp "$WORK/$phase/$f" "$OUT/${phase}_$f"
    done
done
ls -l "$OUT"
if [[ -f $OUT/finetune_eval.json ]]; then
    echo "== test metrics (finetune/eval.json):"
    cat "$OUT/finetune_eval.json"
else
    echo "== no finetune/eval.json: the main run did not finish (exit $rc); last metrics:"
    tail -n 2 "$OUT/pretrain_metrics.jsonl" "$OUT/finetune_metrics.jsonl" 2>/dev/null
fi
echo "== done in $((SECONDS - START)) s"
exit $rc
