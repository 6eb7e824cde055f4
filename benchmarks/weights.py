"""The published table's weights, shipped in the repository and scored again by ``pyro-vae
evaluate`` (issue #31, item 4).

Training a row of section 3 takes hours (the table, about 18 CPU-hours); its weights take a few
MB. Two commands::

    python -m benchmarks.weights export     [--state STATE] [--results RESULTS]
    python -m benchmarks.weights reproduce  [--limit N] [--num-samples K] [--work DIR] [--toy]
    make reproduce-table                    (reproduce; LIMIT=N for the first N test images)

**export** takes each (model, seed) of :mod:`benchmarks.published`'s state folder whose training
ended (its ``done.json``) and that is scored (its result record and ``.log-px.npy``), reads the
checkpoint it was scored with (``Run.evaluated_checkpoint``: ``best.ckpt``, the best validation
ELBO's) without writing anything in the state folder, and writes
``<results>/published/<model>-seed<s>.weights.pt``, a torch file that
``torch.load(weights_only=True)`` reads (tensors, numbers, strings, lists and dicts only)::

    {"state_dict": {"vae.<name>": float32 tensor, ...},   the VAE's weights, nothing else
     "spec": {dotted key: value},                         the resolved spec it was trained from
     "data_sha256": "...",                                the digest of the data splits
     "model": "vae", "seed": 1,
     "epoch": 584,                                        1-based, the epoch these weights end
     "global_step": 292000, "source": "best.ckpt"}

and records it in ``<results>/published/weights.json`` (the manifest): per file its SHA-256,
bytes, model, seed, epoch, global step, the checkpoint it came from and the row's result record.
The same run exported again writes the same bytes and leaves both files as they are.

**reproduce** takes each file in the manifest: a file whose SHA-256 is not the manifest's is
refused with one line naming it (nothing of it is read); one that weights-only loading refuses
(a pickle payload) likewise. The spec is built from the model's preset with the row's seed
(``benchmarks.published.overrides``, as the job trained it) and must equal the file's own spec
in every key a checkpoint fixes; a run directory ``<work>/<model>-seed<s>`` (default in the
cache folder, outside the work tree) is made from it through :class:`pyro_vae.rundir.Run`: its
config.yaml, the checkpoint (the weights with the ``pyro_vae`` record of
:func:`pyro_vae.checkpoints.spec_record`, so that ``pyro-vae evaluate`` checks the data on this
machine against the digest the weights were trained on) and the marker. Then ``pyro-vae evaluate
RUN --num-samples K [--limit N]`` scores it (K: the row's, 5000), in this process.

Judging a row: the reproduced and the committed per-image estimates log p̂(x_i) are two IS
estimates of the same model on the same images with different random draws, so with

    d_i = log p̂_reproduced(x_i) − log p̂_committed(x_i),   i = 1 … n (the images scored)

    difference = mean_i d_i,    s.e. = std_i(d_i) / √n

(std with n − 1) the difference is zero up to the Monte Carlo noise of both estimates, which
d_i holds (the spread of log p(x) over images cancels in the pair). A row is reproduced when
|difference| ≤ :data:`Z` s.e. (4: a false alarm 6·10⁻⁵ of the time). Only at the row's K: IS is
biased low by about Var(w)/(2K·p²), so with another ``--num-samples`` the difference is shown
but not judged.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.cli import COUNT, SEED, THREADS
from benchmarks.common import REPO, Options, spec_from
from benchmarks.protocol import DONE, KEY, MODELS, Entry, Model, default_state
from benchmarks.published import WEIGHTS, overrides, points_path, read_points
from pyro_vae.atomic import write_atomic, write_text_atomic
from pyro_vae.cache import cache_dir
from pyro_vae.checkpoints import RECORD, changed_keys, flat, read_checkpoint, spec_record
from pyro_vae.registry import SpecError
from pyro_vae.rundir import Run

MANIFEST = WEIGHTS
SUFFIX = ".weights.pt"
PREFIX = "vae."  # the VAE's weights in a pyro-vae checkpoint's state_dict
Z = 4.0  # a row is reproduced when |mean d_i| ≤ Z · s.e. (module docstring)
FORMAT = (
    "torch.save of {state_dict: {vae.<name>: float32 tensor}, spec: the flattened "
    "resolved spec, data_sha256, model, seed, epoch (1-based), global_step, source}; "
    "read with torch.load(weights_only=True); python -m benchmarks.weights reproduce "
    "scores it with pyro-vae evaluate"
)


def default_results() -> Path:
    return REPO / "benchmarks" / "results"


def default_work() -> Path:
    """Where reproduce makes its run directories: the cache folder, outside the work tree."""
    return cache_dir() / "published-weights"


def weights_name(model: str, seed: int) -> str:
    return f"{model}-seed{seed}{SUFFIX}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest(folder: Path) -> dict[str, Any]:
    """``<folder>/weights.json`` (folder: ``<results>/published``); an empty one when absent."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return {"format": FORMAT, "files": {}}
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise SpecError(str(folder / MANIFEST), "is not a weights manifest (no 'files' object)")
    return manifest


