"""What a long run needs around Lightning's Trainer and Lightning leaves to the user.

* :class:`PeriodicCheckpoint`: ``last.ckpt`` every N steps and every M epochs, the last few kept,
  and where a signal (Ctrl-C, SIGTERM, SIGUSR1) stops the run (:func:`stop_on_signals`,
  :class:`Interrupted`);
* :class:`BestCheckpoint`: ``best.ckpt`` judged as before when the run directory was moved;
* :class:`AtomicCheckpointIO`: a checkpoint is written to a temporary file beside its target,
  fsynced and renamed over it, and always read back with ``torch.load(weights_only=True)``;
* :class:`RngState`: the global RNG states (torch, CUDA, numpy, Python) ride in every checkpoint;
* :class:`EpochSampler` + :class:`ResumableLoader`: epoch e visits a permutation seeded by
  seed + e, and the position inside the epoch is checkpointed, so a resumed run sees the batches
  an uninterrupted one would;
* :class:`RunCSVLogger`: metrics.csv, written as it goes, trimmed and continued on resume;
* :class:`Throughput`: images/s per logged step and per epoch;
* :class:`EpochMeans`: a training epoch's means of per-step scalars, kept outside Lightning's
  per-call logging machinery;
* :func:`ranks_in_sync`: whether a DDP run's ranks hold the same parameters
  (:mod:`pyro_vae.ranks` has the rest of its collectives, which evaluation uses without
  Lightning).

Every checkpoint entry is a tensor, number, string or container of them: nothing is unpickled.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pyro_vae.ranks import world
from pyro_vae.rundir import Run
from pyro_vae.stops import Interrupted


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file in the target's directory, fsync, ``os.replace``
    (:meth:`pyro_vae.rundir.Run.write`, which refuses a linked folder inside the ``run``).

    A rename within one file system is atomic, so a reader or a crash finds the previous
    checkpoint or the new one, never a truncated file. (Lightning's own writer goes through an
    fsspec transaction that stages the file in the system temp directory and then *moves* it: a
    copy, not a rename, when that directory sits on another file system.) Loading is always
    weights-only: a checkpoint cannot run code.
    """

    def __init__(self, run: Run) -> None:
        super().__init__()
        self.run = run

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        self.run.write(Path(path), lambda f: torch.save(checkpoint, f))

    def load_checkpoint(
        self, path: str | Path, map_location: Any = "cpu", weights_only: bool | None = None
    ) -> dict[str, Any]:
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint that goes on judging after its run directory was moved.

    Its saved state names files by absolute path, and Lightning drops the best score when the
    saved ``dirpath`` is not the current one: a run copied to another folder or machine and
    resumed would let its first validation replace ``best.ckpt``, however much worse. The folder
    is the run's own ``checkpoints/`` wherever the run lies, so here a saved path under the old
    ``dirpath`` is read as the same name under the current one.
    """

    @property
    def state_key(self) -> str:
        """ModelCheckpoint's own key: checkpoints saved before this class restore into it."""
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and old != new:

            def moved(path: str) -> str:
                p = Path(path)
                return str(Path(new) / p.relative_to(old)) if p.is_relative_to(old) else path

            paths = ("best_model_path", "kth_best_model_path", "last_model_path")
            state_dict = {
                **state_dict,
                **{k: moved(state_dict[k]) for k in paths if state_dict.get(k)},
                "dirpath": new,
                "best_k_models": {
                    moved(p): v for p, v in state_dict.get("best_k_models", {}).items()
                },
            }
        super().load_state_dict(state_dict)


