"""``pyro-vae sweep``: an experiment file names a set of ordinary runs; the sweep trains them all.

An experiment file (YAML; every key but ``base`` may be left out)::

    base: ../configs/digits.yaml        # the spec every run starts from, relative to this file
    set: {train.max_epochs: 30}         # dotted overrides for every run, as --set KEY=VALUE
    grid:                               # dotted keys to lists of values: their product
      prior.name: [standard_normal, vamp]
      latent_dim: [2, 8]
    cells:                              # a list of override maps; with a grid, each crosses it
      - {}                              # the base itself
      - {estimator.name: iwae, estimator.particles: 5}
    seeds: 3                            # a count n (seeds 0 … n−1) or a list [0, 7, 42]

Each run's spec is ``base`` + :data:`DEFAULTS` (``evaluate.figures=false``: the runs draw no
figures unless the experiment says so) + ``set`` + its cell's overrides + ``train.seed=<seed>``,
applied in that order as ``--set`` applies them (a value that is a mapping replaces that node). The seed is
``train.seed`` alone: the data split is drawn with ``data.seed`` (default 0, never touched by a
sweep), so the runs of a cell score the same test points and pair point by point across seeds
(:mod:`pyro_vae.aggregation`). Everything is checked before anything runs: unknown keys, bad types,
an empty grid or cell list, a repeated value, cell or seed, ``train.seed`` outside ``seeds``, a
key both in the grid and in ``set`` or a cell, and every cell's spec, built as the run would
build it; an error is one :class:`SpecError` naming the key (``grid.train.beta``,
``cells[2].prior.name``).

**Layout.** Run ``(cell, seed)`` is an ordinary run directory ``DIR/<cell>/seed-<seed>``
(``DIR/seed-<seed>`` when there is one cell). ``<cell>`` names the overrides in which the cells
differ, ``key=value`` joined by commas (``latent_dim=8,prior=vamp``): a key is the shortest
unambiguous tail of its dotted path, ``X.name`` reads ``X``; characters other than letters,
digits and ``._+-=,`` become ``_``; a name over 80 characters is cut and ends with a hash of the
cell's overrides, and names that would collide (ignoring case) get that hash too. Beside the runs:
``DIR/experiment.json``, the manifest (the experiment, and per run its cell, seed, path and
state), rewritten atomically, and ``DIR/.sweep/`` (locks; SLURM logs), which
:func:`pyro_vae.aggregation.find_runs` skips. ``DIR/.sweep/`` is made before anything else and
marks the folder as a sweep's: ``DIR`` must be new, empty or so marked, never a folder of the
user's own files.

**States** in the manifest: ``pending``; ``running`` (pid, host, start); ``finished`` (trained
and scored by this sweep, with its seconds); ``skipped`` (finished before this sweep began);
``stopped`` (a signal stopped it at a checkpoint); ``diverged`` (with the line of
:class:`~pyro_vae.stops.Diverged`; not retried: remove the run directory to start it afresh);
``failed`` (a user error, or an internal one with its crash log: retried by the next sweep);
``in use`` (another command holds the run's lock).

**Resuming.** The same command again skips finished runs, continues stopped ones from their
checkpoint and scores trained but unscored ones (:func:`pyro_vae.pipeline.train` does both), after
any kill. A run directory that holds a run of another spec (the experiment file was edited) is
left alone and reported failed, as is a directory that is not a run.

**Workers.** ``jobs=1`` runs every run in this process (torch, Pyro and Lightning are imported
once). ``jobs=N`` starts N processes ``pyro-vae sweep EXP --out DIR --worker``, each with
``cores // N`` torch threads; each walks the runs in order and takes the next one that is not
settled and whose claim, an ``flock`` in ``DIR/.sweep/claims/<run>/`` (:meth:`Run.lock`), no
other worker holds; a worker passing over a held claim does not wait for it. The claim is not the
run's own lock because :func:`pyro_vae.pipeline.train` takes that one itself, and two file
descriptors of one process exclude each other under ``flock``; the run's lock still keeps out any
other command. Ctrl-C (or SIGTERM, SIGUSR1) goes to each worker once: each run in training saves
a checkpoint, and the same command continues it. On several machines a scheduler shares the
work: ``--slurm`` writes an sbatch array script, one task per run (``--task I``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from pyro_vae.atomic import write_json_atomic, write_text_atomic
from pyro_vae.console import chatty, crash_log
from pyro_vae.registry import SpecError, choices_text, clip, did_you_mean, directory_argument, shown
from pyro_vae.rundir import LOCK, Run, RunInUse, flat
from pyro_vae.spec import MAX_YAML_BYTES, Spec, load_run_spec, load_spec, parse_yaml
from pyro_vae.stops import Diverged, Interrupted, signal_name

MANIFEST = "experiment.json"
SLURM_SCRIPT = "sweep.sbatch"
STATE_DIR = ".sweep"  # hidden: locks and scheduler logs, skipped by aggregate.find_runs
KEYS = ("base", "set", "grid", "cells", "seeds", "search")
SEED = "train.seed"
MAX_RUNS = 10_000
MAX_NAME = 80  # characters of a cell's directory name
#: A run's state once this sweep has dealt with it (a worker passes over it).
SETTLED = ("finished", "skipped", "diverged", "failed", "in use")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)  # as pyro_vae.engine's
#: Overrides before the experiment's own: a sweep's runs draw no figures (seconds a run; the
#: experiment's figure is aggregate's forest plot), unless ``set``, a cell or the grid says so.
DEFAULTS = ("evaluate.figures=false",)
#: Exit statuses, as pyro_vae.cli's: an internal error, a user error, a divergence.
EXIT_INTERNAL, EXIT_USER_ERROR, EXIT_DIVERGED = 1, 2, 3


# ---- the experiment file -------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One point of the experiment: its overrides (``(key, value)`` in the order applied), where
    they come from (``cells[1]``, ``grid``), and its directory name."""

    overrides: tuple[tuple[str, Any], ...]
    origin: str
    name: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.overrides)

    def strings(self) -> list[str]:
        return [override(k, v) for k, v in self.overrides]


