"""Logical axis names and the default rules that map them onto the ('data', 'model') mesh.

Parameter axes follow T5X (so T5X checkpoints and `standard_logical_axis_rules` carry over);
prompt axes follow prompt-tuning. Activation axes keep T5X's names ('batch', 'length', ...).
"""

# Mesh axes.
DATA = "data"
MODEL = "model"
MESH_AXES = (DATA, MODEL)

# Parameter axes (T5X names).
VOCAB = "vocab"
EMBED = "embed"
MLP = "mlp"
HEADS = "heads"
KV = "kv"
JOINED_KV = "joined_kv"
RELPOS_BUCKETS = "relpos_buckets"
LAYERS = "layers"

# Prompt axes: 'prompt_embed' instead of 'embed' so the prompt is never sharded, even under
# 2-D parameter partitioning, and can always be saved as one .npy (the SPoT artifact).
PROMPT = "prompt"
PROMPT_EMBED = "prompt_embed"
# Multi-task prompts' task table [tasks, P_t * H] (prompt-tuning's names).
TASKS = "tasks"
TASK_PROMPT = "prompt+embed"

# Activation axes.
BATCH = "batch"
LENGTH = "length"


def standard_rules(
    activation_partitioning_dims: int = 1, parameter_partitioning_dims: int = 1
) -> tuple[tuple[str, str | None], ...]:
    """T5X's `standard_logical_axis_rules` plus the prompt-tuning rules.

    Rules are priority-ordered: a later pair for the same logical axis is used only when the
    earlier mesh axis is already taken within that array.

    Args:
      activation_partitioning_dims: 1 or 2; 2 also shards activations' embed over 'model'.
      parameter_partitioning_dims: 1 or 2; 2 also shards parameters' embed over 'data' (FSDP-like).

    Returns:
      A tuple of (logical axis, mesh axis or None) pairs.
    """
    if activation_partitioning_dims not in (1, 2) or parameter_partitioning_dims not in (1, 2):
        raise ValueError("partitioning dims must be 1 or 2")
    rules = [
        (BATCH, DATA),
        (VOCAB, MODEL),
        (MLP, MODEL),
        (HEADS, MODEL),
        (KV, None),
        (JOINED_KV, MODEL),
    ]
    if activation_partitioning_dims == 2:
        rules.append((EMBED, MODEL))
    if parameter_partitioning_dims == 2:
        rules.append((EMBED, DATA))
    if activation_partitioning_dims == 1 and parameter_partitioning_dims == 1:
        rules.append((EMBED, None))
    rules += [
        (RELPOS_BUCKETS, None),
        (LENGTH, None),
        (LAYERS, None),
        (PROMPT, None),
        (PROMPT_EMBED, None),
        (TASKS, None),
        (TASK_PROMPT, None),
    ]
    return tuple(rules)
