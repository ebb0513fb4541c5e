"""A multi-task prompt run end to end through `spot-jax`, on a `spot_multitask__` mixture of
catalog tasks with mock TFDS data: trained, saved in prompt-tuning's numpy layout, evaluated
per task in place and from its numpy checkpoint elsewhere, refused where it does not fit."""

import json

import numpy as np
import pytest
from catalog_env import SPM, run_script

pytest.importorskip("seqio")
pytestmark = [
    pytest.mark.tf,
    pytest.mark.slow,
    pytest.mark.skipif(not SPM.exists(), reason="T5 SentencePiece model not available"),
]

RTE, CB = "spot_glue_rte_v200", "spot_super_glue_cb_v102"
MIXTURE = f"spot_multitask__{RTE}__{CB}"
SHARED_FILE = "encoder.prompt.prompt.shared_prompt"
TASKS_FILE = "encoder.prompt.prompt.task_prompts.embedding"
SHARED = "encoder/prompt/prompt/shared_prompt"
TASKS = "encoder/prompt/prompt/task_prompts/embedding"

# Every job through the CLI's entry point in one process (the tiny model compiles once); each
# job's exit code goes to a JSON line, its output follows a `@@job <name>` line.
_JOBS_SCRIPT = """
import json, sys
import gin
from spot_jax import cli

from spot_jax import axes
from spot_jax.models import config, prompted
from spot_jax.train import frozen_checkpoint, initial_params, sharding

root = sys.argv[1]
# Frozen weights to train on (and to export the run with).
cfg = config.named_config("t5x_test_tiny")
frozen = initial_params.build_params(
    prompted.PromptedT5(cfg, prompt_length=0), sharding.make_mesh(1), axes.standard_rules(),
    batch_size=4, feature_lengths={"inputs": 64, "targets": 16}, initial_checkpoint_path=None,
    seed=3,
)[0]
frozen_checkpoint.save_frozen(f"{root}/frozen", frozen, cfg)
multi = ["--gin.MULTI_TASK_PROMPT='concat'", "--gin.NUM_TASKS=2", "--gin.TASK_PROMPT_LENGTH=2"]
common = [
    "--gin_file=models/t5_1_1/t5x_test_tiny.gin",
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}",
    "--gin.BATCH_SIZE=4",
    f"--gin.INITIAL_CHECKPOINT_PATH='{root}/frozen'",
]
run = f"{root}/run"
shared = f"{run}/numpy_checkpoints/checkpoint_3/encoder.prompt.prompt.shared_prompt"
cb = "task_index_1__spot_super_glue_cb_v102"
jobs = {
    "train": ["train", "--gin_file=test/tiny_prompt.gin", f"--gin.MODEL_DIR={run}",
              "--gin.MIXTURE_OR_TASK_NAME='%s'" % sys.argv[2], "--gin.TRAIN_STEPS=3",
              "--gin.CHECKPOINT_PERIOD=3", "--gin.EVAL_PERIOD=3", *multi],
    "eval_here": ["eval", "--gin_file=test/tiny_eval.gin", f"--gin.MODEL_DIR={run}",
                  f"--gin.MIXTURE_OR_TASK_NAME='{cb}'", *multi],
    "eval_elsewhere": ["eval", "--gin_file=test/tiny_eval.gin", f"--gin.MODEL_DIR={root}/other",
                       f"--gin.MIXTURE_OR_TASK_NAME='{cb}'", f"--gin.PROMPT_FILE='{shared}'",
                       *multi],
    "eval_single": ["eval", "--gin_file=test/tiny_eval.gin", f"--gin.MODEL_DIR={run}",
                    f"--gin.MIXTURE_OR_TASK_NAME='{cb}'"],
    "eval_unindexed": ["eval", "--gin_file=test/tiny_eval.gin", f"--gin.MODEL_DIR={run}",
                       "--gin.MIXTURE_OR_TASK_NAME='spot_super_glue_cb_v102'", *multi],
    "train_unindexed": ["train", "--gin_file=test/tiny_prompt.gin",
                        f"--gin.MODEL_DIR={root}/unindexed",
                        "--gin.MIXTURE_OR_TASK_NAME='spot_super_glue_cb_v102'",
                        "--gin.TRAIN_STEPS=1", *multi],
}
exports = {
    "export_t5x": ["export", "--to", "t5x", "--input", run, "--output", f"{root}/t5x"],
    "export_hf": ["export", "--to", "hf", "--input", run, "--output", f"{root}/hf"],
    "library_task": ["library", "add", "--library", f"{root}/lib", run, "--task-index", "1",
                     "--checkpoint", "latest", "--embedding-step", "3", "--name", "cb"],
    "library_plain": ["library", "add", "--library", f"{root}/lib", run, "--name", "all"],
}
for name, argv in [*jobs.items(), *exports.items()]:
    print(f"@@job {name}", file=sys.stderr, flush=True)
    print(f"@@job {name}", flush=True)
    code = cli.main(argv + (common if name in jobs else []))
    gin.clear_config()
    print(json.dumps({"job": name, "code": code}), flush=True)
"""


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multitask")
    result = run_script(_JOBS_SCRIPT, str(root), MIXTURE)
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith('{"job"')]
    stderr, stdout = (
        dict(part.split("\n", 1) for part in text.split("@@job ")[1:])
        for text in (result.stderr, result.stdout)
    )
    return root, {
        x["job"]: {**x, "stderr": stderr[x["job"]], "stdout": stdout[x["job"]]} for x in lines
    }