# ---- export ------------------------------------------------------------------------------------


def finished_entries(state: Path, results: Path) -> list[Entry]:
    """Every (model, seed) with a run directory in ``state``, in :data:`MODELS` order then by
    seed."""
    found = []
    for model in MODELS:
        seeds = (
            re.fullmatch(rf"{re.escape(model.name)}-seed(\d+)", p.name)
            for p in state.glob(f"{model.name}-seed*")
            if p.is_dir()
        )
        found += [
            Entry(model, int(m.group(1)), state, results)
            for m in sorted(seeds, key=lambda m: int(m.group(1)))
            if m
        ]
    return found


def weights_payload(entry: Entry, record: dict[str, Any]) -> dict[str, Any]:
    """What the entry's weights file holds, read from the checkpoint its result was scored with;
    SpecError when that checkpoint is not the record's (another name, or an epoch other than the
    best of the record's validation curve)."""
    run = Run(entry.run_dir)
    source = run.evaluated_checkpoint(run.spec)
    if source.name != record["checkpoint"]:
        raise SpecError(
            str(source),
            f"the result {entry.result} was scored with "
            f"{record['checkpoint']}, not this checkpoint",
        )
    checkpoint = read_checkpoint(source)
    saved = checkpoint.get(RECORD)
    state = checkpoint.get("state_dict")
    if not isinstance(saved, dict) or not isinstance(state, dict):
        raise SpecError(str(source), f"holds no state_dict or no {RECORD!r} record")
    epoch = int(checkpoint["epoch"]) + 1
    curve = record.get("curve") or []
    if curve:  # the weights are those of the curve's best epoch, as the record says
        best = max(curve, key=lambda point: point[1])
        if int(best[0]) != epoch:
            raise SpecError(
                str(source),
                f"holds epoch {epoch}, but the best validation ELBO of "
                f"{entry.result} is at epoch {int(best[0])}",
            )
    weights = {
        k: (v.float() if v.is_floating_point() else v).detach().clone().contiguous()
        for k, v in state.items()
        if k.startswith(PREFIX)
    }
    return {
        "state_dict": weights,
        "spec": saved["spec"],
        "data_sha256": saved["data_sha256"],
        "model": entry.model.name,
        "seed": entry.seed,
        "epoch": epoch,
        "global_step": int(checkpoint["global_step"]),
        "source": source.name,
    }


