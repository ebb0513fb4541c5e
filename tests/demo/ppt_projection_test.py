"""The demo's PPT and projection experiments end to end on a tiny world backbone, and their
pieces: masked encoding, PPT's few-shot splits, the opt-in flag."""

import dataclasses
import json
import re

import numpy as np
import pytest
from etils import epath

from spot_jax.data import ppt
from spot_jax.data import world as world_lib
from spot_jax.demo import backbone as backbone_lib
from spot_jax.demo import command, cross_model, experiment, few_shot, pretrained_prompt, runs
from spot_jax.demo import report as report_lib
from spot_jax.spot import library as library_lib

TINY = backbone_lib.BackboneConfig(
    emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_layers=1, steps=20, batch_size=8
)
DEMO = experiment.DemoConfig(
    backbone=TINY, source_steps=25, mixture_steps=25, target_steps=25, embedding_steps=25,
    seeds=(0, 1),
)  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppt_projection")
    backbone = backbone_lib.load_or_pretrain_backbone(TINY, root / "cache", progress=False)
    protocol = experiment.Protocol(backbone, world_lib.build_world(), DEMO, epath.Path(root))
    protocol.train_sources(None)
    results = {}
    report = report_lib.Report("tiny")
    hooks = [
        pretrained_prompt.experiment(
            cfg=pretrained_prompt.PPTConfig(
                documents=192, validation_documents=48, pretrain_steps=25
            ),
            progress=False,
        ),  # fmt: skip
        cross_model.experiment(
            cfg=cross_model.ProjectionConfig(projector_steps=200), progress=False
        ),  # fmt: skip
        cross_model.experiment(
            cfg=cross_model.ProjectionConfig(objective="task", projector_steps=20), progress=False
        ),
    ]
    for hook in hooks:
        for heading, body in hook(protocol, results):
            report.add(heading, body)
    return protocol, results, report.markdown()


@pytest.mark.slow
def test_report_has_the_ppt_table_over_five_seeds(finished):
    protocol, results, text = finished
    assert (
        "## PPT: pre-trained prompt vs sampled-vocab init, few-shot (seeds 0, 1, 2, 3, 4)" in text
    )
    assert "| target | PPT zero-shot | PPT init | sampled-vocab init |" in text
    ppt_section = text.split("## Projection")[0]
    for target in protocol.world.names("target"):
        row = next(line for line in ppt_section.splitlines() if line.startswith(f"| {target} |"))
        # mean ± std then the five seeds' values, for both trained columns.
        assert len(re.findall(r"± \d+\.\d \(\d+, \d+, \d+, \d+, \d+\)", row)) >= 2, row
        per = results["ppt"]["per_target"][target]
        assert len(per["PPT init"]) == len(per["sampled-vocab init"]) == 5
    # The PPT prompt is a real run: numpy prompts at every evaluation.
    run = epath.Path(results["ppt"]["run_dir"])
    assert (run / "metrics.jsonl").exists() and list(run.glob("numpy_checkpoints/*"))


@pytest.mark.slow
def test_projection_table_and_the_projected_library_of_the_large_model(finished):
    protocol, results, text = finished
    res = results["projection"]
    assert (
        "## Projection: small -> large world model, distance projector (seeds 0, 1, 2, 3, 4)"
        in text
    )
    header = "| target | small model's own prompt | " + " | ".join(cross_model.METHODS) + " |"
    assert header in text
    lib = library_lib.Library(res["projected_library"])
    large_dim = int(round(TINY.emb_dim * 1.5))
    assert lib.model()["emb_dim"] == large_dim
    assert sorted(e.name for e in lib.entries()) == sorted(protocol.world.names("target"))
    small = protocol.library.model()["fingerprint"]
    for entry in lib.entries():
        assert entry.prompt().shape == (DEMO.prompt_length, large_dim)
        assert entry.meta["projected_from"]["fingerprint"] == small
        assert entry.meta["fingerprint"] == lib.model()["fingerprint"] != small
        assert entry.meta["projector"] == res["projector"]
    # The projector learnt only from tasks both models know: never a target.
    assert not set(res["projector_tasks"]) & set(protocol.world.names("target"))
    assert res["projector_loss"][1] < res["projector_loss"][0]
    # (a) is the projected prompt itself: the few-shot runs' step-0 accuracy.
    assert all(len(r["projected init"]) == 5 for r in res["per_target"].values())


