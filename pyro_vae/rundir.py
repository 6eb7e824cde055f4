"""A run directory, one concept: its layout, its marker, its lock, and every write into it.

    RUN/.pyro-vae-run           the marker: JSON {"pyro_vae_run": 1, "state": ..., "created": ...}
    RUN/.pyro-vae.lock          present while a process holds the run (pid, host, command)
    RUN/config.yaml             the resolved spec
    RUN/checkpoints/last.ckpt   the newest checkpoint; step-<N>.ckpt the last few kept
    RUN/metrics.csv, hparams.yaml, tensorboard/, ddp.json
    RUN/eval-<split>[-<method>].json, RUN/figures/<split>/, RUN/report.html, compare.*

:class:`Run` owns these names; the commands ask it for paths. Writes go through
:func:`pyro_vae.atomic.write_atomic` (a temporary sibling renamed over the target: a crash or a
full disk leaves the old file; a symbolic link at the target is replaced, never followed) and
refuse a path whose folders inside the run are symbolic links. ``--overwrite`` replaces only a
directory that :meth:`Run.is_run` recognises, never the working directory or one of its parents,
by renaming it aside in one step and then deleting it. The lock is an ``flock`` on a file that the
holder removes when it lets go: a second writer gets a one-line error naming the holder's pid,
and the lock of a killed process (which the kernel released) is taken over.

Checkpoints are read with ``torch.load(weights_only=True)`` only, so a planted pickle payload is
refused without running. Each checkpoint records the resolved spec (flattened to dotted keys)
and SHA-256 digests of the spec and the data splits; resume and evaluate refuse a config.yaml or
data that differ from that record in any key other than :data:`RESUMABLE` and ``evaluate.*``
(keys added to the spec since the checkpoint was written are not compared).
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import sys
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from pyro_vae.atomic import write_atomic
from pyro_vae.captions import CAPTIONS
from pyro_vae.console import chatty
from pyro_vae.registry import SpecError
from pyro_vae.spec import load_run_spec

if TYPE_CHECKING:  # torch: imported where a checkpoint or the data are read
    from pyro_vae.bundle import DataBundle
    from pyro_vae.spec import Spec
    from pyro_vae.vae import VAE

CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
FIGURES = "figures"
MARKER = ".pyro-vae-run"
LOCK = ".pyro-vae.lock"
REPORT = "report.html"
TRANSFORM = "transform.json"  # the data transform fitted on the training split
NO_CHECKPOINT = "no checkpoint had been written"
#: Top-level names a run writes (``*`` as in glob); anything else makes a directory not a run.
LAYOUT = (MARKER, LOCK, CONFIG, TRANSFORM, CHECKPOINTS, FIGURES, "metrics.csv", "hparams.yaml",
          "tensorboard", "ddp.json", "eval.json", "eval-*.json", REPORT, "compare.csv",
          "compare.md", ".*.tmp")
#: The figures a run draws, in ``figures/`` or ``figures/<split>/`` (``.png``).
FIGURE_NAMES = tuple(CAPTIONS)
#: What a run writes inside its folders (paths relative to the folder, ``*`` as in glob, one
#: pattern part per path part); anything else there is the user's. tensorboard/ is the logger's.
INSIDE = {
    CHECKPOINTS: ("*.ckpt", ".*.tmp"),
    FIGURES: (*(f"{folder}{name}.png" for folder in ("", "*/") for name in FIGURE_NAMES),
              ".*.tmp", "*/.*.tmp"),
    "tensorboard": None,
}
#: Spec keys ``--resume`` may change besides ``evaluate.*``: none alters what a checkpoint means.
RESUMABLE = ("train.max_epochs", "train.lr", "train.gradient_clip", "train.progress",
             "train.logger", "train.jit", "train.keep_checkpoints", "train.blowup_factor")
RECORD = "pyro_vae"  # the checkpoint entry holding the spec and data digests
T = TypeVar("T")


def _matches(path: Path, pattern: str) -> bool:
    """Whether the relative ``path`` matches ``pattern`` part by part (``*`` within one part)."""
    parts = pattern.split("/")
    return len(parts) == len(path.parts) and all(map(fnmatch.fnmatchcase, path.parts, parts))


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


class RunInUse(SpecError):
    """The run is locked by another live process (named in the message)."""


class Run:
    """The run directory ``root``: paths, recognition, lock, marker and atomic writes."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r})"

    # ---- layout ---------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def last(self) -> Path:
        return last_path(self.root)

    @property
    def report(self) -> Path:
        return self.root / REPORT

    def kept(self) -> dict[int, Path]:
        """The kept checkpoints ``checkpoints/step-<N>.ckpt`` by step N."""
        return kept_checkpoints(self.root / CHECKPOINTS)

    # ---- deletions ------------------------------------------------------------------------------
    def keep_checkpoint(self, step: int, keep: int) -> None:
        """``checkpoints/step-<step>.ckpt`` becomes a copy of last.ckpt (a hard link where the
        file system has them), and only the newest ``keep`` such copies stay."""
        keep_copy(self.last, self.last.with_name(f"step-{step}.ckpt"))
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
            keep_copy(kept[max(kept)], self.last)
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
            return f"it holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, " \
                   "which a run does not write"
        return None

    def state(self) -> str | None:
        """The marker's state (``training``, ``stopped``, ``diverged``, ``finished``), None
        without a readable marker."""
        state = self._marker().get("state")
        return state if isinstance(state, str) else None

    def mark(self, state: str, scoring: bool = False) -> None:
        """Write the marker with ``state`` (keeping its creation time), and ``"scoring": true``
        with ``scoring`` (:meth:`scoring`)."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        record = {"pyro_vae_run": 1, "state": state,
                  "created": self._marker().get("created", now), "updated": now,
                  **({"scoring": True} if scoring else {})}
        self.write_text(self.root / MARKER, json.dumps(record) + "\n")

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
        return (self.state() == "finished" and self.trained_from(spec)
                and (not eval_path(self.root, spec.evaluate.split).is_file()
                     or self._marker().get("scoring") is True))

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
    def resume_spec(self, overrides: Sequence[str] = ()) -> Spec:
        """A run's config.yaml plus ``overrides`` that only touch :data:`RESUMABLE` keys or
        ``evaluate.*`` (repeating a key's current value is allowed)."""
        config = run_config(self.root)
        last_checkpoint(self.root)
        saved = load_run_spec(config)
        spec = load_run_spec(config, overrides)
        old, new = flat(saved.to_dict()), flat(spec.to_dict())
        for key in sorted(old.keys() | new.keys()):
            if old.get(key) != new.get(key) and not changeable(key):
                raise SpecError(key, f"cannot change when resuming (the run has {old.get(key)!r}); "
                                f"--resume accepts --set for {', '.join(RESUMABLE)} and evaluate.*")
        if spec.train.lr_schedule == "cosine":
            for key in ("train.max_epochs", "train.lr"):
                if old[key] != new[key]:
                    raise SpecError(key, "cannot change when resuming a cosine lr_schedule: the "
                                    "schedule was laid out over the original run")
        return spec

    def finished(self, max_epochs: int) -> str | None:
        """Why the run has nothing left to do up to ``max_epochs`` epochs (all epochs
        trained and the run scored, more epochs trained, or early stopping ended it and
        ``max_epochs`` was not raised), else None. A run that a signal stopped after its last step
        has all its epochs but no scores yet: None."""
        checkpoint = read_checkpoint(last_checkpoint(self.root))
        loops = checkpoint.get("loops", {}).get("fit_loop", {})
        done = loops.get("epoch_progress", {}).get("current", {}).get("processed", 0)
        if done == max_epochs and self.state() != "finished":
            return None
        if done >= max_epochs:
            return (f"{done} of {max_epochs} epochs trained" if done == max_epochs else
                    f"{done} epochs trained, train.max_epochs is {max_epochs}")
        saved = load_run_spec(run_config(self.root)).train.max_epochs
        stopped = [v.get("stopped_epoch", 0) for k, v in checkpoint.get("callbacks", {}).items()
                   if k.startswith("EarlyStopping") and isinstance(v, dict)]
        if any(stopped) and max_epochs <= saved:
            return f"early stopping ended it after {done} epochs"
        return None

    # ---- writes ---------------------------------------------------------------------------------
    def directory(self, folder: Path) -> Path:
        """``folder`` (root or under it), created where missing, after refusing symbolic links
        among its parts inside the run."""
        current = self.root
        for part in folder.relative_to(self.root).parts:
            current = current / part
            if current.is_symlink():
                raise SpecError(str(current), "is a symbolic link; pyro-vae does not write "
                                "through links inside a run directory")
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
                raise SpecError(str(path), f"cannot open the run's lock file ({exc.strerror})") \
                    from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device takes no lock
                os.close(fd)
                raise SpecError(str(path), "is not a regular file, so it cannot be the run's "
                                "lock file; remove it (no pyro-vae process makes one)")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.pread(fd, 300, 0).decode(errors="replace").split(maxsplit=2)
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    raise SpecError(str(self.root), f"cannot lock the run ({exc.strerror})") \
                        from None
                pid, host, what = (holder + ["?", "?", "?"])[:3]
                raise RunInUse(str(self.root), f"in use by another pyro-vae process (pid {pid} "
                               f"on {host}: {what.strip()}); wait for it to end or stop it") \
                    from None
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

    def claim(self, overwrite: bool = False, resume: bool = False,
              command: str = "train") -> None:
        """Lock the run for ``command``: an existing run to continue (``resume``) or a fresh one
        (:meth:`start`)."""
        if resume:
            run_config(self.root)
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

    def create(self, command: str, check: Callable[[], T]) -> T:
        """Lock ``root`` for ``command``, creating it where missing, and return ``check()``:
        ``check`` (a SpecError refuses) runs before anything is written and again under the
        lock, where its result counts. A refusal lets the lock go and removes ``root`` when this
        call made it."""
        if self.root.exists() and not self.root.is_dir():
            raise SpecError("--out", f"{self.root} exists and is not a directory")
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
            raise SpecError("--out", f"{self.root} exists and is not empty; pass --overwrite to "
                            "replace the run there, or choose another directory")
        why = self.is_run()
        if why:
            raise SpecError("--out", f"{self.root} is not a pyro-vae run ({why}); --overwrite "
                            "replaces only a run directory, so nothing was changed")
        if _holds_cwd(self.root):
            raise SpecError("--out", f"{self.root} is the working directory or one of its "
                            "parents; --overwrite never replaces it")
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


def kept_checkpoints(folder: Path) -> dict[int, Path]:
    """``step-<N>.ckpt`` files in ``folder`` by step N."""
    found = (re.fullmatch(r"step-(\d+)\.ckpt", p.name) for p in folder.glob("step-*.ckpt"))
    return {int(m.group(1)): folder / m.group(0) for m in found if m}


def keep_copy(source: Path, target: Path) -> None:
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
    import torch

    try:
        with warnings.catch_warnings():  # about a foreign file's pickle protocol: the error says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means a corrupt or foreign file
        raise SpecError(str(path), f"cannot read checkpoint: {_load_problem(exc, path)}") \
            from None
    if not isinstance(state, dict):
        raise SpecError(str(path), f"cannot read checkpoint: it holds a {type(state).__name__}, "
                        "not a checkpoint's dictionary")
    return state


def _load_problem(exc: Exception, path: Path) -> str:
    """torch.load's complaint about ``path`` in short; for a weights-only refusal, what the file
    asked for."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch puts terminal escapes in it
    refused = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)", text, re.S)
    if refused:
        return (f"refused by weights-only loading ({refused.group(1)}); a pyro-vae checkpoint "
                "holds only tensors, numbers and strings")
    if _cut_off(path):  # torch says OSError: [Errno 22] Invalid argument, or a zip reader's error
        return "the file ends early: a zip archive cut short (truncated while written or copied)"
    if isinstance(exc, EOFError) or not text.strip():  # torch says nothing of a cut-off pickle
        return f"{type(exc).__name__}: the file ends early (truncated, or not a checkpoint)"
    return f"{type(exc).__name__}: {text.split('. ')[0]}"


def _cut_off(path: Path) -> bool:
    """Whether ``path`` begins as a zip archive, torch's checkpoint format, but lacks the
    directory that ends a whole one: a file cut short."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04" and not zipfile.is_zipfile(f)
    except OSError:
        return False


# ---- what a checkpoint was trained from --------------------------------------------------------

def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{"a.b": leaf}``."""
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def changeable(key: str) -> bool:
    """Keys that may differ between a checkpoint's spec and the run's: :data:`RESUMABLE`,
    ``evaluate.*``."""
    return key in RESUMABLE or key.startswith("evaluate.")


def data_digest(bundle: DataBundle) -> str:
    """SHA-256 over the train, val and test splits' bytes and shapes."""
    import torch

    digest = hashlib.sha256()
    for x in (bundle.train, bundle.val, bundle.test):
        digest.update(repr(tuple(x.shape)).encode())
        digest.update(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def spec_record(spec: Spec, data_sha256: str) -> dict[str, Any]:
    """The checkpoint's ``pyro_vae`` entry: the flattened spec, its digest (over the keys that
    must not change) and the data's digest."""
    keys = flat(spec.to_dict())
    fixed = json.dumps({k: v for k, v in keys.items() if not changeable(k)}, sort_keys=True)
    return {"spec": keys, "spec_sha256": hashlib.sha256(fixed.encode()).hexdigest(),
            "data_sha256": data_sha256}


def check_record(checkpoint: Mapping[str, Any], path: Path, spec: Spec,
                 data: Callable[[], str] | None, config: Path) -> None:
    """SpecError naming the changed keys when ``spec`` (from ``config``) or the data (``data``,
    a thunk for their digest; None: not checked) differ from what the checkpoint at ``path`` was
    trained on; a one-line notice for a checkpoint written before checkpoints held that record."""
    record = checkpoint.get(RECORD)
    if record is None:
        notice(f"{path} predates spec and data digests: {config} is used as it is, unchecked")
        return
    if not isinstance(record, Mapping) or not isinstance(record.get("spec"), Mapping):
        raise SpecError(str(path), f"cannot read checkpoint: a malformed {RECORD!r} entry")
    saved, now = record["spec"], flat(spec.to_dict())
    changed = changed_keys(saved, now)
    if changed:
        text = ", ".join(f"{k} ({saved[k]!r} -> {now[k]!r})" for k in changed[:6])
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        raise SpecError(str(config), f"differs from the spec its checkpoint {path} was trained "
                        f"with: {text}{more}; config.yaml was edited or the checkpoint comes "
                        "from another run (--resume --set changes the keys that may change)")
    if data is not None and record.get("data_sha256") != data():
        raise SpecError(str(path), "was trained on other data: the data splits' SHA-256 "
                        "differs (the data files or data.* changed since)")


def changed_keys(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The flattened spec keys that are not :func:`changeable` and differ (a key that only one
    side has was added to the spec or removed from it since, and is not compared)."""
    return [k for k in sorted(saved.keys() & now.keys())
            if not changeable(k) and _canonical(saved[k]) != _canonical(now[k])]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


_noted: set[str] = set()  # each note once per process (a resume reads its checkpoint twice)


def notice(text: str) -> None:
    """One ``pyro-vae: note:`` line on stderr where notices are shown (:func:`chatty`), by rank 0
    of a multi-process run only, once per process."""
    if text in _noted:
        return
    _noted.add(text)
    if chatty() and os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0":
        print(f"pyro-vae: note: {text}", file=sys.stderr)


def load_weights(vae: VAE, path: Path, run_dir: Path, spec: Spec | None = None,
                 data: Callable[[], str] | None = None) -> dict[str, Any]:
    """Load the checkpoint's VAE weights into ``vae`` and return the whole checkpoint;
    SpecError when they do not fit the VAE of RUN_DIR/config.yaml, or (given ``spec`` and
    ``data``, a thunk for the data digest) when the checkpoint was trained from another spec or
    data (:func:`check_record`)."""
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
    if spec is not None and data is not None:
        check_record(checkpoint, path, spec, data, run_dir / CONFIG)
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


def resume_point(run_dir: Path, vae: VAE, spec: Spec | None = None,
                 data: Callable[[], str] | None = None) -> int:
    """The step a resumed run starts at, after checking that its last checkpoint holds a whole
    training state whose weights fit ``vae`` and that it was trained from ``spec`` and the data
    (else SpecError, before Lightning reads it)."""
    path = last_checkpoint(run_dir)
    checkpoint = load_weights(vae, path, run_dir)
    missing = [k for k in ("optimizer_states", "loops", "callbacks") if k not in checkpoint]
    if missing:
        raise SpecError(str(path), f"holds weights but no training state (no "
                        f"{', '.join(missing)}), so it cannot be resumed")
    step = _global_step(checkpoint, path)
    if spec is not None and data is not None:
        check_record(checkpoint, path, spec, data, run_dir / CONFIG)
    return step


def run_state(run: Path, hint: str = "") -> str:
    """Where a stopped run stands, for its one-line message: its last checkpoint and the command
    that continues it (plus ``hint``)."""
    path = last_path(run)
    if not path.is_file():
        return NO_CHECKPOINT
    return (f"last good checkpoint: {path} (step {checkpoint_step(path)}); continue with "
            f"pyro-vae train --resume {run}{hint}")