def _records(model_dir):
    return [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_run_trains_and_saves_the_shared_prompt_and_task_table(jobs):
    root, done = jobs
    assert done["train"]["code"] == 0, done["train"]["stderr"]
    run = root / "run"
    model = json.loads((run / "model.json").read_text())
    assert model["multi_task_prompt"] == "concat"
    assert (model["num_tasks"], model["task_prompt_length"], model["prompt_length"]) == (2, 2, 5)
    saved = run / "numpy_checkpoints" / "checkpoint_3"
    assert sorted(p.name for p in saved.iterdir()) == [SHARED_FILE, TASKS_FILE]
    shared, table = np.load(saved / SHARED_FILE), np.load(saved / TASKS_FILE)
    emb = model["emb_dim"]
    assert shared.shape == (3, emb) and table.shape == (2, 2 * emb)
    first = run / "numpy_checkpoints" / "checkpoint_0"
    assert not np.allclose(np.load(first / SHARED_FILE), shared)
    assert not np.allclose(np.load(first / TASKS_FILE), table)
    # The periodic eval reports each task of the mixture on its own.
    last = [r for r in _records(run) if r.get("step") == 3][-1]
    assert f"eval/task_index_1__{CB}/accuracy" in last
    assert f"eval/task_index_0__{RTE}/accuracy" in last


def test_a_task_is_evaluated_in_place_and_from_the_numpy_checkpoint_alike(jobs):
    root, done = jobs
    for job in ("eval_here", "eval_elsewhere"):
        assert done[job]["code"] == 0, done[job]["stderr"]
    here = _records(root / "run")[-1]
    elsewhere = json.loads((root / "other" / "eval_metrics.json").read_text())
    assert here["task"] == f"task_index_1__{CB}" and "eval/accuracy" in here
    assert elsewhere["eval/loss"] == pytest.approx(here["eval/loss"], rel=1e-5)


def test_refusals_name_what_to_set(jobs):
    _, done = jobs
    single = done["eval_single"]
    assert single["code"] == 1 and "multi_task_prompt" in single["stderr"]
    assert "--gin.MULTI_TASK_PROMPT=" in single["stderr"]
    # Inputs without their task's sentinel: refused before a step, in training and in eval
    # (and the process still exits: the job's data iterator is not left to the GC).
    for job in ("train_unindexed", "eval_unindexed"):
        assert done[job]["code"] == 1, job
        assert "name no task of this multi-task prompt" in done[job]["stderr"], job


def test_export_writes_them_for_t5x_and_says_why_peft_gets_no_adapter(jobs):
    from spot_jax.interop import t5x

    root, done = jobs
    for job in ("export_t5x", "export_hf"):
        assert done[job]["code"] == 0, done[job]["stderr"]
    saved = root / "run" / "numpy_checkpoints" / "checkpoint_3"
    exported = t5x.T5XCheckpoint(root / "t5x" / "checkpoint_3")
    for name, file in ((SHARED, SHARED_FILE), (TASKS, TASKS_FILE)):
        np.testing.assert_array_equal(exported.read(name), np.load(saved / file), err_msg=name)
    assert "multitask_prompts.ConcatMultiTaskPrompt" in done["export_t5x"]["stdout"]
    assert "PEFT has no such prompts" in done["export_hf"]["stdout"]
    assert (root / "hf" / "model.safetensors").exists()
    assert not (root / "hf" / "prompt_adapter").exists()


def test_the_library_takes_one_tasks_whole_prompt(jobs):
    root, done = jobs
    assert done["library_task"]["code"] == 0, done["library_task"]["stderr"]
    entry = root / "lib" / "cb"
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["task"] == CB and meta["task_index"] == 1 and meta["step"] == 3
    saved = root / "run" / "numpy_checkpoints" / "checkpoint_3"
    shared, table = np.load(saved / SHARED_FILE), np.load(saved / TASKS_FILE)
    want = np.concatenate([shared, table[1].reshape(2, -1)])  # 'concat': shared, then task 1's
    np.testing.assert_array_equal(np.load(entry / "prompt.npy"), want)
    first = root / "run" / "numpy_checkpoints" / "checkpoint_3"  # the embedding step given
    assert meta["embedding_source"] == f"{first / SHARED_FILE} + task 1"
    plain = done["library_plain"]
    assert plain["code"] == 1 and "pass --task-index I" in plain["stderr"]
