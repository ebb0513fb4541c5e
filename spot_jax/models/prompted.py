"""PromptedT5: the frozen T5 1.1 + soft prompt as a model with loss, scoring and decoding.

The Flax module (`t5.Transformer`) knows nothing of losses or decoding; this class adds them
over plain nested param dicts, as T5X's EncoderDecoderModel does over its module.
"""

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from spot_jax.models import decoding, placement, t5
from spot_jax.models.config import T5Config
from spot_jax.models.decoding import DecodingConfig  # noqa: F401 (prompted.DecodingConfig)
from spot_jax.models.prompt_params import (  # noqa: F401 (re-exported: prompted.PROMPT_PATH, ...)
    LAYER_PROMPT_PATH,
    PROMPT_PATH,
    SHARED_PROMPT_PATH,
    TASK_PROMPTS_PATH,
    is_prompt_path,
)
from spot_jax.models.stacks import (  # noqa: F401 (re-exported: prompted.is_stacked, ...)
    is_stacked,
    layer_name,
    stack_layers,
    unstack_flat,
    unstack_layers,
)
from spot_jax.train import losses

Array = jax.Array
Batch = Mapping[str, Array]
# seqio EncDecFeatureConverter(pack=True) features; all four are present in a packed batch.
PACKING_FEATURES = (
    "encoder_segment_ids",
    "encoder_positions",
    "decoder_segment_ids",
    "decoder_positions",
)


