"""Every gin file under gin/ parses with its required macros set, and binds what it promises."""

import os
import re
from pathlib import Path

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spot_jax.data import config as data_config
from spot_jax.models import config, prompted, prompts
from spot_jax.train import inference, optim, trainer

GIN_DIR = Path(__file__).resolve().parents[1] / "gin"
VOCAB_MODEL = Path(os.environ["SPOT_JAX_TEST_SHARED"]) / "fixtures" / "t5_sentencepiece.model"
ALL_FILES = sorted(p.relative_to(GIN_DIR).as_posix() for p in GIN_DIR.rglob("*.gin"))

# Stand-ins for every macro a gin file may declare `%gin.REQUIRED`.
STUBS = {
    "MODEL_DIR": "'/tmp/spot_jax_gin_test'",
    "TRAIN_STEPS": "10",
    "MIXTURE_OR_TASK_NAME": "'synthetic'",
    "TASK_FEATURE_LENGTHS": "{'inputs': 16, 'targets': 8}",
    "INITIAL_CHECKPOINT_PATH": "None",
    "PROMPT_FILE": "None",
    "CLASS_LABELS": "['positive', 'negative']",
    "PROMPT_TEXT": "'Classify if the review is positive or negative:'",
    "LIBRARY_DIR": "'/tmp/spot_jax_lib'",
}
# What must be parsed before a file of each folder (a run file needs a model's T5_CONFIG,
# a prompt initialiser is included after a run file).
PREREQUISITES = {
    "models": [],
    "runs": ["models/t5_1_1/tiny.gin"],
    "prompts": ["models/t5_1_1/tiny.gin", "runs/prompt_tune.gin"],
    "test": [],
    "demo": [],
    "spot": ["models/t5_1_1/tiny.gin", "runs/prompt_tune.gin"],
    "ppt": ["models/t5_1_1/tiny.gin", "runs/prompt_tune.gin"],
}
# Complete jobs (need only MODEL_DIR): the job each binds.
JOB_FILES = [
    (name, inference.evaluate_job if "eval" in name else trainer.train)
    for name in ALL_FILES
    if name.split("/")[0] in ("test", "demo")
]


# Includes ('models/t5_1_1/tiny.gin') resolve against the repo's gin/ (clear_config keeps it).
gin.add_config_file_search_path(str(GIN_DIR))


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def _parse(name, **overrides):
    files = PREREQUISITES[name.split("/")[0]] + [name]
    bindings = [f"{k} = {v}" for k, v in {**STUBS, **overrides}.items()]
    gin.parse_config_files_and_bindings(
        [str(GIN_DIR / f) for f in files], bindings, skip_unknown=False
    )


def test_every_folder_and_required_macro_is_covered():
    assert len(ALL_FILES) >= 15
    for name in ALL_FILES:
        assert name.split("/")[0] in PREREQUISITES, f"{name}: add its folder to PREREQUISITES"
        text = (GIN_DIR / name).read_text()
        assert text.startswith("#"), f"{name} lacks its header comment"
        required = re.findall(r"^(\w+)\s*=\s*%gin\.REQUIRED", text, flags=re.M)
        assert set(required) <= set(STUBS), f"{name}: stub {set(required) - set(STUBS)}"


@pytest.mark.parametrize("name", ALL_FILES)
def test_gin_file_parses(name):
    _parse(name)
    assert gin.config_str()  # something was bound


def test_a_missing_required_macro_is_refused_at_parse_time():
    with pytest.raises(ValueError, match="MODEL_DIR"):
        gin.parse_config_files_and_bindings(
            [str(GIN_DIR / "test/tiny_prompt.gin")], [], skip_unknown=False
        )


@pytest.mark.parametrize("name", [n for n in ALL_FILES if n.startswith("models/t5_1_1/")])
def test_model_files_match_the_named_configs(name):
    _parse(name)
    bound = gin.get_configurable(config.T5Config)()
    size = Path(name).stem
    want = config.named_config(size)
    assert bound.shape_dict() == want.shape_dict()
    assert bound.relpos_max_distance == want.relpos_max_distance
    assert gin.query_parameter("%T5_CONFIG") is not None


@pytest.mark.parametrize(
    "name, job",
    [
        ("runs/prompt_tune.gin", trainer.train),
        ("runs/model_tune.gin", trainer.train),
        ("runs/prompt_eval.gin", inference.evaluate_job),
        ("runs/prompt_eval.gin", inference.infer_job),
        *JOB_FILES,
    ],
)
def test_run_files_bind_their_job(name, job):
    _parse(name)
    assert gin.get_configurable(job) is not None
    model = gin.get_configurable(prompted.PromptedT5)()
    assert model.prompt_length == gin.query_parameter("%PROMPT_LENGTH")
    with gin.config_scope("validation"):
        eval_data = gin.get_configurable(data_config.DatasetConfig)()
    assert eval_data.split == "validation" and not eval_data.shuffle
    if job is trainer.train:
        with gin.config_scope("train"):
            train_data = gin.get_configurable(data_config.DatasetConfig)()
        assert train_data.split == "train" and not train_data.pack
        assert gin.get_configurable(optim.adafactor)() is not None
        trainable = gin.query_parameter("%TRAINABLE")
        assert (trainable == ".*") == (name == "runs/model_tune.gin")
    if name.startswith("test/"):
        assert model.config.emb_dim == 8 and model.config.dtype == "float32"
    if name.split("/")[0] in ("test", "demo"):
        # Complete jobs: only MODEL_DIR is left to the command line.
        gin.clear_config()
        gin.parse_config_files_and_bindings(
            [str(GIN_DIR / name)], [f"MODEL_DIR = {STUBS['MODEL_DIR']}"], skip_unknown=False
        )