@dataclass(frozen=True)
class PlannedRun:
    """Run ``index`` of an experiment: ``cell`` with ``seed`` in ``path`` (relative to DIR),
    trained from ``overrides`` (``set``, the cell's, the seed, as ``--set`` strings)."""

    index: int
    cell: Cell
    seed: int
    path: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Experiment:
    """An experiment file, validated (:func:`load_experiment`): ``base`` (an absolute path),
    ``common`` (its ``set:``), ``grid``, ``cell_maps`` (its ``cells:``), ``seeds``."""

    path: Path
    base: Path
    common: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    cell_maps: list[dict[str, Any]] = field(default_factory=list)
    seeds: tuple[int, ...] = (0,)
    space: dict[str, dict[str, Any]] = field(default_factory=dict)  # its search: (pyro_vae.search)

    def cells(self) -> list[Cell]:
        """Each listed cell (or the base alone) crossed with each grid point, in the order
        written (the grid's last key varying fastest), with their directory names."""
        listed = self.cell_maps or [{}]
        points = list(itertools.product(*self.grid.values())) if self.grid else [()]
        raw = []
        for i, cell in enumerate(listed):
            for point in points:
                items = (*cell.items(), *zip(self.grid, point))
                origin = " × ".join(
                    [f"cells[{i}]"] * bool(self.cell_maps) + ["grid"] * bool(self.grid)
                )
                raw.append(Cell(tuple(items), origin if items else "base"))
        names = cell_names([c.overrides for c in raw])
        return [dataclasses.replace(c, name=n) for c, n in zip(raw, names)]

    def runs(self, out: str | Path | None = None) -> list[PlannedRun]:
        """Every (cell, seed), seeds outermost (seed 0 of every cell, then seed 1, ...: a first
        replicate of everything comes first, and more seeds append runs): index, cell, seed,
        path under ``out`` (relative when ``out`` is None)."""
        cells = self.cells()
        runs = []
        for seed in self.seeds:
            for cell in cells:
                folder = f"{cell.name}/seed-{seed}" if cell.name else f"seed-{seed}"
                path = str(Path(out) / folder) if out is not None else folder
                runs.append(
                    PlannedRun(
                        len(runs),
                        cell,
                        seed,
                        path,
                        (*DEFAULTS, *self.set_strings(), *cell.strings(), f"{SEED}={seed}"),
                    )
                )
        return runs

    def set_strings(self) -> list[str]:
        return [override(k, v) for k, v in self.common.items()]

    def spec(self, run: PlannedRun) -> Spec:
        return load_spec(self.base, run.overrides)

    def to_dict(self) -> dict[str, Any]:
        """The file's content, ``base`` absolute: what the manifest records."""
        return {
            "experiment": str(self.path),
            "base": str(self.base),
            "set": self.common,
            "grid": self.grid,
            "cells": self.cell_maps,
            "seeds": list(self.seeds),
            **({"search": self.space} if self.space else {}),
        }


