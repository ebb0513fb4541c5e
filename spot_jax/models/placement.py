"""How a prompted model places its prompt, checked as one: where the prompt goes
(`prompts.PROMPT_POSITIONS`), whether every encoder layer has its own
(`layer_prompts.PER_LAYER_PROMPTS`), who attends to whom around it (`prompt_attention`) and
whether several tasks share it (`multi_task_prompt`). Runs record what is not the default
(`train.checkpoints.PLACEMENT_DEFAULTS`)."""

from collections.abc import Iterable

from spot_jax.models import layer_prompts, multi_task_prompt, prompt_attention, prompts


def check(
    prompt_length: int,
    position: str,
    per_layer: str,
    attention: Iterable[str] | str | None,
    max_segments: int,
) -> tuple[str, ...] | None:
    """Refuses placements that do not go together; returns the attention rule normalised
    (`prompt_attention.normalize`: None for full visibility)."""
    if prompt_length < 0:
        raise ValueError(f"PROMPT_LENGTH must be >= 0, got {prompt_length}")
    if prompts.check_position(position) != "prefix" and max_segments:
        raise ValueError(
            f"prompt_position {position!r} with packing (max_segments {max_segments}): packed "
            "rows take each example's prompt copy first; use 'prefix' or PACK=False"
        )
    if layer_prompts.check_per_layer(per_layer) != "none" and (
        not prompt_length or position != "prefix"
    ):
        raise ValueError(
            f"per_layer_prompt {per_layer!r} needs a prompt (PROMPT_LENGTH > 0, got "
            f"{prompt_length}) at prompt_position 'prefix' (got {position!r}): each layer's "
            "prompt takes the rows that lead its input"
        )
    rule = prompt_attention.normalize(attention)
    if rule is not None and (not prompt_length or position != "prefix" or max_segments):
        raise ValueError(
            f"prompt_attention {list(rule)} needs a prompt (PROMPT_LENGTH {prompt_length}) at "
            f"prompt_position 'prefix' (got {position!r}) in unpacked rows (max_segments "
            f"{max_segments}; PACK=False)"
        )
    return rule


def check_multi_task(
    prompt_length: int,
    embed_dim: int,
    max_segments: int,
    combine: str,
    *split: int,
) -> multi_task_prompt.MultiTask | None:
    """The multi-task split of the prompt ('none': None), or why it cannot be. `split`:
    `MultiTask`'s num_tasks, task_length, shared_features."""
    if combine == "none":
        if any(split):
            raise ValueError(
                f"NUM_TASKS / TASK_PROMPT_LENGTH / SHARED_PROMPT_FEATURES {list(split)} are for a "
                f"multi-task prompt: set MULTI_TASK_PROMPT to one of {multi_task_prompt.COMBINES}"
            )
        return None
    if not prompt_length or max_segments:
        raise ValueError(
            f"multi_task_prompt {combine!r} needs a prompt (PROMPT_LENGTH {prompt_length}) in "
            f"unpacked rows (max_segments {max_segments}; PACK=False): each row's first token "
            "picks its task's prompt"
        )
    num_tasks, task_length, shared_features = split
    split_ = multi_task_prompt.MultiTask(num_tasks, combine, task_length, shared_features)
    return split_.check(prompt_length, embed_dim)