#: The signals that stop a run with a checkpoint at the current step: Ctrl-C, ``kill``/``docker
#: stop``/SLURM/systemd, and SLURM's requeue warning (``sbatch --signal=USR1@<seconds>``).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class PeriodicCheckpoint(Checkpoint):
    """Rewrites one file, the ``run``'s last.ckpt, every ``every_steps`` optimizer steps, every ``every_epochs``
    epochs (at the epoch's end, after its validation; 0 turns either off) and when training ends;
    the newest ``keep`` saves also stay as ``step-<N>.ckpt`` beside it (hard links where the file
    system has them), so a divergence can fall back to one that passed the guard.

    Being a Lightning ``Checkpoint``, it runs among the "monitoring" callbacks, after the
    non-monitoring ones, at an epoch's end; listed after EarlyStopping and ModelCheckpoint, it saves
    their states once they have judged this epoch's validation (patience count, best score), so a
    run resumed from an epoch's checkpoint stops and keeps best.ckpt as an uninterrupted one does.

    A step save that falls on an epoch's last batch waits for that epoch's end: Lightning resumes
    from a checkpoint taken between an epoch's last batch and its validation without running
    that validation. (Lightning's ModelCheckpoint has that gap, and with ``save_top_k=0`` it
    writes ``last.ckpt`` only when training ends.)

    A stop signal (:data:`STOP_SIGNALS`), while :meth:`on_signal` handles them
    (:func:`stop_on_signals`), only raises a flag: the run saves at the next point where a step
    save may happen (the end of the current step, or of the epoch when the step was its last), so
    the checkpoint resumes exactly, and raises :class:`Interrupted` at the next hook (once
    Lightning has logged the step's metrics). Lightning's own handling would catch a
    KeyboardInterrupt wherever it lands and exit 1, and ends a run on SIGTERM with status 0
    without a checkpoint. A second Ctrl-C stops at once (the previous checkpoint stays); a
    repeated SIGTERM or SIGUSR1 waits for the save. Under DDP the ranks agree on the signal
    (an all-reduce of its number) and stop at the same step, each rank taking part in the save.
    """

    def __init__(self, run: Run, every_steps: int, every_epochs: int, keep: int = 1) -> None:
        self.run, self.every_steps, self.every_epochs = run, every_steps, every_epochs
        self.keep = keep
        self.pending = False
        self.saved_step = -1
        self.signum = 0  # the stop signal seen (0: none)
        self.stopping = 0  # saved for that signal: stop at the next hook
        self.launcher: Any = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signum and signum == signal.SIGINT:
            raise Interrupted(signum, None)
        if not self.signum:
            self.signum = signum
            if self.launcher is not None and signum != signal.SIGINT:
                # Lightning's DDP child processes get it too (a terminal's Ctrl-C reaches them
                # already: a forwarded one would be their second)
                self.launcher.kill(signum)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Take the stop signals back from Lightning, which set its own just before."""
        self.launcher = getattr(trainer.strategy, "launcher", None)
        install_handlers(self.on_signal)

    def save(self, trainer: L.Trainer) -> None:
        """The full training state (weights_only=False: optimizer, loops, callbacks too)."""
        trainer.save_checkpoint(self.run.last, weights_only=False)
        self.saved_step, self.pending = trainer.global_step, False
        if trainer.is_global_zero and self.keep > 0:
            self.run.keep_checkpoint(trainer.global_step, self.keep)

    def _signal(self, trainer: L.Trainer) -> int:
        """The stop signal any rank saw (the largest number), 0 for none."""
        seen = torch.tensor(self.signum, device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(seen, reduce_op="max"))

    def _stop(self, trainer: L.Trainer, *args: Any) -> None:
        if self.stopping:
            raise Interrupted(self.stopping, trainer.global_step)

    on_train_batch_start = on_train_epoch_start = _stop

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        stop = self._signal(trainer)
        if stop or (self.every_steps and trainer.global_step % self.every_steps == 0):
            if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
                self.pending = True
            else:
                self.save(trainer)
                self.stopping = stop

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stop = self._signal(trainer)
        due = self.every_epochs and (trainer.current_epoch + 1) % self.every_epochs == 0
        if due or self.pending or stop:
            self.save(trainer)
        self.stopping = stop

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(trainer)  # a signal during the last epoch: the run still says it stopped
        if self.saved_step != trainer.global_step:
            self.save(trainer)


def install_handlers(handler: Callable[[int, FrameType | None], Any]) -> dict[int, Any]:
    """``handler`` for every stop signal; returns the handlers it replaced (nothing off the main
    thread, where signal handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}


