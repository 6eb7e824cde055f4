"""BENCHMARKS.md from the JSON records in the results folder: a summary of the targets, the legend
of ±, then each section with its machine, date, threads, load and the command that produced it.

Sections are numbered once, 1, 2, 3, … in :data:`ORDER`; a record listed in :data:`PARTS` is a
part of another section (its own sub-heading and its own machine line, no number of its own).
A record is addressed by its key, never by its number, so renumbering leaves every generator
(and a job running from an older snapshot, which writes ``published``) writing to the right
place. :data:`ALIASES` maps a key an older generator wrote to the one it is now; a record of a
dropped section (:data:`DROPPED`) is not shown.

``python -m benchmarks.report`` writes BENCHMARKS.md again from the records alone (nothing is
measured): after a background job, whose snapshot of the code renders with the generator it was
started with, this puts the file back in the current layout.

Every section states, on one line in a fixed form (see :func:`machine_line`)::

    **Machine** <CPU model> (<n> logical CPUs, device `cpu`) · **Date** YYYY-MM-DD HH:MM UTC ·
    **Threads** <n> torch thread(s) · **Load** (1/5/15-min averages) <a b c> when the run started, …
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, plural, table

#: the numbered sections, in order: a section's number is its place here
ORDER = ("step", "is", "published", "scaling", "ais", "richer", "startup", "sweep", "experiment")
#: part key → the section it belongs to (shown after that section's own record)
PARTS = {"is-small": "is", "ais-quality": "ais"}
#: keys older generators wrote → the key of the section they are now
ALIASES: dict[str, str] = {}
#: records of sections that were dropped: not shown (see HEADER's note on what was dropped)
DROPPED = ("quality-quick",)
SECTION_COMMANDS = {
    "step": "python -m benchmarks --only step",
    "is": "python -m benchmarks --only is",
    "is-small": "python -m benchmarks --only is-small",
    "scaling": "python -m benchmarks --only scaling",
    "published": "python -m benchmarks.published",
    "ais": "python -m benchmarks.ais",
    "richer": "python -m benchmarks.richer",
    "startup": "python -m benchmarks --only startup",
    "sweep": "python -m benchmarks --only sweep",
    "experiment": "python -m benchmarks.experiment",
}
#: what ± means in each section that shows one (see LEGEND), named under its machine line
PLUS_MINUS = {
    "published": "a row's log p(x): **s.e. over images** (the 10 000 test images, one seed per "
    "row); a mean over seeds: **s.e. over seeds**, beside the **s.d. over seeds**; a gain over "
    "the VAE: **s.e. over images** of the paired per-image difference at one seed, **s.e. over "
    "seeds** of the per-seed gains at several; the earlier protocol's figures: **s.d. over "
    "seeds** (3 seeds); the bounds' tightness (AIS − IS) and its shift δ of a gain: **s.e. over "
    "images** (200 test images, paired)",
    "ais-quality": "**s.e. over images** (log p(x) and AIS − IS over the test images scored; "
    "the BDMC gap over the simulated images)",
    "richer": "**s.d. over seeds** where a row has several seeds (one seed: no ±)",
    "experiment": "**s.e. over seeds** (3 seeds) for every mean and every paired gain; the "
    "point-level s.e. of a gain (**s.e. over images**, within a seed) is its own "
    "column",
}
LEGEND = """## How to read ±

Every ± in this file is one of three, and each section names which (the line under its machine
line, and the table header or sentence where it appears):

