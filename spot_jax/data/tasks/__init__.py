"""SeqIO tasks and mixtures spot_jax registers (TF inside: behind the data seam's fence).

Importing this package registers every task; `register_all()` does it again after a
`seqio.TaskRegistry.reset()` (which tests use), since a module body runs only once.

    demo.py        spot_demo_copy_v1, the foundation's in-memory smoke test
    glue.py        spot_glue_<task>_v200 (+ spot_glue_mnli_mismatched_v200 and SPoT's
                   spot_glue_mnli_{train,validation_matched,validation_mismatched}_v200)
    super_glue.py  spot_super_glue_<task>_v102 (+ spot_super_glue_wsc_v102_simple_{train,eval})
    nli.py         spot_snli_v110, spot_anli_r{1,2,3}_v010, spot_doc_nli_v100
    sentiment.py   spot_imdb_reviews_v100, spot_yelp_polarity_reviews_v020
    sentiment.py   (+ spot_sentiment140_v100, spot_goemotions_v010)
    translation.py spot_wmt14_ende_v100, spot_wmt15_enfr_v100, spot_wmt16_enro_v100
    qa.py          spot_squad_v11_v300, spot_mrqa_<subset>_v100 (12 MRQA sets)
    summarization.py spot_<name>_v<ver>: aeslc, billsum, cnn_dailymail, gigaword, ... (ROUGE)
    rainbow.py     spot_rainbow_{cosmos_qa,piqa,socialiqa}_v100, spot_rainbow_hellaswag_v110,
                   spot_rainbow_winogrande_v120 (SPoT's multiple-choice format; accuracy)
    reading.py     spot_drop_v200, spot_race_{middle,high}_v200 (sources of SPoT's Table 2)
    files.py       spot_cr_v100, spot_alpha_nli_v100, spot_cxc_v100 (read from their published
                   files; also SST-5 for ppt_sst5*)
    gem.py         spot_gem_<config>_v110: common_gen, dart, e2e_nlg, schema_guided_dialog,
                   web_nlg_en, wiki_auto_asset_turk, xsum, wiki_lingua_english_en (ROUGE, BLEU)
    c4.py          spot_c4_span_corruption_v310, spot_c4_prefix_lm_v310 (no taskless twins)
    few_shot.py    <task>_<k>shot_seed<s> (PPT's 32-train / 32-dev protocol)
    ppt.py         ppt_{nsp3,mc,unified}_c4, ppt_mixture_c4 (PPT pre-training formats)
    ppt_downstream.py  ppt_{sst2,sst5,rte,cb,boolq}[_unified|_hybrid], ppt_race_{high,middle} (PPT's
                   target formats; no taskless twins)
    ../mixtures.py spot_glue_mixture, spot_super_glue_mixture, spot_glue_super_glue_mixture,
                   spot_<family>_mixture, spot_all_mixture (C4 + all supervised),
                   spot_glue_mnli_and_dev_v200

Every TFDS task also has a `<name>_taskless` twin without the leading task word. The C4
objectives have none.

Mock data: with SPOT_JAX_TFDS_MOCK=N in the environment, `register_all()` switches TFDS to
`tfds.testing.mock_data(num_examples=N)` for the rest of the process, so any job or command
(e.g. `spot-jax train` in a subprocess) runs the real tasks on random examples offline.
"""

from __future__ import annotations

import os

from spot_jax.data.tasks import (
    c4,
    demo,
    few_shot,
    files,
    gem,
    glue,
    nli,
    ppt,
    ppt_downstream,
    qa,
    rainbow,
    reading,
    sentiment,
    summarization,
    super_glue,
    translation,
)
from spot_jax.data.tasks import world as world_tasks

MOCK_ENV_VAR = "SPOT_JAX_TFDS_MOCK"
_mock_context = None
_mock_size = 0


def enable_mock_data(num_examples: int) -> None:
    """Serves every TFDS dataset from `tfds.testing.mock_data` from now on (tests, demos)."""
    global _mock_context, _mock_size
    if _mock_context is not None:
        return
    import tensorflow_datasets as tfds

    _mock_context = tfds.testing.mock_data(num_examples=num_examples)
    _mock_context.__enter__()
    _mock_size = num_examples


def mock_size() -> int:
    """Examples per split under mock data (0 when mock data is off)."""
    return _mock_size


def mock_data_enabled() -> bool:
    """Whether TFDS data comes from `tfds.testing.mock_data` in this process."""
    return _mock_context is not None


def register_all() -> None:
    """Registers all of spot_jax's tasks and mixtures; safe to call repeatedly."""
    if os.environ.get(MOCK_ENV_VAR):
        enable_mock_data(int(os.environ[MOCK_ENV_VAR]))
    demo.register()
    glue.register()
    super_glue.register()
    nli.register()
    sentiment.register()
    qa.register()
    summarization.register()
    translation.register()
    rainbow.register()
    reading.register()
    files.register()
    gem.register()
    c4.register()
    few_shot.register()
    ppt.register()
    ppt_downstream.register()
    world_tasks.register()
    from spot_jax.data import mixtures

    # Absent while `mixtures` itself is being imported (it imports this package); its
    # module body then registers the mixtures once it is complete.
    if hasattr(mixtures, "register"):
        mixtures.register()


register_all()
