"""The published job's unfinished runs, carried to the next machine through the repository.

The job's state folder lies outside the work tree (:func:`benchmarks.protocol.default_state`),
and a run of the protocol outlives a session (VampPrior: about 900 epochs, 6 h on one core).
When the next session starts on another machine, the state folder is gone with the old one. So
at a session's end, with the jobs stopped (each saves where it is on Ctrl-C's signal)::

    make bench-carry                   stops the running jobs of STATE, waits for them, then:
    python -m benchmarks.carry save    [--state STATE] [--carry CARRY] [--results RESULTS]

copies into ``CARRY`` (default ``benchmarks/carry``, committed) what each unfinished run of the
state folder needs to go on, and nothing else::

    CARRY/<model>-seed<s>/             every file of the run but its lock and the fall-back
                                       copies checkpoints/step-<N>.ckpt (in training: marker,
                                       config.yaml, metrics.csv, checkpoints/last.ckpt and
                                       best.ckpt, about 25 MB for a VampPrior run)
    CARRY/<model>-seed<s>.<kind>.json  the job's files beside it (progress, done)
    CARRY/carry.json                   per run: the global step of its last.ckpt, when it was
                                       saved, and the SHA-256 of every file

A run is unfinished while the results folder lacks its result record or its AIS tightness
record; the next save drops a run that has both (its result, per-image log p̂ and weights are
committed instead). A run another process holds (its lock) is refused before anything is
written; a run the state folder lacks stays carried as it was (a save on a new machine before
the restore loses nothing), and so does one carried further than the state folder's.

A published job (training, or ``--tightness``) first restores each of its runs that ``CARRY``
holds and its state folder lacks, or holds at an earlier step; ``python -m benchmarks.carry
restore`` does it for every carried run. Every name and path in ``carry.json`` is checked
against the layout above, every file against its SHA-256 while it is copied, into a hidden
sibling folder that is then renamed into place; a folder that is not a pyro-vae run, or a run
another job holds, is left alone. The run resumes as if never moved
(:class:`pyro_vae.engine.BestCheckpoint` keeps the best checkpoint's judgement).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from benchmarks.protocol import MODELS, Entry, all_seeds, default_state, entries
from pyro_vae.atomic import write_text_atomic
from pyro_vae.checkpoints import checkpoint_step
from pyro_vae.registry import SpecError
from pyro_vae.rundir import LOCK, Run, RunInUse

MANIFEST = "carry.json"
KINDS = ("progress", "done")  # the job's files beside a run that it reads to go on
NAME = re.compile(rf"({'|'.join(re.escape(m.name) for m in MODELS)})-seed[0-9]{{1,6}}")
PART = re.compile(r"[A-Za-z0-9_.-]{1,100}")
CHUNK = 1 << 20


REPO = Path(__file__).resolve().parent.parent


def default_carry() -> Path:
    return REPO / "benchmarks" / "carry"


def finished(entry: Entry) -> bool:
    """Whether the run's result and its tightness record are both in the results folder."""
    return entry.result.is_file() and entry.tightness.is_file()


def run_files(run: Run) -> list[str]:
    """The files of ``run`` a carry holds, relative, sorted: every regular file but the lock and
    the fall-back checkpoints (a symbolic link is refused)."""
    kept = set(run.kept().values())
    found = []
    for path in sorted(run.root.rglob("*")):
        if path.is_symlink():
            raise SpecError(str(path), "is a symbolic link; a carried run holds plain files only")
        if path.is_file() and path.name != LOCK and path not in kept:
            found.append(path.relative_to(run.root).as_posix())
    return found


def _copy(source: Path, target: Path, expected: str | None = None) -> str:
    """Copy ``source`` to ``target`` (a new file) in chunks; its SHA-256, which must be
    ``expected`` when given (else the copy is removed and SpecError raised)."""
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as f, open(target, "xb") as g:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            g.write(chunk)
    if expected is not None and digest.hexdigest() != expected:
        target.unlink()
        raise SpecError(str(source), "does not match its SHA-256 in carry.json; not restored")
    return digest.hexdigest()


