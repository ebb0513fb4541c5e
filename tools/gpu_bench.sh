#!/usr/bin/env bash
# The prepared GPU runs, in calls of the device tool (each call <= 10 minutes; a session has
# 15 minutes of device time, each machine start ~35 s). PARTS picks, in this order:
#   xl     train step, unscanned, no remat, cuDNN attention, vs HF PEFT (goals >= 3x and >= 50%
#          MFU: 3.6x and 50.9% on 2026-11-27), profiled; then the A/B for our
#          default of cuBLAS over XLA's Triton GEMM fusions (triton on: 47.8%); ~200 s
#   xxl    train step at batch 32, unscanned, --remat dots (56.4% MFU in 67.2 GB); then
#          --remat none (60.7%, but 85.4 GB: over 80 GB); ~130 s
#   large  train step, unscanned, no remat, vs HF PEFT (goal met: 5.62x), profiled; ~100 s
#   base   train step, unscanned, no remat, vs HF PEFT (goal met: 6.89x); Triton GEMMs A/B; ~80 s
#   eval   base size: fresh init's build time (own vs scanned twin), decode (greedy, 32 tokens,
#          vs HF generate), rank classification (3 labels, one encoder pass per example vs
#          T5X's pair rows vs PEFT), packing (train and per-example scoring, 512 GLUE-like
#          examples padded vs packed 4 per 256-token row), the base train step vs PEFT with
#          cross_projection=projected as A/B; 244 s on 2026-11-27 (all measured then)
#   goals  = xl,xxl (the default PARTS is goals)
# All with bf16 frozen weights, batch 32, inputs 512 + 100 prompt tokens, cuDNN attention.
# A session: call 1 `mkdir -p /tmp/prof; PROF=/tmp/prof PARTS=xl,large BUDGET=330` (timeout
# 360), call 2 at once (the machine stays warm 30 s) `PARTS=xxl,eval BUDGET=400`, then give_back.
# Results go to ${OUT:-/tmp}/bench.jsonl, the log to ${OUT:-/tmp}/bench.log, and the large and
# xl steps' device time by kernel to ${PROF:-$OUT}/<name>_profile/op_profile.json, copied
# to $OUT/<name>_profile.json at exit with the step's optimised HLO (<name>_profile.hlo.txt.gz:
# `python tools/op_profile.py JSON HLO` says what each top fusion holds and which module made it;
# the traces beside them are too big to come back).
set -u
OUT=${OUT:-/tmp}
BUDGET=${BUDGET:-540}
PROF=${PROF:-$OUT}  # profiler traces (xl, large); the lent machine's \$OUT brings back only small files
START=$SECONDS
bring_back() {
  for f in "$PROF"/*_profile/op_profile.json; do
    [ -f "$f" ] && [ "$PROF" != "$OUT" ] && cp "$f" "$OUT/$(basename "$(dirname "$f")").json"
  done
  for f in "$PROF"/*_profile/train_step.hlo.txt.gz; do  # to read the profile's fusions offline
    [ -f "$f" ] && [ "$PROF" != "$OUT" ] && cp "$f" "$OUT/$(basename "$(dirname "$f")").hlo.txt.gz"
  done
  return 0
}
trap bring_back EXIT
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
  # SIGABRT at the limit: faulthandler prints where Python was (a stall's stage and stack).
  timeout -s ABRT "$limit" python3 -X faulthandler -W ignore tools/benchmark.py $common "${@:2}"
}
ATT=cudnn
PARTS=${PARTS:-goals}
PARTS=",${PARTS//goals/xl,xxl},"
has() { [[ $PARTS == *",$1,"* ]]; }
big="--targets 32 --steps 5 --repeats 2 --compare-peft"
# --profile: one more traced run, device time by XLA op and category (op_profile.json).
if has xl; then
  run 200 --size xl --remat none $big --attention $ATT --profile "$PROF/xl_profile"
  XLA_FLAGS="--xla_gpu_enable_triton_gemm=true" run 80 --size xl --remat none --targets 32 \
    --steps 5 --repeats 2 --attention $ATT
fi
if has xxl; then
  run 170 --size xxl --remat dots --targets 32 --steps 5 --repeats 2 --attention $ATT
  run 100 --size xxl --remat none --targets 32 --steps 5 --repeats 2 --attention $ATT
fi
if has large; then
  run 150 --size large --remat none $big --attention $ATT --profile "$PROF/large_profile"
fi
if has base; then
  run 120 --size base --remat none $big --attention $ATT
  XLA_FLAGS="--xla_gpu_enable_triton_gemm=true" run 60 --size base --remat none --targets 32 \
    --steps 5 --repeats 2 --attention $ATT
fi
has eval || { echo "== total $((SECONDS - START)) s"; exit 0; }
# The unscanned base model's fresh init (what stalled these lines before): its own values with
# the GPU threefry kernel (build_params' default) vs drawn as the scanned twin (the benchmark's).
echo "== [60s] build_params, base unscanned: own init (threefry kernel) vs scanned twin"
timeout -s ABRT 60 python3 -X faulthandler - <<'PY'
import time
from spot_jax import axes
from spot_jax.models import config, prompted
from spot_jax.train import initial_params, sharding
model = prompted.PromptedT5(config.named_config("base", frozen_dtype="bfloat16"), prompt_length=100)
for twin in (False, True):
    t = time.perf_counter()
    initial_params.build_params(model, sharding.make_mesh(1), axes.standard_rules(), batch_size=32,
                         feature_lengths={"inputs": 512, "targets": 32},
                         initial_checkpoint_path=None, seed=0, init_as_scanned=twin)
    print(f"init_as_scanned={twin}: {time.perf_counter() - t:.1f} s", flush=True)
PY
run 120 --mode decode --targets 32 --repeats 3 --attention $ATT --compare-peft
run 120 --mode rank --targets 4 --candidates 3 --repeats 3 --attention $ATT --compare-peft
run 100 --mode packing --targets 4 --examples 512 --max-segments 4 --packed-inputs 256 \
  --repeats 3 --attention $ATT
run 90 --mode packing --packed-work score --targets 4 --examples 512 --max-segments 4 \
  --packed-inputs 256 --repeats 3 --attention $ATT
run 150 --mode train --targets 32 --steps 5 --repeats 3 --attention $ATT --compare-peft \
  --baseline cross_projection=projected
echo "== total $((SECONDS - START)) s"
