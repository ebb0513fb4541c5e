"""T5 1.1 encoder-decoder with an optional soft prompt, in Flax linen.

Parameter paths equal T5X's (`encoder/layers_0/attention/query/kernel`, ...); with a prompt the
encoder also holds `encoder/prompt/prompt/prompt`. With `scan_layers` the layers are stacked
under `encoder/layers/...` with a leading 'layers' axis (`stacks` converts the names).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from spot_jax import axes
from spot_jax.models import (
    layer_prompts,
    layers,
    multi_task_prompt,
    prompt_attention,
    prompts,
    relative_position,
    segments,
    t5_layers,
)
from spot_jax.models.config import T5Config

Array = jax.Array


def attention_bias(q_mask: Array, k_mask: Array) -> Array:
    """[B, Q] x [B, K] validity masks -> additive bias [B, 1, Q, K]."""
    mask = jnp.logical_and(q_mask[:, :, None] > 0, k_mask[:, None, :] > 0)
    return jnp.where(mask, 0.0, layers.NEG_INF)[:, None].astype(jnp.float32)


def causal_bias(length: int) -> Array:
    """Additive causal bias [1, 1, L, L]."""
    idx = jnp.arange(length)
    return jnp.where(idx[:, None] >= idx[None, :], 0.0, layers.NEG_INF)[None, None]


def _stack(layer_cls, config: T5Config, num_layers: int, num_broadcast: int, **layer_kw):
    """Builds `num_layers` layers: a Python loop (T5X names) or one `nn.scan` (stacked params).

    Returns a callable `(x, *broadcast_args) -> x`.
    """
    if config.remat_policy != "none":
        policy = (
            jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims
            if config.remat_policy == "dots"
            else None
        )
        layer_cls = nn.remat(layer_cls, policy=policy, prevent_cse=not config.scan_layers)
    if config.scan_layers:
        scanned = nn.scan(
            layer_cls,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast,) * num_broadcast,
            length=num_layers,
            unroll=config.scan_unroll,
            metadata_params={nn.PARTITION_NAME: axes.LAYERS},
        )(config, name="layers", **layer_kw)
        return lambda x, *args: scanned(x, *args)[0]
    stack = [layer_cls(config, name=f"layers_{i}", **layer_kw) for i in range(num_layers)]

    def run(x, *args):
        for layer in stack:
            x, _ = layer(x, *args)
        return x

    return run


class Encoder(nn.Module):
    """Token embedding (shared, passed in) -> [prompt] -> layers -> final norm."""

    config: T5Config
    prompt_length: int = 0
    prompt_init: Any = None
    prompt_position: str = "prefix"  # prompts.PROMPT_POSITIONS
    per_layer_prompt: str = "none"  # layer_prompts.PER_LAYER_PROMPTS
    prompt_attention: tuple[str, ...] | None = None  # prompt_attention.normalize's; None: all
    multi_task: multi_task_prompt.MultiTask | None = None  # shared + per-task prompts

    @nn.compact
    def __call__(
        self,
        embedded: Array,
        tokens: Array,
        *,
        deterministic: bool,
        segment_ids: Array | None = None,
        positions: Array | None = None,
        task_ids: Array | None = None,
    ) -> Array:
        """embedded: [B, T, H]; tokens: [B, T] (0 = pad). Returns [B, P + T, H].

        Packed rows pass `segment_ids` and `positions` [B, S*P + T] in the prompt-slot layout
        of `segments.prompted_encoder_segments`; then S prompt copies lead the sequence and
        the result is [B, S*P + T, H].
        """
        c = self.config
        mask = tokens if segment_ids is None else segment_ids
        layer_prompt = {}
        if self.prompt_length:
            init = self.prompt_init or prompts.random_uniform()
            # Placeholder param init for inits that need the embedding table: the trainer
            # replaces the prompt with the real init once the frozen weights are restored.
            if getattr(init, "needs_embeddings", False):
                init = nn.initializers.zeros
            copies = 1
            if segment_ids is not None:
                copies = segments.num_prompt_slots(
                    segment_ids.shape[1], tokens.shape[1], self.prompt_length
                )
            embedded = prompts.InputPrompt(
                self.prompt_length,
                init,
                c.param_dtype,
                self.prompt_position,
                self.multi_task,
                name="prompt",
            )(embedded, tokens, copies, task_ids)
            if segment_ids is None:
                mask = prompts.with_prompt_mask(tokens, self.prompt_length)
            if layer_prompts.check_per_layer(self.per_layer_prompt) != "none":
                layer_prompt = dict(
                    per_layer_prompt=self.per_layer_prompt,
                    prompt_length=self.prompt_length,
                    # prompt-tuning's per-layer prompts: U[0, 0.5), whatever the input's init.
                    prompt_init=prompts.random_uniform(),
                    prompt_copies=copies,
                )
        # Dropout after the prompt is added, as prompt-tuning's PromptEncoder does.
        x = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))(embedded, deterministic=deterministic)
        x = layers.constrain(x.astype(c.activation_dtype), t5_layers.ACT)
        length = x.shape[1]
        rel = relative_position.stack_bias(c, True)(
            length, length, q_positions=positions, k_positions=positions
        )
        if self.prompt_attention is not None:  # who sees whom around the prompt
            rel = rel + prompt_attention.bias(self.prompt_attention, self.prompt_length, length)
        per_layer = (positions,) if c.relpos_per_layer else ()
        if segment_ids is None and c.attention_padding == "key_mask":
            bias = layers.KeyMask(rel, mask)
        elif segment_ids is None:
            bias = attention_bias(mask, mask) + rel
        else:
            bias = segments.segment_bias(segment_ids, segment_ids) + rel
        x = _stack(
            t5_layers.EncoderLayer,
            c,
            c.num_encoder_layers,
            1 + len(per_layer),
            deterministic=deterministic,
            **layer_prompt,
        )(x, bias, *per_layer)
        x = t5_layers.norm(c, "encoder_norm")(x)
        x = nn.Dropout(c.dropout_rate)(x, deterministic=deterministic)
        # Zero the outputs at padding, as prompt-tuning's encoder does.
        return x * (mask > 0)[..., None].astype(x.dtype)


class Decoder(nn.Module):
    """Shared embedding -> layers (self, cross, MLP) -> norm -> untied float32 logits."""

    config: T5Config

    @nn.compact
    def __call__(
        self,
        embedded: Array,
        encoded: Array,
        encoder_mask: Array,
        decoder_target_tokens: Array | None,
        *,
        deterministic: bool,
        decode: bool = False,
        decode_position: Array | int = 0,
        max_decode_length: int | None = None,
        segment_ids: Array | None = None,
        positions: Array | None = None,
        hidden_only: bool = False,
    ) -> Array:
        """embedded: [B, L, H]; encoded: [B, S, H]; encoder_mask: [B, S]. Returns [B, L, V].

        With `hidden_only`, the input of the logits projection [B, L, H] instead (after the
        final norm and dropout), for a loss that projects it a chunk at a time.

        In decode mode `embedded` is one token [B, 1, H] at `decode_position`, and the
        relative position bias is computed for `max_decode_length` keys. Packed rows pass
        decoder `segment_ids` and `positions` [B, L]; then `encoder_mask` must be the encoder's
        (prompted) segment ids, and all attention stays within a segment.
        """
        c = self.config
        x = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))(embedded, deterministic=deterministic)
        x = layers.constrain(x.astype(c.activation_dtype), t5_layers.ACT)
        relpos = relative_position.stack_bias(c, False)
        length = x.shape[1]
        if segment_ids is not None:
            if decode:
                raise ValueError("packed (segmented) inputs cannot be decoded; decode unpacked")
            self_bias = (
                segments.segment_bias(segment_ids, segment_ids)
                + causal_bias(length)
                + relpos(length, length, q_positions=positions, k_positions=positions)
            )
            cross_bias = segments.segment_bias(segment_ids, encoder_mask)
        elif decode:
            # Causality comes from the cache (only written positions are visible).
            self_bias = relpos(1, max_decode_length, decode_position).astype(jnp.float32)
            cross_bias = attention_bias(jnp.ones(x.shape[:2], jnp.int32), encoder_mask)
        else:
            self_bias = (
                attention_bias(decoder_target_tokens, decoder_target_tokens)
                + causal_bias(length)
                + relpos(length, length)
            )
            cross_bias = attention_bias(decoder_target_tokens, encoder_mask)
        per_layer = ()
        if c.relpos_per_layer:
            per_layer = (positions, jnp.asarray(decode_position, jnp.int32))
        x = _stack(
            t5_layers.DecoderLayer,
            c,
            c.num_decoder_layers,
            3 + len(per_layer),
            deterministic=deterministic,
            decode=decode,
            max_decode_length=max_decode_length,
        )(x, encoded, self_bias, cross_bias, *per_layer)
        x = t5_layers.norm(c, "decoder_norm")(x)
        x = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
        if hidden_only:
            return x
        # Logits in float32 (T5X's logits_dense has dtype float32).
        return layers.Dense(
            c.vocab_size,
            kernel_axes=(axes.EMBED, axes.VOCAB),
            dtype=jnp.float32,
            param_dtype=c.param_dtype,
            name="logits_dense",
        )(x)


class Transformer(nn.Module):
    """The T5 1.1 encoder-decoder; `prompt_length > 0` makes it a prompted T5."""

    config: T5Config
    prompt_length: int = 0
    prompt_init: Any = None
    # Prompt slots per packed row (the most examples a packed row may hold); 0: unpacked only.
    max_segments: int = 0
    prompt_position: str = "prefix"  # prompts.PROMPT_POSITIONS; 'prefix' alone packs
    per_layer_prompt: str = (
        "none"  # layer_prompts.PER_LAYER_PROMPTS: each encoder layer's own prompt
    )
    prompt_attention: tuple[str, ...] | None = None  # prompt_attention.normalize's; None: all
    # Shared + per-task prompts; each example's first input token names its task and is dropped.
    multi_task: multi_task_prompt.MultiTask | None = None

    def setup(self):
        c = self.config
        self.token_embedder = layers.Embed(
            c.vocab_size, c.emb_dim, dtype=c.activation_dtype, param_dtype=c.param_dtype
        )
        self.encoder = Encoder(
            c,
            self.prompt_length,
            self.prompt_init,
            self.prompt_position,
            self.per_layer_prompt,
            self.prompt_attention,
            self.multi_task,
        )
        self.decoder = Decoder(c)

    def split_task_index(self, encoder_input_tokens: Array) -> tuple[Array | None, Array]:
        """[B, T] inputs -> (task ids [B] or None, the [B, T'] text the encoder reads): a
        multi-task model's inputs lead with their task's sentinel, which the encoder drops."""
        if self.multi_task is None:
            return None, encoder_input_tokens
        first = encoder_input_tokens[:, 0]
        return multi_task_prompt.task_index(first), encoder_input_tokens[:, 1:]

    def encoder_mask(self, encoder_input_tokens: Array) -> Array:
        """[B, T] -> [B, P + T] validity of each encoder output position."""
        _, encoder_input_tokens = self.split_task_index(encoder_input_tokens)
        if self.prompt_length:
            return prompts.with_prompt_mask(encoder_input_tokens, self.prompt_length)
        return encoder_input_tokens

    def encoder_segments(self, segment_ids: Array, positions: Array) -> tuple[Array, Array]:
        """Packed encoder [B, T] segment ids and positions -> [B, S*P + T] with prompt slots."""
        if self.prompt_length and self.max_segments < 1:
            raise ValueError(
                "a packed batch (encoder_segment_ids) needs PromptedT5(max_segments=S), the most "
                "examples the packer puts in one row, to size the per-example prompt slots"
            )
        return segments.prompted_encoder_segments(
            segment_ids, positions, self.prompt_length, self.max_segments
        )

    def encode(
        self,
        encoder_input_tokens: Array,
        *,
        deterministic: bool = True,
        encoder_segment_ids: Array | None = None,
        encoder_positions: Array | None = None,
    ) -> Array:
        """[B, T] -> [B, P + T, H] ([B, S*P + T, H] for packed rows; multi-task: T - 1)."""
        task_ids, encoder_input_tokens = self.split_task_index(encoder_input_tokens)
        embedded = self.token_embedder(encoder_input_tokens)
        if encoder_segment_ids is None:
            return self.encoder(
                embedded, encoder_input_tokens, deterministic=deterministic, task_ids=task_ids
            )
        seg, pos = self.encoder_segments(encoder_segment_ids, encoder_positions)
        return self.encoder(
            embedded,
            encoder_input_tokens,
            deterministic=deterministic,
            segment_ids=seg,
            positions=pos,
        )

    def decode(
        self,
        encoded: Array,
        encoder_input_tokens: Array,
        decoder_input_tokens: Array,
        decoder_target_tokens: Array | None,
        *,
        deterministic: bool = True,
        decode: bool = False,
        decode_position: Array | int = 0,
        max_decode_length: int | None = None,
        encoder_segment_ids: Array | None = None,
        encoder_positions: Array | None = None,
        decoder_segment_ids: Array | None = None,
        decoder_positions: Array | None = None,
        hidden_only: bool = False,
    ) -> Array:
        """Decoder logits [B, L, V] given encoder outputs [B, P + T, H].

        Packed rows pass all four segment/position features (seqio's names); `hidden_only`
        returns the logits' input [B, L, H] instead.
        """
        embedded = self.token_embedder(decoder_input_tokens)
        if decoder_segment_ids is None:
            encoder_mask = self.encoder_mask(encoder_input_tokens)
        else:
            encoder_mask, _ = self.encoder_segments(encoder_segment_ids, encoder_positions)
        return self.decoder(
            embedded,
            encoded,
            encoder_mask,
            decoder_target_tokens,
            deterministic=deterministic,
            decode=decode,
            decode_position=decode_position,
            max_decode_length=max_decode_length,
            segment_ids=decoder_segment_ids,
            positions=decoder_positions,
            hidden_only=hidden_only,
        )

    def __call__(
        self,
        encoder_input_tokens: Array,
        decoder_input_tokens: Array,
        decoder_target_tokens: Array,
        *,
        deterministic: bool = True,
        encoder_segment_ids: Array | None = None,
        encoder_positions: Array | None = None,
        decoder_segment_ids: Array | None = None,
        decoder_positions: Array | None = None,
        hidden_only: bool = False,
    ) -> Array:
        """Teacher-forced logits [B, L, V] (float32); packed rows pass the segment features.

        `hidden_only`: the decoder's final states [B, L, H], the input of the logits.
        """
        packing = dict(encoder_segment_ids=encoder_segment_ids, encoder_positions=encoder_positions)
        encoded = self.encode(encoder_input_tokens, deterministic=deterministic, **packing)
        return self.decode(
            encoded,
            encoder_input_tokens,
            decoder_input_tokens,
            decoder_target_tokens,
            deterministic=deterministic,
            decoder_segment_ids=decoder_segment_ids,
            decoder_positions=decoder_positions,
            hidden_only=hidden_only,
            **packing,
        )