* **s.e. over images**: the standard error of a mean over N test images, s/√N with s the
  standard deviation over the images. It holds how much log p(x) varies from image to image (and
  each image's Monte Carlo noise); it does not hold how much a retrained model would differ.
* **s.e. over seeds**: the standard error of a mean over S training seeds, s.d./√S: how well
  the mean over seeds is known.
* **s.d. over seeds**: the standard deviation over S training seeds: how far one run lands from
  another. A one-seed figure carries neither; judge a difference between one-seed figures against
  an s.d. over seeds measured elsewhere in this file.

Speed ratios carry no ±: each is the median of n paired ratios (interleaved blocks or epochs),
shown with its interquartile range (IQR), its range and n."""


def number(key: str) -> str:
    """The section number a record's key is shown under ("" for an unknown key)."""
    base = ALIASES.get(key.split("@")[0], key.split("@")[0])
    base = PARTS.get(base, base)
    return str(ORDER.index(base) + 1) if base in ORDER else ""


def header() -> str:
    main = ", ".join(number(k) for k in ("step", "is", "scaling"))
    ais, published, startup = number("ais"), number("published"), number("startup")
    return f"""# Benchmarks

Our performance claims are only what this suite measures. Speed is measured as ratios against
plain-PyTorch floors (same networks, hand-written losses and estimators) inside one process, in
interleaved blocks, because this machine is shared and its speed drifts by up to 30 % between
runs; quality against published figures. `make bench` (= `python -m benchmarks`) runs sections
{main} and {startup}; `python -m benchmarks.ais` the speed part of section {ais}; `make
bench-published` (= `python -m benchmarks.published`) the published protocol of section
{published}. This file is generated from `benchmarks/results/*.json`; `python -m
benchmarks.report` writes it again from them alone (nothing measured). Do not edit it. Each
section states the machine, date, torch threads and load average it was measured at: the
machine is shared, so the load is part of the result.
"""


GPU = """## GPU

{body}

Run on a CUDA machine with `python -m benchmarks --device cuda` (and `python -m
benchmarks.published --device cuda`); the records are saved beside the CPU ones with an `@cuda`
suffix and reported here.
"""


def load(folder: Path) -> dict[str, dict[str, Any]]:
    records = {}
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        base, _, device = record["key"].partition("@")
        if base in DROPPED:
            continue
        key = ALIASES.get(base, base) + (f"@{device}" if device else "")
        records[key] = {**record, "key": key}
    return records


def _sort_key(key: str) -> tuple[int, int, str]:
    base = key.split("@")[0]
    section = PARTS.get(base, base)
    place = ORDER.index(section) if section in ORDER else len(ORDER)
    return (place, base != section, key)


def _numbers(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


#: the checkable form of :func:`machine_line` (tests/benchmarks/test_report.py reads it)
MACHINE_LINE = re.compile(
    r"^\*\*Machine\*\* (?P<cpu>.+?) \((?P<cpus>\d+) logical CPUs?[^)]*\) · "
    r"\*\*Date\*\* (?P<date>\d{4}-\d\d-\d\d \d\d:\d\d UTC)[^·]* · "
    r"\*\*Threads\*\* (?P<threads>\d+) torch threads? · "
    r"\*\*Load\*\* \(1/5/15-min averages\) (?P<load>\d+\.\d\d \d+\.\d\d \d+\.\d\d) "
)


def machine_line(record: dict[str, Any]) -> str:
    """Machine, date, threads and load in one line of a fixed form (:data:`MACHINE_LINE`), then
    how much of the machine others took, the wall time and the software."""
    m = record["machine"]
    gpu = f", GPU {m['gpu']}" if "gpu" in m else ""
    report_only = "--report" in record["command"].split()
    when = (
        " (the section written from saved runs, nothing timed then: each run's own times "
        "are in its table)"
        if report_only
        else ""
    )
    at_start = m.get("load_average_at_start") or m["load_average_1_5_15"]
    share = m.get("other_processes_cpu_share")
    others = (
        ""
        if share is None
        else f" Other processes used {100 * share:.0f} % of the CPUs during this section."
    )
    busy = (
        " **The machine had other load** (other processes shared the cores; the paired "
        "ratios are designed to survive this, absolute times less so)."
        if share is not None and share > 0.05
        else ""
    )
    after = m.get("load_average_after")
    return (
        f"**Machine** {m['cpu']} ({m['logical_cpus']} logical CPUs{gpu}, device "
        f"`{m['device']}`) · **Date** {m['date']}{when} · **Threads** "
        f"{plural(m['torch_threads'], 'torch thread')} · **Load** (1/5/15-min averages) "
        f"{_numbers(at_start)} when the run started, {_numbers(m['load_average_1_5_15'])} "
        f"before this section (the run's own earlier sections included)"
        + (f", {_numbers(after)} after it" if after else "")
        + "."
        + f"{others}{busy} Wall time {record['wall_s']:.0f} s; Python {m['python']}, torch "
        f"{m['torch']}, pyro-ppl {m['pyro']}, lightning {m['lightning']}."
    )


def section_text(record: dict[str, Any]) -> str:
    base = record["key"].split("@")[0]
    rerun = SECTION_COMMANDS.get(base, "")
    device = record["machine"]["device"]
    if device != "cpu" and rerun:
        rerun += f" --device {device}"
    if record["command"] == rerun or record["command"].startswith(SECTION_COMMANDS["published"]):
        rerun = ""  # the command shown already reruns exactly this section
    title = record["title"] + (f" ({device})" if device != "cpu" else "")
    heading = f"### {title}" if base in PARTS else f"## {number(base)}. {title}"
    plus_minus = PLUS_MINUS.get(base)
    return "\n\n".join(
        [
            heading,
            f"Produced by `{record['command']}`"
            + (
                f"; this {'part' if base in PARTS else 'section'} alone: `{rerun}`."
                if rerun
                else "."
            ),
            machine_line(record),
            *([f"± here: {plus_minus}."] if plus_minus and "±" in record["body"] else []),
            record["body"],
        ]
    )


def _label(record: dict[str, Any]) -> str:
    base = record["key"].split("@")[0]
    return f"{number(base)} {record['title']}"


def render(folder: Path) -> str:
    records = load(folder)
    keys = sorted(records, key=_sort_key)
    rows = [
        [_label(records[k]), t["name"], t["measured"], t["target"], "yes" if t["met"] else "**no**"]
        for k in keys
        for t in records[k]["targets"]
    ]
    notes = [
        records[k]["data"]["targets_note"]
        for k in keys
        if isinstance(records[k].get("data"), dict) and "targets_note" in records[k]["data"]
    ]
    cpu = [section_text(records[k]) for k in keys if "@" not in k]
    gpu = [section_text(records[k]) for k in keys if "@" in k]
    gpu_body = "\n\n".join(gpu) if gpu else "Not measured yet: no GPU was available."
    summary = table(["section", "figure", "measured", "target", "met"], rows)
    parts = [
        header(),
        "## Targets\n\n" + "\n\n".join([summary, *notes]),
        LEGEND,
        *cpu,
        GPU.format(body=gpu_body),
    ]
    return "\n\n".join(p.strip() for p in parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description="Write BENCHMARKS.md again from the JSON records alone (nothing is measured)."
    )
    p.add_argument(
        "--results",
        type=Path,
        default=REPO / "benchmarks" / "results",
        help="folder of JSON records (default benchmarks/results)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "BENCHMARKS.md",
        help="report to write (default BENCHMARKS.md at the repository root)",
    )
    args = p.parse_args(argv)
    args.out.write_text(render(args.results))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
