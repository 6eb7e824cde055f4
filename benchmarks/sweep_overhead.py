"""The fixed cost of a run (#27, item 6): its wall time less training and evaluation, in one sweep
worker (the runs share the process: Python, torch, Pyro and Lightning are imported once) against
one ``pyro-vae train`` process per run.

    python -m benchmarks.sweep_overhead [--runs 4] [--threads 1]

Both ways train the same tiny digits runs (64 training items, one epoch of 2 steps, an 8-unit
network, K = 4 importance samples), so that what is left is the fixed cost. Each way runs in a
fresh process whose functions are wrapped with timers: ``Trainer.fit`` (training), the
importance-sampled evaluation (:func:`pyro_vae.scoring.evaluate_run`), the writing of scores and
figures (:func:`pyro_vae.pipeline.write_scores`) and, in the sweep, each whole run
(:func:`pyro_vae.pipeline.train`) and the sweep's bookkeeping around it (the manifest, the
claim, the check of the run directory). Per run::

    fixed = wall − fit − evaluation

with ``wall`` a run's :func:`pyro_vae.pipeline.train` call in the worker, and the whole process
(start-up and imports included) for a CLI call. The worker's first run pays what is done once
(the timers import torch, Pyro and Lightning before it); the table gives it apart from the runs
after it, and the mean over all runs of the worker process's wall time (start-up and imports
included) less their training and evaluation. Prints the table; writes nothing
else (the runs go to a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.cli import THREADS, integer
from benchmarks.common import Options, Section
from benchmarks.common import table as plain_table

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "examples" / "configs" / "digits.yaml"
TINY = {
    "latent_dim": 2,
    "encoder.hidden": [8],
    "decoder.hidden": [8],
    "train.batch_size": 32,
    "train.progress": False,
    "data.limit": 64,
    "train.max_epochs": 1,
    "evaluate.num_samples": 4,
}
TIMINGS = "SWEEP_OVERHEAD_TIMINGS"  # where a probe process writes its timings (JSON)
TARGET_S = 1.0  # the target for the fixed cost of a run in a sweep


# ---- inside a probe process ----------------------------------------------------------------------
def instrument() -> list[tuple[str, float]]:
    """Wrap the functions named in the module docstring with timers; returns the list that the
    calls append ``(name, seconds)`` to, dumped to $SWEEP_OVERHEAD_TIMINGS at exit."""
    import atexit

    import lightning.pytorch as pl

    import pyro_vae.experiment
    import pyro_vae.pipeline
    import pyro_vae.scoring

    calls: list[tuple[str, float]] = []

    def timed(owner: Any, attribute: str, name: str) -> None:
        function = getattr(owner, attribute)

        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                calls.append((name, time.perf_counter() - start))

        setattr(owner, attribute, call)

    timed(pl.Trainer, "fit", "fit")
    timed(pyro_vae.scoring, "evaluate_run", "evaluation")
    timed(pyro_vae.pipeline, "write_scores", "scores and figures")
    timed(pyro_vae.pipeline, "train", "run")
    timed(pyro_vae.experiment, "_run_one", "sweep run")
    atexit.register(lambda: Path(os.environ[TIMINGS]).write_text(json.dumps(calls)))
    return calls


def probe(argv: list[str]) -> int:
    """``sweep EXP OUT``: the sweep in this process; ``train ARGS...``: ``pyro-vae train``."""
    if argv[0] == "sweep":
        from pyro_vae.experiment import sweep

        instrument()
        return sweep(argv[1], argv[2], progress=False).exit_code
    from pyro_vae.cli import main

    instrument()
    return main(argv)


# ---- the measurement -----------------------------------------------------------------------------
def run_probe(args: list[str], threads: int) -> tuple[float, list[tuple[str, float]]]:
    """Wall seconds of a probe process and the timings it recorded."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        timings = Path(f.name)
    env = {
        **os.environ,
        TIMINGS: str(timings),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.sweep_overhead", "--probe", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    calls = [tuple(c) for c in json.loads(timings.read_text())]
    timings.unlink()
    return wall, calls  # type: ignore[return-value]


def of(calls: list[tuple[str, float]], name: str) -> list[float]:
    return [s for n, s in calls if n == name]


def measure(runs: int, threads: int, folder: Path) -> dict[str, Any]:
    import yaml

    experiment = folder / "overhead.yaml"  # 2 cells × runs/2 seeds
    experiment.write_text(
        yaml.safe_dump(
            {
                "base": str(DIGITS),
                "set": TINY,
                "grid": {"beta": [1.0, 2.0]},
                "seeds": max(1, runs // 2),
            }
        )
    )
    wall, calls = run_probe(["sweep", str(experiment), str(folder / "sweep")], threads)
    count = len(of(calls, "run"))
    fit, ev, run = of(calls, "fit"), of(calls, "evaluation"), of(calls, "run")
    sweep_run = of(calls, "sweep run")
    fixed = [r - f - e for r, f, e in zip(run, fit, ev)]
    worker = {
        "runs": count,
        "process_wall_s": wall,
        "first_run": {
            "wall_s": run[0],
            "fit_s": fit[0],
            "evaluation_s": ev[0],
            "fixed_s": fixed[0],
        },
        "later_runs_fixed_s": fixed[1:],
        "later_runs_scores_and_figures_s": of(calls, "scores and figures")[1:],
        "bookkeeping_s": [s - r for s, r in zip(sweep_run, run)],
        "amortized_fixed_s": (wall - sum(fit) - sum(ev)) / count,
    }
    cli = []
    for i in range(count):
        args = [
            "train",
            str(DIGITS),
            "--out",
            str(folder / f"cli-{i}"),
            *(f"--set={k}={json.dumps(v)}" for k, v in TINY.items()),
            f"--set=train.seed={i}",
        ]
        wall_i, calls_i = run_probe(args, threads)
        cli.append(
            {
                "wall_s": wall_i,
                "fit_s": sum(of(calls_i, "fit")),
                "evaluation_s": sum(of(calls_i, "evaluation")),
                "scores_and_figures_s": sum(of(calls_i, "scores and figures")),
            }
        )
        cli[-1]["fixed_s"] = cli[-1]["wall_s"] - cli[-1]["fit_s"] - cli[-1]["evaluation_s"]
    return {
        "worker": worker,
        "cli": cli,
        "threads": threads,
        "load": os.getloadavg(),
        "cpus": os.cpu_count(),
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, seconds) of each line of the table."""
    w, cli = result["worker"], result["cli"]
    later = w["later_runs_fixed_s"]

    def mean(values: list[float]) -> str:
        return f"{statistics.mean(values):.2f}" if values else "—"

    return [
        ("sweep worker, run 1", f"{w['first_run']['fixed_s']:.2f}"),
        (f"sweep worker, runs 2-{w['runs']} (mean)", mean(later)),
        ("  of which scores and figures written", mean(w["later_runs_scores_and_figures_s"])),
        (
            "  of which the sweep's bookkeeping (manifest, claim, check)",
            mean(w["bookkeeping_s"][1:]),
        ),
        (
            f"sweep worker, process wall / {w['runs']} runs, less training and evaluation",
            f"{w['amortized_fixed_s']:.2f}",
        ),
        (
            f"pyro-vae train, one process per run (mean of {len(cli)})",
            mean([c["fixed_s"] for c in cli]),
        ),
        ("  of which scores and figures written", mean([c["scores_and_figures_s"] for c in cli])),
    ]


def table(result: dict[str, Any]) -> list[str]:
    """The table as printed: a title line, then the rows of :func:`rows`."""
    lines = rows(result)
    width = max(len(r[0]) for r in lines)
    load = ", ".join(f"{x:.1f}" for x in result["load"])
    return [
        (
            f"fixed cost per run (s): wall less Trainer.fit and the IS evaluation; tiny digits "
            f"runs, {result['threads']} torch thread(s), {result['cpus']} CPUs, load {load}; "
            f"target <= {TARGET_S:g} s in a sweep"
        ),
        *(f"  {label:<{width}}  {value:>6}" for label, value in lines),
    ]


def run(options: Options, command: str) -> Section:
    """The section of BENCHMARKS.md (``python -m benchmarks --only sweep``): the table of
    :func:`table` from :func:`measure` (2 runs at toy size, else 8), and its target."""
    runs = 2 if options.toy else 8
    with tempfile.TemporaryDirectory(prefix="sweep-overhead-") as folder:
        result = measure(runs, options.threads, Path(folder))
    later = result["worker"]["later_runs_fixed_s"]
    section = Section("sweep", "Sweep: the fixed cost of a run", command, data=result)
    if later:
        section.target(
            "sweep worker: fixed seconds per run (runs after the first)",
            statistics.median(later),
            TARGET_S,
            unit=" s",
            fmt=".2f",
        )
    section.body = (
        "What a run costs besides its training and evaluation, in one `pyro-vae sweep` worker "
        "(runs share the process: imports once; a sweep's runs draw no figures unless the "
        "experiment asks, `evaluate.figures`) against one `pyro-vae train` process per run "
        "(which draws them). Tiny digits runs, so that what is left is the fixed cost; "
        "seconds, wall time less `Trainer.fit` and the importance-sampled evaluation. "
        f"Target: at most {TARGET_S:g} s per run in a sweep (issue #27: about 11 s per CLI "
        "call).\n\n"
        + plain_table(["", "seconds"], [[label.strip(), value] for label, value in rows(result)])
    )
    return section


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--probe":
        sys.exit(probe(argv[1:]))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--runs",
        type=integer(2),
        default=4,
        help="runs of each way, even (default 4; odd rounds down)",
    )
    p.add_argument("--threads", type=THREADS, default=1, help="torch threads (default 1)")
    p.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sweep-overhead-") as folder:
        result = measure(args.runs, args.threads, Path(folder))
    print("\n".join(table(result)))
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
