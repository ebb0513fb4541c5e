"""SPoT's datasets that TFDS lacks, read from their published files.

    spot_cr_v100         Customer Reviews (Hu & Liu 2004), SentEval's `custrev.pos` and
                         `custrev.neg` (one review sentence per line) in `<data dir>/cr/`
        'cr sentence: s' -> negative | positive; accuracy
    spot_alpha_nli_v100  αNLI (Bhagavatula et al. 2020), AI2's `alphanli-train-dev.zip` unpacked
                         in `<data dir>/alpha_nli/`: `train.jsonl` + `train-labels.lst`, `dev.jsonl`
                         + `dev-labels.lst` (labels 1 | 2, one per line)
        'alpha_nli obs1: o1 hyp1: h1 hyp2: h2 obs2: o2' -> the right hypothesis's text; accuracy

    spot_cxc_v100        CxC (Parekh et al. 2021), Crisscrossed Captions' caption-pair STS
                         scores `sts_val.csv` + `sts_test.csv` and the captions from Karpathy's
                         COCO split `dataset_coco.json`, all in `<data dir>/cxc/`
        'cxc sentence1: c1 sentence2: c2' -> the 0-5 score to the nearest 0.2 ('3.4', as
        STS-B); Pearson and Spearman correlation

SST-5 (Socher et al. 2013) is read the same way for PPT's downstream tasks (`ppt_sst5*`): the
Stanford Sentiment Treebank's PTB trees, `trainDevTestTrees_PTB.zip`'s `train.txt`, `dev.txt`
and `test.txt` in `<data dir>/sst5/`, one sentence per line with its root's label 0-4
(`sst5_source`).

The data directory is `$SPOT_JAX_DATA_DIR` (default `~/spot_jax_data`). CR is SPoT's sentiment
source and one of its low-resource targets; αNLI completes its Rainbow family (both in "All").
SPoT's code has neither, so the formats are its nearest: CR as its sentiment tasks ('<task>
<feature>: text' -> negative | positive), αNLI in `rainbow.multiple_choice`'s layout with the
jsonl keys (the first observation as the question, the second as the context, written last).

CR has no official split (SentEval cross-validates); here a sentence's split is fixed by a hash
of its text (`hash_split`): about 10% test, 10% validation, 80% train, stable across machines and
file orders. αNLI's test labels are not public: `validation` and `test` both read dev.
CxC's two files hold 88,054 pairs, SPoT's "CxC 88K" train set; SPoT does not say what it
validated on, so here both files are pooled and hash-split by the pair's caption ids
(`hash_split`): ~70K train, ~8.8K validation, ~8.8K test. CxC names captions by Karpathy's
`sentid` (`COCO_val2014:sentid:190268`), which `dataset_coco.json` maps to the caption text.

Missing files raise an error naming them and where they go. Under mock data
(`SPOT_JAX_TFDS_MOCK`) a task whose files are absent serves generated examples, as TFDS's mock
does for every other task, so mixtures holding these tasks still run offline.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import pathlib
import re
import zlib

import seqio
import tensorflow as tf

from spot_jax.data import metrics, postprocessors, preprocessors
from spot_jax.data.tasks import base, rainbow, sentiment

DATA_DIR_ENV_VAR = "SPOT_JAX_DATA_DIR"
CR_NAME = "spot_cr_v100"
ALPHA_NLI_NAME = "spot_alpha_nli_v100"
CR_FILES = {"custrev.pos": 1, "custrev.neg": 0}
_ALPHA_NLI_FILES = {"train": "train", "validation": "dev", "test": "dev"}
_ALPHA_NLI_KEYS = ("obs1", "hyp1", "hyp2", "obs2")
# Train examples, for mixture rates before the files are read: αNLI's train set; for CR an
# estimate, 80% of its 3,775 sentences (the hash split's exact count needs the files).
ALPHA_NLI_TRAIN_SIZE = 169_654
CR_TRAIN_SIZE = 3_020
CXC_NAME = "spot_cxc_v100"
CXC_SCORES = ("sts_val.csv", "sts_test.csv")
CXC_CAPTIONS = "dataset_coco.json"
CXC_TRAIN_SIZE = 70_443  # 80% of CxC's 44,009 + 44,045 STS pairs


def data_dir(name: str) -> pathlib.Path:
    root = os.environ.get(DATA_DIR_ENV_VAR) or pathlib.Path.home() / "spot_jax_data"
    return pathlib.Path(root) / name


def hash_split(key: str) -> str:
    """A key's split: crc32 of its UTF-8 text mod 10 (0 test, 1 validation, else train)."""
    bucket = zlib.crc32(key.encode("utf-8")) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def _missing(name: str, files, folder: pathlib.Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"{name} reads {', '.join(files)} from {folder}/, which lacks them: put the files there, "
        f"or set ${DATA_DIR_ENV_VAR} to a directory holding {folder.name}/ with them."
    )