def _replace(new: Path, target: Path) -> None:
    """Rename the folder ``new`` to ``target``, the old ``target`` (if any) deleted after."""
    aside = target.with_name(f".{target.name}.carry-old")
    shutil.rmtree(aside, ignore_errors=True)
    if target.exists():
        target.rename(aside)
    new.rename(target)
    shutil.rmtree(aside, ignore_errors=True)


def read_manifest(carry: Path) -> dict[str, Any]:
    """``carry.json``, every name and path in it checked against the layout; {} when absent."""
    try:
        data = json.loads((carry / MANIFEST).read_text())
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(str(carry / MANIFEST), f"is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SpecError(str(carry / MANIFEST), "must map run names to records")
    for name, record in data.items():
        where = f"{carry / MANIFEST}: {name!r}"
        if not NAME.fullmatch(name):
            raise SpecError(where, "is not a run of the published job (<model>-seed<s>)")
        if not (
            isinstance(record, dict)
            and isinstance(record.get("global_step"), int)
            and all(isinstance(record.get(k), dict) for k in ("files", "beside"))
        ):
            raise SpecError(where, "needs global_step, files and beside")
        for rel, digest in record["files"].items():
            parts = PurePosixPath(rel).parts
            inside = 1 <= len(parts) <= 3 and not {".", ".."} & set(parts)
            if not (inside and all(PART.fullmatch(p) for p in parts)) or parts[-1] == LOCK:
                raise SpecError(where, f"file {rel!r} is not a path inside a run")
            if not _sha(digest):
                raise SpecError(where, f"file {rel!r} has no SHA-256")
        for file, digest in record["beside"].items():
            if file not in {f"{name}.{kind}.json" for kind in KINDS} or not _sha(digest):
                raise SpecError(where, f"{file!r} is not one of the job's files beside it")
    return data


def _sha(digest: object) -> bool:
    return isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest) is not None


def unfinished(state: Path, results: Path) -> Iterator[Entry]:
    """Each run of ``state`` with a checkpoint whose result or tightness record is missing."""
    published = results / "published"
    for entry in entries(MODELS, all_seeds((), state, published), state, published):
        run = Run(entry.run_dir)
        if run.root.is_dir() and run.last.is_file() and not finished(entry):
            yield entry


