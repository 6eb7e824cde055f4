"""``pyro-vae evaluate --method ais|bdmc``: files, figures, the report section, bad flags."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from inference.ais import AISOptions
from pyro_vae.annealing import Annealing, evaluate_ais, evaluate_bdmc, merge_ais
from pyro_vae.cli import main
from pyro_vae.components.priors import PRIORS
from pyro_vae.prepared import prepare
from pyro_vae.rundir import Run
from pyro_vae.spec import load_spec

QUICK = [
    "--set",
    "train.max_epochs=1",
    "--set",
    "train.progress=false",
    "--set",
    "evaluate.num_samples=20",
    "--set",
    "encoder.hidden=[16]",
    "--set",
    "decoder.hidden=[16]",
    "--set",
    "latent_dim=2",
]
TINY = ["--chains", "3", "--steps", "4", "--leapfrog", "2"]
NETS = ["encoder.hidden=[16]", "decoder.hidden=[16]", "latent_dim=2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("annealing") / "run"
    assert main(["train", "examples/configs/digits.yaml", *QUICK, "--out", str(out)]) == 0
    return out


def test_ais_writes_its_summary_with_is_on_the_same_points(run: Path, capsys) -> None:
    is_file = Run(run).eval_path("test").read_text()  # written by train
    capsys.readouterr()
    assert main(["evaluate", str(run), "--method", "ais", *TINY, "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "nats on the data scale (AIS, 3 chains × 4 steps, 5 points;" in out and "AIS − IS" in out
    summary = json.loads(Run(run).eval_path("test", "ais").read_text())
    points = summary["points"]
    assert summary["num_points"] == 5 and summary["is_num_samples"] == 20
    assert all(len(v) == 5 for v in points.values())
    gaps = [a - i for a, i in zip(points["log_px"], points["is_log_px"])]
    assert summary["gap"] == pytest.approx(sum(gaps) / 5)
    assert summary["log_px"] == pytest.approx(sum(points["log_px"]) / 5)
    assert (Run(run).figures_dir("test") / "ais.png").is_file()
    assert Run(run).eval_path("test").read_text() == is_file  # the IS file is the IS command's
    arrays = Run(run).points("test", "ais")  # the same per-point values, as arrays
    assert list(arrays["index"]) == [0, 1, 2, 3, 4]
    assert list(arrays["log_px"]) == points["log_px"]
    assert list(arrays["log_px_se"]) == points["stderr"]
    assert summary["data_sha256"] == Run(run).summary("test")["data_sha256"]


def test_one_chain_has_no_monte_carlo_error_and_says_so(run: Path, capsys) -> None:
    """The spread over chains needs two chains: with one, the line says so instead of 'nan'."""
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                str(run),
                "--method",
                "ais",
                "--chains",
                "1",
                "--steps",
                "2",
                "--leapfrog",
                "2",
                "--limit",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "AIS, 1 chain × 2 steps" in out and "undefined with one chain" in out
    assert "nan" not in out
    assert json.loads(Run(run).eval_path("test", "ais").read_text())["log_px_stderr"] is None


def test_merged_pieces_give_the_summary_of_all_their_points(run: Path) -> None:
    """``merge_ais`` (how a long AIS run is put together from saved pieces): means, standard
    errors and the gap recomputed over the concatenated points; other settings are refused."""
    from pyro_vae.prepared import load_run

    prep = load_run(run)
    x = prep.bundle.split("test")[:7]
    options = Annealing(3, 4, 2)
    pieces = [evaluate_ais(prep.vae, part, "test", options, 20, 64.0) for part in x.split(4)]
    merged = merge_ais(pieces)
    log_px = torch.tensor(
        pieces[0]["points"]["log_px"] + pieces[1]["points"]["log_px"], dtype=torch.float64
    )
    gap = log_px - torch.tensor(
        pieces[0]["points"]["is_log_px"] + pieces[1]["points"]["is_log_px"], dtype=torch.float64
    )
    assert merged["num_points"] == 7 and len(merged["points"]["step_size"]) == 7
    assert merged["log_px"] == pytest.approx(float(log_px.mean()), rel=1e-12)
    assert merged["log_px_sem"] == pytest.approx(float(log_px.std() / 7**0.5), rel=1e-12)
    assert merged["gap_sem"] == pytest.approx(float(gap.std() / 7**0.5), rel=1e-12)
    assert merged["log_px"] == pytest.approx(
        (4 * pieces[0]["log_px"] + 3 * pieces[1]["log_px"]) / 7, rel=1e-12
    )
    assert merge_ais([pieces[0]])["points"] == pieces[0]["points"]
    other = evaluate_ais(prep.vae, x[:2], "test", Annealing(3, 5, 2), 20, 64.0)
    with pytest.raises(ValueError, match="different settings"):
        merge_ais([pieces[0], other])


def test_bdmc_writes_the_sandwich_and_the_report_shows_both(run: Path, capsys) -> None:
    assert main(["evaluate", str(run), "--method", "bdmc", *TINY, "--limit", "3"]) == 0
    summary = json.loads(Run(run).eval_path("simulated", "bdmc").read_text())
    lower, upper = summary["points"]["lower"], summary["points"]["upper"]
    assert summary["num_points"] == len(lower) == len(upper) == 3
    assert summary["gap"] == pytest.approx(sum(u - lo for u, lo in zip(upper, lower)) / 3)
    assert (Run(run).figures_dir("simulated") / "bdmc.png").is_file()
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "How loose is the bound?" in page and "eval-simulated-bdmc.json" in page
    assert 'alt="bdmc"' in page


@pytest.mark.parametrize("flag", ["--chains", "--steps", "--leapfrog", "--limit"])
def test_bad_counts_exit_2_with_one_line_and_write_nothing(run: Path, flag: str, capsys) -> None:
    before = sorted(p.name for p in run.rglob("*"))
    capsys.readouterr()
    assert main(["evaluate", str(run), "--method", "ais", flag, "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyro-vae: error:") and flag in err and "\n" not in err
    assert sorted(p.name for p in run.rglob("*")) == before


def test_the_flags_stand_for_inference_ais_options() -> None:
    """``--chains``, ``--steps`` and ``--leapfrog`` are C, T and L of :class:`AISOptions`, the
    rest its defaults; the summary names the schedule and q₀ those defaults use."""
    flags = Annealing(3, 4, 2, limit=5)
    assert flags.ais_options(64.0, progress=True) == AISOptions(
        num_chains=3, num_steps=4, leapfrog_steps=2, memory_budget_mb=64.0, progress=True
    )
    default = AISOptions()
    assert Annealing().ais_options(default.memory_budget_mb) == default
    assert flags.describe()["schedule"] == default.schedule
    assert flags.describe()["init"] == default.init


@pytest.mark.parametrize("prior", PRIORS.names())
def test_every_prior_anneals_both_ways(prior: str) -> None:
    """AIS and BDMC move the chains in the unconstrained space of the prior's support, which for
    a mixture (``mixture``, ``vamp``) torch wraps in a constraint with no bijection of its own."""
    prep = prepare(load_spec("examples/configs/digits.yaml", [*NETS, f"prior.name={prior}"]))
    x = prep.bundle.split("test")[:2]
    ais = evaluate_ais(prep.vae, x, "test", Annealing(2, 3, 1), 4, 64.0)
    assert math.isfinite(ais["log_px"]) and ais["num_points"] == 2
    bdmc = evaluate_bdmc(prep.vae, x, Annealing(2, 3, 1), 64.0)
    assert math.isfinite(bdmc["lower"]) and math.isfinite(bdmc["upper"])
