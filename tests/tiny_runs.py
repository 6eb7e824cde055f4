"""The small runs the tests share: the embedded digits spec, ``--set`` lists for a run of
seconds (:data:`TINY`, one epoch of 2 steps) and for one of many steps (:data:`LONG`, 7 steps an
epoch), and the training steps a run logged."""

from __future__ import annotations

import csv
from pathlib import Path

DIGITS = str(Path("examples/configs/digits.yaml").resolve())
NETS = [
    "latent_dim=2",
    "encoder.hidden=[8]",
    "decoder.hidden=[8]",
    "train.batch_size=32",
    "train.progress=false",
]
# 64 training items: 2 optimizer steps per epoch; a few IS samples.
TINY = [*NETS, "data.limit=64", "train.max_epochs=1", "evaluate.num_samples=4"]
SETS = [f"--set={s}" for s in TINY]

# 200 digits, batch 32: 7 steps per epoch; no periodic checkpoints, so the only checkpoint a run
# has before its first epoch ends is the one a signal (Ctrl-C, SIGTERM) made.
LONG = [
    *NETS,
    "data.limit=200",
    "train.max_epochs=100",
    "train.log_every_n_steps=1",
    "train.checkpoint_every_epochs=0",
    "evaluate.num_samples=20",
]
STEPS_PER_EPOCH = 7


def logged_steps(run: Path) -> list[int]:
    """The steps of metrics.csv's per-step training rows (a row being written is left out)."""
    path = run / "metrics.csv"
    lines = path.read_text().splitlines(keepends=True) if path.is_file() else []
    complete = [line for line in lines if line.endswith("\n")]
    return [int(r["step"]) for r in csv.DictReader(complete) if r.get("train_loss_step")]
