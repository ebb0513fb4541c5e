#!/usr/bin/env bash
# One prepared GPU session, at most ~8 minutes in all (BUDGET seconds; each run gets what is
# left, capped by its own limit): environment, then at T5 1.1 base with bf16 frozen weights:
#   train step   batch 32, inputs 512 + 100 prompt tokens, targets 32, vs HF PEFT, and with
#                cross_projection=projected (T5X's order) interleaved as the A/B baseline;
#   decode       greedy, 32 tokens, batch 32, vs HF PEFT generate;
#   score        rank classification, batch 32, targets 4, vs HF PEFT;
#   packing      512 GLUE-like examples (median 40 tokens) padded to 512 vs packed 8 per
#                512-token row (encoder rows 8 x 100 prompt + 512).
# FULL=1 adds the large/xl/xxl train lines of the 2026-11-26 table (another ~9 minutes).
# Fused cuDNN attention is tried first and XLA attention used if it fails.
# Results go to ${OUT:-/tmp}/bench.jsonl and the log to ${OUT:-/tmp}/bench.log.
set -u
OUT=${OUT:-/tmp}
BUDGET=${BUDGET:-470}
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
run 130 --mode train --targets 32 --steps 5 --repeats 3 --attention cudnn --compare-peft \
  --baseline cross_projection=projected || { ATT=xla; echo "cudnn attention failed; using xla"; }
run 90 --mode decode --targets 32 --repeats 3 --attention $ATT --compare-peft \
  --baseline cross_projection=projected
run 70 --mode score --targets 4 --repeats 3 --attention $ATT --compare-peft
run 120 --mode packing --targets 4 --examples 512 --max-segments 8 --repeats 3 \
  --attention $ATT
run 90 --mode packing --targets 4 --examples 512 --max-segments 4 --packed-inputs 256 \
  --repeats 3 --attention $ATT  # the layout that won on the CPU (encoder 4 x 100 + 256)
if [ "${FULL:-0}" = 1 ]; then
  BUDGET=$((BUDGET + 560))
  big="--targets 32 --steps 5 --attention $ATT"
  run 150 --size large --scan $big --compare-peft
  run 200 --size xl --scan --remat dots $big --compare-peft
  run 200 --size xxl --scan --remat dots $big
fi
echo "== total $((SECONDS - START)) s"
