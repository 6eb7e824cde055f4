"""``pyro_vae.rundir.Run`` is the one home of a run directory: no other module of the package
deletes a file or opens one for writing (``atomic.py`` holds the atomic write that Run uses).
Read from the source, so that a new ``unlink`` anywhere else fails here before it ships."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pyro_vae"
OWNERS = {"rundir.py", "atomic.py"}
WRITE_MODE = set("wax+")


def _is_mode(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and set(node.value) <= set("rwabxt+")
    )


def offences(source: str) -> list[str]:
    """``line: call`` for each deletion (``rmtree``, ``.unlink()``, ``os.remove``) and each
    ``open`` for writing: builtin ``open(path, mode)``, ``os.open`` with a write flag (but of
    ``os.devnull``), and
    ``path.open(mode)`` (a ``.open`` whose first argument is a mode: ``ZipFile.open(member,
    mode=...)`` writes a member of an archive already being written, and is not one)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        attribute = isinstance(func, ast.Attribute)
        name = func.attr if attribute else getattr(func, "id", "")
        owner = getattr(func.value, "id", "") if attribute else ""
        mode = [k.value for k in node.keywords if k.arg == "mode"]
        if (
            name == "rmtree"
            or (attribute and name == "unlink")
            or (owner == "os" and name in ("remove", "unlink", "rmdir"))
        ):
            found.append(f"{node.lineno}: {name}")
        elif name == "open" and owner == "os":
            flags = ast.unparse(node.args[1]) if len(node.args) > 1 else ""
            target = ast.unparse(node.args[0]) if node.args else ""
            if target != "os.devnull" and any(
                f in flags for f in ("O_WRONLY", "O_RDWR", "O_CREAT")
            ):
                found.append(f"{node.lineno}: os.open({flags})")
        elif name == "open":
            position = node.args[:1] if attribute else node.args[1:2]
            if attribute and node.args and not _is_mode(node.args[0]):
                continue  # an archive member, not a path
            modes = [m for m in [*position, *mode] if _is_mode(m)]
            if any(set(m.value) & WRITE_MODE for m in modes):
                found.append(f"{node.lineno}: open(..., {modes[0].value!r})")
    return found


#: Modules that write files outside any run directory, through pyro_vae.atomic, and why.
OUTSIDE_RUNS = {
    "export.py": "encode/sample --out and --png: files the user names",
    "figures.py": "figures.save, for a figure file outside a run (sample --png)",
    "console.py": "the crash log, in the cache folder",
    "aggregation.py": "an experiment's aggregate.* files, beside its runs",
    "experiment.py": "a sweep's experiment.json and sweep.sbatch, beside its runs",
    "search.py": "a search's search.json, beside its trials",
    "spec.py": "dump_spec(spec, path): a spec file the caller names",
}
ATOMIC_WRITES = {"write_atomic", "write_text_atomic", "write_json_atomic"}


def writes(source: str) -> list[str]:
    """``line: call`` for each write that bypasses :class:`Run`: the atomic writers, and a
    path's one-argument ``write_text``/``write_bytes`` (``Run.write_text(path, text)`` takes
    two)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ATOMIC_WRITES or (
            name in ("write_text", "write_bytes")
            and isinstance(func, ast.Attribute)
            and len(node.args) == 1
        ):
            found.append(f"{node.lineno}: {name}")
    return found


def test_writes_into_a_run_go_through_run():
    """Evaluations, per-point arrays, figures, the report, metrics and checkpoints are written
    by :class:`Run`'s methods; the modules that write elsewhere are named with their reason."""
    outside = {
        str(path.relative_to(PACKAGE)): writes(path.read_text())
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name not in OWNERS | OUTSIDE_RUNS.keys()
    }
    assert {name: lines for name, lines in outside.items() if lines} == {}


@pytest.mark.parametrize(
    "line, caught",
    [
        ("write_atomic(path, f)", True),
        ("write_json_atomic(path, value)", True),
        ("path.write_text(text)", True),
        ("path.write_bytes(data)", True),
        ("run.write_text(path, text)", False),
        ("run.write_json(path, value)", False),
    ],
)
def test_the_write_check_catches_what_it_names(line, caught):
    assert bool(writes(line)) is caught


def test_only_rundir_and_atomic_delete_or_open_files_for_writing():
    outside = {
        str(path.relative_to(PACKAGE)): offences(path.read_text())
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name not in OWNERS
    }
    assert {name: lines for name, lines in outside.items() if lines} == {}


@pytest.mark.parametrize(
    "line, caught",
    [
        ("shutil.rmtree(out)", True),
        ("path.unlink(missing_ok=True)", True),
        ("os.remove(path)", True),
        ("open(path, 'w')", True),
        ("open(path, mode='ab')", True),
        ("path.open('w')", True),
        ("os.open(path, os.O_WRONLY | os.O_CREAT)", True),
        ("open(path)", False),
        ("open(path, 'rb')", False),
        ("path.open()", False),
        ("zf.open('x.npy', mode='w')", False),
        ("os.open(path, os.O_RDONLY)", False),
        ("os.open(os.devnull, os.O_WRONLY)", False),
        ("dataclasses.replace(spec, data=x)", False),
    ],
)
def test_the_source_check_catches_what_it_names(line, caught):
    assert bool(offences(line)) is caught
