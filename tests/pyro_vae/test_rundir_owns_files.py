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
    return isinstance(node, ast.Constant) and isinstance(node.value, str) \
        and set(node.value) <= set("rwabxt+")


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
        if name == "rmtree" or (attribute and name == "unlink") or \
                (owner == "os" and name in ("remove", "unlink", "rmdir")):
            found.append(f"{node.lineno}: {name}")
        elif name == "open" and owner == "os":
            flags = ast.unparse(node.args[1]) if len(node.args) > 1 else ""
            target = ast.unparse(node.args[0]) if node.args else ""
            if target != "os.devnull" and any(f in flags for f in ("O_WRONLY", "O_RDWR",
                                                                   "O_CREAT")):
                found.append(f"{node.lineno}: os.open({flags})")
        elif name == "open":
            position = node.args[:1] if attribute else node.args[1:2]
            if attribute and node.args and not _is_mode(node.args[0]):
                continue  # an archive member, not a path
            modes = [m for m in [*position, *mode] if _is_mode(m)]
            if any(set(m.value) & WRITE_MODE for m in modes):
                found.append(f"{node.lineno}: open(..., {modes[0].value!r})")
    return found


def test_only_rundir_and_atomic_delete_or_open_files_for_writing():
    outside = {str(path.relative_to(PACKAGE)): offences(path.read_text())
               for path in sorted(PACKAGE.rglob("*.py")) if path.name not in OWNERS}
    assert {name: lines for name, lines in outside.items() if lines} == {}


@pytest.mark.parametrize("line, caught", [
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
])
def test_the_source_check_catches_what_it_names(line, caught):
    assert bool(offences(line)) is caught
