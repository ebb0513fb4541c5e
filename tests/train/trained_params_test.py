"""Runs that train more than the prompt (model tuning, TRAINABLE beyond the prompt, per-layer
prompts): eval and infer use the trained params, export writes the trained model, and a train
checkpoint passed as INITIAL_CHECKPOINT_PATH is refused with what to pass instead."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spot_jax import axes
from spot_jax.interop.orbax_tree import OrbaxParams
from spot_jax.models import config, prompted
from spot_jax.train import checkpoints, frozen_checkpoint, initial_params, sharding

CLI = Path(sys.executable).parent / "spot-jax"
REPO = Path(__file__).resolve().parents[2]
LENGTHS = {"inputs": 16, "targets": 8}
# Model tuning (runs/model_tune.gin's macros), a prompt trained with the decoder's norm, and
# per-layer prompts (each encoder layer's own, added to its prompt rows).
RUNS = {
    "per_layer": ["--gin.PER_LAYER_PROMPT='add'", "--gin.LEARNING_RATE=0.1"],
    "model_tune": ["--gin.PROMPT_LENGTH=0", "--gin.TRAINABLE='.*'", "--gin.LEARNING_RATE=0.01"],
    "prompt_and_norm": [
        "--gin.TRAINABLE='.*/prompt/.*|decoder/decoder_norm/scale'",
        "--gin.LEARNING_RATE=0.1",
    ],
}


def spot_jax(*args, cwd=REPO):
    cli = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "spot_jax.cli"]
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ["XLA_FLAGS"])
    env = {**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [*cli, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )
    assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def build(prompt_length, path=None, seed=0):
    model = prompted.PromptedT5(
        config.named_config("tiny", dtype="float32"), prompt_length=prompt_length
    )
    return initial_params.build_params(
        model,
        sharding.make_mesh(1),
        axes.standard_rules(),
        batch_size=8,
        feature_lengths=LENGTHS,
        initial_checkpoint_path=None if path is None else str(path),
        seed=seed,
    )[0]


@pytest.fixture(scope="module")
def frozen(tmp_path_factory):
    """A frozen checkpoint of the tiny model (seed 3): the runs' INITIAL_CHECKPOINT_PATH."""
    path = tmp_path_factory.mktemp("frozen") / "tiny"
    frozen_checkpoint.save_frozen(
        path, build(0, seed=3), config.named_config("tiny", dtype="float32")
    )
    return path


@pytest.fixture(scope="module", params=sorted(RUNS))
def run(request, frozen, tmp_path_factory):
    """A 10-step run from `frozen` that evaluated at its end; (name, MODEL_DIR)."""
    model_dir = tmp_path_factory.mktemp(request.param)
    spot_jax(
        "train",
        "--gin_file=test/tiny_prompt.gin",
        f"--gin.MODEL_DIR={model_dir}",
        f"--gin.INITIAL_CHECKPOINT_PATH='{frozen}'",
        "--gin.TRAIN_STEPS=10",
        "--gin.EVAL_PERIOD=10",
        *RUNS[request.param],
    )
    return request.param, model_dir


def eval_args(name, model_dir, frozen):
    prompt_length = ["--gin.PROMPT_LENGTH=0"] if name == "model_tune" else []
    if name == "per_layer":
        prompt_length = ["--gin.PER_LAYER_PROMPT='add'"]
    return [
        "--gin_file=test/tiny_eval.gin",
        f"--gin.MODEL_DIR={model_dir}",
        f"--gin.INITIAL_CHECKPOINT_PATH='{frozen}'",
        "--gin.EVAL_STEPS=2",
        # runs/prompt_tune.gin evaluates synthetic data of seed 42; runs/prompt_eval.gin
        # leaves the default seed, which draws other synthetic examples.
        "--gin.validation/data_config.DatasetConfig.seed=42",
        *prompt_length,
    ]


