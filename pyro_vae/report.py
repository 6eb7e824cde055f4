"""One self-contained HTML page for a run directory.

:func:`write_report` reads what a run leaves behind — ``config.yaml`` (the resolved spec),
``metrics.csv`` (Lightning's CSVLogger), one ``eval-<split>[-<method>].json`` per evaluated split
and method (or an older run's single ``eval.json``), ``compare.csv``, ``figures/*.png`` and
``figures/<split>/*.png`` — and
writes ``run_dir/report.html``: inline CSS, every image a base64 ``data:`` URI, no scripts and no
external resources, so the page opens from disk without a server and travels as one file. Every
piece of text from the run is escaped with :func:`html.escape`. The page is written atomically
under the run's lock (:class:`pyro_vae.rundir.Run`): a symbolic link named report.html is replaced,
its target left alone. The lock is taken before the run is read, so the page shows one state of it.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pyro_vae.captions import CAPTIONS
from pyro_vae.figures import read_metrics, read_text
from pyro_vae.registry import SpecError
from pyro_vae.rundir import Run

#: What the keys of eval.json mean; unknown keys are shown without a description.
EVAL_KEYS = {
    "log_px": "importance-sampled log p(x) per data point: a stochastic lower bound (nats)",
    "log_px_sem": "standard error of log_px over data points",
    "elbo": "evidence lower bound per data point (nats)",
    "kl": "KL(q(z|x) || p(z)) per data point (nats)",
    "recon": "E_q[log p(x|z)] per data point (nats)",
    "active_units": "latent dimensions u with Cov_x(E_q[z_u|x]) > 0.01 (Burda et al. 2015)",
    "bits_per_dim": "-log_px / (P ln 2)",
    "scale": "the scale log_px, elbo and recon are on (the data's own)",
    "model_scale": "the scale the model sees (data, standardized or dequantized)",
    "log_jacobian": "log |dx'/dx| per data point, included in log_px, elbo and recon",
    "num_samples": "importance samples K per data point",
    "wall_time_s": "evaluation wall time (s)",
}

#: What the keys of eval-<split>-ais.json and eval-simulated-bdmc.json mean.
ANNEALING_KEYS = {
    "log_px": "AIS log p(x) per data point, mean: a stochastic lower bound (nats)",
    "log_px_sem": "standard error of log_px over data points",
    "log_px_stderr": "mean per-point Monte Carlo standard error of AIS (over chains)",
    "is_log_px": "importance-sampled log p(x) on the same points (nats)",
    "gap": "AIS − IS (ais), or upper − lower bound (bdmc), mean over points (nats)",
    "gap_sem": "standard error of gap over data points",
    "lower": "forward AIS from the guide: stochastic lower bound of log p(x) (nats)",
    "upper": "reverse AIS from the exact posterior draw: stochastic upper bound (nats)",
    "acceptance": "mean HMC acceptance probability (step sizes adapted toward 0.65)",
    "step_size": "median step size of the last transition",
    "num_chains": "AIS chains per data point",
    "num_steps": "annealing steps T (T − 1 HMC transitions)",
    "leapfrog_steps": "leapfrog steps per HMC transition",
    "log_jacobian": "log |dx'/dx| per data point, included in log_px and is_log_px",
    "scale": "the scale the BDMC bounds are on (the model's: simulated points live there)",
}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 70rem; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2rem; }
pre { background: #f6f8fa; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.5rem 0; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f0f0f0; }
figure { margin: 1.5rem 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9rem; color: #444; }
.note { color: #777; font-style: italic; }
"""


def write_report(run_dir: Path | str) -> Path:
    """Write ``run_dir/report.html`` and return its path; :class:`SpecError` when ``run_dir`` is
    not a run directory (it must hold config.yaml), or holds a report.html of someone else's."""
    run_dir = Path(run_dir)
    run = Run(run_dir)
    run.require_config()
    with run.locked("report"):  # the page shows one state of the run
        page = run.report  # a link is replaced, never written through (its target stays)
        if page.is_file() and not page.is_symlink() and not _ours(page):
            raise SpecError(
                "",
                f"{run.report} exists and is not a pyro-vae report; nothing "
                "was changed: move it away to write one",
            )
        return run.write_text(page, _page(run_dir))  # atomic: a full disk leaves the old one


def _ours(page: Path) -> bool:
    """Whether ``page`` is a report this module wrote (its title, near the top)."""
    with page.open("rb") as f:
        return b"<title>pyro-vae run " in f.read(4096)