def override(key: str, value: Any) -> str:
    """``key=value`` for :func:`pyro_vae.spec.apply_overrides`, the value as flow YAML that parses
    back to itself (``1.0e-05``, ``'yes'``, ``[8, 8]``, ``{name: vamp}``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, allow_unicode=True)
    return f"{key}={text.removesuffix(chr(10)).removesuffix('...').strip()}"


def load_experiment(path: str | Path) -> Experiment:
    """Read and check an experiment file (see the module docstring); SpecError naming the key."""
    path = Path(path)
    if path.is_dir() or not path.is_file():
        raise SpecError(
            str(path),
            "is a directory; give an experiment file (YAML)"
            if path.is_dir()
            else "experiment file not found",
        )
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise SpecError(
                str(path),
                f"{path.stat().st_size} bytes; an experiment file holds at most {MAX_YAML_BYTES}",
            )
        raw = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), f"cannot read the experiment file: {exc}") from None
    return experiment_from(raw, path)


def experiment_from(raw: object, path: Path) -> Experiment:
    """Check the content ``raw`` of the experiment file ``path`` (which need not exist yet: a
    relative ``base`` is taken from its folder); SpecError naming the key."""
    if not isinstance(raw, Mapping):
        raise SpecError(
            str(path),
            "an experiment file is a mapping of base, set, grid, cells "
            f"and seeds; got {type(raw).__name__}",
        )
    for key in raw:
        if key not in KEYS:
            raise SpecError(
                str(key),
                f"unknown key of an experiment file; valid keys: "
                f"{choices_text(KEYS)}{did_you_mean(str(key), KEYS)}",
            )
    base = raw.get("base")
    if not isinstance(base, str) or not base.strip():
        raise SpecError(
            "base",
            "missing: the spec file every run starts from (relative to the experiment file)"
            if base is None
            else f"expected the path of a spec file, got {shown(base)}",
        )
    base_path = Path(os.path.normpath((path.parent / Path(base).expanduser()).absolute()))
    common = _overrides(raw.get("set"), "set")
    grid = _grid(raw.get("grid"))
    cell_maps = _cell_maps(raw.get("cells"))
    seeds = _seeds(raw.get("seeds", 1))
    space = _space(raw, common, seeds)
    _no_overlap(common, grid, cell_maps)
    count = max(1, len(cell_maps)) * _product([len(v) for v in grid.values()]) * len(seeds)
    if count > MAX_RUNS:
        raise SpecError(str(path), f"{count} runs; an experiment holds at most {MAX_RUNS}")
    experiment = Experiment(path.absolute(), base_path, common, grid, cell_maps, seeds, space)
    _check_specs(experiment)
    return experiment


def _space(
    raw: Mapping[str, Any], common: Mapping[str, Any], seeds: tuple[int, ...]
) -> dict[str, dict[str, Any]]:
    """The ``search:`` section (:func:`pyro_vae.search.parse_space`): with no grid or cells,
    one seed, no key also in ``set``."""
    if "search" not in raw:
        return {}
    from pyro_vae.search import parse_space

    space = parse_space(raw["search"])
    for key in ("grid", "cells"):
        if key in raw:
            raise SpecError(
                key,
                "does not combine with search: (a search draws its trials from "
                "the search: section alone; search the values instead, as "
                "{choices: [...]})",
            )
    if len(seeds) != 1:
        raise SpecError(
            "seeds",
            f"a search trains one seed per trial, got {len(seeds)} seeds; "
            "rerun the best trial's parameters as a sweep over seeds",
        )
    for key in space:
        for other in common:
            if _clash(key, other):
                raise SpecError(
                    f"search.{key}", f"set: also sets {other} for every run; keep it in one place"
                )
    return space


def _product(sizes: Sequence[int]) -> int:
    total = 1
    for size in sizes:
        total *= size
    return total


def _key(key: Any, where: str) -> str:
    if not isinstance(key, str) or not key.strip():
        raise SpecError(where, f"a key is a dotted spec key (train.max_epochs), got {shown(key)}")
    if "=" in key or not all(part.strip() for part in key.split(".")) or key != key.strip():
        raise SpecError(f"{where}.{key}", "is not a dotted spec key (like train.max_epochs)")
    if key == SEED:
        raise SpecError(
            f"{where}.{key}", "the seed of each run is set by seeds: (a count, or a list of seeds)"
        )
    return key


def _overrides(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SpecError(
            where,
            f"expected a mapping of dotted keys to values (train.max_epochs: 30), got {shown(raw)}",
        )
    return {_key(k, where): v for k, v in raw.items()}


def _grid(raw: Any) -> dict[str, list[Any]]:
    if raw is None:
        return {}
    grid = _overrides(raw, "grid")
    if not grid:
        raise SpecError("grid", "empty; give each key a list of values, or leave grid out")
    for key, values in grid.items():
        if not isinstance(values, list):
            raise SpecError(f"grid.{key}", f"expected a list of values, got {shown(values)}")
        if not values:
            raise SpecError(f"grid.{key}", "an empty list: the grid would hold no run")
        _no_repeats(values, lambda i, j: SpecError(f"grid.{key}", f"repeats {shown(values[j])}"))  # noqa: B023 (called at once)
    return grid


def _cell_maps(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise SpecError("cells", f"expected a list of override maps, got {shown(raw)}")
    if not raw:
        raise SpecError(
            "cells", "an empty list; give at least one map ({} is the base), or leave cells out"
        )
    cells = [_overrides({} if c is None else c, f"cells[{i}]") for i, c in enumerate(raw)]
    _no_repeats(cells, lambda i, j: SpecError(f"cells[{j}]", f"repeats cells[{i}]"))
    return cells


def _no_repeats(values: Sequence[Any], error: Callable[[int, int], SpecError]) -> None:
    seen: dict[str, int] = {}
    for j, value in enumerate(values):
        i = seen.setdefault(_canonical(value), j)
        if i != j:
            raise error(i, j)


def _seeds(raw: Any) -> tuple[int, ...]:
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 1:
            raise SpecError("seeds", f"a count of seeds must be >= 1, got {raw}")
        if raw > MAX_RUNS:
            raise SpecError("seeds", f"{raw} seeds; an experiment holds at most {MAX_RUNS} runs")
        return tuple(range(raw))
    if not isinstance(raw, list) or not raw:
        raise SpecError(
            "seeds",
            f"expected a count (seeds 0 … n−1) or a non-empty list of seeds, got {shown(raw)}",
        )
    for i, seed in enumerate(raw):
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise SpecError(f"seeds[{i}]", f"expected an integer >= 0, got {shown(seed)}")
    _no_repeats(raw, lambda i, j: SpecError("seeds", f"repeats seed {raw[j]}"))
    return tuple(raw)


def _clash(a: str, b: str) -> bool:
    """Whether two dotted keys set the same node (equal, or one inside the other)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _no_overlap(
    common: Mapping[str, Any], grid: Mapping[str, Any], cells: Sequence[Mapping[str, Any]]
) -> None:
    for key in grid:
        for other in common:
            if _clash(key, other):
                raise SpecError(
                    f"grid.{key}", f"set: also sets {other} for every run; keep it in one place"
                )
        for i, cell in enumerate(cells):
            for other in cell:
                if _clash(key, other):
                    raise SpecError(
                        f"cells[{i}].{other}",
                        f"also set by grid.{key}; a cell is "
                        "crossed with every grid point, so keep it in one place",
                    )


def _check_specs(experiment: Experiment) -> None:
    """Build the spec of every cell (with the first seed) as its runs will: a SpecError names the
    experiment key that caused it (``set.X``, ``grid.X``, ``cells[i].X``), else the cell."""
    try:
        load_spec(experiment.base)
    except SpecError as exc:
        raise SpecError("base", str(exc)) from None
    seed = experiment.seeds[0]
    sources = [("set", k, v) for k, v in experiment.common.items()]
    try:
        load_spec(experiment.base, [*experiment.set_strings(), f"{SEED}={seed}"])
    except SpecError as exc:
        raise _blamed(exc, sources, "set") from None
    for key, dist in experiment.space.items():
        from pyro_vae.search import SPLIT, candidates

        for value in candidates(dist):
            try:
                load_spec(
                    experiment.base,
                    [*experiment.set_strings(), override(key, value), f"{SEED}={seed}", SPLIT],
                )
            except SpecError as exc:
                raise SpecError(
                    f"search.{key}",
                    f"value {shown(value)}: {exc.message if exc.key == key else exc}",
                ) from None
    for cell in experiment.cells():
        try:
            load_spec(
                experiment.base, [*experiment.set_strings(), *cell.strings(), f"{SEED}={seed}"]
            )
        except SpecError as exc:
            origins = [(_origin(cell, k, experiment), k, v) for k, v in cell.overrides]
            what = f"{cell.origin} ({', '.join(cell.strings())})"
            raise _blamed(exc, [*sources, *origins], what) from None


def _origin(cell: Cell, key: str, experiment: Experiment) -> str:
    if key in experiment.grid:
        return "grid"
    return cell.origin.split(" ")[0]


def _blamed(exc: SpecError, sources: Sequence[tuple[str, str, Any]], fallback: str) -> SpecError:
    """``exc`` named by the override that caused it (the last one setting its key), else by
    ``fallback`` (a combination of keys, or the base)."""
    for origin, key, value in reversed(sources):
        if exc.key and _clash(exc.key, key):
            message = exc.message if exc.key == key else str(exc)
            if origin == "grid":
                message = f"value {shown(value)}: {message}"
            return SpecError(f"{origin}.{key}", message)
    return SpecError(fallback, str(exc))