def test_masked_encoding_uses_the_sentinel_id():
    class Words:
        def encode(self, text):
            return [3 + len(w) for w in text.split()]

    ids = few_shot.encode_masked([f"a bb {ppt.MASK} ccc", f"{ppt.MASK} dd"], Words(), 6, 99)
    assert ids.tolist() == [[4, 5, 99, 6, 1, 0], [99, 5, 1, 0, 0, 0]]
    with pytest.raises(ValueError, match="more than 3"):
        few_shot.encode_masked([f"a bb {ppt.MASK}"], Words(), 3, 99)


def test_few_shot_train_and_dev_are_disjoint_and_seeded():
    x = np.arange(200, dtype=np.int32).reshape(100, 2)
    data = runs.TaskArrays("t", x, x, x[:10], x[:10])
    train, dev = few_shot.split(data, 32, seed=3)
    again, _ = few_shot.split(data, 32, seed=3)
    other, _ = few_shot.split(data, 32, seed=4)
    rows = {tuple(r) for r in train.train_inputs}
    assert len(rows) == 32 and not rows & {tuple(r) for r in dev["encoder_input_tokens"]}
    np.testing.assert_array_equal(train.train_inputs, again.train_inputs)
    assert not np.array_equal(train.train_inputs, other.train_inputs)
    # Class-balanced: two targets, 16 of each in train and in dev.
    y = np.repeat(np.array([[5, 1], [6, 1]], np.int32), [70, 30], axis=0)
    train, dev = few_shot.split(runs.TaskArrays("t", x, y, x[:10], y[:10]), 16, seed=0)
    assert (train.train_targets[:, 0] == 5).sum() == 8
    assert (dev["decoder_target_tokens"][:, 0] == 5).sum() == 8
    with pytest.raises(ValueError, match="need 128"):
        few_shot.split(data, 64, seed=0)


def test_seed_table_shows_every_seed_and_a_per_seed_average():
    rows = {"t1": {"a": [10.0], "b": [50.0, 70.0]}, "t2": {"a": [30.0], "b": [10.0, 30.0]}}
    table = few_shot.seed_table(rows, ["a", "b"])
    assert "| t1 | 10.0 | 60.0 ± 14.1 (50, 70) |" in table
    assert "| **average** | 20.0 | 40.0 ± 14.1 (30, 50) |" in table


def test_experiments_are_opt_in_and_unknown_names_are_one_clear_error():
    assert command.EXPERIMENTS == []  # nothing runs unless asked
    hooks = command.opt_in_experiments("ppt, projection", quick=True, progress=False)
    assert [h.__name__ for h in hooks] == ["ppt_experiment", "projection_experiment"]
    assert command.opt_in_experiments("", quick=True) == []
    with pytest.raises(SystemExit, match="knows ppt, projection, projection-tt; not nsp"):
        command.opt_in_experiments("ppt,nsp", quick=True)
    assert dataclasses.asdict(cross_model.ProjectionConfig.quick())["scale"] == 1.5


@pytest.mark.slow
def test_a_task_loss_projector_learns_from_the_sources_only(finished):
    protocol, results, text = finished
    res = results["projection_task"]
    assert "## Projection: small -> large world model, task-loss projector" in text
    assert sorted(res["projector_tasks"]) == sorted(protocol.world.names("source"))
    assert res["projected_library"] != results["projection"]["projected_library"]
    lib = library_lib.Library(res["projected_library"])
    assert lib.get(protocol.world.names("target")[0]).prompt().shape[1] == 24


def test_a_rerun_on_another_backbone_starts_the_library_afresh(finished, tmp_path):
    protocol = finished[0]
    # An --out holding an earlier demo's library, of a backbone cached elsewhere.
    stale = library_lib.Library(tmp_path / "library")
    stale.root.mkdir(parents=True)
    record = {**protocol.library.model(), "frozen": "/elsewhere/backbone-x/checkpoint"}
    (stale.root / library_lib.LIBRARY_META).write_text(json.dumps(record))
    again = experiment.Protocol(protocol.backbone, protocol.world, DEMO, epath.Path(tmp_path))
    assert again.library.model() is None and not stale.root.exists()
    # The library of this backbone itself is kept (its entries are replaced one by one).
    same = experiment.Protocol(protocol.backbone, protocol.world, DEMO, protocol.out)
    assert same.library.model()["frozen"] == str(protocol.backbone.path)
