"""A run directory, one concept: its layout, its marker, its lock, and every write into it.

    RUN/.pyro-vae-run           the marker: JSON {"pyro_vae_run": 1, "state": ..., "created": ...}
    RUN/.pyro-vae.lock          present while a process holds the run (pid, host, command)
    RUN/config.yaml             the resolved spec
    RUN/checkpoints/last.ckpt   the newest checkpoint; step-<N>.ckpt the last few kept
    RUN/metrics.csv, hparams.yaml, tensorboard/, ddp.json
    RUN/eval-<split>[-<method>].json  an evaluation's summary; .npz beside it: per point
    RUN/figures/<split>/, RUN/report.html, compare.*
    RUN/probe.json              a linear probe of the latents (pyro-vae probe); figures/probe.png

:class:`Run` owns these names; the commands ask it for paths. Writes go through
:func:`pyro_vae.atomic.write_atomic` (a temporary sibling renamed over the target: a crash or a
full disk leaves the old file; a symbolic link at the target is replaced, never followed) and
refuse a path whose folders inside the run are symbolic links. ``--overwrite`` replaces only a
directory that :meth:`Run.is_run` recognises, never the working directory or one of its parents,
by renaming it aside in one step and then deleting it. The lock is an ``flock`` on a file that the
holder removes when it lets go: a second writer gets a one-line error naming the holder's pid,
and the lock of a killed process (which the kernel released) is taken over.

What a checkpoint holds and how it is checked against the spec and data is
:mod:`pyro_vae.checkpoints`; the run directory reads it through :class:`Run`.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import hashlib
import io
import json
import math
import os
import re
import shutil
import socket
import stat
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from pyro_vae.atomic import json_text, write_atomic
from pyro_vae.captions import CAPTIONS
from pyro_vae.checkpoints import (
    RECORD,
    RESUMABLE,
    changeable,
    changed_keys,
    check_record,
    checkpoint_step,
    flat,
    global_step,
    load_weights,
    read_checkpoint,
)
from pyro_vae.registry import SpecError
from pyro_vae.spec import dump_spec, load_run_spec

if TYPE_CHECKING:  # torch and matplotlib: imported where a checkpoint or figure is handled
    import numpy as np
    from matplotlib.figure import Figure

    from pyro_vae.bundle import DataBundle
    from pyro_vae.prepared import Prepared
    from pyro_vae.scoring import Evaluation
    from pyro_vae.spec import Spec
    from pyro_vae.vae import VAE

CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
FIGURES = "figures"
MARKER = ".pyro-vae-run"
LOCK = ".pyro-vae.lock"
REPORT = "report.html"
TRANSFORM = "transform.json"  # the data transform fitted on the training split
METRICS = "metrics.csv"
DDP_REPORT = "ddp.json"  # each rank's parameter digest after a multi-process run
PROBE_JSON = "probe.json"  # pyro-vae probe's table (pyro_vae.probing)
NO_CHECKPOINT = "no checkpoint had been written"
#: Top-level names a run writes (``*`` as in glob); anything else makes a directory not a run.
LAYOUT = (
    MARKER,
    LOCK,
    CONFIG,
    TRANSFORM,
    CHECKPOINTS,
    FIGURES,
    METRICS,
    "hparams.yaml",
    "tensorboard",
    DDP_REPORT,
    "eval.json",
    "eval-*.json",
    "eval-*.npz",
    REPORT,
    "compare.csv",
    "compare.md",
    PROBE_JSON,
    ".*.tmp",
)
#: The figures a run draws, in ``figures/`` or ``figures/<split>/`` (``.png``).
FIGURE_NAMES = tuple(CAPTIONS)
#: What a run writes inside its folders (paths relative to the folder, ``*`` as in glob, one
#: pattern part per path part); anything else there is the user's. tensorboard/ is the logger's.
INSIDE = {
    CHECKPOINTS: ("*.ckpt", ".*.tmp"),
    FIGURES: (
        *(f"{folder}{name}.png" for folder in ("", "*/") for name in FIGURE_NAMES),
        ".*.tmp",
        "*/.*.tmp",
    ),
    "tensorboard": None,
}
METRICS = "metrics.csv"
DDP_REPORT = "ddp.json"  # each rank's parameter digest after a multi-process run
T = TypeVar("T")


def _matches(path: Path, pattern: str) -> bool:
    """Whether the relative ``path`` matches ``pattern`` part by part (``*`` within one part)."""
    parts = pattern.split("/")
    return len(parts) == len(path.parts) and all(map(fnmatch.fnmatchcase, path.parts, parts))


class RunInUse(SpecError):
    """The run is locked by another live process (named in the message)."""


class Run:
    """The run directory ``root``: paths, recognition, lock, marker and atomic writes."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._lock_fd: int | None = None
        self._prepared: Prepared | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r})"

    # ---- layout ---------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def last(self) -> Path:
        return self.checkpoint("last")

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def metrics_csv(self) -> Path:
        return self.root / METRICS

    def checkpoint(self, name: str = "last") -> Path:
        """``checkpoints/<name>.ckpt``: ``last`` (the newest, rewritten as training goes) or
        ``best`` (the weights at the highest validation ELBO, kept with early stopping)."""
        return self.root / CHECKPOINTS / f"{name}.ckpt"

    def eval_path(self, split: str, method: str = "is", suffix: str = ".json") -> Path:
        """Where an evaluation of ``split`` by ``method`` is written: ``eval-<split>.json`` for
        importance sampling, ``eval-<split>-<method>.json`` for another method (e.g. ``ais``),
        so no evaluation overwrites another split's or method's; ``suffix=".npz"``: its
        per-point arrays."""
        return self.root / f"eval-{split}{'' if method == 'is' else f'-{method}'}{suffix}"

    def figures_dir(self, split: str | None = None) -> Path:
        """``figures/<split>/``, the figures drawn from ``split``; ``figures/`` without one."""
        return self.root / FIGURES / (split or "")

    def kept(self) -> dict[int, Path]:
        """The kept checkpoints ``checkpoints/step-<N>.ckpt`` by step N."""
        return _kept_checkpoints(self.root / CHECKPOINTS)

    # ---- deletions ------------------------------------------------------------------------------
    def keep_checkpoint(self, step: int, keep: int) -> None:
        """``checkpoints/step-<step>.ckpt`` becomes a copy of last.ckpt (a hard link where the
        file system has them), and only the newest ``keep`` such copies stay."""
        _keep_copy(self.last, self.last.with_name(f"step-{step}.ckpt"))
        kept = self.kept()
        for old in sorted(kept)[:-keep]:
            kept[old].unlink(missing_ok=True)

    def fall_back(self, bad_from: int) -> None:
        """After a divergence detected with ``bad_from`` steps taken: the kept checkpoints from
        that step on are deleted, and last.ckpt, if it is one of them, becomes the newest kept
        one before it (or, when none is kept, is renamed ``diverged-step-<N>.ckpt``, so nothing
        resumes it)."""
        kept = self.kept()
        for step in [s for s in kept if s >= bad_from]:
            kept.pop(step).unlink()
        if not self.last.is_file():
            return
        step = checkpoint_step(self.last)
        if step < bad_from:
            return
        if kept:
            _keep_copy(kept[max(kept)], self.last)
        else:
            os.replace(self.last, self.last.with_name(f"diverged-step-{step}.ckpt"))

    def discard(self) -> None:
        """Delete the whole run directory: a fresh run that failed before its first checkpoint,
        so that the same command starts it anew instead of finding a run to continue."""
        shutil.rmtree(self.root, ignore_errors=True)

    def foreign(self) -> list[str]:
        """Entries that a run does not write (sorted): at the top level (:data:`LAYOUT`), and
        files inside its folders (:data:`INSIDE`), as paths relative to the run."""
        names = [p.name for p in self.root.iterdir()]
        found = [n for n in names if not any(Path(n).match(g) for g in LAYOUT)]
        for folder, patterns in INSIDE.items():
            if patterns is None or not (self.root / folder).is_dir():
                continue
            for path in (self.root / folder).rglob("*"):
                inside = path.relative_to(self.root / folder)
                if not path.is_dir() and not any(_matches(inside, g) for g in patterns):
                    found.append(str(Path(folder) / inside))
        return sorted(found)

    def is_run(self) -> str | None:
        """Why ``root`` is not a pyro-vae run (None when it is): it must hold the marker (or,
        written before markers existed, a checkpoint), config.yaml, and nothing a run does not
        write."""
        if not self.root.is_dir():
            return "not a directory"
        if not (self.root / MARKER).is_file() and not self.last.is_file():
            return f"no {MARKER} marker"
        if not self.config.is_file():
            return f"no {CONFIG}"
        foreign = self.foreign()
        if foreign:
            return (
                f"it holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, "
                "which a run does not write"
            )
        return None

    def state(self) -> str | None:
        """The marker's state (``training``, ``stopped``, ``diverged``, ``finished``), None
        without a readable marker."""
        state = self._marker().get("state")
        return state if isinstance(state, str) else None

    def mark(self, state: str, scoring: bool = False, trained_s: float = 0.0) -> None:
        """Write the marker with ``state`` (keeping its creation time and training seconds),
        ``"scoring": true`` with ``scoring`` (:meth:`scoring`), and ``trained_s`` more seconds
        of training (:meth:`train_seconds`)."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        old = self._marker()
        seconds = self.train_seconds() if "train_seconds" in old else 0.0
        record = {
            "pyro_vae_run": 1,
            "state": state,
            "created": old.get("created", now),
            "updated": now,
            **({"scoring": True} if scoring else {}),
            **({"train_seconds": round(seconds + trained_s, 3)} if seconds or trained_s else {}),
        }
        self.write_text(self.root / MARKER, json.dumps(record) + "\n")

    def train_seconds(self) -> float:
        """Wall seconds spent in training (Lightning's fit, summed over the stops and resumes
        of the run; evaluation and figures excluded); nan for a run whose marker predates the
        count."""
        value = self._marker().get("train_seconds")
        return float(value) if isinstance(value, (int, float)) else math.nan

    def _marker(self) -> dict[str, Any]:
        try:
            record = json.loads((self.root / MARKER).read_text())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def continues(self, spec: Spec) -> bool:
        """Whether a fresh ``train`` of ``spec`` into root continues the run there instead: a run
        that a signal, a crash or a divergence stopped (its marker's state is not ``finished``)
        whose last checkpoint was trained from the same spec (:func:`changed_keys`). A requeued
        cluster job resumes this way, with the command it was started with."""
        return self.state() not in (None, "finished") and self.trained_from(spec)

    def unscored(self, spec: Spec) -> bool:
        """Whether training from ``spec`` finished here but the evaluation that ends ``train``
        did not (a signal, a crash or a full disk during it or its figures): no
        ``eval-<split>.json`` of the spec's split, or the marker still says :meth:`scoring`."""
        return (
            self.state() == "finished"
            and self.trained_from(spec)
            and (
                not self.eval_path(spec.evaluate.split).is_file()
                or self._marker().get("scoring") is True
            )
        )

    @contextmanager
    def scoring(self) -> Iterator[None]:
        """Mark the finished run as being scored inside the block, until it ends without an
        exception: its scores are written before its figures, and :meth:`unscored` holds
        until both are."""
        self.mark("finished", scoring=True)
        yield
        self.mark("finished")

    def trained_from(self, spec: Spec) -> bool:
        """Whether the last checkpoint was trained from ``spec`` (:func:`changed_keys`)."""
        if not self.last.is_file():
            return False
        try:
            record = read_checkpoint(self.last).get(RECORD)
        except SpecError:
            return False
        if not isinstance(record, Mapping) or not isinstance(record.get("spec"), Mapping):
            return False
        return not changed_keys(record["spec"], flat(spec.to_dict()))

    # ---- reading --------------------------------------------------------------------------------
    def require_config(self) -> Path:
        """config.yaml; SpecError when root is not a run directory."""
        if not self.root.exists():
            raise SpecError(str(self.root), "no such run directory")
        if not self.config.is_file():
            raise SpecError(str(self.root), f"not a run directory (no {CONFIG})")
        return self.config

    def require_checkpoint(self) -> Path:
        """last.ckpt; SpecError when there is none."""
        if not self.last.is_file():
            raise SpecError(
                str(self.root),
                f"no checkpoint at {self.last}: is this a finished or interrupted pyro-vae run?",
            )
        return self.last

    @property
    def spec(self) -> Spec:
        """The run's resolved spec (config.yaml; the one it was loaded with, once loaded)."""
        if self._prepared is not None:
            return self._prepared.spec
        return load_run_spec(self.require_config())

    def where(self, hint: str = "") -> str:
        """Where a stopped run stands, for its one-line message: its last checkpoint and the
        command that continues it (plus ``hint``)."""
        if not self.last.is_file():
            return NO_CHECKPOINT
        return (
            f"last good checkpoint: {self.last} (step {checkpoint_step(self.last)}); "
            f"continue with pyro-vae train --resume {self.root}{hint}"
        )

    def evaluated_checkpoint(self, spec: Spec) -> Path:
        """The checkpoint a run is scored with: ``best.ckpt`` (the highest validation ELBO) when
        the run stops early on it, as the published protocols select; else ``last.ckpt``."""
        best = self.checkpoint("best")
        if spec.train.early_stopping_patience and best.is_file():
            return best
        return self.require_checkpoint()

    def load_weights(self, vae: VAE, spec: Spec, data: Callable[[], str]) -> dict[str, Any]:
        """Load :meth:`evaluated_checkpoint`'s weights into ``vae``, checked against ``spec``
        and the data (``data``: a thunk for their digest); returns the whole checkpoint
        (:func:`pyro_vae.checkpoints.load_weights`)."""
        return load_weights(vae, self.evaluated_checkpoint(spec), self.config, spec, data)

    def resume_point(
        self, vae: VAE, spec: Spec | None = None, data: Callable[[], str] | None = None
    ) -> int:
        """The step a resumed run starts at, after checking that last.ckpt holds a whole
        training state whose weights fit ``vae`` and that it was trained from ``spec`` and the
        data (else SpecError, before Lightning reads it)."""
        path = self.require_checkpoint()
        checkpoint = load_weights(vae, path, self.config)
        missing = [k for k in ("optimizer_states", "loops", "callbacks") if k not in checkpoint]
        if missing:
            raise SpecError(
                str(path),
                f"holds weights but no training state (no "
                f"{', '.join(missing)}), so it cannot be resumed",
            )
        step = global_step(checkpoint, path)
        if spec is not None and data is not None:
            check_record(checkpoint, path, spec, data, self.config)
        return step

    def transform_state(self) -> Any:
        """The data transform the run was trained with (transform.json), None without one."""
        path = self.root / TRANSFORM
        return json.loads(path.read_text()) if path.is_file() else None

    def summary(self, split: str, method: str = "is") -> dict[str, Any]:
        """The summary of an evaluation (``eval-<split>[-<method>].json``); SpecError when the
        run has none or it is not a JSON object."""
        path = self.eval_path(split, method)
        try:
            summary = json.loads(path.read_text())
        except FileNotFoundError:
            raise SpecError(
                str(path),
                f"no {method} evaluation of the {split} split in this "
                f"run; score it: pyro-vae evaluate {self.root} --split {split}"
                f"{'' if method == 'is' else f' --method {method}'}",
            ) from None
        except (OSError, ValueError) as exc:
            raise SpecError(str(path), f"cannot read the evaluation: {exc}") from None
        if not isinstance(summary, dict):
            raise SpecError(str(path), "cannot read the evaluation: not a JSON object")
        return summary

    def points(self, split: str, method: str = "is") -> dict[str, np.ndarray]:
        """The per-point arrays of an evaluation (``eval-<split>[-<method>].npz``, read without
        pickles), refused unless their SHA-256 is the one its JSON summary records."""
        import numpy as np

        summary, path = self.summary(split, method), self.eval_path(split, method, ".npz")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SpecError(
                str(path), f"cannot read the per-point results: {exc.strerror or exc}"
            ) from None
        if hashlib.sha256(data).hexdigest() != summary.get("points_sha256"):
            raise SpecError(
                str(path),
                f"does not match {self.eval_path(split, method).name} "
                "(its SHA-256 differs from the one recorded there): the files come "
                "from different evaluations; score the split again",
            )
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return {k: arrays[k] for k in arrays.files}

    def resume_spec(self, overrides: Sequence[str] = ()) -> Spec:
        """A run's config.yaml plus ``overrides`` that only touch :data:`RESUMABLE` keys or
        ``evaluate.*`` (repeating a key's current value is allowed)."""
        config = self.require_config()
        self.require_checkpoint()
        saved = load_run_spec(config)
        spec = load_run_spec(config, overrides)
        old, new = flat(saved.to_dict()), flat(spec.to_dict())
        for key in sorted(old.keys() | new.keys()):
            if old.get(key) != new.get(key) and not changeable(key):
                raise SpecError(
                    key,
                    f"cannot change when resuming (the run has {old.get(key)!r}); "
                    f"--resume accepts --set for {', '.join(RESUMABLE)} and evaluate.*",
                )
        if spec.train.lr_schedule == "cosine":
            for key in ("train.max_epochs", "train.lr"):
                if old[key] != new[key]:
                    raise SpecError(
                        key,
                        "cannot change when resuming a cosine lr_schedule: the "
                        "schedule was laid out over the original run",
                    )
        return spec

    def finished(self, max_epochs: int) -> str | None:
        """Why the run has nothing left to do up to ``max_epochs`` epochs (all epochs
        trained and the run scored, more epochs trained, or early stopping ended it and
        ``max_epochs`` was not raised), else None. A run that a signal stopped after its last step
        has all its epochs but no scores yet: None."""
        checkpoint = read_checkpoint(self.require_checkpoint())
        loops = checkpoint.get("loops", {}).get("fit_loop", {})
        done = loops.get("epoch_progress", {}).get("current", {}).get("processed", 0)
        if done == max_epochs and self.state() != "finished":
            return None
        if done >= max_epochs:
            return (
                f"{done} of {max_epochs} epochs trained"
                if done == max_epochs
                else f"{done} epochs trained, train.max_epochs is {max_epochs}"
            )
        saved = load_run_spec(self.require_config()).train.max_epochs
        stopped = [
            v.get("stopped_epoch", 0)
            for k, v in checkpoint.get("callbacks", {}).items()
            if k.startswith("EarlyStopping") and isinstance(v, dict)
        ]
        if any(stopped) and max_epochs <= saved:
            return f"early stopping ended it after {done} epochs"
        return None

    # ---- a trained run, loaded ------------------------------------------------------------------
    def load(self) -> Prepared:
        """The run's data and VAE, with the weights it is scored with, in eval mode
        (:func:`pyro_vae.prepared.load_run`), loaded once; the caller's random states (torch,
        NumPy, Python) are left as they were, though the rebuild seeds them."""
        if self._prepared is None:
            from pyro_vae.console import quieted
            from pyro_vae.prepared import load_run, random_states_kept

            with random_states_kept(), quieted():  # as quiet as the command line
                self._prepared = load_run(self)
            self._prepared.vae.eval()
        return self._prepared

    def attach(self, prepared: Prepared) -> Run:
        """Use ``prepared`` (the data and VAE just trained here) instead of loading them."""
        self._prepared = prepared
        return self

    @property
    def vae(self) -> VAE:
        """The trained VAE (:meth:`load`)."""
        return self.load().vae

    @property
    def data(self) -> DataBundle:
        """The run's data set, its splits as the model sees them (:meth:`load`)."""
        return self.load().bundle

    @property
    def metrics(self) -> dict[str, np.ndarray]:
        """metrics.csv as columns (a blank cell is nan); empty before any was logged."""
        from pyro_vae.figures import read_metrics

        return read_metrics(self.metrics_csv) if self.metrics_csv.is_file() else {}

    def evaluation(self, split: str = "test") -> Evaluation:
        """The importance-sampled evaluation of ``split`` with its per-point arrays, as
        ``pyro-vae evaluate`` wrote it (:meth:`summary`, :meth:`points`)."""
        from pyro_vae.scoring import Evaluation

        return Evaluation.read(self.summary(split), self.points(split))

    def evaluations(self) -> dict[str, Evaluation]:
        """Every split's importance-sampled evaluation the run holds, by split."""
        found = (
            re.fullmatch(r"eval-(train|val|test)\.json", p.name)
            for p in sorted(self.root.glob("eval-*.json"))
        )
        return {m.group(1): self.evaluation(m.group(1)) for m in found if m}

    def figures(self, split: str = "test") -> dict[str, Figure]:
        """The figures ``train`` and ``evaluate`` write for ``split``, as matplotlib figures by
        name (:data:`pyro_vae.captions.CAPTIONS`), drawn afresh from the loaded run: the
        training curves when metrics.csv has any."""
        from pyro_vae.figures import curve_series, evaluation_figures, plot_training_curves

        prepared = self.load()
        drawn = evaluation_figures(
            prepared.vae, prepared.bundle, self.evaluation(split), prepared.spec.train.seed
        )
        if curve_series(self.metrics):
            drawn["training_curves"] = plot_training_curves(self.metrics_csv)
        return drawn

    def __iter__(self) -> Iterator[Any]:
        """``vae, spec = pyro_vae.load_run(path)``, as before it returned a Run (deprecated)."""
        warnings.warn(
            "unpacking load_run(path) into (vae, spec) is deprecated: it returns a "
            "Run; use run.vae and run.spec",
            FutureWarning,
            stacklevel=2,
        )
        return iter((self.vae, self.spec))

    def lines(self) -> list[str]:
        """A readable summary: the directory, its state and each split's scores."""
        out = [f"run {self.root}: {self.state() or 'no marker'}"]
        for evaluation in self.evaluations().values():
            out += evaluation.lines()
        return out

    def _repr_markdown_(self) -> str:
        return "\n\n".join(self.lines())

    # ---- writes ---------------------------------------------------------------------------------
    def directory(self, folder: Path) -> Path:
        """``folder`` (root or under it), created where missing, after refusing symbolic links
        among its parts inside the run."""
        current = self.root
        for part in Path(os.path.abspath(folder)).relative_to(os.path.abspath(self.root)).parts:
            current = current / part
            if current.is_symlink():
                raise SpecError(
                    str(current),
                    "is a symbolic link; pyro-vae does not write "
                    "through links inside a run directory",
                )
            current.mkdir(exist_ok=True)
        return folder

    def _checked(self, path: Path) -> Path:
        self.directory(path.parent)
        return path

    def write(self, path: Path, write: Callable[[BinaryIO], object]) -> Path:
        """``write(f)`` into ``path`` atomically (see the module docstring); returns ``path``."""
        write_atomic(self._checked(path), write)
        return path

    def write_text(self, path: Path, text: str) -> Path:
        return self.write(path, lambda f: f.write(text.encode()))

    def write_json(self, path: Path, value: Any) -> Path:
        """``value`` as strict JSON (:func:`pyro_vae.atomic.json_text`)."""
        return self.write_text(path, json_text(value))

    def write_config(self, spec: Spec) -> Path:
        return self.write_text(self.config, dump_spec(spec))

    def write_transform(self, state: Any) -> Path:
        """The data transform fitted on the training split (transform.json)."""
        return self.write_json(self.root / TRANSFORM, state)

    def write_ddp_report(self, digests: Sequence[str]) -> Path:
        """Each rank's parameter digest after a multi-process run (ddp.json)."""
        return self.write_json(
            self.root / DDP_REPORT, {"world_size": len(digests), "parameter_sha256": list(digests)}
        )

    def write_evaluation(
        self, summary: Mapping[str, Any], points: Mapping[str, np.ndarray], method: str = "is"
    ) -> Path:
        """An evaluation of ``summary["split"]``: its per-point arrays (``.npz``) first, then
        its summary (``.json``) recording their file name and SHA-256, so a reader never pairs
        a summary with another evaluation's points (:meth:`points`). Should the summary not be
        written (a full disk), the earlier pair is put back whole. Returns the JSON's path."""
        import numpy as np

        buffer = io.BytesIO()
        np.savez(buffer, **points)
        data = buffer.getvalue()
        split = summary["split"]
        npz = self.eval_path(split, method, ".npz")
        record = {
            **summary,
            "points_file": npz.name,
            "points_sha256": hashlib.sha256(data).hexdigest(),
        }
        kept = npz.with_name(f".{npz.name}.old.tmp")  # the pair before, until the new one is whole
        kept.unlink(missing_ok=True)
        if npz.is_file():
            os.link(npz, kept)
        try:
            self.write(npz, lambda f: f.write(data))
            return self.write_json(self.eval_path(split, method), record)
        except BaseException:
            if kept.is_file():
                os.replace(kept, npz)  # a rename: needs no space on a full disk
            else:
                npz.unlink(missing_ok=True)
            raise
        finally:
            kept.unlink(missing_ok=True)

    def write_figure(self, path: Path, figure: Figure) -> Path:
        """``figure`` as a PNG (or the format ``path``'s suffix names) at ``path``, at the
        figure's own resolution."""
        return self.write(
            path, lambda f: figure.savefig(f, dpi="figure", format=path.suffix.lstrip(".") or "png")
        )

    def write_figures(self, figures: Mapping[str, Figure], split: str | None = None) -> list[Path]:
        """Each of ``figures`` (name → figure) as ``figures/<split>/<name>.png``; a linked
        figures folder is refused before anything is written."""
        folder = self.directory(self.figures_dir(split))
        return [self.write_figure(folder / f"{name}.png", fig) for name, fig in figures.items()]

    # ---- the lock -------------------------------------------------------------------------------
    @contextmanager
    def locked(self, command: str) -> Iterator[Run]:
        """Hold the run's lock inside the block (see :meth:`lock`)."""
        self.lock(command)
        try:
            yield self
        finally:
            self.unlock()

    def lock(self, command: str) -> None:
        """Take the lock: :class:`RunInUse` naming the holder when another live process has
        it."""
        if self._lock_fd is not None:
            return
        path = self.root / LOCK
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
            except OSError as exc:
                raise SpecError(
                    str(path), f"cannot open the run's lock file ({exc.strerror})"
                ) from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device takes no lock
                os.close(fd)
                raise SpecError(
                    str(path),
                    "is not a regular file, so it cannot be the run's "
                    "lock file; remove it (no pyro-vae process makes one)",
                )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.pread(fd, 300, 0).decode(errors="replace").split(maxsplit=2)
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    raise SpecError(
                        str(self.root), f"cannot lock the run ({exc.strerror})"
                    ) from None
                pid, host, what = (holder + ["?", "?", "?"])[:3]
                raise RunInUse(
                    str(self.root),
                    f"in use by another pyro-vae process (pid {pid} "
                    f"on {host}: {what.strip()}); wait for it to end or stop it",
                ) from None
            try:  # the holder we waited on may have removed the file: lock the one at the path
                same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)  # a killed holder's pid may be there: take the lock over
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} pyro-vae {command}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is None:
            return
        (self.root / LOCK).unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = None

    # ---- creation -------------------------------------------------------------------------------
    @property
    def held(self) -> bool:
        """Whether this object holds the run's lock."""
        return self._lock_fd is not None

    def claim(self, overwrite: bool = False, resume: bool = False, command: str = "train") -> None:
        """Lock the run for ``command``: an existing run to continue (``resume``) or a fresh one
        (:meth:`start`)."""
        if resume:
            self.require_config()
            self.lock(command)
        else:
            self.start(overwrite, command)

    def start(self, overwrite: bool, command: str = "train") -> None:
        """Lock ``root`` for a fresh run (created if missing); with ``overwrite`` an existing run
        there is replaced (:meth:`replace`). SpecError, with nothing changed, for anything else
        (:meth:`create` checks before anything is written, and again under the lock)."""
        if self.create(command, lambda: self._check_replaceable(overwrite)):
            try:
                self.replace(command)
            except BaseException:
                self.unlock()
                raise

    def check_start(self, overwrite: bool) -> None:
        """SpecError, with nothing changed, where :meth:`start` would refuse ``root``: a command
        refuses early, before its slow imports; :meth:`start` checks again under the lock."""
        self._check_kind()
        self._check_replaceable(overwrite)

    def _check_kind(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise SpecError("--out", f"{self.root} exists and is not a directory")

    def create(self, command: str, check: Callable[[], T]) -> T:
        """Lock ``root`` for ``command``, creating it where missing, and return ``check()``:
        ``check`` (a SpecError refuses) runs before anything is written and again under the
        lock, where its result counts. A refusal lets the lock go and removes ``root`` when this
        call made it."""
        self._check_kind()
        check()
        made = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpecError("--out", f"cannot create {self.root}: {exc.strerror}") from None
        try:
            self.lock(command)
            return check()
        except BaseException:
            self.unlock()
            if made:
                with suppress(OSError):  # not empty: another process's by now
                    self.root.rmdir()
            raise

    def _check_replaceable(self, overwrite: bool) -> bool:
        """Whether ``root`` holds files to replace; SpecError unless ``overwrite`` and it is a
        run other than the working directory or one of its parents."""
        if not self.root.is_dir() or not any(p.name != LOCK for p in self.root.iterdir()):
            return False
        if not overwrite:
            raise SpecError(
                "--out",
                f"{self.root} exists and is not empty; pass --overwrite to "
                "replace the run there, or choose another directory",
            )
        why = self.is_run()
        if why:
            raise SpecError(
                "--out",
                f"{self.root} is not a pyro-vae run ({why}); --overwrite "
                "replaces only a run directory, so nothing was changed",
            )
        if _holds_cwd(self.root):
            raise SpecError(
                "--out",
                f"{self.root} is the working directory or one of its "
                "parents; --overwrite never replaces it",
            )
        return True

    def replace(self, command: str) -> None:
        """Replace the locked run (checked by :meth:`_check_replaceable`) by an empty one:
        rename the directory aside in one step, make a fresh one, lock it, delete the old one."""
        real = self.root.resolve()
        aside = real.with_name(f".{real.name}.replaced-{os.getpid()}")
        try:
            os.rename(real, aside)
            real.mkdir()
        except OSError as exc:
            raise SpecError("--out", f"cannot replace {self.root}: {exc.strerror}") from None
        old_fd, self._lock_fd = self._lock_fd, None
        try:
            self.lock(command)
        finally:
            if old_fd is not None:
                os.close(old_fd)
            shutil.rmtree(aside, ignore_errors=True)


def _kept_checkpoints(folder: Path) -> dict[int, Path]:
    """``step-<N>.ckpt`` files in ``folder`` by step N."""
    found = (re.fullmatch(r"step-(\d+)\.ckpt", p.name) for p in folder.glob("step-*.ckpt"))
    return {int(m.group(1)): folder / m.group(0) for m in found if m}


def _keep_copy(source: Path, target: Path) -> None:
    """``target`` becomes a hard link to ``source`` (a copy where links are not supported),
    through a temporary name and a rename: the target is never half there."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _holds_cwd(path: Path) -> bool:
    cwd, target = Path.cwd().resolve(), path.resolve()
    return cwd == target or target in cwd.parents