# ---- directory names -----------------------------------------------------------------------------
def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _digest(overrides: Sequence[tuple[str, Any]]) -> str:
    return hashlib.sha256(_canonical([list(o) for o in overrides]).encode()).hexdigest()[:8]


def _label_parts(key: str) -> list[str]:
    parts = key.split(".")
    return parts[:-1] if len(parts) > 1 and parts[-1] == "name" else parts


def _label(key: str, keys: Sequence[str]) -> str:
    """The shortest tail of ``key``'s dotted path (``X.name`` read as ``X``) that no other of
    ``keys`` ends with."""
    mine = _label_parts(key)
    for n in range(1, len(mine) + 1):
        if all(_label_parts(k)[-n:] != mine[-n:] for k in keys if k != key):
            return ".".join(mine[-n:])
    return key


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "-".join(_text(v) for v in value) or "empty"
    if isinstance(value, Mapping):
        named = [_text(value["name"])] if "name" in value else []
        return (
            "_".join([*named, *(f"{k}-{_text(v)}" for k, v in value.items() if k != "name")])
            or "empty"
        )
    return str(value)


def _sanitized(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+=-]+", "_", text)


def cell_names(cells: Sequence[Sequence[tuple[str, Any]]]) -> list[str]:
    """A directory name per cell (see the module docstring): the overrides in which the cells
    differ, in the order their keys first appear, each key by the shortest tail that no other
    key of the cells ends with; "" for a lone cell. Distinct, even ignoring case."""
    values = [dict(c) for c in cells]
    keys = list(dict.fromkeys(k for c in cells for k, _ in c))
    differing = [k for k in keys if len({_canonical(v.get(k, "\0absent")) for v in values}) > 1]
    names = []
    for cell, overrides in zip(values, cells):
        parts = [f"{_label(k, keys)}={_text(cell[k])}" for k in differing if k in cell]
        name = ",".join(_sanitized(p) for p in parts) or ("base" if len(cells) > 1 else "")
        if len(name) > MAX_NAME:
            name = f"{name[: MAX_NAME - 10]}-{_digest(overrides)}"
        names.append(name)
    folded = [n.lower() for n in names]
    for i, name in enumerate(names):
        if folded.count(name.lower()) > 1:
            names[i] = f"{name[: MAX_NAME - 10]}-{_digest(cells[i])}"
    if len({n.lower() for n in names}) < len(names):  # two cells with equal digests: not seen
        raise SpecError("cells", "two cells get the same directory name; make them differ more")
    return names


# ---- the manifest --------------------------------------------------------------------------------
def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextmanager
def _manifest_lock(out: Path) -> Iterator[None]:
    """Hold ``DIR/.sweep``'s lock (an ``flock``, :meth:`Run.lock`), waiting for another writer
    of the manifest (milliseconds) for up to a minute."""
    folder = out / STATE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    lock, deadline = Run(folder), time.monotonic() + 60
    while True:
        try:
            lock.lock("sweep manifest")
            break
        except RunInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    try:
        yield
    finally:
        lock.unlock()


