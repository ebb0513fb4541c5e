"""Text-to-text preprocessors of SPoT's tasks (TF inside: behind the data seam's fence).

Each turns a TFDS example into `{'inputs': str, 'targets': str, ...}` with T5's exact strings
(`t5.data.preprocessors.glue/stsb/wsc/record`), so prompts trained here meet the same text as
prompts trained with T5X:

    glue:    '<benchmark> key1: v1 key2: v2'  -> label_names[label]  ('<unk>' for label -1)
    stsb:    'stsb sentence1: s1 sentence2: s2' -> round(label * 5) / 5 as '%.1f'
    wsc:     'wsc text: ... * noun * ... # pronoun # ...' -> 'False' / 'True'
    wsc_simple: 'wsc: ... *pronoun* ...' -> the candidate referent (T5's trained WSC form)
    record:  'record query: q entities: e1, e2 passage: p' -> one example per answer
    squad / mrqa:   '<benchmark> question: q context: c' -> first answer (SPoT's `mrqa`)
    summarization:  '<benchmark> summarize: source' -> summary (`preprocess_text_generation`)
    text_classification / multilabel_classification: SPoT's '<benchmark> key: text' forms,
                    joined with T5's `_string_join` (whitespace runs collapsed; T5's own
                    glue/stsb/wsc/record formats above do not collapse)

Besides those, `remove_task_prefix` (prompt tuning's "taskless" variant) and `few_shot`
(seeded k-shot subsets) work on any of the tasks. T5's unsupervised C4 objectives over token ids
(`span_corruption`, `prefix_lm`) are in `denoising`.
"""

from __future__ import annotations

from collections.abc import Sequence

import seqio
import tensorflow as tf

from spot_jax.data import postprocessors

UNK_LABEL = "<unk>"


def _label_text(label: tf.Tensor, label_names: Sequence[str]) -> tf.Tensor:
    """label_names[label], or '<unk>' for the unlabeled (-1) test examples."""
    label = tf.cast(label, tf.int64)
    return tf.cond(
        tf.equal(label, -1),
        lambda: tf.constant(UNK_LABEL),
        lambda: tf.gather(tf.constant(list(label_names)), tf.maximum(label, 0)),
    )


@seqio.map_over_dataset
def glue(
    x: dict,
    benchmark_name: str,
    label_names: Sequence[str],
    feature_names: Sequence[str] | None = None,
) -> dict:
    """GLUE/SuperGLUE classification example to T5's text-to-text pair.

    Args:
        x: a TFDS example with text features, `label` and `idx`.
        benchmark_name: the word the input starts with (e.g. 'rte', 'mnli').
        label_names: the class names, indexed by `label`.
        feature_names: the text features in order; default all but label/idx, sorted by name.

    Returns:
        `{'inputs', 'targets', 'idx'}`; for MultiRC 'idx/paragraph', 'idx/question',
        'idx/answer' instead of 'idx', and HTML markup removed from the input.
    """
    keys = list(feature_names or sorted(set(x) - {"label", "idx"}))
    pieces = [benchmark_name]
    for key in keys:
        pieces += [f"{key}:", x[key]]
    inputs = tf.strings.join(pieces, separator=" ")
    out = {"targets": _label_text(x["label"], label_names)}
    if benchmark_name == "multirc":
        inputs = tf.strings.regex_replace(inputs, "<br>", " ")
        inputs = tf.strings.regex_replace(inputs, "<(/)?b>", "")
        for part in ("paragraph", "question", "answer"):
            out[f"idx/{part}"] = x["idx"][part]
    else:
        out["idx"] = x["idx"]
    out["inputs"] = inputs
    return out


@seqio.map_over_dataset
def stsb(x: dict, benchmark_name: str = "stsb") -> dict:
    """STS-B: the score rounded to the nearest 0.2 and written with one decimal ('3.4');
    other 0-5 similarity tasks (CxC) take the format under their own name."""
    inputs = tf.strings.join(
        [f"{benchmark_name} sentence1:", x["sentence1"], "sentence2:", x["sentence2"]],
        separator=" ",
    )
    score = tf.round(tf.cast(x["label"], tf.float32) * 5) / 5
    return {"inputs": inputs, "targets": tf.strings.as_string(score, precision=1), "idx": x["idx"]}


