#!/usr/bin/env bash
# One prepared GPU session: environment, then spot_jax vs HF PEFT train steps at the issue's
# shapes (bf16, batch 32, inputs 512 + 100 prompt tokens, targets 32). Results go to
# ${OUT:-/tmp}/bench.jsonl and the log to ${OUT:-/tmp}/bench.log.
set -u
OUT=${OUT:-/tmp}
export PYTHONPATH=$PWD XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=3
exec > >(tee -a "$OUT/bench.log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import jax, flax, optax, torch, transformers, peft; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, jax.devices())"
common="--batch 32 --inputs 512 --targets 32 --prompt-length 100 --steps 5 --warmup 2 --peak-tflops 851 --frozen-dtype bfloat16 --json $OUT/bench.jsonl"
run() { echo "== $*"; timeout "$1" python3 tools/benchmark.py "${@:2}" $common || echo "FAILED ($?): $*"; }
run 150 --size base --compare-peft
run 200 --size xl --scan --compare-peft
run 200 --size xxl --scan --remat full
run 150 --size large --scan --compare-peft
