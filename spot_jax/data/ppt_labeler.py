"""A pseudo-labeler from a saved prompt, for PPT's single-sentence format (TF inside: seqio
vocabulary).

PPT labels its corpus with a separate 5-way sentiment classifier (RoBERTa on Yelp-5). Here any
trained prompt of a spot_jax run can play that part: each sentence is written into the
prompt's task template, every label word is scored as the target by the frozen model with
that prompt (rank classification, T5X's `score_batch`), and the best word's class is the
label; with `min_margin`, sentences whose best word wins by less (in log-likelihood) are
dropped (-1), a confidence filter.

    labeler = PromptLabeler('runs/yelp5', template='yelp sentence: {sentence}',
                            label_words=('1', '2', '3', '4', '5'))
    ppt_tasks.register_pseudo_label_task(labeler, name='yelp5_c4')   # -> 'ppt_cls_yelp5_c4'

The model is built on the first call, so registering a task costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class PromptLabeler:
    """sentences -> class ids by a saved prompt on its frozen model.

    Args:
      run_dir: the prompt's training run (its config.gin gives the frozen model).
      label_words: the target text of each class, in class order.
      template: the input text, with `{sentence}` where the sentence goes.
      checkpoint: which numpy checkpoint is the prompt ('best', 'latest' or a step).
      vocabulary: a seqio vocabulary; default T5's (`spot_jax.data.vocab`).
      input_length: encoder tokens per sentence (longer inputs are cut, EOS kept).
      batch_size: sentences per model call.
      min_margin: drop sentences whose best word leads the second by less than this.
    """

    def __init__(
        self,
        run_dir: str,
        label_words: Sequence[str],
        template: str = "{sentence}",
        checkpoint: str | int = "best",
        vocabulary=None,
        input_length: int = 128,
        batch_size: int = 32,
        min_margin: float = 0.0,
    ):
        if len(label_words) < 2:
            raise ValueError(f"a labeler needs at least 2 label words, got {list(label_words)}")
        if "{sentence}" not in template:
            raise ValueError(f"template {template!r} must contain {{sentence}}")
        self.run_dir, self.label_words, self.template = str(run_dir), tuple(label_words), template
        self.checkpoint, self.vocabulary = checkpoint, vocabulary
        self.input_length, self.batch_size, self.min_margin = input_length, batch_size, min_margin
        self._score = None

    def _build(self) -> None:
        import flax
        import jax
        import jax.numpy as jnp

        from spot_jax.data import vocab
        from spot_jax.models.prompted import PROMPT_PATH
        from spot_jax.spot import neurons
        from spot_jax.spot import runs as runs_lib

        model, params = neurons.frozen_model(self.run_dir)
        step, _ = runs_lib.select_step(self.run_dir, self.checkpoint)
        params[PROMPT_PATH] = np.load(runs_lib.prompt_file(self.run_dir, step))
        nested = flax.traverse_util.unflatten_dict(
            {k: jnp.asarray(v) for k, v in params.items()}, sep="/"
        )
        self.vocabulary = self.vocabulary or vocab.get_vocabulary()
        words = [list(self.vocabulary.encode(w)) + [1] for w in self.label_words]
        self._targets = np.zeros((len(words), max(map(len, words))), np.int32)
        for i, ids in enumerate(words):
            self._targets[i, : len(ids)] = ids
        # One encoder pass per sentence; the decoder scores every label word against it.
        score = jax.jit(model.score_candidates)
        targets = jnp.asarray(self._targets)
        self._score = lambda inputs: np.asarray(score(nested, inputs, targets))

    def scores(self, sentences: Sequence[str]) -> np.ndarray:
        """Log-likelihood of each label word for each sentence, float32 [N, W]."""
        if self._score is None:
            self._build()
        n, w = len(sentences), len(self.label_words)
        out = np.zeros((n, w), np.float32)
        for start in range(0, n, self.batch_size):
            chunk = sentences[start : start + self.batch_size]
            # Fixed batch rows keep one compiled program: the last chunk is padded.
            inputs = np.zeros((self.batch_size, self.input_length), np.int32)
            for i, sentence in enumerate(chunk):
                ids = list(self.vocabulary.encode(self.template.format(sentence=sentence)))
                ids = ids[: self.input_length - 1] + [1]
                inputs[i, : len(ids)] = ids
            ll = self._score(inputs)  # [batch_size, w]
            out[start : start + len(chunk)] = ll[: len(chunk)]
        return out

    def __call__(self, sentences: Sequence[str]) -> list[int]:
        """The class of each sentence; -1 where the margin is below `min_margin`."""
        scores = self.scores(sentences)
        top2 = np.sort(scores, axis=1)[:, -2:]
        labels = scores.argmax(axis=1)
        confident = top2[:, 1] - top2[:, 0] >= self.min_margin
        return [int(c) if ok else -1 for c, ok in zip(labels, confident, strict=True)]
