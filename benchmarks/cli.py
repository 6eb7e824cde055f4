"""Command-line plumbing shared by ``python -m benchmarks`` and the one-benchmark commands
(``python -m benchmarks.published``, ``.quality``, ``.ais``, ``.richer``): options, running
sections (a missing data set skips one, not the run), saving their JSON records and
regenerating BENCHMARKS.md from every record in the results folder."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pyro
import torch

from benchmarks.common import (
    REPO,
    Options,
    Section,
    Skip,
    command_line,
    cpu_seconds,
    machine,
    others_share,
)
from benchmarks.report import render
from pyro_vae.registry import SEED_LIMIT

Runner = Callable[[Options, str], Section]


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer n with low ≤ n (≤ high when given), else argparse's one-line
    error naming the range."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if n < low or (high is not None and n > high):
            where = f"≥ {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"{n} is out of range: it must be {where}")
        return n

    return parse


#: ``--seeds``: what ``train.seed`` accepts.
SEED = integer(0, SEED_LIMIT - 1)
#: A count of something (epochs, images, samples): at least one.
COUNT = integer(1)
#: ``--threads``: torch's CPU threads, bounded before torch makes them.
THREADS = integer(1, 1024)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--threads", type=THREADS, default=2, help="torch CPU threads (default 2)")
    p.add_argument(
        "--toy",
        action="store_true",
        help="tiny sizes on the embedded digits, for smoke tests (seconds)",
    )
    p.add_argument(
        "--results",
        type=Path,
        help="folder of JSON records (default benchmarks/results; a temporary one with --toy)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="report to write (default BENCHMARKS.md at the repository root; "
        "with --toy only when given)",
    )
    return p


def options_from(args: argparse.Namespace) -> Options:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch finds no CUDA device")
    torch.set_num_threads(args.threads)
    for name in ("lightning.pytorch", "lightning.fabric"):  # Trainer banners and tips
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")
    return Options(device=device, threads=args.threads, toy=args.toy)


def finish(args: argparse.Namespace, options: Options, runners: dict[str, Runner]) -> None:
    """Run each section, save its record, then regenerate the report from all records."""
    with tempfile.TemporaryDirectory() as tmp:
        results = args.results or (Path(tmp) if options.toy else REPO / "benchmarks" / "results")
        out = args.out or (None if options.toy else REPO / "BENCHMARKS.md")
        options = replace(options, results=results)
        command = command_line()
        load_at_start = [round(v, 2) for v in os.getloadavg()]  # before this run added any
        for key, runner in runners.items():
            info = machine(options)
            cpu = cpu_seconds()
            start = time.perf_counter()
            try:
                with pyro.settings.context(module_local_params=True):  # as pyro-vae train runs
                    section = runner(options, command)
            except Skip as exc:
                section = Section(key, f"{key} (skipped)", command, body=f"Skipped: {exc}")
            section.wall_s = time.perf_counter() - start
            info["other_processes_cpu_share"] = round(
                others_share(cpu, cpu_seconds(), section.wall_s), 3
            )
            after = machine(options)["load_average_1_5_15"]
            section.machine = {
                **info,
                "load_average_after": after,
                "load_average_at_start": load_at_start,
            }
            if options.device.type != "cpu":
                section.key += f"@{options.device.type}"
            section.save(results)
            print(f"[{section.key}] {section.wall_s:.0f} s")
            for t in section.targets:
                print(
                    f"  {t['name']}: {t['measured']} (target {t['target']}) "
                    f"{'met' if t['met'] else 'MISSED'}"
                )
        if out is not None:
            out.write_text(render(results))
            print(f"wrote {out}")