def test_model_tune_trains_everything_without_a_prompt():
    _parse("runs/model_tune.gin")
    model = gin.get_configurable(prompted.PromptedT5)()
    assert model.prompt_length == 0
    assert gin.query_parameter("%LEARNING_RATE") == pytest.approx(1e-3)
    # T5X fine-tuning's Adafactor: steps scaled by each weight's RMS, no weight decay.
    tuned = gin.get_configurable(optim.adafactor)()
    params = {"w": jnp.full((4, 4), 10.0)}
    state = tuned.init(params)
    none, _ = tuned.update({"w": jnp.zeros((4, 4))}, state, params)
    np.testing.assert_array_equal(none["w"], 0.0)
    step, _ = tuned.update({"w": jnp.ones((4, 4))}, state, params)
    np.testing.assert_allclose(step["w"], -1e-3 * 10.0, rtol=1e-5)  # lr x RMS(w)
    # Prompt tuning's: unscaled steps of lr, and decay of 1e-5 x param per step.
    gin.clear_config()
    _parse("runs/prompt_tune.gin")
    prompt_opt = gin.get_configurable(optim.adafactor)()
    decay, _ = prompt_opt.update({"w": jnp.zeros((4, 4))}, prompt_opt.init(params), params)
    np.testing.assert_allclose(decay["w"], -1e-5 * 10.0, rtol=1e-5)


def test_prompt_from_file_gin_builds_the_file_initialiser(tmp_path):
    path = tmp_path / "prompt.npy"
    np.save(path, np.ones((100, 8), np.float32))
    _parse("prompts/from_file.gin", PROMPT_FILE=repr(str(path)))
    model = gin.get_configurable(prompted.PromptedT5)()
    np.testing.assert_array_equal(model.prompt_init(None, (100, 8)), np.ones((100, 8)))


def test_prompt_from_file_gin_rescales_on_request(tmp_path):
    path = tmp_path / "prompt.npy"
    np.save(path, np.full((100, 8), 4.0, np.float32))
    _parse("prompts/from_file.gin", PROMPT_FILE=repr(str(path)), RESCALE_PROMPT_RMS="0.5")
    model = gin.get_configurable(prompted.PromptedT5)()
    np.testing.assert_allclose(model.prompt_init(None, (100, 8)), np.full((100, 8), 0.5))


def test_prompt_sampled_vocab_gin_needs_the_embeddings():
    _parse("prompts/from_sampled_vocab.gin")
    model = gin.get_configurable(prompted.PromptedT5)()
    assert model.prompt_init.needs_embeddings


@pytest.mark.skipif(not VOCAB_MODEL.exists(), reason="shared fixtures not present")
def test_prompt_class_labels_gin_tokenises_the_labels():
    _parse("prompts/from_class_labels.gin", VOCABULARY_PATH=repr(str(VOCAB_MODEL)))
    model = gin.get_configurable(prompted.PromptedT5)()
    assert model.prompt_init.needs_embeddings
    table = np.random.default_rng(0).normal(size=(32128, 8)).astype(np.float32)
    prompt = np.asarray(model.prompt_init(jax.random.PRNGKey(0), (4, 8), embeddings=table))
    assert prompt.shape == (4, 8) and not np.allclose(prompt[0], prompt[1])


@pytest.mark.skipif(not VOCAB_MODEL.exists(), reason="shared fixtures not present")
def test_prompt_from_text_gin_repeats_the_tokenised_text():
    _parse("prompts/from_text.gin", VOCABULARY_PATH=repr(str(VOCAB_MODEL)))
    model = gin.get_configurable(prompted.PromptedT5)()
    ids = prompts.text_ids(STUBS["PROMPT_TEXT"].strip("'"), str(VOCAB_MODEL), add_eos=True)
    assert ids[-1] == 1 and len(ids) < 30  # T5's EOS, as a Hugging Face tokenizer adds it
    table = np.random.default_rng(0).normal(size=(32128, 8)).astype(np.float32)
    prompt = np.asarray(model.prompt_init(jax.random.PRNGKey(0), (30, 8), embeddings=table))
    np.testing.assert_array_equal(prompt, table[np.resize(ids, 30)])


def test_the_one_gpu_file_sets_the_measured_speed_options_on_any_size():
    gin.parse_config_files_and_bindings(
        [str(GIN_DIR / "models/t5_1_1/xxl.gin"), str(GIN_DIR / "models/one_gpu.gin")], []
    )
    bound = gin.get_configurable(config.T5Config)()
    assert bound.shape_dict() == config.named_config("xxl").shape_dict()
    assert (bound.frozen_dtype, bound.scan_layers, bound.remat_policy) == (
        "bfloat16",
        False,
        "dots",
    )
    assert (bound.attention_impl, bound.attention_dropout) == ("cudnn", 0.0)
    assert bound.dropout_rate == 0.1  # residual and MLP dropout stay as the size file sets them
