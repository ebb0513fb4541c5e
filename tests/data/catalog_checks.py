"""Checks every catalog family's tests run on its tasks (tests/data is on sys.path under pytest)."""

import seqio
import tensorflow as tf

from spot_jax.data import tasks as spot_tasks
from spot_jax.data.commands import show_examples
from spot_jax.data.tasks import base


def preprocessed_rows(name: str, examples: dict) -> list[dict]:
    """A catalog task's text preprocessing (after its row splitter, as its chain runs them) on
    hand-made raw examples (column lists), as numpy rows."""
    spot_tasks.register_all()
    spec = base.SPECS[name]
    ds = tf.data.Dataset.from_tensor_slices(examples)
    if spec.examples_of is not None:
        ds = spec.examples_of(ds)
    return list(spec.text_preprocessor(ds).as_numpy_iterator())


def preprocessed_strings(name: str, examples: dict) -> list[tuple[str, str]]:
    """`preprocessed_rows` as (inputs, targets) strings."""
    return [
        (x["inputs"].decode(), x["targets"].decode()) for x in preprocessed_rows(name, examples)
    ]


def check_taskless_twins(words: dict[str, str]) -> None:
    """Each task (name -> its task word) and its twin yield the same examples under mock data,
    the twin without the leading word."""
    for name, word in words.items():
        full = list(show_examples(name, "validation", n=2))
        short = list(show_examples(name + "_taskless", "validation", n=2))
        assert full and len(full) == len(short), name
        for x, y in zip(full, short, strict=True):
            assert x["inputs"].startswith(word + " ") and x["targets"], name
            assert y["inputs"] == x["inputs"].split(" ", 1)[1], name


def check_tokenized_examples(names, monkeypatch, spm) -> None:
    """The tasks, registered again under the real vocabulary, give EOS-terminated token ids."""
    monkeypatch.setenv("SPOT_JAX_VOCAB", str(spm))
    spot_tasks.register_all()
    for name in names:  # the vocabulary is fixed at registration: re-register under the env var
        seqio.TaskRegistry.remove(name)
        base.register_spec(base.SPECS[name])
        task = seqio.get_mixture_or_task(name)
        ds = task.get_dataset({"inputs": 64, "targets": 16}, split="validation", shuffle=False)
        rows = list(ds.take(2).as_numpy_iterator())
        assert rows, name
        for x in rows:
            assert 1 < len(x["inputs"]) <= 64 and x["inputs"][-1] == 1, name  # EOS appended
            assert 1 < len(x["targets"]) <= 16 and x["targets"][-1] == 1, name


# One RACE article (TFDS race/*: an article and its questions) for the RACE format tests.
RACE_ARTICLE = {
    "article": ["The cat sat."],
    "questions": [["Who sat?", "Where _ ."]],
    "answers": [["B", "D"]],
    "options": [[["a dog", "the cat", "a man", "nobody"], ["mat", "hat", "bed", "chair."]]],
    "example_id": ["e"],
}
