"""pyro_vae.prepared: a spec's data and VAE, checked before anything trains."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyro_vae.cli import EXIT_USER_ERROR, main
from pyro_vae.memory import available_memory

DIGITS = str(Path("examples/configs/digits.yaml").resolve())
TINY = [
    "latent_dim=2",
    "encoder.hidden=[8]",
    "decoder.hidden=[8]",
    "train.batch_size=32",
    "train.progress=false",
    "data.limit=64",
    "train.max_epochs=1",
    "evaluate.num_samples=4",
]


@pytest.mark.skipif(available_memory() is None, reason="the memory available cannot be read")
def test_particles_times_batch_past_the_memory_free_is_refused_before_training(tmp_path, capsys):
    """k·B·P float32 of one step's decoder output: 10¹² particles × 32 points × 64 values are
    2.6·10¹⁴ bytes, beyond any machine; nothing is written."""
    sets = [
        f"--set={s}" for s in [*TINY, "estimator.name=iwae", "estimator.particles=1000000000000"]
    ]
    assert main(["train", DIGITS, *sets, "--out", str(tmp_path / "run")]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(
        "pyro-vae: error: estimator.particles: iwae: 1000000000000 "
        "particles × 32 points × 64 values"
    ), err
    assert not (tmp_path / "run").exists()
