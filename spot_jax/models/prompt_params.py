"""Where prompts live in a model's flat param names (prompt-tuning's names, so prompts move
between the two projects as .npy files). None of them is in a frozen checkpoint: all are trained
and saved with a run."""

import re

PROMPT_PATH = "encoder/prompt/prompt/prompt"
# Multi-task prompts (`multi_task_prompt`): the shared prompt and the task prompts' table.
SHARED_PROMPT_PATH = "encoder/prompt/prompt/shared_prompt"
TASK_PROMPTS_PATH = "encoder/prompt/prompt/task_prompts/embedding"
# Per-layer prompts (`per_layer_prompt`): one per encoder layer, or their scanned stack.
LAYER_PROMPT_PATH = re.compile(r"encoder/layers(_\d+)?/prompt/prompt/prompt")


def is_prompt_path(name: str) -> bool:
    """Whether a flat param name is a prompt: the input prompt, a per-layer one or a
    multi-task model's shared and task prompts."""
    return (
        name in (PROMPT_PATH, SHARED_PROMPT_PATH, TASK_PROMPTS_PATH)
        or LAYER_PROMPT_PATH.fullmatch(name) is not None
    )
