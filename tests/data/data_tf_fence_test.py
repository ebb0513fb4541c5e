"""The seam and the synthetic source work with TensorFlow, TFDS and SeqIO unimportable."""

import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent(
    """
    import sys
    # None in sys.modules makes any import of these names raise ImportError.
    for name in ("tensorflow", "seqio", "tensorflow_datasets"):
        sys.modules[name] = None

    import spot_jax.data
    from spot_jax.data import DatasetConfig, make_eval_iterator, make_train_iterator, synthetic

    lengths = {"inputs": 16, "targets": 8}
    cfg = DatasetConfig("synthetic", lengths, batch_size=4, vocab_size=100)
    batch = next(make_train_iterator(cfg, start_step=2))
    assert batch["encoder_input_tokens"].shape == (4, 16), batch
    assert len(list(make_eval_iterator(DatasetConfig(
        "synthetic", lengths, split="validation", batch_size=4, vocab_size=100)))) == 16
    assert synthetic.make_batch(2, lengths, 100)["decoder_target_tokens"].shape == (2, 8)

    # A real task needs the pipeline, and only then does TF get imported (and fail here).
    try:
        make_train_iterator(DatasetConfig("spot_demo_copy_v1", lengths))
    except ImportError:
        pass
    else:
        raise AssertionError("a SeqIO task was built without TensorFlow")
    leaked = [m for m in sys.modules if m.startswith(("tensorflow", "seqio")) and sys.modules[m]]
    assert not leaked, leaked
    print("fence ok")
    """
)


def test_seam_and_synthetic_source_import_and_run_without_tensorflow():
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "fence ok" in result.stdout
