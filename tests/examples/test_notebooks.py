"""The notebooks of examples/notebooks run headless, top to bottom, as a reader runs them: in a
fresh Jupyter kernel of this Python, from a copy of examples/ (their relative paths hold, and
what they write lands in a temporary folder). No cell may print a warning or anything on stderr:
the Python API is as quiet as the command line. They are stored without outputs."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from pyro_vae.rundir import Run

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "examples" / "notebooks"
NOTEBOOKS = sorted(path.name for path in FOLDER.glob("*.ipynb"))
#: a warning's text, whichever stream or display carries it
WARNING = re.compile(r"\w*Warning\b|\bWARNING\b|\bwarn(ing)?:", re.IGNORECASE)


class ThisPython(AsyncKernelManager):
    """A kernel of the interpreter running the tests, whatever kernel specs the machine has."""

    @property
    def kernel_spec(self) -> KernelSpec:
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name="Python (tests)",
            language="python",
        )


def test_the_notebooks_are_found():
    assert NOTEBOOKS == ["experiment.ipynb", "quickstart.ipynb", "score_any_pyro_model.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_without_outputs(name):
    nb = nbformat.read(FOLDER / name, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
    assert "widgets" not in nb.metadata


def outputs(nb: nbformat.NotebookNode) -> list[tuple[str, str, str]]:
    """(first line of the cell, kind of output, its text) of every output."""
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        head = cell.source.splitlines()[0] if cell.source else ""
        for out in cell.outputs:
            if out.output_type == "stream":
                found.append((head, out.name, out.text))
            elif out.output_type == "error":
                found.append((head, "error", "\n".join(out.traceback)))
            else:
                for mime, value in out.get("data", {}).items():
                    if mime.startswith("text/"):
                        found.append((head, mime, value))
                    else:
                        found.append((head, mime, ""))
    return found


def execute(name: str, tmp_path: Path) -> nbformat.NotebookNode:
    shutil.copytree(ROOT / "examples" / "configs", tmp_path / "examples" / "configs")
    shutil.copytree(
        FOLDER,
        tmp_path / "examples" / "notebooks",
        ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"),
    )
    where = tmp_path / "examples" / "notebooks"
    nb = nbformat.read(where / name, as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_manager_class=ThisPython,
        resources={"metadata": {"path": str(where)}},
    )
    client.execute()
    return nb


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_runs_headless_without_a_warning(name, tmp_path):
    nb = execute(name, tmp_path)
    found = outputs(nb)
    loud = [
        (head, kind, text) for head, kind, text in found if kind == "stderr" or WARNING.search(text)
    ]
    assert not loud, "\n".join(f"cell {head!r}, {kind}:\n{text}" for head, kind, text in loud)
    kinds = {kind for _, kind, _ in found}
    assert "image/png" in kinds if name != "score_any_pyro_model.ipynb" else "stdout" in kinds
    markdown = [text for _, kind, text in found if kind == "text/markdown"]
    printed = "".join(text for _, kind, text in found if kind == "stdout")
    if name == "experiment.ipynb":
        swept = tmp_path / "examples" / "notebooks" / "runs" / "priors"
        manifest = json.loads((swept / "experiment.json").read_text())
        assert [r["state"] for r in manifest["runs"]] == ["finished"] * 4
        assert any(text.startswith("sweep: 4 runs in runs/priors: 4 finished") for text in markdown)
        assert any(
            "## Paired differences against prior.name=standard_normal" in t for t in markdown
        )
        gain = re.search(
            r"^prior.name=vamp − prior.name=standard_normal, log_px: (\S+) ", printed, re.M
        )
        assert gain is not None, printed
        # the gain printed is the paired one: per seed the mean over test images of the two
        # runs' difference, then the mean over the two seeds, from the runs' own per-image files
        per_seed = [
            (
                Run(swept / f"prior=vamp/seed-{s}").points("test")["log_px"]
                - Run(swept / f"prior=standard_normal/seed-{s}").points("test")["log_px"]
            ).mean()
            for s in (0, 1)
        ]
        assert float(gain.group(1)) == pytest.approx(sum(per_seed) / 2, abs=5e-4)
        compared = tmp_path / "examples" / "notebooks" / "runs" / "estimators"
        assert (compared / "compare.md").is_file() and (compared / "figures/compare.png").is_file()
        shown = [t for t in markdown if "| estimator | seeds |" in t]
        assert len(shown) == 1 and "| iwae[k=5] | 2 |" in shown[0], markdown
    elif name == "quickstart.ipynb":
        assert (
            tmp_path / "examples" / "notebooks" / "runs" / "quickstart" / "eval-val.json"
        ).is_file()
        assert any(text.startswith("run runs/quickstart: finished") for text in markdown)
        assert any(text.startswith("val: log p(x) ≥") for text in markdown)
    else:
        # IS and AIS each within a few of their own standard errors of the closed form
        errors = re.findall(r"^ *(IS|AIS): .* = ([+-]\d+\.\d) s\.e\.", printed, re.MULTILINE)
        assert [method for method, _ in errors] == ["IS", "AIS"], printed
        assert all(abs(float(z)) < 5 for _, z in errors), printed
