#!/usr/bin/env bash
# One prepared GPU session: environment, then spot_jax (and HF PEFT where asked) train steps
# at the shapes (bf16, batch 32, inputs 512 + 100 prompt tokens, targets 32).
# Fused cuDNN attention is tried first and XLA attention used if it fails.
# Results go to ${OUT:-/tmp}/bench.jsonl and the log to ${OUT:-/tmp}/bench.log.
set -u
OUT=${OUT:-/tmp}
export PYTHONPATH=$PWD XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=3
exec > >(tee -a "$OUT/bench.log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import jax, flax, optax, torch, transformers, peft; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, jax.devices())"
common="--batch 32 --inputs 512 --targets 32 --prompt-length 100 --steps 5 --warmup 2 --peak-tflops 851 --frozen-dtype bfloat16 --json $OUT/bench.jsonl"
run() { echo "== $*"; timeout "$1" python3 -W ignore tools/benchmark.py "${@:2}" $common; }
ATT=cudnn
run 120 --size base --attention cudnn ${PEFT:+--compare-peft} || { ATT=xla; echo "cudnn attention failed; using xla"; }
run 150 --size large --attention $ATT ${PEFT:+--compare-peft}
run 200 --size xl --scan --remat dots --attention $ATT --compare-peft
run 200 --size xxl --scan --remat dots --attention $ATT