def _mark_span(text: tf.Tensor, span: tf.Tensor, word_index: tf.Tensor, mark: str) -> tf.Tensor:
    # Matches the span where it starts at whitespace-word `word_index` and wraps it in marks.
    pattern = tf.strings.join(
        ["^((?:\\S+\\s){", tf.strings.as_string(word_index), "})(", span, ")"]
    )
    return tf.strings.regex_replace(text, pattern, f"\\1{mark} \\2 {mark}")


@seqio.map_over_dataset
def wsc(x: dict) -> dict:
    """WSC (wsc.fixed): '* noun *' and '# pronoun #' marked in the text; target False/True."""
    text = _mark_span(x["text"], x["span1_text"], x["span1_index"], "*")
    # The first marks added two words before the pronoun when the noun comes first.
    span2_index = x["span2_index"] + 2 * tf.cast(x["span1_index"] < x["span2_index"], tf.int32)
    text = _mark_span(text, x["span2_text"], span2_index, "#")
    inputs = tf.strings.join(["wsc", "text:", text], separator=" ")
    return {
        "inputs": inputs,
        "targets": _label_text(x["label"], ("False", "True")),
        "idx": x["idx"],
    }


def wsc_simple(dataset: tf.data.Dataset, correct_referent_only: bool) -> tf.data.Dataset:
    """T5's 'simple' WSC: 'wsc: ... *pronoun* ...' -> the candidate referent's text.

    The pronoun (the word at `span2_index`) is wrapped in asterisks and the target is
    `span1_text`, whether or not it is the right referent; `label` (1 when it is) stays for
    `postprocessors.wsc_simple`. Training keeps the correct referents only
    (`correct_referent_only=True`, T5's `super_glue_wsc_v102_simple_train`), so the model
    learns to name the referent; eval keeps every candidate and scores whether the model
    named this one exactly when it is right.

    Two examples of WSC's train split break the word index, and T5 special-cases them: the
    pronoun glued to punctuation ('him,"', marked '*him* ,"') and an index one word short of
    the pronoun ('use it', 'it' marked). Both are handled by rule here, not by their text.
    """
    if correct_referent_only:
        dataset = dataset.filter(lambda x: tf.cast(x["label"], tf.int64) == 1)

    def convert(x):
        words = tf.strings.split(x["text"], sep=" ")
        pronoun = x["span2_text"]
        last = tf.size(words) - 1
        # WSC's indices are in range (T5 asserts it); clipping keeps mock data readable.
        index = tf.clip_by_value(tf.cast(x["span2_index"], tf.int32), 0, last)
        at_next = tf.equal(words[tf.minimum(index + 1, last)], pronoun)
        index = tf.where(tf.not_equal(words[index], pronoun) & at_next, index + 1, index)
        word = words[index]
        length = tf.minimum(tf.strings.length(pronoun), tf.strings.length(word))
        rest = tf.strings.substr(word, length, tf.strings.length(word) - length)
        glued = tf.equal(tf.strings.substr(word, 0, length), pronoun) & (rest != "")
        marked = tf.strings.join(["*", pronoun, "*", tf.where(glued, " " + rest, "")])
        words = tf.tensor_scatter_nd_update(words, [[index]], [marked])
        text = tf.strings.reduce_join(words, separator=" ")
        return {
            "inputs": tf.strings.join(["wsc:", text], separator=" "),
            "targets": x["span1_text"],
            "label": tf.cast(x["label"], tf.int64),
            "idx": x["idx"],
        }

    return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


