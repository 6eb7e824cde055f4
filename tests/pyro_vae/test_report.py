"""The run report: one self-contained page that embeds every figure and escapes every text."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from pyro_vae.registry import SpecError
from pyro_vae.report import write_report

HOSTILE = '<script>alert("x")</script> & co'


def make_run(run_dir: Path, evaluated: bool = True) -> Path:
    """A run directory as training leaves it, with markup-like text in every file."""
    (run_dir / "figures").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(
        f"data: {{name: digits}}\nlatent_dim: 2\nnote: '{HOSTILE}'\n"
    )
    (run_dir / "metrics.csv").write_text(
        "epoch,step,train_elbo,beta,val_elbo\n"
        "0,0,-120.5,0.5,\n0,1,-110.25,1.0,\n0,1,,,-112.0\n"
        "1,2,-100.0,1.0,\n1,3,-101.0,1.0,\n1,3,,,-105.5\n"
    )
    if evaluated:
        (run_dir / "eval.json").write_text(
            json.dumps(
                {
                    "log_px": -86.123456789,
                    "log_px_sem": 0.25,
                    "active_units": 17,
                    "num_samples": 5000,
                    HOSTILE: [1, 2],
                }
            )
        )
    (run_dir / "compare.csv").write_text(
        f"estimator,log_px,log_px_stderr\ntrace,-90.5,0.3\n{HOSTILE.replace(',', ';')},-89.0,\n"
    )
    rng = np.random.default_rng(0)
    for name in ("latent_map", "prior_samples", "a&b<c>"):
        matplotlib.image.imsave(
            run_dir / "figures" / f"{name}.png", rng.random((8, 12)), cmap="gray"
        )
    return run_dir


def test_report_embeds_every_figure_and_escapes_text(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    page = write_report(run).read_text()
    assert write_report(run) == run / "report.html"
    pngs = sorted((run / "figures").glob("*.png"))
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert page.count("data:image/png;base64,") == len(pngs) == 3
    assert sorted(base64.b64decode(u) for u in uris) == sorted(p.read_bytes() for p in pngs)
    assert re.findall(r'(?:src|href)="(?!data:)', page) == [] and "<link" not in page
    assert "<script" not in page  # the hostile text appears only escaped
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co"
    assert page.count(escaped) == 3  # in the spec, the evaluation and the comparison
    assert "a&amp;b&lt;c&gt;.png" in page
    assert "Samples from the model" in page  # a known figure gets its caption
    # a run's figures in the order of figures.CAPTIONS, unknown ones after them
    assert page.index("prior_samples.png") < page.index("latent_map.png") < page.index("a&amp;b")
    assert "Best val_elbo: <b>-105.5</b> at epoch 1" in page
    assert '<td>train_elbo</td><td class="num">-101</td><td class="num">-120.5</td>' in page
    assert '<td>log_px</td><td class="num">-86.1235</td>' in page
    assert '<td>num_samples</td><td class="num">5000</td>' in page
    assert "Not evaluated" not in page


def test_report_without_eval_or_figures(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", evaluated=False)
    for png in (run / "figures").glob("*.png"):
        png.unlink()
    (run / "compare.csv").unlink()
    page = write_report(run).read_text()
    assert "Not evaluated: no eval-&lt;split&gt;.json" in page and "No compare.csv" in page
    assert "No figures" in page and "data:image/png" not in page


@pytest.mark.parametrize("make", [lambda d: d / "missing", lambda d: d])
def test_not_a_run_directory_is_a_spec_error(tmp_path: Path, make) -> None:
    with pytest.raises(SpecError, match="no such run directory|not a run directory"):
        write_report(make(tmp_path))


def test_a_report_html_of_someone_elses_is_never_replaced(tmp_path: Path) -> None:
    """A folder with a config.yaml and a report.html of the user's (a project, not a run): the
    page stays; a report this module wrote is replaced."""
    run = make_run(tmp_path / "run")
    (run / "report.html").write_text("<h1>my thesis report</h1>\n")
    with pytest.raises(SpecError, match="report.html exists and is not a pyro-vae report"):
        write_report(run)
    assert (run / "report.html").read_text() == "<h1>my thesis report</h1>\n"
    (run / "report.html").unlink()
    first = write_report(run).read_text()
    (run / "eval.json").unlink()
    assert write_report(run).read_text() != first  # ours: replaced


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH: apt install chromium "
    "(.ci/run installs it), then this test renders the report",
)
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """Every embedded image decodes in a real browser (counted by a script the harness adds)."""
    page = write_report(make_run(tmp_path / "run")).read_text()
    probe = (
        "<script>window.addEventListener('load', () => { const all = [...document.images];"
        " document.body.dataset.loaded = all.filter(i => i.complete && i.naturalWidth > 0)"
        ".length + '/' + all.length; });</script>"
    )
    harness = tmp_path / "harness.html"
    harness.write_text(page.replace("</body>", probe + "</body>"))
    out = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            harness.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert 'data-loaded="3/3"' in out.stdout, out.stderr[-2000:]


def test_each_evaluation_is_a_section_named_for_its_split(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")  # its eval.json: an older run's single file
    for split, value in (("test", -80.5), ("val", -81.25)):
        (run / f"eval-{split}.json").write_text(json.dumps({"split": split, "log_px": value}))
        folder = run / "figures" / split
        folder.mkdir()
        matplotlib.image.imsave(folder / "log_px.png", np.zeros((4, 4)), cmap="gray")
    page = write_report(run).read_text()
    headings = re.findall(r"<h2>(Evaluation[^<]*)</h2>", page)
    assert headings == [
        "Evaluation: test split (eval-test.json)",
        "Evaluation: val split (eval-val.json)",
        "Evaluation: unknown split (eval.json, written by an older pyro-vae)",
    ]
    test, val = page.index("Evaluation: test split"), page.index("Evaluation: val split")
    assert (
        test
        < page.index('<td class="num">-80.5</td>')
        < val
        < page.index('<td class="num">-81.25</td>')
    )
    assert "<h2>Figures: test split</h2>" in page and "<h2>Figures: val split</h2>" in page