def _mock_rows(split: str, make) -> list[dict]:
    from spot_jax.data import tasks

    if not tasks.mock_data_enabled():
        return []
    n = tasks.mock_size() or 1
    return [make(f"mock {split} {i}", i) for i in range(n)]


def _cr_rows(split: str) -> list[dict]:
    folder = data_dir("cr")
    paths = {folder / f: label for f, label in CR_FILES.items()}
    if not all(p.exists() for p in paths):
        rows = _mock_rows(split, lambda text, i: {"sentence": text, "label": i % 2})
        if rows:
            return rows
        raise _missing(CR_NAME, CR_FILES, folder)
    rows = []
    for path, label in paths.items():
        # Latin-1, as SentEval reads these files (any byte decodes).
        for line in path.read_text(encoding="latin-1").splitlines():
            sentence = line.strip()
            if sentence and hash_split(sentence) == split:
                rows.append({"sentence": sentence, "label": label})
    return rows


def _alpha_nli_rows(split: str) -> list[dict]:
    folder = data_dir("alpha_nli")
    stem = _ALPHA_NLI_FILES[split]
    examples, labels = folder / f"{stem}.jsonl", folder / f"{stem}-labels.lst"
    if not (examples.exists() and labels.exists()):

        def make(text, i):
            return {**{k: f"{text} {k}" for k in _ALPHA_NLI_KEYS}, "label": 1 + i % 2}

        rows = _mock_rows(split, make)
        if rows:
            return rows
        raise _missing(ALPHA_NLI_NAME, (examples.name, labels.name), folder)
    lines = [line for line in examples.read_text(encoding="utf-8").splitlines() if line.strip()]
    answers = [line.strip() for line in labels.read_text().splitlines() if line.strip()]
    if len(lines) != len(answers):
        raise ValueError(
            f"{examples} holds {len(lines)} examples but {labels} {len(answers)} labels; "
            "use the files of one download"
        )
    rows = []
    for line, answer in zip(lines, answers, strict=True):
        x = json.loads(line)
        rows.append({**{k: x[k] for k in _ALPHA_NLI_KEYS}, "label": int(answer)})
    return rows


def _cxc_rows(split: str) -> list[dict]:
    folder = data_dir("cxc")
    paths = [folder / f for f in (*CXC_SCORES, CXC_CAPTIONS)]
    if not all(p.exists() for p in paths):

        def make(text, i):
            pair = {"sentence1": f"{text} a", "sentence2": f"{text} b"}
            return {**pair, "label": float(i % 6), "idx": i}

        rows = _mock_rows(split, make)
        if rows:
            return rows
        raise _missing(CXC_NAME, (*CXC_SCORES, CXC_CAPTIONS), folder)
    captions = _karpathy_captions(folder / CXC_CAPTIONS)
    rows = []
    for name in CXC_SCORES:
        with (folder / name).open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                first, second = row["caption1"], row["caption2"]
                if hash_split(f"{first},{second}") != split:
                    continue
                texts = []
                for caption in (first, second):
                    sentid = int(caption.rsplit(":", 1)[-1])
                    if sentid not in captions:
                        raise ValueError(
                            f"{folder / name} names caption {caption}, which "
                            f"{folder / CXC_CAPTIONS} lacks: use Karpathy's COCO split file "
                            "(dataset_coco.json), whose sentids CxC uses"
                        )
                    texts.append(captions[sentid])
                score = float(row["agg_score"])
                rows.append(
                    {"sentence1": texts[0], "sentence2": texts[1], "label": score, "idx": len(rows)}
                )
    return rows


@functools.lru_cache(maxsize=1)
def _karpathy_captions(path: pathlib.Path) -> dict[int, str]:
    """sentid -> raw caption of Karpathy's COCO split (CxC rates only its val/test images)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {
        sentence["sentid"]: sentence["raw"].strip()
        for image in data["images"]
        if image.get("split") in ("val", "test")
        for sentence in image["sentences"]
    }


SST5_FILES = {"train": "train.txt", "validation": "dev.txt", "test": "test.txt"}
SST5_SPLITS = {split: split for split in SST5_FILES}
_PTB_LEAF = re.compile(r"\(\d+ ([^()\s]+)\)")
_PTB_BRACKETS = {"-LRB-": "(", "-RRB-": ")"}


def ptb_sentence(line: str) -> tuple[str, int]:
    """A PTB tree line '(3 (2 It) (4 (4 works) (2 .)))' -> ('It works .', 3): the leaves in
    order and the root's label."""
    match = re.match(r"\s*\((\d+) ", line)
    if not match:
        raise ValueError(f"not a labelled PTB tree: {line[:80]!r}")
    words = [_PTB_BRACKETS.get(w, w) for w in _PTB_LEAF.findall(line)]
    return " ".join(words), int(match.group(1))


