"""The task world: determinism, families and roles, splits, vocabulary, SeqIO registration."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spot_jax.data import world as world_lib

CLI = Path(sys.executable).parent / "spot-jax"


def test_same_seed_same_world_other_seed_other_examples():
    a, b = world_lib.build_world(7), world_lib.build_world(7)
    c = world_lib.build_world(8)
    for name in a.names():
        assert a.examples(name, "train") == b.examples(name, "train")
        assert a.examples(name, "validation") == b.examples(name, "validation")
    assert any(a.examples(n, "train") != c.examples(n, "train") for n in a.names())


def test_families_roles_and_labels():
    w = world_lib.build_world()
    assert len(w.names()) >= 12 and len(w.families) >= 4
    for family in w.families:
        members = [n for n in w.names() if w.family(n) == family]
        roles = [w.task(n).role for n in members]
        assert roles.count("target") == 1 and roles.count("source") >= 2, family
    assert set(w.names("source")) | set(w.names("target")) == set(w.names())
    for name in w.names():
        task = w.task(name)
        answers = {y for _, y in w.examples(name, "train")}
        if task.labels:  # a classification: every label occurs, nothing else does
            assert answers == set(task.labels), name
        else:  # extraction: the answer is a word of the input
            assert all(y in x.split() for x, y in w.examples(name, "train")), name


def _answer(task, text):
    """The answer recomputed from the scene and the lexicons (the world's latent structure)."""
    person, _, _, adjective, noun, _, city, _, day = text.split()
    slots = dict(person=person, adjective=adjective, noun=noun, city=city, day=day)
    word = slots[task.slot]
    return word if task.answer is None else task.answer[world_lib._LEXICON[task.slot][word]]


def test_every_task_reads_one_scene_and_answers_by_its_family_rule():
    w = world_lib.build_world()
    for name in w.names():
        task = w.task(name)
        for x, y in w.examples(name, "validation"):
            assert len(x.split()) == 9 and x.split()[2] == "the"
            assert _answer(task, x) == y, (name, x, y)
    # One family, one operation: on the same scene the sentiment tasks agree.
    polarity, goodbad = w.task("world_sentiment_polarity"), w.task("world_sentiment_goodbad")
    isneg = w.task("world_sentiment_isnegative")
    for x, _ in w.examples("world_sentiment_ispositive", "train")[:200]:
        p = _answer(polarity, x)
        assert _answer(goodbad, x) == {"positive": "good", "negative": "bad"}[p]
        assert _answer(isneg, x) == ("yes" if p == "negative" else "no")


def test_classification_labels_are_balanced():
    w = world_lib.build_world()
    for name in w.names():
        labels = w.task(name).labels
        if labels:
            answers = [y for _, y in w.examples(name, "train")]
            counts = [answers.count(lab) for lab in labels]
            assert min(counts) > 0.7 * len(answers) / len(labels), (name, counts)


def test_splits_are_disjoint_and_sized():
    w = world_lib.build_world(split_sizes={"train": 200, "validation": 50})
    for name in w.names():
        train, val = w.examples(name, "train"), w.examples(name, "validation")
        assert len(train) == 200 and len(val) == 50
        assert not {x for x, _ in train} & {x for x, _ in val}
    with pytest.raises(ValueError, match="splits"):
        w.examples(w.names()[0], "test")
    with pytest.raises(ValueError, match="no world task"):
        w.task("world_nope")


def test_task_words_share_the_family_word():
    w = world_lib.build_world()
    assert w.with_task_word("world_lookup_europe", "anna saw") == "lookup europe: anna saw"


def test_vocabulary_covers_the_world_and_is_cached(tmp_path):
    import sentencepiece

    w = world_lib.build_world()
    path = world_lib.vocabulary_file(w, tmp_path)
    stamp = path.stat().st_mtime_ns
    assert world_lib.vocabulary_file(w, tmp_path).stat().st_mtime_ns == stamp
    sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2)
    corpus = w.corpus()
    assert not any(sp.unk_id() in ids for ids in sp.encode(corpus))
    # Word level: one piece per word keeps the demo's sequences short.
    sample = corpus[:200]
    assert all(len(i) == len(t.split()) for i, t in zip(sp.encode(sample), sample, strict=True))


@pytest.mark.tf
def test_spot_jax_tasks_show_a_world_task(tmp_path):
    cli = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "spot_jax.cli"]
    out = subprocess.run(
        [*cli, "tasks", "show", "world_lookup_europe", "-n", "2"],
        capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "SPOT_JAX_CACHE": str(tmp_path)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    want = world_lib.build_world().examples("world_lookup_europe", "validation")[:2]
    assert [(r["inputs"], r["targets"]) for r in rows] == want


@pytest.mark.tf
def test_registered_tasks_tokenize_with_the_world_vocabulary(tmp_path, monkeypatch):
    monkeypatch.setenv(world_lib.CACHE_ENV_VAR, str(tmp_path))
    import seqio

    from spot_jax.data import tasks  # noqa: F401 - registers
    from spot_jax.data.tasks import world as world_tasks

    world_tasks.vocabulary.cache_clear()
    seqio.TaskRegistry.remove("world_topic_codes_prefixed")
    world_tasks.register()
    task = seqio.get_mixture_or_task("world_topic_codes_prefixed")
    ex = next(task.get_dataset(split="train", shuffle=False).as_numpy_iterator())
    vocab = task.output_features["inputs"].vocabulary
    assert vocab.decode(ex["inputs"].tolist()).startswith("topic codes: ")
    assert ex["targets"].tolist()[-1] == 1 and len(ex["targets"]) == 2  # one word + EOS
    assert (tmp_path / "world" / world_lib.vocabulary_name(world_lib.DEFAULT_SEED)).exists()


def test_documents_follow_one_person_and_city_over_consecutive_days():
    w = world_lib.build_world()
    docs = w.documents(300, seed=5)
    assert docs == w.documents(300, seed=5) and docs != w.documents(300, seed=6)
    week = "monday tuesday wednesday thursday friday saturday sunday".split()
    for doc in docs:
        assert 3 <= len(doc) <= 6
        words = [scene.split() for scene in doc]
        assert len({(s[0], s[6]) for s in words}) == 1  # one person, one city
        days = [week.index(s[8]) for s in words]
        assert days == list(range(days[0], days[0] + len(doc)))
    with pytest.raises(ValueError, match="2 <= low <= high <= 7"):
        w.documents(1, sizes=(1, 3))


def test_documents_hold_train_side_scenes_only():
    w = world_lib.build_world()
    scenes = {s for doc in w.documents(500) for s in doc}
    assert scenes <= set(w.unlabeled_text())
    for name in w.names("target"):
        for split in w.split_sizes:
            assert not scenes & {x for x, _ in w.examples(name, split)}


def test_ppt_label_words_are_single_pieces_after_the_tasks_words(tmp_path):
    import sentencepiece

    w = world_lib.build_world()
    sp = sentencepiece.SentencePieceProcessor(
        model_file=str(world_lib.vocabulary_file(w, tmp_path))
    )
    ids = [sp.encode(word) for word in world_lib.PPT_LABEL_WORDS]
    assert all(len(i) == 1 and i[0] != sp.unk_id() for i in ids)
    # 'maybe' is in no task: it takes the last id, so the tasks' words keep theirs.
    assert sp.encode("maybe") == [sp.get_piece_size() - 1]
