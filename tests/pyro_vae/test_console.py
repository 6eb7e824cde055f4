"""pyro_vae.console: the version line, and the progress bar that warns in no notebook."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import pytest

from pyro_vae import console
from pyro_vae.cli import main

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT_VERSION = re.search(
    r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE
).group(1)


def test_version_prints_the_release_and_exits_0(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"pyro-vae {PYPROJECT_VERSION}\n"


def test_a_source_tree_not_installed_reads_pyproject(monkeypatch):
    def missing(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr("importlib.metadata.version", missing)
    assert console.release() == PYPROJECT_VERSION


def test_the_changelog_names_this_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(
        rf"^## \[{re.escape(PYPROJECT_VERSION)}\] - \d{{4}}-\d{{2}}-\d{{2}}$",
        changelog,
        re.MULTILINE,
    )


def test_the_console_script_prints_its_version():
    script = Path(sys.executable).with_name("pyro-vae")
    if not script.is_file():
        pytest.skip("no pyro-vae script beside this interpreter (not installed here)")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"pyro-vae {PYPROJECT_VERSION}\n", "")


def test_progress_bar_is_the_text_bar_without_ipywidgets(monkeypatch):
    from tqdm.std import tqdm

    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with console.progress_bar(range(3), disable=True) as bar:
        assert type(bar) is tqdm
