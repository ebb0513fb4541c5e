"""Transfer strategies and their gin files on a library of hand-made runs (no training)."""

import json
from pathlib import Path

import gin
import numpy as np
import pytest
from fake_runs import fake_run  # tests/spot is on sys.path under pytest

from spot_jax.models import prompted
from spot_jax.spot import commands, library, retrieval, similarity, transfer
from spot_jax.spot import runs as runs_lib

GIN_DIR = Path(__file__).resolve().parents[2] / "gin"


@pytest.fixture
def lib(tmp_path):
    lib = library.Library(tmp_path / "lib")
    for i, task in enumerate(["rte", "mnli", "sst2"]):
        lib.add(fake_run(tmp_path / "runs", task, task, seed=i, losses=(2.0, 3.0)))
    return lib


def test_best_is_the_lowest_eval_loss_and_embedding_the_earliest(lib, tmp_path):
    entry = lib.get("rte")
    assert entry.meta["step"] == 10 and entry.meta["embedding_step"] == 10
    run = tmp_path / "runs" / "rte"
    assert runs_lib.embedding_step(run, 16) == 20 and runs_lib.embedding_step(run, 15) == 10
    with pytest.raises(library.LibraryError, match="no numpy checkpoint at step 7"):
        runs_lib.select_step(run, 7)


def test_weighted_average_is_sim_over_sum_of_sims(lib):
    target = lib.get("mnli").embedding() + 0.1
    sims = {e.name: similarity.e_concat(e.embedding(), target) for e in lib}
    top = sorted(sims, key=sims.get, reverse=True)[:2]
    alphas = np.array([sims[n] for n in top]) / sum(sims[n] for n in top)
    want = sum(a * lib.get(n).prompt() for a, n in zip(alphas, top, strict=True))
    prompt, weights = transfer.weighted_average(lib, target, k=2, metric="e_concat")
    np.testing.assert_allclose(prompt, want, rtol=1e-6)
    assert [n for n, _ in weights] == top and sum(a for _, a in weights) == pytest.approx(1)
    # A k of 1 is the single best source.
    prompt1, _ = transfer.weighted_average(lib, target, k=1, metric="e_concat")
    np.testing.assert_array_equal(prompt1, lib.get("mnli").prompt())


def test_weighted_average_refuses_non_positive_similarities(lib):
    with pytest.raises(ValueError, match="positive similarities"):
        transfer.weighted_average(lib, -lib.get("mnli").embedding(), k=3, metric="c_concat")


def test_from_library_checks_the_model_shape(lib):
    init = transfer.from_library(lib.root, "sst2")
    np.testing.assert_array_equal(init(None, (5, 8)), lib.get("sst2").prompt())
    with pytest.raises(ValueError, match="shape"):
        init(None, (6, 8))


def test_retrieval_excludes_and_refuses_other_models(lib, tmp_path):
    target = lib.get("rte").embedding()
    assert retrieval.rank(lib, target, "e_avg", k=1)[0].name == "rte"
    assert "rte" not in [r.name for r in retrieval.rank(lib, target, "e_avg", exclude=("rte",))]
    other = fake_run(tmp_path / "other", "x", "x", seed=0)
    (other / "config.gin").write_text("INITIAL_CHECKPOINT_PATH = '/ckpt/t5_base'\nSEED = 0\n")
    with pytest.raises(library.LibraryError, match="not comparable"):
        retrieval.rank(lib, other)
    assert retrieval.to_csv(retrieval.rank(lib, target, k=2)).startswith("name,score\nrte,")


