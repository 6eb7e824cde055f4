"""A run directory's files and how they are read back: ``config.yaml``, ``checkpoints/last.ckpt``.

Checkpoints are read with ``torch.load(weights_only=True)`` only, so a planted pickle payload is
refused without running; every problem with a run directory or its checkpoint is a one-line
:class:`~pyro_vae.registry.SpecError` naming the file.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch

from pyro_vae.registry import SpecError
from pyro_vae.vae import VAE

CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
FIGURES = "figures"
NO_CHECKPOINT = "no checkpoint had been written"


def last_path(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS / "last.ckpt"


def best_path(run_dir: Path) -> Path:
    """The weights at the highest validation ELBO, kept when training stops early on it."""
    return run_dir / CHECKPOINTS / "best.ckpt"


def eval_path(run_dir: Path, split: str, method: str = "is") -> Path:
    """Where an evaluation of ``split`` by ``method`` is written: ``eval-<split>.json`` for
    importance sampling, ``eval-<split>-<method>.json`` for another method (e.g. ``ais``), so no
    evaluation overwrites another split's or method's."""
    suffix = "" if method == "is" else f"-{method}"
    return run_dir / f"eval-{split}{suffix}.json"


def figures_path(run_dir: Path, split: str) -> Path:
    """The folder of the figures drawn from ``split``: ``figures/<split>/``."""
    return run_dir / FIGURES / split


def run_config(run_dir: Path) -> Path:
    """RUN_DIR/config.yaml; SpecError when RUN_DIR is not a run directory."""
    if not run_dir.exists():
        raise SpecError(str(run_dir), "no such run directory")
    if not (run_dir / CONFIG).is_file():
        raise SpecError(str(run_dir), f"not a run directory (no {CONFIG})")
    return run_dir / CONFIG


def last_checkpoint(run_dir: Path) -> Path:
    """The run's last.ckpt; SpecError when there is none."""
    path = last_path(run_dir)
    if not path.is_file():
        raise SpecError(str(run_dir), f"no checkpoint at {path}: is this a finished or "
                        "interrupted pyro-vae run?")
    return path


def checkpoint_step(path: Path) -> int:
    """The global step (optimizer steps taken) a checkpoint holds."""
    return _global_step(read_checkpoint(path), path)


def _global_step(checkpoint: dict[str, Any], path: Path) -> int:
    step = checkpoint.get("global_step")
    if not isinstance(step, int):
        raise SpecError(str(path), "holds no training state (no global_step)")
    return step


def read_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)``: a checkpoint never runs code on loading."""
    try:
        with warnings.catch_warnings():  # about a foreign file's pickle protocol: the error says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means a corrupt or foreign file
        raise SpecError(str(path), f"cannot read checkpoint: {_load_problem(exc)}") from None
    if not isinstance(state, dict):
        raise SpecError(str(path), f"cannot read checkpoint: it holds a {type(state).__name__}, "
                        "not a checkpoint's dictionary")
    return state


def _load_problem(exc: Exception) -> str:
    """torch.load's complaint in short; for a weights-only refusal, what the file asked for."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch puts terminal escapes in it
    refused = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)", text, re.S)
    if refused:
        return (f"refused by weights-only loading ({refused.group(1)}); a pyro-vae checkpoint "
                "holds only tensors, numbers and strings")
    return f"{type(exc).__name__}: {text.split('. ')[0]}"


def load_weights(vae: VAE, path: Path, run_dir: Path) -> dict[str, Any]:
    """Load the checkpoint's VAE weights into ``vae`` and return the whole checkpoint;
    SpecError when they do not fit the VAE of RUN_DIR/config.yaml."""
    checkpoint = read_checkpoint(path)
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise SpecError(str(path), "cannot read checkpoint: no state_dict in it")
    weights = {k.removeprefix("vae."): v for k, v in state.items() if k.startswith("vae.")}
    try:
        vae.load_state_dict(weights)
    except RuntimeError as exc:
        raise SpecError(str(path), f"checkpoint does not match {run_dir / CONFIG} (trained from "
                        f"another spec?): {_mismatch(str(exc))}") from None
    return checkpoint


def _mismatch(text: str) -> str:
    """load_state_dict's complaint in short: the first tensor whose shape differs, or the text."""
    sizes = re.findall(r"size mismatch for (\S+): copying a param with shape torch.Size\((.*?)\) "
                       r"from checkpoint, the shape in current model is torch.Size\((.*?)\)", text)
    if not sizes:
        return " ".join(text.split())[:300]
    name, saved, built = sizes[0]
    more = f" (and {len(sizes) - 1} more tensors)" if len(sizes) > 1 else ""
    return f"size mismatch for {name}: {saved} in the checkpoint, {built} from the spec{more}"


def resume_point(run_dir: Path, vae: VAE) -> int:
    """The step a resumed run starts at, after checking that its last checkpoint holds a whole
    training state whose weights fit ``vae`` (else SpecError, before Lightning reads it)."""
    path = last_checkpoint(run_dir)
    checkpoint = load_weights(vae, path, run_dir)
    missing = [k for k in ("optimizer_states", "loops", "callbacks") if k not in checkpoint]
    if missing:
        raise SpecError(str(path), f"holds weights but no training state (no "
                        f"{', '.join(missing)}), so it cannot be resumed")
    return _global_step(checkpoint, path)


def run_state(run: Path, hint: str = "") -> str:
    """Where a stopped run stands, for its one-line message: its last checkpoint and the command
    that continues it (plus ``hint``)."""
    path = last_path(run)
    if not path.is_file():
        return NO_CHECKPOINT
    return (f"last good checkpoint: {path} (step {checkpoint_step(path)}); continue with "
            f"pyro-vae train --resume {run}{hint}")