def record(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """ReCoRD: one example per answer (one '<unk>' example when there is none).

    Every copy keeps all `answers` and the (passage, query) ids, which the postprocessor
    uses to group the copies back into one question at eval.
    """

    def one_per_answer(x):
        answers = x["answers"]
        n = tf.size(answers)
        copies = tf.maximum(n, 1)

        def repeat(t):
            return tf.broadcast_to(t, tf.concat([[copies], tf.shape(t)], axis=0))

        passage = tf.strings.regex_replace(x["passage"], r"(\.|\?|\!|\"|\')\n@highlight\n", r"\1 ")
        passage = tf.strings.regex_replace(passage, r"\n@highlight\n", ". ")
        inputs = tf.strings.join(
            [
                "record query:",
                x["query"],
                "entities:",
                tf.strings.reduce_join(x["entities"], separator=", "),
                "passage:",
                passage,
            ],
            separator=" ",
        )
        return {
            "inputs": repeat(inputs),
            "targets": tf.cond(n > 0, lambda: answers, lambda: tf.constant([UNK_LABEL])),
            "answers": repeat(answers),
            "idx/passage": repeat(x["idx"]["passage"]),
            "idx/query": repeat(x["idx"]["query"]),
        }

    return dataset.map(one_per_answer, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


@seqio.map_over_dataset
def remove_task_prefix(x: dict) -> dict:
    """Prompt tuning's 'taskless' inputs: drops the first word (the task name) of `inputs`."""
    out = dict(x)
    out["inputs"] = tf.strings.regex_replace(x["inputs"], r"^[^ ]* ", "")
    return out


def class_quotas(k: int, num_classes: int) -> list[int]:
    """k examples spread over classes as evenly as possible (earlier classes get the rest)."""
    return [k // num_classes + (c < k % num_classes) for c in range(num_classes)]


def few_shot(
    dataset: tf.data.Dataset,
    *,
    k: int,
    seed: int,
    num_classes: int = 1,
    label_key: str | None = "label",
    class_values: Sequence[int] | None = None,
    block: int = 0,
    pool_size: int = 1_000_000,
) -> tf.data.Dataset:
    """A seeded, class-balanced k-shot subset (PPT's protocol: k in all, balanced).

    The split is shuffled with `seed` (a fixed order), then each class c contributes its
    examples number [block*q_c, (block+1)*q_c) in that order, where q = `class_quotas(k,
    num_classes)`. Block 0 is the few-shot train set, block 1 a disjoint dev set of the same
    size drawn from the same split. Unlabeled (-1) examples are never selected.

    Args:
        dataset: raw TFDS examples.
        k: examples in the subset (fewer when the split is too small).
        seed: shuffle seed choosing the subset.
        num_classes: classes to balance over; 1 (or `label_key=None`) ignores labels.
        label_key: the integer class feature.
        class_values: the `label_key` value of each class (e.g. Sentiment140's polarity 0 and
            4); examples with other values are never selected. Default: 0..num_classes-1.
        block: which disjoint k-subset to return (0 train, 1 dev).
        pool_size: shuffle buffer, larger than every split we subsample.

    Returns:
        The subset, in shuffled order.
    """
    dataset = dataset.shuffle(pool_size, seed=seed, reshuffle_each_iteration=False)
    if label_key is None:
        num_classes = 1
    if class_values is not None and label_key is not None:
        num_classes = len(class_values)
    values = tf.constant(list(class_values or range(num_classes)), tf.int32)
    quotas = tf.constant(class_quotas(k, num_classes), tf.int32)

    def keep(counts, x):
        if num_classes == 1:
            index, valid = tf.constant(0), tf.constant(True)
        else:
            matches = tf.equal(values, tf.cast(x[label_key], tf.int32))
            index = tf.cast(tf.argmax(tf.cast(matches, tf.int32)), tf.int32)
            valid = tf.reduce_any(matches)
        seen, quota = counts[index], quotas[index]
        take = valid & (seen >= block * quota) & (seen < (block + 1) * quota)
        counts = tf.tensor_scatter_nd_add(counts, [[index]], [tf.cast(valid, tf.int32)])
        return counts, (take, x)

    def chosen(take, x):
        del x
        return take

    def example(take, x):
        del take
        return x

    counts = tf.zeros([num_classes], tf.int32)
    return dataset.scan(counts, keep).filter(chosen).map(example)


def drop_unlabeled(dataset: tf.data.Dataset, label_key: str = "label") -> tf.data.Dataset:
    """Drops the examples whose integer label is -1 (SNLI's pairs without a gold label)."""
    return dataset.filter(lambda x: tf.cast(x[label_key], tf.int64) >= 0)


def join_collapsing_whitespace(pieces: Sequence) -> tf.Tensor:
    """T5's `_string_join`: pieces joined by spaces, each whitespace run then one space.

    SPoT's own formats (classification, sentiment140, goemotions) join this way; T5's
    GLUE/SuperGLUE formats (`glue`, `stsb`, `wsc`, `record`) join without collapsing.
    """
    return tf.strings.regex_replace(tf.strings.join(list(pieces), separator=" "), r"\s+", " ")


def text_classification(
    dataset: tf.data.Dataset,
    *,
    benchmark_name: str,
    label_names: Sequence[str],
    features: Sequence[tuple[str, str]],
    skip_unlabeled: bool = False,
) -> tf.data.Dataset:
    """'<benchmark> key1: v1 key2: v2' -> label_names[label] ('<unk>' for label -1).

    SPoT's `preprocess_text_classification`, which joins with T5's `_string_join`: every run
    of whitespace in the input (newlines in DocNLI's documents, double spaces) becomes one
    space. The keys written in the input may differ from the TFDS feature names.

    Args:
        dataset: TFDS examples with the text features and an integer `label`.
        benchmark_name: the word the input starts with.
        label_names: the class names, indexed by `label`.
        features: (key written in the input, TFDS feature) pairs, in input order.
        skip_unlabeled: drop label -1 examples first instead of writing '<unk>'.
    """
    if skip_unlabeled:
        dataset = drop_unlabeled(dataset)

    def convert(x):
        pieces = [benchmark_name]
        for key, feature in features:
            pieces += [f"{key}:", x[feature]]
        return {
            "inputs": join_collapsing_whitespace(pieces),
            "targets": _label_text(x["label"], label_names),
        }

    return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


def pad_punctuation(text: tf.Tensor) -> tf.Tensor:
    """T5's SQuAD spacing: a space around every punctuation mark, whitespace runs collapsed."""
    text = tf.strings.regex_replace(text, r"([[:punct:]])", r" \1 ")
    return tf.strings.regex_replace(text, r"\s+", " ")


@seqio.map_over_dataset
def squad(x: dict, benchmark_name: str = "squad") -> dict:
    """SQuAD: '<benchmark> question: q context: c' -> the first answer, punctuation padded.

    T5's `preprocessors.squad` strings after the task word (the taskless twin is exactly
    T5's input); all answers are kept for the metric ('<unk>' target when there are none).
    """
    return {
        **extractive_qa(benchmark_name, x["question"], x["context"], x["answers"]["text"]),
        "id": x["id"],
    }


def extractive_qa(benchmark_name: str, question, context, answers) -> dict:
    """'<benchmark> question: q context: c' -> the first answer ('<unk>' when none), every
    string with T5's SQuAD punctuation padding; all answers kept for the metric."""
    answers = pad_punctuation(answers)
    question, context = pad_punctuation(question), pad_punctuation(context)
    inputs = tf.strings.join([benchmark_name, "question:", question, "context:", context], " ")
    first = tf.concat([answers, tf.constant([UNK_LABEL])], axis=0)[0]
    return {
        "inputs": tf.strings.regex_replace(inputs, r"\s+", " "),
        "targets": first,
        "answers": answers,
    }


@seqio.map_over_dataset
def mrqa(x: dict, benchmark_name: str) -> dict:
    """MRQA: '<subset> question: q context: c' -> the first answer, punctuation padded.

    SPoT's `mrqa` preprocessor: question, context and every answer get T5's SQuAD spacing;
    all answers stay for the metric, with the question id `qid`.
    """
    return {
        **extractive_qa(benchmark_name, x["question"], x["context"], x["answers"]),
        "qid": x["qid"],
    }


@seqio.map_over_dataset
def summarization(x: dict, benchmark_name: str, source_key: str, target_key: str) -> dict:
    """SPoT's `preprocess_text_generation`: '<benchmark> summarize: <source>' -> target."""
    inputs = tf.strings.join([benchmark_name, "summarize:", x[source_key]], separator=" ")
    return {"inputs": inputs, "targets": x[target_key]}


@seqio.map_over_dataset
def multilabel_classification(
    x: dict, benchmark_name: str, text_key: str, label_names: Sequence[str], text_word: str
) -> dict:
    """'<benchmark> <text_word>: <text>' -> the set boolean features, ' \\n '-joined.

    SPoT's `preprocess_goemotions`: 'goemotions comment: <comment>' (whitespace collapsed)
    -> e.g. 'confusion \\n sadness', the emotions in the TFDS feature order (`label_names`);
    an example with none set gets the empty target, as SPoT's join gives.
    """
    flags = tf.stack([tf.cast(x[name], tf.bool) for name in label_names])
    chosen = tf.boolean_mask(tf.constant(list(label_names)), flags)
    targets = tf.strings.reduce_join(chosen, separator=postprocessors.LABEL_SEPARATOR)
    inputs = join_collapsing_whitespace([benchmark_name, f"{text_word}:", x[text_key]])
    return {"inputs": inputs, "targets": targets}