def export(state: Path, results: Path) -> list[str]:
    """Write the weights file of each finished and scored run in ``state`` and the manifest
    (module docstring); unchanged files are left as they are. The lines said."""
    folder = results / KEY
    manifest = read_manifest(folder)
    lines = []
    for entry in finished_entries(state, folder):
        record = _read_json(entry.result)
        if entry.read(DONE) is None or record is None or not points_path(entry.result).is_file():
            lines.append(f"{entry.label}: not finished and scored yet: nothing exported")
            continue
        try:
            payload = weights_payload(entry, record)
        except (SpecError, FileNotFoundError) as exc:
            lines.append(f"{entry.label}: not exported: {exc}")
            continue
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data, path = buffer.getvalue(), folder / weights_name(entry.model.name, entry.seed)
        same = path.is_file() and path.read_bytes() == data
        if not same:
            write_atomic(path, lambda f, data=data: f.write(data))
        manifest["files"][path.name] = {
            "model": entry.model.name,
            "seed": entry.seed,
            "sha256": sha256(data),
            "bytes": len(data),
            "epoch": payload["epoch"],
            "global_step": payload["global_step"],
            "checkpoint": payload["source"],
            "result": entry.result.name,
            "log_px": record["log_px"],
            "test_points": record["test_points"],
            "num_samples": record["num_samples"],
        }
        lines.append(
            f"{entry.label}: {'unchanged' if same else 'wrote'} {_shown(path)} "
            f"({len(data) / 1e6:.2f} MB, epoch {payload['epoch']}, "
            f"{payload['source']}, SHA-256 {sha256(data)})"
        )
    manifest["format"] = FORMAT
    manifest["files"] = dict(sorted(manifest["files"].items()))
    text = json.dumps(manifest, indent=1) + "\n"
    target = folder / MANIFEST
    if manifest["files"] and (not target.is_file() or target.read_text() != text):
        write_text_atomic(target, text)
        lines.append(f"manifest: {_shown(target)}")
    return lines


# ---- reproduce ---------------------------------------------------------------------------------


class Refused(Exception):
    """A shipped file that is not used: the message is the one line that says why."""


@dataclass
class Row:
    model: Model
    seed: int
    record: dict[str, Any]
    points: int
    num_samples: int
    committed: float  # mean of the committed per-image scores over the same images
    reproduced: float
    difference: float
    stderr: float
    seconds: float

    @property
    def judged(self) -> bool:
        return self.num_samples == self.record["num_samples"]

    @property
    def within(self) -> bool:
        return abs(self.difference) <= Z * self.stderr

    def line(self) -> str:
        z = self.difference / self.stderr if self.stderr > 0 else 0.0
        verdict = (
            ("reproduced" if self.within else "NOT reproduced")
            if self.judged
            else f"not judged (K = {self.num_samples}, the row's is "
            f"{self.record['num_samples']}: IS bias differs)"
        )
        return (
            f"{self.model.label} (seed {self.seed}): the table's row {self.record['log_px']:.2f} ± "
            f"{self.record['log_px_sem']:.2f} on {self.record['test_points']} images; on "
            f"the {self.points} scored, K = {self.num_samples}: committed "
            f"{self.committed:.3f}, reproduced {self.reproduced:.3f}, difference "
            f"{self.difference:+.3f} ± {self.stderr:.3f} (z = {z:+.2f}; within {Z:g} s.e.: "
            f"{'yes' if self.within else 'no'}): {verdict}; {self.seconds:.0f} s"
        )


def paired(reproduced: np.ndarray, committed: np.ndarray) -> tuple[float, float]:
    """(mean d_i, std(d_i)/√n) of d_i = reproduced_i − committed_i (module docstring)."""
    d = np.asarray(reproduced, np.float64) - np.asarray(committed, np.float64)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.inf