def test_best_of_top_k_plan_and_pick(lib, tmp_path):
    runs = transfer.best_of_top_k(lib, lib.get("sst2").embedding(), tmp_path / "t", k=2)
    assert runs[0].source == "sst2" and len(runs) == 2
    for run, loss in zip(runs, (1.5, 0.5), strict=True):
        Path(run.model_dir).mkdir(parents=True)
        Path(run.model_dir, "metrics.jsonl").write_text(json.dumps({"step": 5, "eval/loss": loss}))
    best, results = transfer.pick_best(runs)
    # No task metric recorded: eval/loss, lower is better.
    assert best == runs[1] and [r["score"] for r in results] == [1.5, 0.5]
    assert results[0]["metric"] == "eval/loss" and results[0]["mode"] == "min"
    # With the task's metric recorded, SPoT keeps the run best by it, not by loss.
    for run, (loss, acc) in zip(runs, ((1.5, 0.9), (0.5, 0.7)), strict=True):
        lines = [{"step": 5, "eval/loss": loss, "eval/accuracy": acc},
                 {"step": 10, "eval/loss": loss + 1, "eval/accuracy": acc - 0.2}]  # fmt: skip
        Path(run.model_dir, "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)))
    best, results = transfer.pick_best(runs)
    assert best == runs[0] and [r["score"] for r in results] == [0.9, 0.7]
    assert transfer.pick_best(runs, "eval/loss")[0] == runs[1]
    with pytest.raises(library.LibraryError, match="did you mean eval/accuracy"):
        transfer.pick_best(runs, "eval/acuracy")
    assert transfer.mixture_sources(lib, lib.get("sst2").embedding(), k=3)[0] == "sst2"


@pytest.fixture
def clean_gin():
    gin.clear_config()
    gin.add_config_file_search_path(str(GIN_DIR))
    yield
    gin.clear_config()


def _parse(*files, **macros):
    base = ["models/t5_1_1/tiny.gin", "runs/prompt_tune.gin"]
    stubs = {
        "MODEL_DIR": "'/tmp/x'",
        "TRAIN_STEPS": "1",
        "MIXTURE_OR_TASK_NAME": "'synthetic'",
        "TASK_FEATURE_LENGTHS": "{'inputs': 8, 'targets': 4}",
        "INITIAL_CHECKPOINT_PATH": "None",
        "PROMPT_LENGTH": "5",
        **macros,
    }
    gin.parse_config_files_and_bindings(
        [str(GIN_DIR / f) for f in [*base, *files]],
        [f"{k} = {v}" for k, v in stubs.items()],
        skip_unknown=False,
    )
    return gin.get_configurable(prompted.PromptedT5)()


def test_target_from_library_gin_single_and_weighted(lib, clean_gin):
    model = _parse(
        "spot/target_from_library.gin",
        LIBRARY_DIR=repr(str(lib.root)),
        STRATEGY="'single'",
        LIBRARY_ENTRY="'mnli'",
    )
    np.testing.assert_array_equal(model.prompt_init(None, (5, 8)), lib.get("mnli").prompt())
    gin.clear_config()
    target = lib.get("rte").path / "embedding.npy"
    model = _parse(
        "spot/target_from_library.gin",
        LIBRARY_DIR=repr(str(lib.root)),
        TARGET_EMBEDDING=repr(str(target)),
        TOP_K="2",
        SIMILARITY_METRIC="'e_avg'",
    )
    want, _ = transfer.weighted_average(lib, target, k=2, metric="e_avg")
    np.testing.assert_array_equal(model.prompt_init(None, (5, 8)), want)


def test_target_from_library_gin_rescales_the_prompt_on_request(lib, clean_gin):
    source = lib.get("mnli").prompt()
    model = _parse(
        "spot/target_from_library.gin",
        LIBRARY_DIR=repr(str(lib.root)),
        STRATEGY="'single'",
        LIBRARY_ENTRY="'mnli'",
        RESCALE_PROMPT_RMS="'embeddings'",
    )
    assert model.prompt_init.needs_embeddings  # the trainer hands it the frozen table
    table = np.full((10, 8), 2.0, np.float32)
    got = np.asarray(model.prompt_init(None, (5, 8), embeddings=table))
    np.testing.assert_allclose(np.sqrt(np.mean(got**2)), 2.0, rtol=1e-6)
    np.testing.assert_allclose(
        got / np.linalg.norm(got), source / np.linalg.norm(source), atol=1e-6
    )


def test_source_mixture_gin_uses_sampled_vocab(clean_gin):
    model = _parse("spot/source_mixture.gin", MIXTURE_OR_TASK_NAME="'glue_v002_proportional'")
    assert model.prompt_init.needs_embeddings
    assert gin.query_parameter("%MIXTURE_OR_TASK_NAME") == "glue_v002_proportional"


def test_mixture_command_names_the_top_k_sources_tasks(lib, tmp_path, capsys):
    from spot_jax.spot import commands

    target = tmp_path / "target.npy"
    np.save(target, lib.get("sst2").embedding())
    argv = ["mixture", "--library", str(lib.root), "--target", str(target), "--k", "2"]
    assert commands.library_main([*argv, "--with-task", "cb"]) == 0
    name = capsys.readouterr().out.strip()
    assert name.startswith("spot_mix__")
    tasks = name.removeprefix("spot_mix__").split("__")
    assert tasks[0] == "sst2" and tasks[-1] == "cb" and len(set(tasks)) == len(tasks) == 3


def test_transfer_command_passes_rescale_rms_to_every_target_run(lib, tmp_path, monkeypatch):
    launched = []

    class Done:
        returncode = 0

    monkeypatch.setattr(commands.subprocess, "run", lambda cmd: launched.append(cmd) or Done())
    target = str(lib.get("sst2").path / "embedding.npy")
    args = ["transfer", "--library", str(lib.root), "--target", target, "--k", "2"]
    args += ["--out-dir", str(tmp_path / "t"), "--rescale-rms", "embeddings"]
    assert commands.library_main([*args, "--", "--gin_file=runs/prompt_tune.gin"]) == 0
    assert len(launched) == 2
    assert all("--gin.RESCALE_PROMPT_RMS='embeddings'" in cmd for cmd in launched)
    assert all(any(a.startswith("--gin.PROMPT_FILE=") for a in cmd) for cmd in launched)
    for bad in ("-2", "vocab"):
        with pytest.raises(ValueError, match="positive number or 'embeddings'"):
            commands._rms_value(bad)
    assert commands._rms_value("1.5") == "1.5"
