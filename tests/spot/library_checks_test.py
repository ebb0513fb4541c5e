"""What the library refuses or repairs: task embeddings from one step (entries and target
runs), non-finite or misshapen prompts, half-written metrics, and prompts added as bare files;
plus the SPoT statistics of the analysis module."""

import json

import numpy as np
import pytest
from fake_runs import fake_run, snapshot  # tests/spot is on sys.path under pytest
from scipy import stats

from spot_jax.spot import analysis, commands, library, retrieval, similarity, transfer
from spot_jax.spot import runs as runs_lib


def test_every_task_embedding_is_from_the_librarys_step(tmp_path):
    runs = tmp_path / "runs"
    lib = library.Library(tmp_path / "lib")
    lib.add(fake_run(runs, "a", "a", 0), embedding_at=20)
    assert lib.model()["embedding_step"] == 20 and lib.embedding_step() == 20
    # A later add defaults to the library's step, not the run's earliest checkpoint.
    assert lib.add(fake_run(runs, "b", "b", 1)).meta["embedding_step"] == 20
    before = snapshot(lib.root)
    with pytest.raises(library.LibraryError, match="from step 10, but every entry .* step 20"):
        lib.add(fake_run(runs, "c", "c", 2), embedding_at=10)
    with pytest.raises(library.LibraryError, match="Keep a checkpoint at step 20"):
        lib.add(fake_run(runs, "short", "d", 3, steps=(0, 10)))
    assert snapshot(lib.root) == before

    # A target run is read at the library's step: with step 20 its embedding ranks its twin
    # (the same prompts) first; the run's earliest checkpoint (10) would not be used.
    twin = fake_run(runs, "twin", "a", 0)
    want = runs_lib.prompt_file(twin, 20)
    np.testing.assert_array_equal(retrieval.target_embedding(twin, 20), np.load(want))
    ranked = retrieval.rank(lib, twin, "avg_tokens")
    by_step_20 = similarity.rank(np.load(want), {e.name: e.embedding() for e in lib}, "avg_tokens")
    assert [(r.name, r.score) for r in ranked] == [(n, pytest.approx(s)) for n, s in by_step_20]
    assert ranked[0].name == "a" and ranked[0].score == pytest.approx(1.0)
    with pytest.raises(library.LibraryError, match="no prompt checkpoint at step 20"):
        retrieval.rank(lib, fake_run(runs, "t_short", "t", 4, steps=(0, 10)))


def test_spot_default_is_the_10k_checkpoint_in_a_long_run(tmp_path):
    run = fake_run(tmp_path, "long", "x", 0, steps=(0, 1000, 9000, 11000, 30000))
    assert runs_lib.embedding_step(run) == 9000  # closest to 10K; ties go to the earlier
    assert runs_lib.embedding_step(fake_run(tmp_path, "short", "x", 0)) == 10  # earliest > 0


def test_non_finite_and_misshapen_prompts_are_refused(tmp_path):
    runs = tmp_path / "runs"
    lib = library.Library(tmp_path / "lib")
    lib.add(fake_run(runs, "a", "a", 0))
    bad = fake_run(runs, "nan", "n", 1)
    prompt = np.load(runs_lib.prompt_file(bad, 10))
    prompt[2, 3] = np.nan
    with open(runs_lib.prompt_file(bad, 10), "wb") as f:
        np.save(f, prompt)
    before = snapshot(lib.root)
    with pytest.raises(library.LibraryError, match="1 non-finite values"):
        lib.add(bad)
    assert snapshot(lib.root) == before
    # A NaN target is refused before it can scramble the ranking; so is a NaN score.
    with pytest.raises(library.LibraryError, match="non-finite"):
        retrieval.rank(lib, prompt)
    with pytest.raises(ValueError, match="not finite for b"):
        similarity.rank(np.ones((5, 8)), {"a": np.ones((5, 8)), "b": prompt}, "avg_tokens")
    # An entry whose file was replaced by another shape, or by garbage, names the file.
    (lib.root / "a" / "prompt.npy").write_bytes(b"not numpy")
    with pytest.raises(library.LibraryError, match="a/prompt.npy is not a numpy prompt file"):
        lib.get("a").prompt()
    with open(lib.root / "a" / "embedding.npy", "wb") as f:
        np.save(f, np.zeros((3, 8), np.float32))
    with pytest.raises(library.LibraryError, match=r"shape \[3, 8\], not \[P, H\] = \[5, 8\]"):
        lib.get("a").embedding()


def test_entries_record_absolute_paths(tmp_path, monkeypatch):
    # Added from a relative path, an entry still finds its run from another directory.
    fake_run(tmp_path / "runs", "a", "a", 0)
    monkeypatch.chdir(tmp_path / "runs")
    entry = library.Library(tmp_path / "lib").add("a")
    monkeypatch.chdir(tmp_path)
    assert entry.meta["run_dir"] == str(tmp_path / "runs" / "a")
    assert entry.meta["prompt_source"].startswith(str(tmp_path / "runs" / "a"))
    assert runs_lib.run_info(entry.meta["run_dir"])["task"] == "a"


def test_a_target_of_another_shape_says_what_differs(tmp_path):
    lib = library.Library(tmp_path / "lib")
    lib.add(fake_run(tmp_path / "runs", "a", "a", 0))
    other = fake_run(tmp_path / "runs", "wide", "t", 1)
    model = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**model, "mlp_dim": 32}))
    with pytest.raises(library.LibraryError, match="mlp_dim 32 vs 16 .target vs library."):
        retrieval.rank(lib, other)