def trained_params(model_dir) -> dict[str, np.ndarray]:
    state = OrbaxParams(Path(model_dir) / "checkpoints" / "10" / "state", prefix="trainable")
    return {name: state.read(name) for name in state.shapes}


def test_eval_reproduces_the_runs_own_final_eval(run, frozen):
    name, model_dir = run
    final = final_eval(model_dir)
    # The run really moved weights other than the prompt.
    trained = trained_params(model_dir)
    init = build(0, frozen)
    moved = [k for k in trained if not prompted.is_prompt_path(k)]
    assert all(np.abs(trained[k] - np.asarray(init[k])).max() > 1e-4 for k in moved)
    layer_prompts = [k for k in trained if prompted.LAYER_PROMPT_PATH.fullmatch(k)]
    assert (len(layer_prompts) == 2) == (name == "per_layer")
    assert moved or layer_prompts

    result = spot_jax("eval", *eval_args(name, model_dir, frozen))
    metrics = json.loads((model_dir / "eval_metrics.json").read_text())
    assert metrics["eval/loss"] == pytest.approx(final["eval/loss"], rel=1e-5)
    assert metrics["eval/token_accuracy"] == pytest.approx(final["eval/token_accuracy"])
    if name == "per_layer":  # from the numpy checkpoint of the same save as the prompt
        assert "prompts beside" in result.stdout and "checkpoint_10" in result.stdout
    else:
        assert "checkpoints/10" in result.stdout
    record = json.loads((model_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["job"] == "eval" and record["trained_step"] == 10


def final_eval(model_dir) -> dict:
    records = [json.loads(line) for line in (model_dir / "metrics.jsonl").open()]
    return [r for r in records if r.get("step") == 10 and "eval/loss" in r][-1]


def test_an_explicit_prompt_file_still_wins_for_the_prompt(run, frozen, tmp_path):
    name, model_dir = run
    if name == "model_tune":
        pytest.skip("no prompt")
    np.save(tmp_path / "zeros.npy", np.zeros((5, 8), np.float32))
    spot_jax(
        "eval", *eval_args(name, model_dir, frozen), f"--gin.PROMPT_FILE='{tmp_path}/zeros.npy'"
    )
    metrics = json.loads((model_dir / "eval_metrics.json").read_text())
    assert metrics["eval/loss"] != pytest.approx(final_eval(model_dir)["eval/loss"], rel=1e-3)
    record = json.loads((model_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["prompt"].endswith("zeros.npy") and record["trained_step"] == 10


def test_export_of_the_model_dir_writes_the_trained_model(run, frozen, tmp_path):
    from safetensors.numpy import load_file

    from spot_jax.interop import hf

    name, model_dir = run
    spot_jax("export", "--to", "hf", "--input", model_dir, "--output", tmp_path / "hf")
    exported = load_file(str(tmp_path / "hf" / "model.safetensors"))
    trained = trained_params(model_dir)
    init = build(0, frozen)
    cfg = config.named_config("tiny", dtype="float32")
    for hf_name, ours, transpose in hf.name_map(cfg):
        want = trained.get(ours, np.asarray(init[ours]))
        np.testing.assert_array_equal(exported[hf_name], want.T if transpose else want)
    adapter = tmp_path / "hf" / "prompt_adapter"
    if name == "model_tune":
        assert not adapter.exists()
    elif name == "per_layer":  # PEFT has no per-layer prompts: no adapter, and a note why
        assert not adapter.exists()
    else:  # the run's trained prompt goes out as a PEFT adapter
        np.testing.assert_array_equal(hf.import_prompt(adapter), trained[prompted.PROMPT_PATH])


def test_export_of_a_suffix_prompt_run_says_what_peft_and_t5x_need(run, tmp_path):
    name, model_dir = run
    if name == "model_tune":
        pytest.skip("a run without a prompt")
    suffix_run = tmp_path / "run"  # the same run, as if trained with PROMPT_POSITION='suffix'
    shutil.copytree(model_dir, suffix_run)
    record = json.loads((suffix_run / "model.json").read_text())
    # ... and with an attention rule around the prompt (prompt-tuning's extended masks).
    rule = ["input->input", "input->prompt", "prompt->prompt"]
    record = {**record, "prompt_position": "suffix", "prompt_attention": rule}
    (suffix_run / "model.json").write_text(json.dumps(record))
    out = spot_jax("export", "--to", "hf", "--input", suffix_run, "--output", tmp_path / "hf")
    assert "PEFT prepends prompts" in out.stdout
    assert (tmp_path / "hf" / "model.safetensors").exists()
    assert not (tmp_path / "hf" / "prompt_adapter").exists()
    out = spot_jax("export", "--to", "t5x", "--input", suffix_run, "--output", tmp_path / "t5x")
    assert "prompt_tuning.train.prompts.suffix_prompt" in out.stdout
    assert "prompt_encoder_attention_mask" in out.stdout


def test_t5x_export_of_the_model_dir_is_the_trained_model_at_t5x_s_step(run, frozen, tmp_path):
    from spot_jax.interop import t5x

    name, model_dir = run
    spot_jax("export", "--to", "t5x", "--input", model_dir, "--output", tmp_path / "t5x")
    # T5X counts on from the frozen weights' step (0 for this seeded init) over the run's 10.
    exported = t5x.T5XCheckpoint(tmp_path / "t5x" / "checkpoint_10")
    assert exported.step() == 10
    trained = trained_params(model_dir)
    init = build(0, frozen)
    names = set(t5x.param_shapes(config.named_config("tiny", dtype="float32")))
    if name != "model_tune":  # the trained prompt, where prompt-tuning keeps it
        names.add(prompted.PROMPT_PATH)
    if name == "per_layer":  # and each layer's, where its per-layer models keep them
        names |= {f"encoder/layers_{i}/prompt/prompt/prompt" for i in range(2)}
    assert set(exported.names()) == names
    for param in names:
        want = trained.get(param, np.asarray(init.get(param, 0)))
        np.testing.assert_array_equal(exported.read(param), want, err_msg=param)
    # The run's Adafactor moments as T5X's MultiOptimizer saves them: slots for what it trained,
    # None for the frozen rest; read back by our own T5X optimizer-state reader.
    from spot_jax.interop import t5x_states

    states = t5x_states.T5XParamStates(tmp_path / "t5x" / "checkpoint_10")
    assert set(states.params) == set(trained)
    opt = OrbaxParams(model_dir / "checkpoints" / "10" / "state", prefix="opt_state")
    for param in trained:
        got = states.read(param)
        for slot in ("v_row", "v_col", "v"):
            np.testing.assert_array_equal(got[slot], opt.read(f"0/{slot}/{param}"), err_msg=param)
        np.testing.assert_array_equal(got["m"], np.zeros(1))
        assert np.abs(got["v"]).max() > 0 or np.abs(got["v_row"]).max() > 0, param


def test_a_train_checkpoint_as_initial_checkpoint_path_says_what_to_pass(run):
    _, model_dir = run
    for path in (model_dir / "checkpoints" / "10", model_dir):
        with pytest.raises(checkpoints.CheckpointError, match="INITIAL_CHECKPOINT_PATH") as e:
            build(0, path)
        assert "trained params" in str(e.value) and "spot-jax export" in str(e.value)


def test_export_of_a_seeded_init_run_needs_the_frozen_weights(tmp_path):
    from spot_jax.interop import commands

    model_dir = tmp_path / "run"
    spot_jax(
        "train",
        "--gin_file=test/tiny_prompt.gin",
        f"--gin.MODEL_DIR={model_dir}",
        "--gin.TRAIN_STEPS=1",
        "--gin.trainer.train.eval_data=None",
        *RUNS["model_tune"],
    )
    with pytest.raises(checkpoints.CheckpointError, match="--frozen"):
        commands.export_main(["--to", "hf", "--input", str(model_dir), "--output", "x"])
    assert not (tmp_path / "x").exists()