def _sst5_rows(split: str) -> list[dict]:
    folder = data_dir("sst5")
    path = folder / SST5_FILES[split]
    if not path.exists():
        rows = _mock_rows(split, lambda text, i: {"sentence": text, "label": i % 5})
        if rows:
            return rows
        raise _missing("SST-5", list(SST5_FILES.values()), folder)
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            sentence, label = ptb_sentence(line)
            rows.append({"sentence": sentence, "label": label})
    return rows


def sst5_source() -> seqio.DataSource:
    """SST-5's {'sentence', 'label'} rows from the treebank's PTB files (train/validation/test)."""
    signature = {"sentence": tf.TensorSpec((), tf.string), "label": tf.TensorSpec((), tf.int64)}
    return _source(_sst5_rows, signature, tuple(SST5_FILES))


def _source(read_rows, signature: dict, splits) -> seqio.DataSource:
    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        del shuffle_files, seed  # one file per split: the Task shuffles the examples
        rows = read_rows(split)

        def generate():
            yield from rows

        return tf.data.Dataset.from_generator(generate, output_signature=signature)

    return seqio.FunctionDataSource(dataset_fn, splits=tuple(splits))


def cr_spec() -> base.TaskSpec:
    signature = {
        "sentence": tf.TensorSpec((), tf.string),
        "label": tf.TensorSpec((), tf.int64),
    }
    return base.TaskSpec(
        name=CR_NAME,
        tfds_name="cr (SentEval files)",
        splits={"train": "train", "validation": "validation", "test": "test"},
        text_preprocessor=functools.partial(
            preprocessors.text_classification,
            benchmark_name="cr",
            label_names=sentiment.LABEL_NAMES,
            features=(("sentence", "sentence"),),
        ),
        postprocess_fn=functools.partial(
            postprocessors.string_label_to_class_id, label_classes=sentiment.LABEL_NAMES
        ),
        metric_fns=[metrics.accuracy],
        label_names=sentiment.LABEL_NAMES,
        source=lambda: _source(_cr_rows, signature, ("train", "validation", "test")),
    )


def cxc_spec() -> base.TaskSpec:
    signature = {
        "sentence1": tf.TensorSpec((), tf.string),
        "sentence2": tf.TensorSpec((), tf.string),
        "label": tf.TensorSpec((), tf.float32),
        "idx": tf.TensorSpec((), tf.int32),
    }
    splits = ("train", "validation", "test")
    return base.TaskSpec(
        name=CXC_NAME,
        tfds_name="cxc (Crisscrossed Captions files)",
        splits={s: s for s in splits},
        text_preprocessor=functools.partial(preprocessors.stsb, benchmark_name="cxc"),
        postprocess_fn=postprocessors.string_to_float,
        metric_fns=[metrics.pearson_corrcoef, metrics.spearman_corrcoef],
        source=lambda: _source(_cxc_rows, signature, splits),
    )


def _alpha_nli_fields(x: dict) -> dict:
    # Labels 1 | 2 name the hypothesis; multiple_choice indexes the choices from 0.
    return {**x, "label": x["label"] - 1}


ALPHA_NLI_FORMAT = rainbow.Format(
    "alpha_nli", "obs1", ("hyp1", "hyp2"), "obs2", fields=_alpha_nli_fields
)


def alpha_nli_spec() -> base.TaskSpec:
    signature = {k: tf.TensorSpec((), tf.string) for k in _ALPHA_NLI_KEYS}
    signature["label"] = tf.TensorSpec((), tf.int64)
    return base.TaskSpec(
        name=ALPHA_NLI_NAME,
        tfds_name="alpha_nli (AI2 files)",
        splits=dict(_ALPHA_NLI_FILES),
        text_preprocessor=functools.partial(rainbow.multiple_choice, layout=ALPHA_NLI_FORMAT),
        postprocess_fn=postprocessors.squeezed_text,
        metric_fns=[metrics.accuracy],
        source=lambda: _source(_alpha_nli_rows, signature, _ALPHA_NLI_FILES),
    )


def register() -> list[str]:
    """Registers CR, αNLI and CxC (and taskless twins); returns the main task names."""
    base.KNOWN_TRAIN_SIZES.setdefault(CR_NAME, CR_TRAIN_SIZE)
    base.KNOWN_TRAIN_SIZES.setdefault(ALPHA_NLI_NAME, ALPHA_NLI_TRAIN_SIZE)
    base.KNOWN_TRAIN_SIZES.setdefault(CXC_NAME, CXC_TRAIN_SIZE)
    return base.register_specs([cr_spec(), alpha_nli_spec(), cxc_spec()])