def test_metrics_of_a_run_still_writing(tmp_path):
    run = fake_run(tmp_path, "a", "a", 0)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 30, "eval/lo')  # killed mid-line
    assert sorted(runs_lib.read_metrics(run)) == [10, 20]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(library.LibraryError, match="metrics.jsonl line 2 is not JSON"):
        runs_lib.read_metrics(run)


def test_add_file_takes_prompts_from_outside_spot_jax(tmp_path, capsys):
    run = fake_run(tmp_path / "runs", "a", "a", 0)
    lib_dir = tmp_path / "lib"
    released = tmp_path / "released" / "sst2"
    released.mkdir(parents=True)
    prompt = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    np.save(released / "prompt.npy", prompt)
    np.save(released / "early.npy", prompt * 0.5)
    argv = ["add-file", "--library", str(lib_dir), "--prompt", str(released / "prompt.npy"),
            "--embedding", str(released / "early.npy"), "--embedding-step", "10",
            "--task", "glue_sst2_v002"]  # fmt: skip
    with pytest.raises(library.LibraryError, match="pass --like RUN_DIR"):
        commands.library_main(argv)
    assert commands.library_main([*argv, "--like", str(run)]) == 0
    assert "added sst2: task glue_sst2_v002, embedding step 10" in capsys.readouterr().out
    entry = library.Library(lib_dir).get("sst2")
    np.testing.assert_array_equal(entry.prompt(), prompt)
    np.testing.assert_array_equal(entry.embedding(), prompt * 0.5)
    assert entry.meta["fingerprint"] == runs_lib.run_info(run)["fingerprint"]
    # Now the library knows its model: a run of it adds at the same step; a wrong width or
    # another step is refused.
    library.Library(lib_dir).add(run)
    np.save(released / "wide.npy", np.zeros((5, 9), np.float32))
    with pytest.raises(library.LibraryError, match="shape"):
        library.Library(lib_dir).add_file(
            released / "wide.npy", task="t", embedding=released / "wide.npy",
            embedding_step=10, name="wide",
        )  # fmt: skip
    with pytest.raises(library.LibraryError, match="from step 5"):
        library.Library(lib_dir).add_file(
            released / "prompt.npy", task="t", embedding=released / "early.npy",
            embedding_step=5, name="other",
        )  # fmt: skip


def test_mixture_adds_the_target_runs_task_and_similarity_uses_prompts(tmp_path, capsys):
    runs = tmp_path / "runs"
    lib = library.Library(tmp_path / "lib")
    for i, task in enumerate(["rte", "mnli", "sst2"]):
        lib.add(fake_run(runs, task, task, seed=i))
    target = fake_run(runs, "target", "cb", 2)  # sst2's prompts: ranks sst2 first
    assert transfer.mixture_sources(lib, target, k=2) == ["sst2", "mnli", "cb"]
    assert transfer.mixture_sources(lib, target, 2, with_target_task=False) == ["sst2", "mnli"]
    assert transfer.mixture_sources(lib, target, 1, exclude=("sst2",))[-1] == "cb"
    argv = ["mixture", "--library", str(lib.root), "--target", str(target), "--k", "2"]
    commands.library_main(argv)
    assert capsys.readouterr().out.strip() == "spot_mix__sst2__mnli__cb"
    commands.library_main([*argv, "--no-target-task"])
    assert capsys.readouterr().out.strip() == "spot_mix__sst2__mnli"

    # similarity --target --use prompt compares with the entries' prompts, not embeddings.
    probe = tmp_path / "probe.npy"
    np.save(probe, lib.get("rte").prompt())
    base = ["similarity", "--library", str(lib.root), "--metric", "c_concat", "--target"]
    commands.library_main([*base, str(probe), "--use", "prompt"])
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[1].split(",")[0] == "rte" and float(rows[1].split(",")[1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="--on-layers takes START:STOP"):
        commands._layer_window("3")
    assert commands._layer_window(":3") == slice(None, 3)


def test_pearson_and_relative_error_reduction():
    x, y = [0.1, 0.4, 0.35, 0.8, 0.9], [1.0, 2.5, 2.0, 4.5, 3.9]
    s = analysis.correlation(x, y)
    r = np.corrcoef(x, y)[0, 1]
    assert s["pearson_r"] == pytest.approx(r)
    assert s["pearson_p"] == pytest.approx(stats.pearsonr(x, y).pvalue)
    assert s["spearman_rho"] == pytest.approx(0.9)
    # 80 -> 85 removes a quarter of the 20 points of error.
    assert analysis.relative_error_reduction(85.0, 80.0) == pytest.approx(0.25)
    assert analysis.relative_error_reduction(0.7, 0.8, best=1.0) == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="no error to reduce"):
        analysis.relative_error_reduction(100.0, 100.0)
    json.dumps(s)  # plain floats, ready for --json


def test_run_macros_are_read_also_where_gin_wrapped_a_long_value():
    text = (
        "BATCH_SIZE = 32\n"
        "MIXTURE_OR_TASK_NAME = \\\n"
        "    'spot_multitask__spot_glue_rte_v200__spot_super_glue_cb_v102'\n"
        "PROMPT = @prompts.random_uniform()\n"
    )
    macros = runs_lib.read_macros(text)
    assert macros == {
        "BATCH_SIZE": 32,
        "MIXTURE_OR_TASK_NAME": "spot_multitask__spot_glue_rte_v200__spot_super_glue_cb_v102",
    }
    assert runs_lib.indexed_task(macros["MIXTURE_OR_TASK_NAME"], 1) == "spot_super_glue_cb_v102"
    assert runs_lib.indexed_task("my_mixture", 0) == "my_mixture[task 0]"