def save(state: Path, carry: Path, results: Path) -> list[str]:
    """Carry every unfinished run of ``state`` (each under its lock) that ``carry`` does not hold
    at a later step; drop from ``carry`` the runs now finished, keep the others. One line per
    run."""
    old = read_manifest(carry)
    todo = list(unfinished(state, results))
    if not todo and not old:
        return ["nothing unfinished to carry"]
    for entry in todo:  # a run in use is refused before anything is written
        with Run(entry.run_dir).locked("benchmarks.carry save"):
            pass
    staging = carry / ".saving"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        return _save(todo, old, state, carry, results, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _save(
    todo: list[Entry], old: dict[str, Any], state: Path, carry: Path, results: Path, staging: Path
) -> list[str]:
    manifest: dict[str, Any] = {}
    lines = []
    for entry in todo:
        run = Run(entry.run_dir)
        with run.locked("benchmarks.carry save"):
            step = checkpoint_step(run.last)
            if entry.name in old and old[entry.name]["global_step"] > step:
                continue  # kept below: the carried copy went further than this state's
            files = {
                rel: _copy(run.root / rel, staging / entry.name / rel) for rel in run_files(run)
            }
        beside = {
            entry.job_file(kind).name: _copy(
                entry.job_file(kind), staging / entry.job_file(kind).name
            )
            for kind in KINDS
            if entry.job_file(kind).is_file()
        }
        saved = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        manifest[entry.name] = {
            "global_step": step,
            "saved": saved,
            "files": files,
            "beside": beside,
        }
        lines.append(f"{entry.label}: carried at step {step} ({len(files)} files)")
    for name in manifest:
        _replace(staging / name, carry / name)
    for name, record in old.items():
        if name not in manifest and not finished(_entry(name, state, results)):
            manifest[name] = record
            lines.append(f"{name}: kept as carried, at step {record['global_step']}")
            continue
        if name not in manifest:
            shutil.rmtree(carry / name, ignore_errors=True)
            lines.append(f"{name}: finished, dropped from the carry")
        for file in set(record["beside"]) - set(manifest.get(name, {}).get("beside", {})):
            (carry / file).unlink(missing_ok=True)
    for record in manifest.values():
        for file in record["beside"]:
            if (staging / file).is_file():
                (staging / file).replace(carry / file)
    write_text_atomic(carry / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return lines or ["nothing unfinished to carry"]


def restore_entry(entry: Entry, carry: Path) -> str | None:
    """Put the carried run of ``entry`` into its state folder when it is newer there; a line
    saying what was done, None when ``carry`` holds nothing of it."""
    record = read_manifest(carry).get(entry.name)
    if record is None:
        return None
    step, run = record["global_step"], Run(entry.run_dir)
    if finished(entry):
        return f"{entry.label}: finished; the carried copy is not needed"
    if run.root.is_symlink() or (run.root.exists() and run.is_run() is not None):
        return f"{entry.label}: {run.root} is not a pyro-vae run; left alone"
    with ExitStack() as hold:
        if run.root.exists():
            try:
                hold.enter_context(run.locked("benchmarks.carry restore"))
            except RunInUse as exc:
                return f"{entry.label}: left alone ({exc})"
            if run.last.is_file() and (there := checkpoint_step(run.last)) >= step:
                return f"{entry.label}: the state's run is at step {there} (carried: {step}); kept"
        new = entry.state / f".{entry.name}.carry-new"
        shutil.rmtree(new, ignore_errors=True)
        try:
            for rel, digest in record["files"].items():
                _copy(_plain(carry / entry.name / rel), new / rel, digest)
            for file, digest in record["beside"].items():
                _copy(_plain(carry / file), new / file, digest)
        except (SpecError, OSError):
            shutil.rmtree(new, ignore_errors=True)
            raise
        for file in record["beside"]:
            (new / file).replace(entry.state / file)
        for kind in KINDS:  # a job file the carried run lacks belonged to the replaced run
            if entry.job_file(kind).name not in record["beside"]:
                entry.job_file(kind).unlink(missing_ok=True)
        _replace(new, run.root)
    return f"{entry.label}: restored from {carry} at step {step}"


def _plain(path: Path) -> Path:
    if path.is_symlink() or not path.is_file():
        raise SpecError(str(path), "is not a plain file; the run is not restored")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.carry",
        description="Carry the published job's unfinished runs to another machine through the "
        "repository (save), or put them back into a state folder (restore).",
    )
    p.add_argument("command", choices=["save", "restore"])
    p.add_argument("--state", type=Path, help=f"the job's state folder (default {default_state()})")
    p.add_argument("--carry", type=Path, help=f"the carry folder (default {default_carry()})")
    p.add_argument(
        "--results", type=Path, help="folder of the records (default benchmarks/results)"
    )
    args = p.parse_args(argv)
    state, carry = args.state or default_state(), args.carry or default_carry()
    results = args.results or REPO / "benchmarks" / "results"
    try:
        if args.command == "save":
            lines = save(state, carry, results)
        else:
            lines = [
                line
                for name in read_manifest(carry)
                if (line := restore_entry(_entry(name, state, results), carry))
            ] or ["nothing carried"]
    except RunInUse as exc:
        p.exit(2, f"{exc} (make bench-carry stops the running jobs, then saves)\n")
    except SpecError as exc:
        p.exit(2, f"{exc}\n")
    print("\n".join(lines))
    return 0


def _entry(name: str, state: Path, results: Path) -> Entry:
    model, seed = name.rsplit("-seed", 1)
    by_name = {m.name: m for m in MODELS}
    return Entry(by_name[model], int(seed), state, results / "published")


if __name__ == "__main__":
    raise SystemExit(main())
