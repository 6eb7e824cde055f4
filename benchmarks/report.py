"""BENCHMARKS.md from the JSON records in the results folder: a summary of the targets, then
each section with the machine, date, load and the command that produced it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.common import plural, table

ORDER = ("step", "is", "is-small", "published", "quality-quick", "scaling", "ais", "ais-quality",
         "richer", "startup")
NUMBER = {"step": "1", "is": "2", "is-small": "2b", "published": "3", "quality-quick": "3b",
          "scaling": "4", "ais": "5", "ais-quality": "5b", "richer": "6", "startup": "7"}
SECTION_COMMANDS = {"step": "python -m benchmarks --only step",
                    "is": "python -m benchmarks --only is",
                    "is-small": "python -m benchmarks --only is-small",
                    "scaling": "python -m benchmarks --only scaling",
                    "quality-quick": "python -m benchmarks.quality",
                    "published": "python -m benchmarks.published",
                    "ais": "python -m benchmarks.ais",
                    "richer": "python -m benchmarks.richer",
                    "startup": "python -m benchmarks --only startup"}
HEADER = """# Benchmarks

Our performance claims are only what this suite measures. Speed is measured as ratios against
plain-PyTorch floors (same networks, hand-written losses and estimators) inside one process, in
interleaved blocks, because this machine is shared and its speed drifts by ±30 % between runs;
quality against published figures. `make bench` (= `python -m benchmarks`) runs sections 1, 2, 4,
7 and the quick form of 3; `make bench-published` (= `python -m benchmarks.published`) the full
published protocol. This file is generated from `benchmarks/results/*.json`; do not edit it.
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
        records[record["key"]] = record
    return records


def _sort_key(key: str) -> tuple[int, str]:
    base = key.split("@")[0]
    return (ORDER.index(base) if base in ORDER else len(ORDER), key)


def machine_line(record: dict[str, Any]) -> str:
    m = record["machine"]
    gpu = f", GPU {m['gpu']}" if "gpu" in m else ""
    def text(key: str) -> str:
        return " ".join(f"{v:g}" for v in m.get(key, []))

    share = m.get("other_processes_cpu_share")
    others = "" if share is None else \
        f" Other processes used {100 * share:.0f} % of the CPUs during this section."
    busy = (" **The machine had other load** (other processes shared the cores; the paired "
            "ratios are designed to survive this, absolute times less so)."
            if share is not None and share > 0.05 else "")
    return (f"Measured {m['date']} on {m['cpu']} ({m['logical_cpus']} logical CPUs, "
            f"{plural(m['torch_threads'], 'torch thread')}{gpu}, device `{m['device']}`); Python "
            f"{m['python']}, torch {m['torch']}, pyro-ppl {m['pyro']}, lightning "
            f"{m['lightning']}. Load average (1/5/15 min) when the run started: "
            f"{text('load_average_at_start') or text('load_average_1_5_15')}; before this "
            f"section: {text('load_average_1_5_15')} (includes the run's own earlier sections); "
            f"after it: {text('load_average_after')}.{others}"
            f"{busy} Wall time {record['wall_s']:.0f} s.")


def section_text(record: dict[str, Any]) -> str:
    base = record["key"].split("@")[0]
    rerun = SECTION_COMMANDS.get(base, "")
    device = record["machine"]["device"]
    if device != "cpu" and rerun:
        rerun += f" --device {device}"
    if record["command"] == rerun or record["command"].startswith(SECTION_COMMANDS["published"]):
        rerun = ""  # the command shown already reruns exactly this section
    return "\n\n".join([
        f"## {NUMBER.get(base, '')}. {record['title']}"
        + (f" ({device})" if device != "cpu" else ""),
        f"Produced by `{record['command']}`"
        + (f"; this section alone: `{rerun}`." if rerun else "."),
        machine_line(record),
        record["body"],
    ])


def render(folder: Path) -> str:
    records = load(folder)
    keys = sorted(records, key=_sort_key)
    rows = [[f"{NUMBER.get(k.split('@')[0], '')} {records[k]['title']}", t["name"], t["measured"],
             t["target"], "yes" if t["met"] else "**no**"]
            for k in keys for t in records[k]["targets"]]
    cpu = [section_text(records[k]) for k in keys if "@" not in k]
    gpu = [section_text(records[k]) for k in keys if "@" in k]
    gpu_body = "\n\n".join(gpu) if gpu else "Not measured yet: no GPU was available."
    summary = table(["section", "figure", "measured", "target", "met"], rows)
    parts = [HEADER, "## Targets\n\n" + summary,
             *cpu, GPU.format(body=gpu_body)]
    return "\n\n".join(p.strip() for p in parts) + "\n"
