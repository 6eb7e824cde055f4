"""A training held still at chosen phases, so that a test meets a live run in a known state
however loaded the machine is (a tiny run otherwise ends before a second command has started).

    python tests/holder.py SIGNALS PHASE[,PHASE...] ARGS...

runs ``pyro_vae.cli.main(ARGS)``, the console script's entry point, in this process. At each
named phase it creates the file SIGNALS/<phase> and waits for a line on stdin (end of file, the
test gone, goes on too). The phases, each where the command holds its run's lock:

- ``training``: inside the optimizer step after 3 steps (with checkpoints every 2 steps, one is
  on disk);
- ``evaluation``: the final importance-sampled scoring, after training ended;
- ``figures``: the training curves, the last file the command writes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro_vae.figures
import pyro_vae.scoring
import pyro_vae.trainer
from pyro_vae.cli import main

PHASES = ("training", "evaluation", "figures")


def hold_at(signals: Path, phases: set[str]) -> None:
    """Patch the functions that begin each phase in ``phases`` to pause there once."""

    def pause(phase: str) -> None:
        if phase in phases:
            phases.discard(phase)
            (signals / phase).touch()
            sys.stdin.readline()

    def paused(function: Callable[..., Any], phase: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            pause(phase)
            return function(*args, **kwargs)

        return call

    step = pyro_vae.trainer.VAEModule.training_step

    def training_step(self: Any, batch: Any, batch_idx: int) -> Any:  # Lightning passes both
        if self.global_step == 3:
            pause("training")
        return step(self, batch, batch_idx)

    pyro_vae.trainer.VAEModule.training_step = training_step
    pyro_vae.scoring.evaluate_run = paused(pyro_vae.scoring.evaluate_run, "evaluation")
    pyro_vae.figures.plot_training_curves = paused(pyro_vae.figures.plot_training_curves, "figures")


if __name__ == "__main__":
    signals, names, *args = sys.argv[1:]
    unknown = set(names.split(",")) - set(PHASES)
    if unknown:
        sys.exit(f"holder.py: unknown phases {sorted(unknown)}; choose from {PHASES}")
    hold_at(Path(signals), set(names.split(",")))
    sys.exit(main(args))