def _page(run_dir: Path) -> str:
    title = f"pyro-vae run {run_dir.resolve().name}"
    evaluations = [
        (f"Evaluation: {label}", _evaluation(path)) for label, path in _evaluation_files(run_dir)
    ]
    split_figures = [
        (f"Figures: {folder.name} split", _figures(folder))
        for folder in sorted(p for p in (run_dir / "figures").glob("*") if p.is_dir())
    ]
    sections = [
        ("Spec (config.yaml)", f"<pre>{_esc(read_text(run_dir / 'config.yaml'))}</pre>"),
        ("Training metrics (metrics.csv)", _metrics(run_dir / "metrics.csv")),
        *(
            evaluations
            or [
                (
                    "Evaluation",
                    _note("Not evaluated: no eval-<split>.json (run `pyro-vae evaluate RUN_DIR`)."),
                )
            ]
        ),
        ("Estimator comparison (compare.csv)", _comparison(run_dir / "compare.csv")),
        ("How loose is the bound? AIS and BDMC", _annealing(run_dir)),
        ("Figures" if not split_figures else "Figures: training", _figures(run_dir / "figures")),
        *split_figures,
    ]
    body = "\n".join(
        f"<section>\n<h2>{_esc(h)}</h2>\n{content}\n</section>" for h, content in sections
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<h1>{_esc(title)}</h1>\n<p class="note">{_esc(str(run_dir))}</p>\n{body}\n'
        "</body>\n</html>\n"
    )


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _fmt(value: Any) -> str:
    """Integers as they are, other numbers to 6 significant digits, structures as JSON."""
    if isinstance(value, (bool, str)) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return (
            str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.6g}"
        )
    return json.dumps(value)


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        numeric = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        return f'<td class="num">{_esc(_fmt(v))}</td>' if numeric else f"<td>{_esc(_fmt(v))}</td>"

    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "\n".join(f"<tr>{''.join(cell(v) for v in row)}</tr>" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def _metrics(path: Path) -> str:
    """Final, minimum and maximum of every logged metric; the best ELBO (validation first)."""
    if not path.is_file():
        return _note("No metrics.csv in this run.")
    metrics = read_metrics(path)
    epoch = metrics.get("epoch", np.full(len(next(iter(metrics.values()), ())), np.nan))
    rows = []
    for name, values in metrics.items():
        logged = np.flatnonzero(np.isfinite(values))
        if name in ("epoch", "step") or not len(logged):
            continue
        last = logged[-1]
        rows.append((name, values[last], np.nanmin(values), np.nanmax(values), epoch[last]))
    if not rows:
        return _note("metrics.csv holds no metric values.")
    elbo = sorted((r[0] for r in rows if "elbo" in r[0]), key=lambda c: not c.startswith("val"))
    best = ""
    if elbo:
        i = int(np.nanargmax(metrics[elbo[0]]))
        best = (
            f"<p>Best {_esc(elbo[0])}: <b>{_esc(_fmt(metrics[elbo[0]][i]))}</b> at epoch "
            f"{_esc(_fmt(epoch[i]))} (higher is better).</p>\n"
        )
    return best + _table(["metric", "final", "min", "max", "final at epoch"], rows)


def _evaluation_files(run_dir: Path) -> list[tuple[str, Path]]:
    """(label naming the split, file) of every evaluation: ``eval-<split>[-<method>].json`` by
    name, then an older run's ``eval.json``, labelled with the split recorded in it."""
    files = []
    for path in sorted(run_dir.glob("eval-*.json")):
        split, _, method = path.stem.removeprefix("eval-").partition("-")
        if method in ("ais", "bdmc"):  # their own section: _annealing
            continue
        files.append(
            (f"{split} split" + (f", {method}" if method else "") + f" ({path.name})", path)
        )
    legacy = run_dir / "eval.json"
    if legacy.is_file():
        try:
            split = json.loads(read_text(legacy)).get("split", "unknown")
        except (json.JSONDecodeError, AttributeError):
            split = "unknown"
        files.append((f"{split} split ({legacy.name}, written by an older pyro-vae)", legacy))
    return files


def _evaluation(path: Path) -> str:
    try:
        summary = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        return _note(f"eval.json could not be read: {exc}")
    if not isinstance(summary, Mapping):
        return f"<pre>{_esc(json.dumps(summary, indent=2))}</pre>"
    return _table(
        ["key", "value", "meaning"], [(k, v, EVAL_KEYS.get(k, "")) for k, v in summary.items()]
    )


def _comparison(path: Path) -> str:
    if not path.is_file():
        return _note("No compare.csv in this run.")
    reader = csv.DictReader(io.StringIO(read_text(path)))
    rows = [[_number(r.get(c) or "") for c in reader.fieldnames or []] for r in reader]
    return _table(reader.fieldnames or [], rows)


def _annealing(run_dir: Path) -> str:
    """Every ``eval-<split>-ais.json`` and ``eval-<split>-bdmc.json``: the summary (per-point
    values left out); their figures are among the split's figures."""
    paths = sorted(run_dir.glob("eval-*-ais.json")) + sorted(run_dir.glob("eval-*-bdmc.json"))
    if not paths:
        return _note(
            "No AIS or BDMC evaluation (run `pyro-vae evaluate RUN_DIR --method ais`, "
            "or `--method bdmc`)."
        )
    parts = []
    for path in paths:
        try:
            summary = json.loads(path.read_text())
            split, method = summary["split"], summary["method"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            parts.append(_note(f"{path.name} could not be read: {exc}"))
            continue
        rows = [(k, v, ANNEALING_KEYS.get(k, "")) for k, v in summary.items() if k != "points"]
        parts.append(
            f"<h3>{_esc(path.name)}</h3>\n"
            + _table(["key", "value", "meaning"], rows)
            + _note(
                f'Per-point values: under "points" in the file; figure: '
                f"figures/{split}/{method}.png, in the figures of the {split} split."
            )
        )
    return "\n".join(parts)


def _figures(folder: Path) -> str:
    rank = {
        stem: i for i, stem in enumerate(CAPTIONS)
    }  # a run's figures in story order, then others
    pngs = sorted(folder.glob("*.png"), key=lambda p: (rank.get(p.stem, len(rank)), p.name))
    if not pngs:
        return _note("No figures in figures/.")
    return "\n".join(
        f'<figure>\n<img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" '
        f'alt="{_esc(p.stem)}">\n<figcaption><b>{_esc(p.name)}</b>: '
        f"{_esc(CAPTIONS.get(p.stem, p.stem.replace('_', ' ')))}</figcaption>\n</figure>"
        for p in pngs
    )