@contextmanager
def stop_on_signals(checkpoint: PeriodicCheckpoint) -> Iterator[None]:
    """The stop signals go to ``checkpoint.on_signal`` inside the block (signal handlers can only
    be set from the main thread; elsewhere the block runs with the handlers it has)."""
    with _handled_by(checkpoint.on_signal):
        yield


@contextmanager
def _handled_by(handler: Callable[[int, FrameType | None], Any]) -> Iterator[None]:
    """``handler`` for every stop signal inside the block, the previous handlers after it."""
    previous = install_handlers(handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            signal.signal(signum, default if old is None else old)


@contextmanager
def stopped_during(what: str, where: Callable[[], str]) -> Iterator[None]:
    """A stop signal inside the block raises :class:`Interrupted` (``during`` ``what``, the run
    holding ``where()`` then) instead of ending the process without a word, as the default
    SIGTERM and SIGUSR1 handlers do; the handlers before it are restored after."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum, None, where(), during=what)

    with _handled_by(stop):
        yield


class RngState(L.Callback):
    """Saves the global RNG states in each checkpoint and restores them on resume.

    Lightning restores callbacks before the first step, so the resumed run draws the same
    latent samples and binarization bits as an uninterrupted one from the checkpoint on.
    """

    def state_dict(self) -> dict[str, Any]:
        _, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "gauss": float(gauss),
            },
            "python": random.getstate(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        if state["cuda"] and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        n = state["numpy"]
        np.random.set_state(
            ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
        )
        random.setstate(state["python"])


class EpochSampler(DistributedSampler):
    """Epoch e's order is a permutation seeded by seed + e; rank r of W takes its positions
    r, r + W, ... (torch's ``DistributedSampler``, which pads the permutation to a multiple of W).

    ``position`` counts the indices handed out this epoch; :meth:`start_at` makes the next pass
    over the same epoch begin there. No global RNG is drawn.
    """

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.position = 0
        self._resume: tuple[int, int] | None = None

    def start_at(self, epoch: int, position: int) -> None:
        self._resume = (epoch, position)

    def __iter__(self) -> Iterator[int]:
        order = list(super().__iter__())
        start = self._resume[1] if self._resume and self._resume[0] == self.epoch else 0
        self._resume = None
        self.position = start
        for index in order[start:]:
            self.position += 1  # counted before the yield: a batch's indices are all counted
            yield index


class ResumableLoader(DataLoader):
    """A DataLoader over an :class:`EpochSampler` whose position goes into checkpoints: having
    ``state_dict``/``load_state_dict`` makes it stateful to Lightning's fit loop, which saves the
    state and hands it back before resuming mid-epoch."""

    sampler: EpochSampler

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "position": self.sampler.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.start_at(state["epoch"], state["position"])


def resumable(loader: DataLoader, seed: int, rank: int, world_size: int) -> ResumableLoader:
    """``loader`` (dataset, batch size, collate) with an :class:`EpochSampler` for this rank."""
    return ResumableLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=EpochSampler(loader.dataset, seed, rank, world_size),
        collate_fn=loader.collate_fn,
        generator=torch.Generator().manual_seed(seed),
    )


class _ContinuedWriter(ExperimentWriter):
    """Lightning's metrics.csv writer, except that an existing file is kept up to (excluding)
    ``first_step`` instead of deleted: the rows an interrupted run logged after its checkpoint
    are dropped, since the resumed run logs those steps again. The kept rows replace the file
    by :meth:`pyro_vae.rundir.Run.write_text` (a uniquely named temporary file beside it, never
    through a link, removed on failure)."""

    def __init__(self, run: Run, first_step: int) -> None:
        self.run, self.first_step = run, first_step
        super().__init__(str(run.root))

    def _check_log_dir_exists(self) -> None:  # called by the base __init__
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines.pop()  # a row cut short by the crash
        reader = csv.DictReader(lines)
        keys = list(reader.fieldnames or [])
        rows = [r for r in reader if r.get("step") and int(float(r["step"])) < self.first_step]
        self.metrics_keys = keys
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        self.run.write_text(path, text.getvalue())


class RunCSVLogger(CSVLogger):
    """``RUN/metrics.csv``, each logged row flushed at once (an interrupted run keeps its rows).

    With ``first_step`` (a resumed run), rows from that step on are dropped and the run appends.
    """

    def __init__(self, run: Run, first_step: int | None = None) -> None:
        super().__init__(save_dir=str(run.root), name="", version="", flush_logs_every_n_steps=1)
        self.run, self.first_step = run, first_step

    @property
    @rank_zero_experiment  # other DDP ranks get a no-op stand-in and never touch the file
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            if self.first_step is None:
                self._experiment = ExperimentWriter(log_dir=self.log_dir)
            else:
                self._experiment = _ContinuedWriter(self.run, self.first_step)
        return self._experiment


class Throughput(L.Callback):
    """Training images per second (all ranks), logged as ``images_per_s_step`` over the steps
    since the previous logged step and ``images_per_s_epoch`` over the epoch. The clock runs from
    one batch's end to the next (data loading included) and stops over validation."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch = [0, 0.0]
        self.window = [0, 0.0]
        self.clock = time.perf_counter()

    on_train_start = on_train_epoch_start  # a run resumed mid-epoch starts without the epoch hook

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: torch.Tensor | tuple[torch.Tensor, ...],
        batch_idx: int,
    ) -> None:
        now = time.perf_counter()
        size = len(batch[0]) if isinstance(batch, (tuple, list)) else len(batch)  # (x, idx)
        images, seconds = size * trainer.world_size, now - self.clock
        self.clock = now
        for tally in (self.epoch, self.window):
            tally[0] += images
            tally[1] += seconds
        if trainer.global_step % trainer.log_every_n_steps == 0:
            pl_module.log(
                "images_per_s_step",
                self.window[0] / self.window[1],
                on_step=True,
                on_epoch=False,
                batch_size=size,
            )
            self.window = [0, 0.0]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log(
            "images_per_s_epoch",
            self.epoch[0] / max(self.epoch[1], 1e-9),
            on_step=False,
            on_epoch=True,
        )


class EpochMeans:
    """Batch-size-weighted means over an epoch's steps, m = Σ_t b_t v_t / Σ_t b_t: what
    ``LightningModule.log(..., on_epoch=True, batch_size=b)`` computes, without its ~0.3 ms of
    Python per call and step. Tensor values stay on their device: adding them reads nothing to
    the host."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.weight = 0

    def add(self, values: dict[str, float | torch.Tensor], weight: int) -> None:
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * weight
        self.weight += weight

    def pop(self) -> dict[str, float | torch.Tensor]:
        """The means since the last pop (none after no step), and a fresh start."""
        means = {name: total / self.weight for name, total in self.sums.items()}
        self.sums, self.weight = {}, 0
        return means


def parameter_digest(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in state_dict order."""
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def ranks_in_sync(module: torch.nn.Module) -> list[str]:
    """Every rank's :func:`parameter_digest` (one entry without a process group). DDP keeps
    replicas identical bit for bit, so the entries must all be equal."""
    digest = parameter_digest(module)
    _rank, size = world()
    if size == 1:
        return [digest]
    digests: list[Any] = [None] * size
    dist.all_gather_object(digests, digest)
    return digests