def checked_payload(path: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """The shipped file read weights-only, after its SHA-256 and size matched the manifest's;
    Refused otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise Refused(f"{path}: refused: cannot read it ({exc.strerror or exc})") from None
    digest = sha256(data)
    if digest != entry.get("sha256") or len(data) != entry.get("bytes"):
        raise Refused(
            f"{path}: refused: its SHA-256 {digest} ({len(data)} bytes) is not the "
            f"manifest's {entry.get('sha256')} ({entry.get('bytes')} bytes): the file "
            "was changed or damaged"
        )
    try:
        payload = read_checkpoint(path)
    except SpecError as exc:
        raise Refused(f"{path}: refused: {exc.message}") from None
    state = payload.get("state_dict")
    if (
        not isinstance(state, dict)
        or not state
        or not all(k.startswith(PREFIX) and isinstance(v, torch.Tensor) for k, v in state.items())
        or not isinstance(payload.get("spec"), dict)
        or not isinstance(payload.get("data_sha256"), str)
    ):
        raise Refused(
            f"{path}: refused: not a weights file (it needs a state_dict of "
            f"{PREFIX}* tensors, a spec and a data_sha256)"
        )
    if (payload.get("model"), payload.get("seed")) != (entry["model"], entry["seed"]):
        raise Refused(
            f"{path}: refused: it holds {payload.get('model')} seed "
            f"{payload.get('seed')}, the manifest says {entry['model']} seed "
            f"{entry['seed']}"
        )
    return payload


def make_run(root: Path, model: Model, seed: int, payload: dict[str, Any], toy: bool) -> Run:
    """A run directory at ``root`` (replacing the one an earlier reproduce made) from the
    model's preset with ``seed`` and the shipped weights (module docstring)."""
    spec = spec_from(model.preset, overrides(model, seed, Options(toy=toy), None))
    changed = changed_keys(payload["spec"], flat(spec.to_dict()))
    if changed:
        shown = ", ".join(f"{k} ({payload['spec'][k]!r} in the file)" for k in changed[:4])
        raise Refused(
            f"{model.label} (seed {seed}): refused: the weights were trained from "
            f"another spec than {model.preset} with seed {seed}{' (--toy)' * toy}: "
            f"{shown}"
        )
    name = "best" if spec.train.early_stopping_patience else "last"  # the one evaluate scores
    checkpoint = {
        "state_dict": payload["state_dict"],
        "epoch": int(payload["epoch"]) - 1,
        "global_step": int(payload["global_step"]),
        RECORD: spec_record(spec, payload["data_sha256"]),
    }
    run = Run(root)
    run.start(overwrite=True, command="benchmarks.weights reproduce")
    try:
        run.write_config(spec)
        run.write(run.checkpoint(name), lambda f: torch.save(checkpoint, f))
        run.mark("finished")
    finally:
        run.unlock()
    return run


def reproduce_one(
    path: Path,
    entry: dict[str, Any],
    results: Path,
    work: Path,
    limit: int | None,
    num_samples: int | None,
    toy: bool,
    accelerator: str | None,
) -> Row:
    """Score one shipped file again with ``pyro-vae evaluate``; Refused with its one line."""
    from pyro_vae.cli import main as pyro_vae

    model = next((m for m in MODELS if m.name == entry.get("model")), None)
    if model is None:
        raise Refused(
            f"{path}: refused: the manifest names an unknown model {entry.get('model')!r}"
        )
    seed = int(entry["seed"])
    payload = checked_payload(path, entry)
    result = results / entry["result"]
    record, committed = _read_json(result), read_points(result)
    if record is None or committed is None:
        raise Refused(
            f"{path}: its row's result {result} or per-image scores "
            f"{points_path(result).name} are missing"
        )
    run = make_run(work / f"{model.name}-seed{seed}", model, seed, payload, toy)
    k = num_samples or int(record["num_samples"])
    argv = ["evaluate", str(run.root), "--num-samples", str(k)]
    argv += ["--limit", str(limit)] if limit else []
    argv += ["--accelerator", accelerator] if accelerator else []
    print(f"{model.label} (seed {seed}): pyro-vae {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    if pyro_vae(argv) != 0:
        raise Refused(f"{model.label} (seed {seed}): pyro-vae evaluate failed (above)")
    seconds = time.perf_counter() - start
    mine = run.evaluation("test").points.log_px.double().numpy()
    theirs = committed[: len(mine)]
    difference, stderr = paired(mine, theirs)
    return Row(
        model,
        seed,
        record,
        len(mine),
        k,
        float(theirs.mean()),
        float(mine.mean()),
        difference,
        stderr,
        seconds,
    )


def reproduce(
    results: Path,
    work: Path,
    limit: int | None,
    num_samples: int | None,
    toy: bool,
    models: Sequence[str] | None,
    seeds: Sequence[int] | None,
    accelerator: str | None = None,
) -> int:
    """Every shipped file (of ``models`` and ``seeds`` when given) scored again; 0 when each row
    is reproduced, 1 when one is refused or not reproduced."""
    folder = results / KEY
    files = read_manifest(folder)["files"]
    chosen = {
        name: entry
        for name, entry in files.items()
        if (not models or entry.get("model") in models)
        and (not seeds or entry.get("seed") in seeds)
    }
    if not chosen:
        print(
            f"no shipped weights in {folder / MANIFEST}"
            f"{' for the models and seeds asked' if files else ''}",
            file=sys.stderr,
        )
        return 1
    rows, failed = [], 0
    for name, entry in chosen.items():
        try:
            rows.append(
                reproduce_one(
                    folder / name, entry, folder, work, limit, num_samples, toy, accelerator
                )
            )
        except Refused as exc:
            print(exc, file=sys.stderr, flush=True)
            failed += 1
        except SpecError as exc:  # the work folder, the data: pyro-vae's own one-line errors
            print(f"{folder / name}: {exc}", file=sys.stderr, flush=True)
            failed += 1
    print()
    for row in rows:
        print(row.line())
    return 1 if failed or any(row.judged and not row.within for row in rows) else 0


# ---- command line ------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.weights",
        description="The published table's weights: export them from the finished runs, or "
        "score the shipped ones again with pyro-vae evaluate.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser(
        "export",
        help="write <results>/published/<model>-seed<s>.weights.pt "
        "and weights.json from each finished and scored run",
    )
    e.add_argument(
        "--state", type=Path, help=f"the job's state folder (default {default_state()}); only read"
    )
    r = sub.add_parser(
        "reproduce",
        help="score each shipped weights file again with "
        "pyro-vae evaluate and compare with its row",
    )
    r.add_argument(
        "--limit",
        type=COUNT,
        metavar="N",
        help="the first N test images only (default: all, as the row)",
    )
    r.add_argument(
        "--num-samples",
        type=COUNT,
        metavar="K",
        help="IS samples per image (default: the row's; another K is not judged)",
    )
    r.add_argument(
        "--work", type=Path, help=f"where the run directories are made (default {default_work()})"
    )
    r.add_argument("--models", help="comma-separated model names (default: every shipped one)")
    r.add_argument("--seeds", type=SEED, nargs="+", help="default: every shipped one")
    r.add_argument(
        "--toy",
        action="store_true",
        help="the weights were trained by python -m benchmarks.published --toy (tests)",
    )
    r.add_argument("--threads", type=THREADS, default=2, help="torch CPU threads (default 2)")
    r.add_argument(
        "--accelerator",
        choices=["auto", "cpu", "gpu"],
        help="passed to pyro-vae evaluate (default: the run's, cpu)",
    )
    for q in (e, r):
        q.add_argument(
            "--results",
            type=Path,
            help="folder of the records (default "
            "benchmarks/results; the files are in its published/)",
        )
    args = p.parse_args(argv)
    results = args.results or default_results()
    if args.command == "export":
        for line in export(args.state or default_state(), results):
            print(line)
        return 0
    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    return reproduce(
        results,
        args.work or default_work(),
        args.limit,
        args.num_samples,
        args.toy,
        models,
        args.seeds,
        args.accelerator,
    )


if __name__ == "__main__":
    sys.exit(main())
