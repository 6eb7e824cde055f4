"""What ``python -m build`` makes installs and works outside the source tree.

The wheel and the sdist are built from a copy of the work tree (the files git tracks or would
track), the wheel is installed with its dependencies (pinned by constraints.txt) into a fresh
virtual environment, and from a folder far from the sources ``pyro-vae train`` fits a small spec
written there for one epoch on the embedded digits, then ``pyro-vae evaluate`` scores another
split. The sdist is then installed over it and answers ``--version`` and an import.

Minutes and the package index: deselected from ``make test``; ``make test-packaging`` and CI
(.ci/run) run it (``pytest -m packaging``). Skipped, saying why, when the index is unreachable.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[1]
VERSION = re.search(
    r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE
).group(1)
#: pip's words when it cannot reach the index at all (as opposed to a missing or bad package)
UNREACHABLE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|"
    r"Temporary failure in name resolution|Network is unreachable|"
    r"ConnectTimeout|Could not resolve host|ProxyError"
)
TINY_SPEC = """\
data: {name: digits, binarize: dynamic, limit: 200}
latent_dim: 2
encoder: {name: mlp, hidden: [16]}
decoder: {name: mlp, hidden: [16]}
train: {max_epochs: 1, batch_size: 32}
evaluate: {num_samples: 10}
"""


def run(argv: list[str | Path], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``argv`` with the environment of a user's shell: no PYTHONPATH, no virtual environment of
    ours active, so nothing of the source tree can be imported by accident."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")
    }
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def pip(venv: Path, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    done = run(
        [
            venv / "bin" / "python",
            "-m",
            "pip",
            "install",
            "--retries",
            "1",
            "--timeout",
            "60",
            "--disable-pip-version-check",
            *args,
        ],
        cwd,
        timeout=1200,
    )
    if done.returncode != 0 and UNREACHABLE.search(done.stdout + done.stderr):
        pytest.skip(
            "the package index is unreachable: "
            + UNREACHABLE.search(done.stdout + done.stderr).group(0)
        )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


def source_copy(target: Path) -> Path:
    """The files git tracks or would track (not ignored), copied: building never writes into the
    work tree (egg-info), and leaves out what a fresh clone would not have."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:  # not a git checkout (an unpacked sdist): all of it
        shutil.copytree(
            ROOT,
            target,
            ignore=shutil.ignore_patterns(".venv", "*.egg-info", "__pycache__", "runs"),
        )
        return target
    for name in filter(None, listed.stdout.split("\0")):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The sdist and the wheel, as ``python -m build`` makes them (an isolated build)."""
    where = tmp_path_factory.mktemp("build")
    source = source_copy(where / "source")
    out = where / "dist"
    done = run([sys.executable, "-m", "build", "--outdir", out, source], where, timeout=900)
    if done.returncode != 0 and UNREACHABLE.search(done.stdout + done.stderr):
        pytest.skip("the package index is unreachable: build cannot fetch setuptools")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return out


def test_build_makes_a_wheel_and_an_sdist_with_both_packages(dist):
    import tarfile
    import zipfile

    (wheel,) = dist.glob(f"pyro_vae-{VERSION}-py3-none-any.whl")
    (sdist,) = dist.glob(f"pyro_vae-{VERSION}.tar.gz")
    names = zipfile.ZipFile(wheel).namelist()
    for module in (
        "pyro_vae/__init__.py",
        "pyro_vae/cli.py",
        "pyro_vae/components/priors.py",
        "inference/__init__.py",
        "inference/ais.py",
        f"pyro_vae-{VERSION}.dist-info/licenses/LICENSE",
    ):
        assert module in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/"))]
    metadata = zipfile.ZipFile(wheel).read(f"pyro_vae-{VERSION}.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata
    assert (
        "pyro-vae = pyro_vae.cli:main"
        in zipfile.ZipFile(wheel).read(f"pyro_vae-{VERSION}.dist-info/entry_points.txt").decode()
    )
    with tarfile.open(sdist) as archive:
        members = {m.name.split("/", 1)[1] for m in archive.getmembers() if "/" in m.name}
    assert {
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "pyro_vae/__init__.py",
        "inference/__init__.py",
    } <= members


def test_installed_wheel_trains_and_evaluates_outside_the_source_tree(dist, tmp_path):
    venv = tmp_path / "venv"
    done = run([sys.executable, "-m", "venv", venv], tmp_path)
    assert done.returncode == 0, done.stderr
    (wheel,) = dist.glob("*.whl")
    pip(venv, "-c", ROOT / "constraints.txt", wheel, cwd=tmp_path)

    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "tiny.yaml").write_text(TINY_SPEC)
    exe = venv / "bin" / "pyro-vae"

    where = run(
        [
            venv / "bin" / "python",
            "-c",
            ("import inference, pyro_vae; print(pyro_vae.__file__); print(inference.__file__)"),
        ],
        work,
    )
    assert where.returncode == 0, where.stderr
    for path in where.stdout.split():
        assert Path(path).resolve().is_relative_to(venv.resolve()), where.stdout  # not ROOT

    version = run([exe, "--version"], work)
    assert (version.returncode, version.stdout) == (0, f"pyro-vae {VERSION}\n")

    trained = run([exe, "train", "tiny.yaml", "--out", "run"], work)
    assert trained.returncode == 0, trained.stderr[-4000:]
    lines = trained.stdout.splitlines()
    assert lines[0].startswith("data: digits: train/val/test 200/180/359"), trained.stdout
    assert any(re.match(r"test: log p\(x\) ≥ -\d+\.\d+ ± \d", line) for line in lines)
    assert lines[-1] == "run directory: run"
    assert trained.stderr == ""  # not a terminal: no progress bar, notice or warning

    scored = run([exe, "evaluate", "run", "--split", "val", "--num-samples", "20"], work)
    assert scored.returncode == 0, scored.stderr[-4000:]
    assert re.match(r"val: log p\(x\) ≥ -\d+\.\d+ ± \d.*K=20, 180 points", scored.stdout)
    assert {"config.yaml", "eval-test.json", "eval-val.json", "eval-val.npz", "metrics.csv"} <= {
        p.name for p in (work / "run").iterdir()
    }

    # the sdist, installed over the wheel (its dependencies are there): imports, --version
    (sdist,) = dist.glob("*.tar.gz")
    pip(venv, "--no-deps", "--force-reinstall", sdist, cwd=tmp_path)
    version = run([exe, "--version"], work)
    assert (version.returncode, version.stdout) == (0, f"pyro-vae {VERSION}\n")
    imported = run(
        [
            venv / "bin" / "python",
            "-c",
            (
                "import inference.ais, pyro_vae.cli; "
                "import importlib.metadata as m; "
                "print(m.distribution('pyro-vae').read_text('direct_url.json'))"
            ),
        ],
        work,
    )
    assert imported.returncode == 0, imported.stderr
    assert sdist.name in imported.stdout  # installed from the sdist, not the wheel
