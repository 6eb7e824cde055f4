"""BENCHMARKS.md as committed, and ``python -m benchmarks.report``, which writes it from the
records in benchmarks/results (tests never import ``benchmarks``): each section is numbered once,
states its machine, date, threads and load in one checkable line, and names its ±."""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: the line every section and every part of one starts with (benchmarks/report.py, MACHINE_LINE)
MACHINE = re.compile(
    r"^\*\*Machine\*\* (?P<cpu>.+?) \((?P<cpus>\d+) logical CPUs?[^)]*\) · "
    r"\*\*Date\*\* (?P<date>\d{4}-\d\d-\d\d \d\d:\d\d UTC)[^·]* · "
    r"\*\*Threads\*\* (?P<threads>\d+) torch threads? · "
    r"\*\*Load\*\* \(1/5/15-min averages\) (?P<load>\d+\.\d\d \d+\.\d\d \d+\.\d\d) ",
    re.M,
)
KINDS = ("s.e. over images", "s.e. over seeds", "s.d. over seeds")


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) of each ``## `` and ``### `` heading, in order."""
    parts = re.split(r"^(#{2,3} .*)$", text, flags=re.M)
    return list(zip(parts[1::2], parts[2::2]))


def check(text: str) -> list[str]:
    """Each section numbered once, 1, 2, 3, …, no lettered number; each numbered section and
    each part of one states machine, date, threads and load; each names the ± it uses."""
    numbers = [int(n) for n in re.findall(r"^## (\d+)\. ", text, flags=re.M)]
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    assert not re.search(r"^#{2,3} \d+[a-z]", text, flags=re.M)
    assert "## How to read ±" in text
    legend = text.split("## How to read ±", 1)[1].split("\n## ", 1)[0]
    assert all(f"**{kind}**" in legend for kind in KINDS)
    measured, numbered = [], False
    for heading, body in sections(text):
        if heading.startswith("## "):
            numbered = bool(re.match(r"## \d+\. ", heading))
        if not numbered:
            continue
        found = MACHINE.search(body)
        assert found, f"{heading}: no machine line"
        assert int(found["threads"]) >= 1 and int(found["cpus"]) >= 1
        if "±" in body:
            assert any(kind in body for kind in KINDS), f"{heading}: ± not named"
        measured.append(heading)
    assert len(measured) >= len(numbers)
    return measured


def test_benchmarks_md_as_committed_numbers_each_section_once_and_states_its_machine():
    measured = check((ROOT / "BENCHMARKS.md").read_text())
    assert any(h.startswith("## 1. Training step") for h in measured)
    assert any(h.startswith("## 3. Quality: the published") for h in measured)


def test_benchmarks_md_is_what_the_generator_writes_from_the_committed_records(tmp_path):
    """Not edited by hand, and not left in an older layout (a background job started from an
    older snapshot renders with that snapshot's generator: ``python -m benchmarks.report``
    writes the file again from the records)."""
    out = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.report", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.read_text() == (ROOT / "BENCHMARKS.md").read_text(), (
        "BENCHMARKS.md differs from its records: python -m benchmarks.report"
    )


def _record(key: str, title: str, body: str, command: str = "python -m benchmarks") -> dict:
    machine = {
        "date": "2026-12-07 03:00 UTC",
        "cpu": "Some CPU",
        "logical_cpus": 2,
        "torch_threads": 1,
        "python": "3.11",
        "torch": "2",
        "pyro": "1.9",
        "lightning": "2.6",
        "device": "cpu",
        "load_average_1_5_15": [1.5, 1.25, 1.0],
        "load_average_at_start": [1.0, 1.0, 1.0],
        "load_average_after": [2, 1.5, 1],
        "other_processes_cpu_share": 0.5,
    }
    return {
        "key": key,
        "title": title,
        "command": command,
        "body": body,
        "targets": [],
        "data": {},
        "machine": machine,
        "wall_s": 3.0,
    }


def test_the_report_numbers_by_key_shows_parts_under_their_section_and_drops_the_smoke_run(
    tmp_path,
):
    """A record is placed by its key: ``published`` (what a job started from an older snapshot
    still writes) lands in section 3; ``is-small`` and ``ais-quality`` are parts of sections 2
    and 5 with their own machine lines; the dropped quick smoke run is not shown."""
    results = tmp_path / "results"
    results.mkdir()
    for key, title, body in [
        ("ais-quality", "How loose is IS?", "| a | -228.1 ± 3.4 |"),
        ("published", "Quality: the published table", "The ± of a row is the s.e. over images."),
        ("quality-quick", "Quality: quick smoke run", "one epoch"),
        ("is-small", "Small K", "small"),
        ("step", "Training step", "steps"),
        ("is", "IS", "K = 5000"),
    ]:
        (results / f"{key}.json").write_text(json.dumps(_record(key, title, body)))
    out = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.report", "--results", str(results), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    headings = [h for h, _ in sections(text)]
    assert headings == [
        "## Targets",
        "## How to read ±",
        "## 1. Training step",
        "## 2. IS",
        "### Small K",
        "## 3. Quality: the published table",
        "### How loose is IS?",
        "## GPU",
    ], headings
    assert "quick smoke run" not in text
    measured = check(text)
    assert len(measured) == 5
    line = MACHINE.search(text)
    assert (line["cpu"], line["date"], line["threads"], line["load"]) == (
        "Some CPU",
        "2026-12-07 03:00 UTC",
        "1",
        "1.00 1.00 1.00",
    )
    assert "± here: **s.e. over images**" in text  # the AIS part names its ±
