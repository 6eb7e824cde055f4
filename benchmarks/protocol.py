"""The published protocol's models and seeds, and where each run's files lie: the names that
:mod:`benchmarks.published` (which trains and scores the runs), :mod:`benchmarks.weights` and
:mod:`benchmarks.carry` share, without torch or Lightning::

    STATE/<model>-seed<s>/                  the run directory (:class:`pyro_vae.rundir.Run`)
    STATE/<model>-seed<s>.<kind>.json       the job's files beside it: progress, done, peek
    RESULTS/<model>-seed<s>.json            the result record (RESULTS: ``<results>/published``)
    RESULTS/<model>-seed<s>.tightness.json  its AIS tightness record (:mod:`benchmarks.tightness`)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyro_vae.atomic import write_text_atomic
from pyro_vae.cache import cache_dir
from pyro_vae.rundir import Run

KEY = "published"  # the section key, the results folder and the state folder's suffix
#: the job's files beside each run directory, ``<model>-seed<s>.<kind>.json``
PROGRESS, DONE, PEEK = "progress", "done", "peek"
TIGHTNESS = ".tightness.json"  # the suffix of a result's tightness record


@dataclass(frozen=True)
class Model:
    name: str  # run directory and result file stem
    label: str
    preset: str  # under examples/configs
    extra: tuple[str, ...] = ()
    published: float | None = None


MODELS = (
    Model("vae", "VAE", "published/fashion-mnist-vae.yaml", published=-228.70),
    Model("vamp", "VampPrior", "published/fashion-mnist-vamp.yaml", published=-227.35),
    Model("hvae", "HVAE (2 layers)", "published/fashion-mnist-hvae.yaml"),
    Model(
        "iwae-dreg",
        "IWAE k=5, DReG",
        "published/fashion-mnist-vae.yaml",
        ("estimator.name=dreg", "estimator.particles=5"),
    ),
)


def default_state() -> Path:
    """The state folder when ``--state`` is not given."""
    return cache_dir() / f"bench-{KEY}"


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON file ``path``; None when there is none."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Entry:
    """One model trained from one seed: its run directory in the state folder, the job's files
    beside it, and its result record in the results folder."""

    model: Model
    seed: int
    state: Path
    results: Path  # <results>/published

    @property
    def name(self) -> str:
        return f"{self.model.name}-seed{self.seed}"

    @property
    def label(self) -> str:
        return f"{self.model.label} (seed {self.seed})"

    @property
    def run_dir(self) -> Path:
        return self.state / self.name

    @property
    def result(self) -> Path:
        return self.results / f"{self.name}.json"

    @property
    def on_disk(self) -> bool:
        """Whether the run's best checkpoint, which its row was scored with, is still there."""
        return Run(self.run_dir).checkpoint("best").is_file()

    @property
    def tightness(self) -> Path:
        """The result's AIS tightness record, beside it (:mod:`benchmarks.tightness`)."""
        return self.result.with_suffix(TIGHTNESS)

    def job_file(self, kind: str) -> Path:
        """The job's file ``kind`` about this run: ``STATE/<model>-seed<s>.<kind>.json``."""
        return self.state / f"{self.name}.{kind}.json"

    def read(self, kind: str) -> dict[str, Any] | None:
        """The job's file ``kind``, else the one an earlier version kept inside the run directory;
        None when neither exists."""
        found = read_json(self.job_file(kind))
        return found if found is not None else read_json(self.run_dir / f"{kind}.json")

    def write(self, kind: str, record: dict[str, Any]) -> None:
        write_text_atomic(self.job_file(kind), json.dumps(record, indent=1) + "\n")


def entries(
    models: Sequence[Model], seeds: Sequence[int], state: Path, results: Path
) -> list[Entry]:
    """Every (model, seed), seeds innermost."""
    return [Entry(model, seed, state, results) for model in models for seed in seeds]


def all_seeds(seeds: tuple[int, ...], state: Path, results: Path) -> tuple[int, ...]:
    """``seeds`` and every seed a run directory in ``state`` or a record in ``results`` has."""
    found = set(seeds)
    for path in [*state.glob("*-seed*"), *results.glob("*-seed*.json")]:
        tail = path.name.split("-seed")[-1].split(".")[0]
        if tail.isdigit() and any(path.name.startswith(f"{m.name}-seed") for m in MODELS):
            found.add(int(tail))
    return tuple(sorted(found))
