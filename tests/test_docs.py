"""The documentation site builds with ``mkdocs build --strict`` (mkdocs.yml, docs/): no broken link
or cross-reference, no docstring naming an object that does not exist, and the generated pages
are there: the command line reference holds every command of the parser, the API reference a
page per module. Skipped where the docs extra is not installed (``make docs`` installs it)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NEEDED = (
    "mkdocs",
    "material",
    "mkdocstrings",
    "mkdocstrings_handlers.python",
    "pymdownx",
    "mkdocs_autorefs",
)


def _missing() -> list[str]:
    missing = []
    for name in NEEDED:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except ModuleNotFoundError:
            missing.append(name)
    return missing


@pytest.mark.skipif(
    bool(_missing()),
    reason=f"the docs extra is not installed (missing: "
    f"{', '.join(_missing())}): pip install -e '.[docs]', or make docs",
)
def test_site_builds_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    problems = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if line and not line.startswith("INFO")
    ]
    assert done.returncode == 0, "\n".join(problems)

    from pyro_vae.cli import parser

    commands = next(
        a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    cli = (site / "cli.html").read_text(encoding="utf-8")
    for name in commands:
        assert f'id="pyro-vae-{name}"' in cli, f"pyro-vae {name} is missing from the CLI reference"

    modules = [p for p in (ROOT / "pyro_vae").glob("*.py") if not p.name.startswith("_")]
    for path in modules:
        page = site / "api" / f"pyro_vae.{path.stem}.html"
        assert page.is_file(), f"no API page for {path}"
    assert 'class="arithmatex"' in (site / "estimators.html").read_text(encoding="utf-8")


def test_the_readme_code_map_names_every_module() -> None:
    """README's code map (its "Code map" section) names each module of ``pyro_vae`` and
    ``inference`` in backticks, so a module added later cannot be left off the map."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    code_map = text.split("## Code map", 1)[1].split("\n## ", 1)[0]
    modules = [
        path.stem
        for package in ("pyro_vae", "inference")
        for path in sorted((ROOT / package).glob("*.py"))
        if path.stem != "__init__"
    ]
    missing = [name for name in modules if f"`{name}`" not in code_map]
    assert not missing, f"README's code map leaves out: {', '.join(missing)}"