def read_manifest(out: str | Path) -> dict[str, Any]:
    """``DIR/experiment.json`` ({} where there is none or it cannot be read)."""
    try:
        value = json.loads((Path(out) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _entries(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    runs = manifest.get("runs")
    return (
        {r["path"]: r for r in runs if isinstance(r, dict) and isinstance(r.get("path"), str)}
        if isinstance(runs, list)
        else {}
    )


def _update(
    experiment: Experiment, out: Path, changes: Mapping[str, Mapping[str, Any]], reset: bool = False
) -> dict[str, Any]:
    """Rewrite the manifest under its lock: one entry per run of ``experiment`` (kept from the
    file where it has one), ``changes`` (path → fields) applied; ``attempts`` counts up where
    a change says ``"attempt": True``. Returns what was written."""
    with _manifest_lock(out):
        old = _entries(read_manifest(out))
        entries = []
        for run in experiment.runs():
            entry = {
                "index": run.index,
                "path": run.path,
                "cell": run.cell.as_dict(),
                "seed": run.seed,
                "overrides": list(run.overrides),
                "state": "pending",
                "message": None,
                "attempts": 0,
            }
            entry.update(
                {
                    k: v
                    for k, v in old.get(run.path, {}).items()
                    if k not in ("index", "cell", "seed", "overrides")
                }
            )
            change = dict(changes.get(run.path, {}))
            if change.pop("attempt", False):
                change["attempts"] = int(entry.get("attempts") or 0) + 1
            if reset and "attempts" not in change:
                change["attempts"] = 0
            entry.update(change)
            entries.append(entry)
        manifest = {
            "pyro_vae_experiment": 1,
            **experiment.to_dict(),
            "out": str(out.absolute()),
            "updated": _now(),
            "runs": entries,
        }
        write_json_atomic(out / MANIFEST, manifest)
    return manifest


# ---- one run -------------------------------------------------------------------------------------
def _inspect(run: Run, spec: Spec) -> tuple[str, str]:
    """What the sweep does with the run directory ``run`` of ``spec``: ``train`` (new, or
    continue or score it: :func:`pyro_vae.pipeline.train` decides), ``afresh`` (a run that saved
    no checkpoint: replace it), or a settled state and its message: ``skipped`` (finished and
    scored), ``diverged``, ``failed`` (not a run, or a run of another spec)."""
    root = run.root
    if not root.is_dir() or not any(p.name != LOCK for p in root.iterdir()):
        return "train", ""
    why = run.is_run()
    if why:
        return "failed", (
            f"{root} is not a pyro-vae run ({why}); the sweep leaves it alone: move it away"
        )
    if not run.last.is_file() and run.state() != "diverged":  # nothing trained: start it again
        return "afresh", ""
    try:
        saved = flat(load_run_spec(run.require_config()).to_dict())
    except SpecError as exc:
        return "failed", f"{root}: {exc}"
    now = flat(spec.to_dict())
    changed = [
        f"{k}: {shown(saved.get(k))} ≠ {shown(now.get(k))}"
        for k in sorted(saved.keys() | now.keys())
        if _canonical(saved.get(k)) != _canonical(now.get(k))
    ]
    if changed:
        return "failed", (
            f"{root} holds a run of another spec ({'; '.join(changed[:3])}"
            f"{' ...' if len(changed) > 3 else ''}); remove it, or sweep into "
            "another --out"
        )
    if run.state() == "diverged":
        return "diverged", (
            f"{root} diverged before; remove it to train it afresh (e.g. with a "
            "lower train.lr in the experiment)"
        )
    if run.state() == "finished" and not run.unscored(spec):
        return "skipped", ""
    return "train", ""


def _run_one(
    experiment: Experiment,
    out: Path,
    planned: PlannedRun,
    started: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Inspect run ``planned`` and train, continue or score it in this process (the caller holds
    its claim); the manifest records it running (then ``started()``), then its end. An
    :class:`Interrupted` is recorded (``stopped``) and raised again."""
    from pyro_vae import pipeline

    run, spec = pipeline.run_for(
        experiment.base, out / planned.path, planned.overrides, None, False
    )
    what, message = _inspect(run, spec)
    if what not in ("train", "afresh"):
        return _record(experiment, out, planned, state=what, message=message or None)
    _record(
        experiment,
        out,
        planned,
        state="running",
        message=None,
        pid=os.getpid(),
        host=socket.gethostname(),
        started=_now(),
        ended=None,
        seconds=None,
        attempt=True,
    )
    started()
    start = time.perf_counter()
    end: dict[str, Any]
    try:
        pipeline.train(experiment.base, run.root, planned.overrides, overwrite=what == "afresh")
        end = {"state": "finished", "message": None}
    except Diverged as exc:
        end = {"state": "diverged", "message": str(exc)}
    except RunInUse as exc:
        end = {"state": "in use", "message": str(exc)}
    except SpecError as exc:
        end = {"state": "failed", "message": str(exc)}
    except Interrupted as exc:
        _record(
            experiment,
            out,
            planned,
            state="stopped",
            message=str(exc),
            ended=_now(),
            seconds=round(time.perf_counter() - start, 3),
        )
        raise
    except Exception as exc:  # a bug: its traceback to a crash log, the other runs go on
        log = crash_log("pyro-vae sweep", [str(experiment.path), "--out", str(out)])
        where = f"traceback in {log}" if log else "no log could be written"
        bug = clip(" ".join(f"{type(exc).__name__}: {exc}".split()), 300)
        end = {"state": "failed", "internal": True, "message": f"internal error: {bug}; {where}"}
    return _record(
        experiment, out, planned, ended=_now(), seconds=round(time.perf_counter() - start, 3), **end
    )


def _record(
    experiment: Experiment, out: Path, planned: PlannedRun, **fields: Any
) -> dict[str, Any]:
    fields.setdefault("internal", False)
    manifest = _update(experiment, out, {planned.path: fields})
    return manifest["runs"][planned.index]


@contextmanager
def _stops_raise(during: str) -> Iterator[None]:
    """Inside the block a stop signal raises :class:`Interrupted` (training installs its own
    handlers, which checkpoint first, and restores these after); the old handlers after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum, None, during=during)

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextmanager
def _claim(out: Path, planned: PlannedRun) -> Iterator[bool]:
    """Hold run ``planned``'s claim inside the block (True), or pass (False) when another
    worker holds it."""
    folder = out / STATE_DIR / "claims" / planned.path
    folder.mkdir(parents=True, exist_ok=True)
    claim = Run(folder)
    try:
        claim.lock("sweep")
    except RunInUse:
        yield False
        return
    try:
        yield True
    finally:
        claim.unlock()


def _work(
    experiment: Experiment,
    out: Path,
    runs: Sequence[PlannedRun],
    changed: Callable[[], None] = lambda: None,
    orphan: bool = False,
) -> None:
    """A worker: each run in order that is not settled and whose claim is free, inspected and
    trained here; with ``orphan``, it stops taking runs once its parent process (the sweep that
    started it) has gone. ``changed()`` when a run starts and ends."""
    parent = os.getppid()
    for planned in runs:
        if orphan and os.getppid() != parent:
            return
        if _entries(read_manifest(out)).get(planned.path, {}).get("state") in SETTLED:
            continue
        with _claim(out, planned) as mine:
            if not mine:
                continue
            entry = _entries(read_manifest(out)).get(planned.path, {})
            if entry.get("state") in SETTLED:  # a worker settled it while we looked
                continue
            _run_one(experiment, out, planned, changed)
        changed()


# ---- the sweep -----------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """What :func:`sweep` did: the manifest's ``runs`` entries (or the one of ``task``), the
    signal that stopped it (``signum``), the SLURM ``script`` it wrote, problems of its
    workers (``notes``)."""

    out: Path
    runs: list[dict[str, Any]]
    signum: int | None = None
    script: Path | None = None
    task: int | None = None
    worker: bool = False
    notes: list[str] = field(default_factory=list)

    def count(self, *states: str) -> int:
        return sum(r.get("state") in states for r in self.runs)

    def lines(self) -> list[str]:
        """What ``pyro-vae sweep`` prints on stdout."""
        if self.worker:
            return []
        manifest = self.out / MANIFEST
        if self.script is not None:
            return [
                (
                    f"sweep: {self.script}: {len(self.runs)} runs, one SLURM array task each "
                    f"({self.count('skipped')} finished already); submit it with: sbatch "
                    f"{shlex.quote(str(self.script))}"
                ),
                f"sweep: manifest {manifest}",
            ]
        if self.task is not None:
            entry = self.runs[0]
            return [f"sweep: task {self.task}: {self.out / entry['path']}: {entry['state']}"]
        states = (
            "finished",
            "skipped",
            "stopped",
            "diverged",
            "failed",
            "in use",
            "running",
            "pending",
        )
        counts = ", ".join(f"{self.count(s)} {s}" for s in states if self.count(s))
        return [f"sweep: {len(self.runs)} runs in {self.out}: {counts}; manifest {manifest}"]

    def problems(self) -> list[str]:
        """One stderr line per run that did not finish, and per worker that failed (none for
        ``--slurm``, which runs nothing)."""
        if self.script is not None:
            return []
        out = list(self.notes)
        if self.signum is not None:
            stopped = self.count("stopped", "running")
            out.append(
                f"sweep interrupted ({signal_name(self.signum)}): {stopped} run"
                f"{'' if stopped == 1 else 's'} stopped, each kept at its last "
                "checkpoint; the same command continues"
            )
        for r in self.runs:
            state = r.get("state")
            if state in ("diverged", "failed", "in use"):
                out.append(f"error: {self.out / r['path']}: {state}: {r.get('message')}")
            elif state in ("pending", "running", "stopped") and self.signum is None:
                out.append(
                    f"error: {self.out / r['path']}: not finished ({state}); the same "
                    "command continues it"
                )
        return out

    def __repr__(self) -> str:
        return "\n".join(self.lines() + self.problems()) or f"SweepResult(out={str(self.out)!r})"

    def _repr_markdown_(self) -> str:
        """A notebook's view: what the command prints, its problems, and a row per run."""
        head = "  \n".join(self.lines() + self.problems())
        rows = [
            f"| {r['path']} | {r.get('seed', '')} | {r.get('state', '')} | "
            f"{'' if r.get('seconds') is None else format(r['seconds'], '.1f')} |"
            for r in self.runs
        ]
        return "\n".join([head, "", "| run | seed | state | seconds |", "|---|---|---|---|", *rows])

    @property
    def exit_code(self) -> int:
        if self.script is not None:
            return 0
        if self.signum is not None:
            return 128 + self.signum
        if self.count("failed") and any(r.get("internal") for r in self.runs):
            return EXIT_INTERNAL
        if self.count("failed", "in use", "pending", "running", "stopped"):
            return EXIT_USER_ERROR
        return EXIT_DIVERGED if self.count("diverged") else 0


def sweep(
    path: str | Path,
    out: str | Path | None = None,
    jobs: int = 1,
    threads: int | None = None,
    progress: bool = True,
    *,
    task: int | None = None,
    slurm: bool = False,
    worker: bool = False,
    search: str | None = None,
    trials: int | None = None,
    storage: str | None = None,
) -> Any:
    """Train every run of the experiment file ``path`` into ``out`` (default
    ``runs/<file stem>``; see the module docstring): in this process (``jobs=1``) or in ``jobs``
    worker processes with ``threads`` torch threads each (default ``cores // jobs``). ``task``:
    only run ``task`` (0-based, of :meth:`Experiment.runs`: a SLURM array task); ``slurm``:
    write ``DIR/sweep.sbatch`` and run nothing; ``worker``: be one of the workers. ``progress``:
    a line on stderr as runs end, where :func:`pyro_vae.console.chatty`. Everything is checked
    before anything runs (SpecError). ``search="optuna"``: the experiment's ``search:`` for
    ``trials`` trials in ``storage`` instead (:func:`pyro_vae.search.search`, a SearchResult)."""
    if search is not None:
        from pyro_vae.search import SEARCHERS
        from pyro_vae.search import search as optuna_search

        if search not in SEARCHERS:
            raise SpecError(
                "--search", f"unknown searcher {search!r}; valid: {choices_text(SEARCHERS)}"
            )
        if task is not None or slurm:
            raise SpecError(
                "--search",
                "runs its own workers (--jobs N, or the same command "
                "on several machines with one --storage); not --task or --slurm",
            )
        return optuna_search(path, out, trials, storage, jobs, threads, worker=worker)
    if trials is not None or storage is not None:
        raise SpecError(
            "--trials" if trials is not None else "--storage", "goes with --search optuna"
        )
    experiment = load_experiment(path)
    if experiment.space:
        raise SpecError(
            "search", f"{experiment.path} searches: run it with --search optuna --trials N"
        )
    out = Path(out) if out is not None else Path("runs") / experiment.path.stem
    runs = experiment.runs()
    _check_options(jobs, threads, task, len(runs), slurm, worker)
    _check_out(out)
    if threads is not None and (worker or task is not None or jobs == 1):
        _set_threads(threads)
    if worker:
        with _stops_raise("a sweep worker"):
            try:
                _work(experiment, out, runs, orphan=True)
            except Interrupted as exc:
                return SweepResult(out, [], signum=exc.signum, worker=True)
        return SweepResult(out, [], worker=True)
    if task is not None:
        return _task(experiment, out, runs[task])
    _reconcile(experiment, out, runs)
    if slurm:
        script = write_slurm(experiment, out, len(runs))
        return SweepResult(out, read_manifest(out)["runs"], script=script)
    report = _Progress(out, len(runs), jobs) if progress and chatty() else None
    if jobs == 1:
        signum = None
        with _stops_raise("the sweep"):
            try:
                _work(experiment, out, runs, report or (lambda: None))
            except Interrupted as exc:
                signum = exc.signum
        return SweepResult(out, read_manifest(out)["runs"], signum=signum)
    return _pool(experiment, out, runs, jobs, threads, report)


def _check_options(
    jobs: int, threads: int | None, task: int | None, total: int, slurm: bool, worker: bool
) -> None:
    if jobs < 1:
        raise SpecError("--jobs", f"must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise SpecError("--threads", f"must be >= 1, got {threads}")
    if sum([task is not None, slurm, worker]) > 1 or (jobs > 1 and (task is not None or slurm)):
        raise SpecError("sweep", "--task, --slurm and --jobs N go one at a time")
    if task is not None and not 0 <= task < total:
        raise SpecError(
            "--task", f"{task} is not a run of this experiment: its runs are 0 … {total - 1}"
        )


def _check_out(out: Path) -> None:
    """``out`` made ready for a sweep or a search: a new or empty folder, or one a sweep or
    search made, which holds ``DIR/.sweep/`` (made here, before anything else is written into
    it), so that a sweep never adds its runs to a folder of the user's own files."""
    if out.exists() and not out.is_dir():
        raise SpecError("--out", f"{out} exists and is not a directory")
    if Run(out).is_run() is None:
        raise SpecError(
            "--out",
            f"{out} is a run directory; a sweep's --out holds one run directory per cell and seed",
        )
    try:
        foreign = out.is_dir() and not (out / STATE_DIR).is_dir() and any(out.iterdir())
    except OSError as exc:
        raise SpecError("--out", f"cannot read {out}: {exc.strerror}") from None
    if foreign:
        raise SpecError(
            "--out",
            f"{out} is not empty and holds no {STATE_DIR}/, so no sweep made it; give a new or "
            "empty folder",
        )
    try:
        (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpecError("--out", f"cannot create {exc.filename or out}: {exc.strerror}") from None


#: Where :func:`experiment_file` writes an experiment given as a mapping.
GIVEN = "experiment.yaml"


def experiment_file(experiment: Mapping[str, Any], out: str | Path) -> Path:
    """An experiment given as a mapping (Python, a notebook), checked, then written as
    ``out/.sweep/`` :data:`GIVEN`, the file that the sweep, its workers and a rerun read; its
    ``base``, when relative, is taken from the working directory (a file's, from the file's
    folder)."""
    out = Path(out)
    raw = dict(experiment)
    base = raw.get("base")
    if not (isinstance(base, os.PathLike) or (isinstance(base, str) and base.strip())):
        raise SpecError(
            "base",
            "missing: the spec file every run starts from (relative to the working directory)"
            if base is None
            else f"expected the path of a spec file, got {shown(base)}",
        )
    raw["base"] = str(Path(os.fspath(base)).expanduser().absolute())
    try:
        text = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError as exc:
        raise SpecError(
            "experiment", f"holds a value YAML cannot write: {clip(str(exc), 200)}"
        ) from None
    if len(text.encode()) > MAX_YAML_BYTES:
        raise SpecError("experiment", f"an experiment holds at most {MAX_YAML_BYTES} bytes")
    path = out / STATE_DIR / GIVEN
    experiment_from(parse_yaml(text, str(path)), path)  # refused before the folder is touched
    _check_out(out)
    write_text_atomic(path, text)
    return path


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _reconcile(experiment: Experiment, out: Path, runs: Sequence[PlannedRun]) -> None:
    """At the start of a sweep: each run's state read from its directory (``skipped``,
    ``diverged``, ``failed`` settled; the rest ``pending``), so the manifest says what is left
    even after a kill."""
    from pyro_vae.pipeline import run_for

    old = _entries(read_manifest(out))
    changes: dict[str, dict[str, Any]] = {}
    for planned in runs:
        run, spec = run_for(experiment.base, out / planned.path, planned.overrides, None, False)
        state, message = _inspect(run, spec)
        if state in ("train", "afresh"):
            state = "stopped" if run.last.is_file() else "pending"
        if state == "diverged" and old.get(planned.path, {}).get("state") == "diverged":
            message = old[planned.path].get("message") or message
        changes[planned.path] = {"state": state, "message": message or None, "internal": False}
    _update(experiment, out, changes, reset=True)


def _task(experiment: Experiment, out: Path, planned: PlannedRun) -> SweepResult:
    """Run ``planned`` alone (a SLURM array task), in this process."""
    with _stops_raise(f"sweep task {planned.index}"):
        with _claim(out, planned) as mine:
            if not mine:
                entry = _record(
                    experiment,
                    out,
                    planned,
                    state="in use",
                    message="another worker or task of this sweep holds it",
                )
            else:
                try:
                    entry = _run_one(experiment, out, planned)
                except Interrupted as exc:
                    entry = _entries(read_manifest(out))[planned.path]
                    return SweepResult(out, [entry], signum=exc.signum, task=planned.index)
    return SweepResult(out, [entry], task=planned.index)


# ---- progress and workers ------------------------------------------------------------------------
class _Progress:
    """``sweep: 3/12 runs done, 2 running, about 4 min left`` on stderr when that changes; the
    time left from the mean time of the runs this sweep finished, shared by the workers."""

    def __init__(self, out: Path, total: int, jobs: int) -> None:
        self.out, self.total, self.jobs, self.last = out, total, jobs, ""

    def __call__(self) -> None:
        runs = list(_entries(read_manifest(self.out)).values())
        done = sum(r.get("state") in SETTLED for r in runs)
        running = sum(r.get("state") == "running" for r in runs)
        times = [
            r["seconds"]
            for r in runs
            if r.get("state") == "finished" and isinstance(r.get("seconds"), (int, float))
        ]
        line = f"sweep: {done}/{self.total} runs done, {running} running"
        left = self.total - done
        if times and left:
            line += (
                f", about {duration(sum(times) / len(times) * left / min(self.jobs, left))} left"
            )
        if line != self.last and (running or done == self.total):  # not between two runs
            self.last = line
            print(line, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """``40 s``, ``4 min``, ``2.5 h``: rounded, as a time left is known."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def cores() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class Workers:
    """What :func:`run_workers` saw: the workers' ``pids``, the stop signal that ended them
    (None) and a line for each worker that exited otherwise than expected."""

    pids: set[int]
    signum: int | None
    notes: list[str]


def run_workers(
    command: Sequence[str],
    count: int,
    threads: int,
    what: str,
    report: Callable[[], None] | None = None,
) -> Workers:
    """``count`` processes ``pyro-vae COMMAND --worker --threads THREADS``, each in a session
    of its own (a terminal's Ctrl-C reaches them once, from here): a stop signal here is passed
    to each; ``report()`` every second while they run; if this process ends abnormally, the
    workers are stopped with it."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    argv = [sys.executable, "-m", "pyro_vae.cli", *command, "--worker", "--threads", str(threads)]
    workers: list[subprocess.Popen[bytes]] = []
    tails: list[deque[str]] = []
    signals: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        signals.append(signum)
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signum)

    on_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS} if on_main else {}
    try:
        for _ in range(count):
            if signals:
                break
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            workers.append(proc)
            tails.append(_tail(proc))
        while any(p.poll() is None for p in workers):
            if report:
                report()
            for proc in workers:
                try:
                    proc.wait(timeout=1.0)
                    continue
                except subprocess.TimeoutExpired:
                    break
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        for proc in workers:  # this process is ending abnormally: take the workers with it
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait()
    signum = signals[0] if signals else None
    expected = (0,) if signum is None else (0, 128 + signum)
    notes = [
        f"error: {what} worker {proc.pid} exited with status {proc.returncode}: "
        f"{tail[-1] if tail else 'no output'}"
        for proc, tail in zip(workers, tails)
        if proc.returncode not in expected
    ]
    return Workers({p.pid for p in workers}, signum, notes)


def _pool(
    experiment: Experiment,
    out: Path,
    runs: Sequence[PlannedRun],
    jobs: int,
    threads: int | None,
    report: Callable[[], None] | None,
) -> SweepResult:
    """``jobs`` worker processes (as many as runs are left, at most) that share the runs by
    their claims (:func:`run_workers`); the result once all have ended."""
    left = [r for r in _entries(read_manifest(out)).values() if r.get("state") not in SETTLED]
    done = run_workers(
        ["sweep", str(experiment.path), "--out", str(out)],
        min(jobs, len(left)),
        threads or max(1, cores() // jobs),
        "sweep",
        report,
    )
    gone = {
        r["path"]: {
            "state": "stopped",
            "message": "its worker ended during the run; the same command continues it",
        }
        for r in _entries(read_manifest(out)).values()
        if r.get("state") == "running" and r.get("pid") in done.pids
    }
    manifest = _update(experiment, out, gone) if gone else read_manifest(out)
    if report:
        report()
    return SweepResult(out, manifest["runs"], signum=done.signum, notes=done.notes)


def _tail(proc: subprocess.Popen[bytes], keep: int = 5) -> deque[str]:
    """The last ``keep`` lines of ``proc``'s stderr, read by a thread until it closes."""
    lines: deque[str] = deque(maxlen=keep)

    def read() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            text = raw.decode(errors="replace").strip()
            if text:
                lines.append(text)

    threading.Thread(target=read, daemon=True).start()
    return lines


# ---- SLURM ---------------------------------------------------------------------------------------
def write_slurm(experiment: Experiment, out: Path, total: int) -> Path:
    """``DIR/sweep.sbatch``: a SLURM array of ``total`` tasks, task I running ``pyro-vae sweep
    EXP --out DIR --task I``. SIGUSR1 two minutes before the time limit makes the run save a
    checkpoint and exit 138, and the task requeues itself; a preempted task (SIGTERM) is
    requeued by SLURM (``--requeue``); the requeued task continues the run from its checkpoint."""
    logs = (out / STATE_DIR / "slurm").absolute()
    logs.mkdir(parents=True, exist_ok=True)
    exp, folder = shlex.quote(str(experiment.path)), shlex.quote(str(out.absolute()))
    output = f"#SBATCH --output={logs}/%A_%a.out\n" if not re.search(r"\s", str(logs)) else ""
    script = out / SLURM_SCRIPT
    text = (
        "#!/bin/bash\n"
        f"# pyro-vae sweep {experiment.path}: {total} runs, one array task each; written by\n"
        "# pyro-vae sweep --slurm. Submit it from the environment that has pyro-vae:\n"
        f"#   sbatch {shlex.quote(str(script.absolute()))}\n"
        "# Add what your cluster needs (--partition, --time, --cpus-per-task, --gres=gpu:1).\n"
        "# SIGUSR1 120 s before the time limit: the run saves a checkpoint and exits 138, and\n"
        "# the task requeues itself; a preempted task (SIGTERM) is requeued by SLURM. The\n"
        "# requeued task continues its run from that checkpoint; a finished run is skipped.\n"
        f"#SBATCH --job-name=sweep-{_sanitized(experiment.path.stem)}\n"
        f"#SBATCH --array=0-{total - 1}\n"
        "#SBATCH --ntasks=1\n"
        "#SBATCH --requeue\n"
        "#SBATCH --signal=USR1@120\n"
        f"{output}"
        f'srun pyro-vae sweep {exp} --out {folder} --task "$SLURM_ARRAY_TASK_ID"\n'
        "status=$?\n"
        'if [ $status -eq 138 ]; then scontrol requeue "$SLURM_JOB_ID"; fi  # SIGUSR1: again\n'
        "exit $status\n"
    )
    write_text_atomic(script, text)
    return script


# ---- the command line ------------------------------------------------------------------------
def cmd_sweep(args: argparse.Namespace) -> int:
    result = sweep(
        args.experiment,
        args.out,
        args.jobs,
        args.threads,
        progress=chatty(),
        task=args.task,
        slurm=args.slurm,
        worker=args.worker,
        search=args.search,
        trials=args.trials,
        storage=args.storage,
    )
    if result.lines():
        print("\n".join(result.lines()))
    for line in result.problems():
        print(f"pyro-vae: {line}", file=sys.stderr)
    return result.exit_code


def add_sweep_parser(sub: Any) -> argparse.ArgumentParser:
    """``pyro-vae sweep`` on an ``add_subparsers()`` object."""
    w = sub.add_parser(
        "sweep",
        help="train every run of an experiment file (spec x grid x "
        "seeds) into one folder; the same command resumes it",
    )
    w.add_argument("experiment", metavar="EXPERIMENT.yaml", help="see examples/experiments")
    w.add_argument(
        "--out",
        type=directory_argument,
        help="default runs/<experiment name>; a new or empty folder, or one a sweep made",
    )
    w.add_argument("--jobs", type=int, default=1, metavar="N", help="N worker processes")
    one = w.add_mutually_exclusive_group()
    one.add_argument("--task", type=int, metavar="I", help="run I alone ($SLURM_ARRAY_TASK_ID)")
    one.add_argument("--slurm", action="store_true", help="write DIR/sweep.sbatch, run nothing")
    one.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    w.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    w.add_argument(
        "--search",
        choices=["optuna"],
        help="search the experiment's search: "
        "section with Optuna's TPE, scored on the validation split (pip install "
        "'pyro-vae[search]')",
    )
    w.add_argument(
        "--trials",
        type=int,
        metavar="N",
        help="with --search: N trials in the study, over all its workers",
    )
    w.add_argument(
        "--storage",
        metavar="URL",
        help="with --search: an Optuna storage URL "
        "shared by several machines (default sqlite:///DIR/.sweep/optuna.db)",
    )
    w.set_defaults(func=cmd_sweep)
    return w
