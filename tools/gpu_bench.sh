#!/usr/bin/env bash
# One prepared GPU session, at most ~9 minutes in all (BUDGET seconds; each run gets what is
# left, capped by its own limit). The open goals first, then eval speed:
#   large        train step, --scan, fused cuDNN attention, vs HF PEFT (goal: >= 3x PEFT)
#   xl           train step, --scan, no remat (else --remat dots), cuDNN attention, vs HF PEFT
#                (goals: >= 3x PEFT, >= 50% MFU)
#   base         decode (greedy, 32 tokens, vs HF generate), rank classification (3 labels,
#                one encoder pass per example vs T5X's pair rows vs PEFT), packing (train and
#                per-example scoring, 512 GLUE-like examples padded vs packed 4 per 256-token
#                row) and the base train step vs PEFT with cross_projection=projected and
#                attention_padding=key_mask (no [B, heads, L, L] bias; key counts to cuDNN) as A/B.
# All with bf16 frozen weights, batch 32, inputs 512 + 100 prompt tokens.
# FULL=1 adds xxl at batch 32 (memory goal; another ~3.5 minutes). PARTS=goals runs only the
# large and xl lines (PARTS=large or xl: one of them), PARTS=eval only the base ones (to split
# the script over two calls).
# cuDNN attention is tried first (large) and XLA attention used if it fails.
# Results go to ${OUT:-/tmp}/bench.jsonl, the log to ${OUT:-/tmp}/bench.log, and the large and
# xl steps' device time by XLA op to ${PROF:-$OUT}/{large,xl}_profile/op_profile.json.
set -u
OUT=${OUT:-/tmp}
BUDGET=${BUDGET:-540}
PROF=${PROF:-$OUT}  # profiler traces (large); the lent machine's \$OUT brings back only small files
START=$SECONDS
export PYTHONPATH=$PWD XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=3
exec > >(tee -a "$OUT/bench.log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import jax, flax, optax, torch, transformers, peft; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, jax.devices())"
common="--size base --batch 32 --inputs 512 --prompt-length 100 --warmup 2 --peak-tflops 851 --frozen-dtype bfloat16 --json $OUT/bench.jsonl"
run() {  # run LIMIT_S ARGS...: one benchmark, within both its limit and what is left
  local left=$((BUDGET - (SECONDS - START)))
  local limit=$(( $1 < left ? $1 : left ))
  if [ "$limit" -lt 20 ]; then echo "== skipped (budget spent): ${*:2}"; return 0; fi
  echo "== [${limit}s] $*"
  timeout "$limit" python3 -W ignore tools/benchmark.py $common "${@:2}"  # later flags win
}
ATT=cudnn
PARTS=${PARTS:-goals,eval}
# key_mask: padding as cuDNN key counts, the relative-position bias [1, heads, L, L] (A/B).
big="--targets 32 --steps 5 --repeats 2 --compare-peft --baseline attention_padding=key_mask"
# Did a size's timing land in bench.jsonl? (A run can fail after it: its --profile, say.)
timed() { grep -q "\"size\": \"$1\"" "$OUT/bench.jsonl" 2>/dev/null; }
# --profile: one more traced run, device time by XLA op and category (op_profile.json).
if [[ $PARTS == *goals* || $PARTS == *large* ]]; then
  run 170 --size large --scan $big --attention cudnn --profile "$PROF/large_profile"
  timed large || { ATT=xla; echo "cudnn attention failed; using xla"; }
fi
if [[ $PARTS == *goals* || $PARTS == *xl* ]]; then
  # XL without remat first where it fits (no recomputed elementwise work; ~97 GB: an H200 once
  # PEFT's cache is emptied, not an H100's 80 GB); dots remat (32 GB) otherwise or on failure.
  GPU_MIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
  if [ "${GPU_MIB:-0}" -gt 110000 ]; then
    run 230 --size xl --scan --remat none $big --attention $ATT --profile "$PROF/xl_profile"
  fi
  timed xl || run 200 --size xl --scan --remat dots $big --attention $ATT --profile "$PROF/xl_profile"
fi
[[ $PARTS == *eval* ]] || { echo "== total $((SECONDS - START)) s"; exit 0; }
run 60 --mode decode --targets 32 --repeats 3 --attention $ATT --compare-peft
run 60 --mode rank --targets 4 --candidates 3 --repeats 3 --attention $ATT --compare-peft
run 60 --mode packing --targets 4 --examples 512 --max-segments 4 --packed-inputs 256 \
  --repeats 3 --attention $ATT
run 45 --mode packing --packed-work score --targets 4 --examples 512 --max-segments 4 \
  --packed-inputs 256 --repeats 3 --attention $ATT
run 120 --mode train --targets 32 --steps 5 --repeats 3 --attention $ATT --compare-peft \
  --baseline cross_projection=projected --baseline attention_padding=key_mask
if [ "${FULL:-0}" = 1 ]; then
  BUDGET=$((BUDGET + 210))
  run 200 --size xxl --scan --remat dots --targets 32 --steps 5 --attention $ATT
fi
echo "== total $((SECONDS - START)) s"