class PromptedT5:
    """A T5 1.1 encoder-decoder with a `[P, H]` prompt in the encoder input (prefixed).

    Args:
      config: the T5 config.
      prompt_length: P; 0 gives plain T5 (model tuning).
      prompt_init: initialiser of the prompt (see `prompts`).
      z_loss: coefficient of the z-loss in training (1e-4 as T5X).
      decoding: how `predict` decodes.
      max_segments: the most examples a packed row holds (`data.packing`); each gets its own
        prompt copy. 0 (default) accepts unpacked batches only. Unpacked batches run the
        same, unchanged computation whatever its value.
      loss_chunk: when > 0 and the targets are longer, `loss` projects the decoder's states
        to logits this many target positions at a time and never holds the [B, L, V] logits
        (`losses.chunked_token_losses`): for long targets (summarization), same loss and
        gradient. 0 (default): the whole logits at once.
      prompt_position: where the prompt goes (`prompts.PROMPT_POSITIONS`, prompt-tuning's
        combination functions): 'prefix' (default), 'prefix_after_bos', 'suffix' (after the
        text, before its EOS) or 'suffix_after_eos'. Packing takes 'prefix' only.
      per_layer_prompt: 'none' (default: the input prompt alone), or each encoder layer's own
        `[P, H]` prompt combined with the prompt rows of its input, 'replace' or 'add'
        (prompt-tuning's extended per-layer prompts; `layer_prompts.LayerPrompt`). Needs 'prefix'.
      prompt_attention: None (default: every encoder position sees every other) or the kinds
        of attention allowed around the prompt (`models.prompt_attention.KINDS`, prompt-tuning's
        extended masks: 'prompt->input', 'prompt->prompt', 'prompt->prompt;causal'; inputs
        always see inputs and the prompt). Needs 'prefix' and unpacked rows.
      multi_task_prompt: 'none' (default), or one of `multi_task_prompt.COMBINES`: a prompt
        shared by `num_tasks` tasks combined with each task's own (prompt-tuning's extended
        multi-task prompts; `task_prompt_length` rows for 'concat', `shared_prompt_features`
        columns for 'concat_features' and 'project'). Inputs lead with their task's sentinel.
    """

    def __init__(
        self,
        config: T5Config,
        prompt_length: int = 100,
        prompt_init: Any = None,
        z_loss: float = 1e-4,
        decoding: DecodingConfig = DecodingConfig(),
        max_segments: int = 0,
        loss_chunk: int = 0,
        prompt_position: str = "prefix",
        per_layer_prompt: str = "none",
        prompt_attention: Any = None,
        multi_task_prompt: str = "none",
        num_tasks: int = 0,
        task_prompt_length: int = 0,
        shared_prompt_features: int = 0,
    ):
        self.prompt_attention = placement.check(
            prompt_length, prompt_position, per_layer_prompt, prompt_attention, max_segments
        )
        split = (num_tasks, task_prompt_length, shared_prompt_features)
        self.multi_task = placement.check_multi_task(
            prompt_length, config.emb_dim, max_segments, multi_task_prompt, *split
        )
        self.multi_task_prompt, self.num_tasks = multi_task_prompt, num_tasks
        self.task_prompt_length = task_prompt_length
        self.shared_prompt_features = shared_prompt_features
        self.per_layer_prompt = per_layer_prompt
        self.prompt_position = prompt_position
        self.config = config
        self.prompt_length = prompt_length
        self.prompt_init = prompt_init
        self.z_loss = z_loss
        self.decoding = decoding
        if loss_chunk < 0:
            raise ValueError(f"loss_chunk must be >= 0 (0: no chunking), got {loss_chunk}")
        self.max_segments = max_segments
        self.loss_chunk = loss_chunk
        self.module = t5.Transformer(
            config,
            prompt_length,
            prompt_init,
            max_segments,
            prompt_position,
            per_layer_prompt,
            self.prompt_attention,
            self.multi_task,
        )

    def replace(self, **changes) -> "PromptedT5":
        """This model with some of its constructor arguments changed (say, `prompt_init`)."""
        # Every constructor argument is kept under its own name.
        names = list(inspect.signature(PromptedT5.__init__).parameters)[1:]
        args = {k: getattr(self, k) for k in names}
        return PromptedT5(**{**args, **changes})

    # -- parameters ------------------------------------------------------------------------

    @property
    def input_prompt_path(self) -> str:
        """The prompt PROMPT_INIT initialises: the input prompt, or the shared prompt."""
        return PROMPT_PATH if self.multi_task is None else SHARED_PROMPT_PATH

    @property
    def input_prompt_shape(self) -> tuple[int, int]:
        if self.multi_task is None:
            return (self.prompt_length, self.config.emb_dim)
        return self.multi_task.shapes(self.prompt_length, self.config.emb_dim)[0]

    def init(self, rng: Array, batch: Batch):
        """Boxed params (with logical-axis metadata) for a batch of the given shapes."""
        return self.module.init(
            rng,
            batch["encoder_input_tokens"],
            batch["decoder_input_tokens"],
            batch["decoder_target_tokens"],
        )["params"]

    def abstract_params(self, batch_size: int, input_length: int, target_length: int):
        """Boxed `ShapeDtypeStruct` params, without allocating anything."""
        ids = lambda n: jax.ShapeDtypeStruct((batch_size, n), jnp.int32)  # noqa: E731
        batch = {
            "encoder_input_tokens": ids(input_length),
            "decoder_input_tokens": ids(target_length),
            "decoder_target_tokens": ids(target_length),
        }
        return jax.eval_shape(self.init, jax.random.PRNGKey(0), batch)

    # -- training and scoring ----------------------------------------------------------------

    def encode(self, params, encoder_input_tokens: Array) -> Array:
        """The encoder's output [B, P + T, H] (no dropout), to share between the evals of a
        batch: `loss`, `predict` and `score_candidates` take it as `encoded=`."""
        return self.module.apply(
            {"params": params}, encoder_input_tokens, method=t5.Transformer.encode
        )

    def logits(
        self,
        params,
        batch: Batch,
        *,
        dropout_rng: Array | None = None,
        encoded: Array | None = None,
    ) -> Array:
        """Teacher-forced logits [B, L, V] (float32); dropout on iff `dropout_rng` is given.

        A batch with seqio's packing features (`PACKING_FEATURES`) is run packed. `encoded`
        (from `encode`, unpacked batches, no dropout) skips the encoder.
        """
        return self._teacher_forced(params, batch, dropout_rng, False, encoded)

    def _teacher_forced(self, params, batch: Batch, dropout_rng, hidden_only, encoded) -> Array:
        """Logits [B, L, V], or with `hidden_only` the decoder's final states [B, L, H] that
        the logits kernel projects (for the chunked loss)."""
        packing = {k: batch[k] for k in PACKING_FEATURES if k in batch}
        if packing and len(packing) != len(PACKING_FEATURES):
            missing = sorted(set(PACKING_FEATURES) - set(packing))
            raise ValueError(f"a packed batch needs all of {PACKING_FEATURES}; missing {missing}")
        if encoded is not None:
            if packing or dropout_rng is not None:
                raise ValueError("a shared `encoded` serves unpacked batches without dropout")
            return self.module.apply(
                {"params": params},
                encoded,
                batch["encoder_input_tokens"],
                batch["decoder_input_tokens"],
                batch["decoder_target_tokens"],
                hidden_only=hidden_only,
                method=t5.Transformer.decode,
            )
        return self.module.apply(
            {"params": params},
            batch["encoder_input_tokens"],
            batch["decoder_input_tokens"],
            batch["decoder_target_tokens"],
            deterministic=dropout_rng is None,
            rngs=None if dropout_rng is None else {"dropout": dropout_rng},
            hidden_only=hidden_only,
            **packing,
        )

    def loss(
        self, params, batch: Batch, dropout_rng: Array | None = None, encoded: Array | None = None
    ):
        """(summed loss, metrics) for a batch; metrics are sums, divided when logged."""
        targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
        if 0 < self.loss_chunk < targets.shape[1]:
            hidden = self._teacher_forced(params, batch, dropout_rng, True, encoded)
            kernel = params["decoder"]["logits_dense"]["kernel"]
            token_loss, token_z, token_correct = losses.chunked_token_losses(
                hidden, kernel, targets, self.z_loss, self.loss_chunk
            )
            w = weights.astype(jnp.float32)
            loss, z_loss, weight_sum = (
                jnp.sum(token_loss * w),
                jnp.sum(token_z * w),
                jnp.sum(w),
            )
            correct = jnp.sum(token_correct * w)
        else:
            logits = self.logits(params, batch, dropout_rng=dropout_rng, encoded=encoded)
            loss, z_loss, weight_sum = losses.weighted_cross_entropy(
                logits, targets, weights, self.z_loss
            )
            correct, _ = losses.token_accuracy(logits, targets, weights)
        metrics = {
            "loss": loss,
            "z_loss": z_loss,
            "weight_sum": weight_sum,
            "correct_tokens": correct,
            "sequences": jnp.sum(jnp.any(weights > 0, axis=-1)),
        }
        if "decoder_segment_ids" in batch and self.prompt_length:
            # Examples beyond the model's prompt slots train without a prompt: count their
            # tokens, so a packer making more segments than max_segments shows up in the logs.
            beyond = batch["decoder_segment_ids"] > self.max_segments
            metrics["unprompted_tokens"] = jnp.sum(jnp.where(beyond, weights, 0))
        return loss, metrics

    def score(self, params, batch: Batch) -> Array:
        """Log-likelihood of each target sequence [B] (rank classification, T5X score_batch)."""
        if "decoder_segment_ids" in batch:
            raise ValueError(
                "score() sums whole rows; a packed batch holds several examples per row: use "
                "score_segments() for one score per example"
            )
        logits = self.logits(params, batch)
        return losses.sequence_log_likelihood(
            logits, batch["decoder_target_tokens"], batch["decoder_loss_weights"]
        )

    def score_segments(self, params, batch: Batch) -> Array:
        """Log-likelihood of each packed example's target [B, S] (S = max_segments).

        Column s holds segment s + 1 of the row (`data.packing.unpack_scores` maps them back
        to examples); each example is scored exactly as `score` scores it alone.
        """
        if "decoder_segment_ids" not in batch:
            raise ValueError("score_segments() needs a packed batch (decoder_segment_ids)")
        if self.max_segments < 1:
            raise ValueError("scoring packed rows needs PromptedT5(max_segments=S)")
        logits = self.logits(params, batch)
        return losses.segment_log_likelihood(
            logits,
            batch["decoder_target_tokens"],
            batch["decoder_loss_weights"],
            batch["decoder_segment_ids"],
            self.max_segments,
        )

    def score_candidates(
        self, params, encoder_input_tokens: Array, candidates: Array, encoded: Array | None = None
    ) -> Array:
        """Log-likelihood of every candidate target for every example [b, C].

        Rank classification as T5X's `score_batch` over (example, label) pairs computes it, but
        the encoder runs once per example rather than once per pair: its output is repeated
        for the C candidates and only the (short) decoder runs b*C times. Same numbers as
        `score` on `ranking.candidate_batch` pairs, about C times fewer encoder FLOPs.

        Args:
          params: the model's params.
          encoder_input_tokens: [b, T] int.
          candidates: [C, L] int label token ids, EOS-terminated, 0-padded.
          encoded: the encoder's output for these tokens when already computed (`encode`).
        """
        b, num = encoder_input_tokens.shape[0], candidates.shape[0]
        if encoded is None:
            encoded = self.encode(params, encoder_input_tokens)
        targets = jnp.tile(candidates.astype(jnp.int32), (b, 1))
        decoder_inputs = jnp.pad(targets[:, :-1], ((0, 0), (1, 0)))  # shifted right, BOS 0
        logits = self.module.apply(
            {"params": params},
            jnp.repeat(encoded, num, axis=0),
            jnp.repeat(encoder_input_tokens, num, axis=0),
            decoder_inputs,
            targets,
            method=t5.Transformer.decode,
        )
        scores = losses.sequence_log_likelihood(logits, targets, targets != 0)
        return scores.reshape(b, num)

    # -- decoding ---------------------------------------------------------------------------

    def predict(
        self,
        params,
        batch: Batch,
        *,
        max_decode_length: int,
        rng: Array | None = None,
        encoded: Array | None = None,
    ) -> tuple[Array, Array]:
        """Decodes with a KV cache. Returns (tokens [B, D, L], scores [B, D]), best last.

        `encoded`: the encoder's output for the batch when already computed (`encode`).
        """
        cfg = self.decoding
        module, params = self.module, params
        if self.config.scan_layers:
            # Decoding runs layer by layer (per-layer caches), so unstack scanned params.
            module = self.module.clone(
                config=dataclasses.replace(self.config, scan_layers=False, remat_policy="none")
            )
            params = unstack_layers(params)
        enc_tokens = batch["encoder_input_tokens"]
        batch_size = enc_tokens.shape[0]
        if encoded is None:
            encoded = module.apply({"params": params}, enc_tokens, method=t5.Transformer.encode)

        def decode_call(tokens, cache, index, encoded, enc_tokens, mutable):
            return module.apply(
                {"params": params, **({"cache": cache} if cache is not None else {})},
                encoded,
                enc_tokens,
                tokens,
                None,
                decode=True,
                decode_position=index,
                max_decode_length=max_decode_length,
                method=t5.Transformer.decode,
                mutable=mutable,
            )

        # Size the cache without computing anything, then start from zeros.
        dummy = jnp.zeros((batch_size, max_decode_length), jnp.int32)
        _, shapes = jax.eval_shape(
            lambda: decode_call(dummy, None, 0, encoded, enc_tokens, ["cache"])
        )
        cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])

        n = cfg.num_decodes
        expanded_encoded = decoding.expand_batch(encoded, n)
        expanded_tokens = decoding.expand_batch(enc_tokens, n)

        def tokens_to_logits(token_ids, cache, index):
            logits, new_vars = decode_call(
                token_ids, cache, index, expanded_encoded, expanded_tokens, ["cache"]
            )
            return logits[:, 0], new_vars["cache"]

        common = dict(batch_size=batch_size, max_decode_len=max_decode_length, eos_id=cfg.eos_id)
        if cfg.method == "beam":
            return decoding.beam_search(
                tokens_to_logits, cache, num_beams=n, alpha=cfg.beam_alpha, **common
            )
        if cfg.method in ("greedy", "sample"):
            greedy = cfg.method == "greedy"
            return decoding.temperature_sample(
                tokens_to_logits,
                cache,
                rng=rng if rng is not None else jax.random.PRNGKey(0),
                temperature=0.0 if greedy else cfg.temperature,
                topk=1 if greedy else cfg.topk,
                topp=0.0 if greedy else cfg.topp,
                num_decodes=n,
                **common,
            )
        raise ValueError(f"unknown decoding method {cfg.method!r}; use greedy, sample or beam")
