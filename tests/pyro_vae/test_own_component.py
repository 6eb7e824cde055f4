"""Components from the user's own module: named ``module:Class`` (or an installed entry point),
validated as built-ins are, recorded in the run, found again by evaluate, report and --resume."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from pyro_vae.cli import main
from pyro_vae.components.priors import PRIORS
from pyro_vae.registry import SpecError
from pyro_vae.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
OWN_PRIOR = ROOT / "examples" / "own_prior"
TINY = [
    "latent_dim=2",
    "encoder.hidden=[8]",
    "decoder.hidden=[8]",
    "data.limit=64",
    "data.test_fraction=0.02",
    "prior.flows=2",
    "prior.hidden=8",
    "train.max_epochs=1",
    "train.batch_size=32",
    "evaluate.num_samples=8",
    "train.progress=false",
]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(OWN_PRIOR)}
    return subprocess.run(
        [sys.executable, "-m", "pyro_vae.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def test_a_flow_prior_from_its_own_module_trains_evaluates_and_resumes(tmp_path):
    """In subprocesses, with only PYTHONPATH pointing at examples/own_prior: train with the
    default train.jit (the spline coupling cannot be traced: one notice line, no crash; without
    --verbose and a terminal, none),
    evaluate, report, and resume for a second epoch."""
    run = tmp_path / "run"
    sets = [x for s in TINY for x in ("--set", s)]
    trained = cli(
        "train",
        str(OWN_PRIOR / "digits-flow.yaml"),
        "--out",
        str(run),
        *sets,
        "--verbose",
        cwd=tmp_path,
    )  # notices reach a non-terminal stderr with --verbose
    assert trained.returncode == 0, trained.stderr[-3000:]
    notices = [line for line in trained.stderr.splitlines() if "cannot be traced" in line]
    assert len(notices) == 1 and notices[0].startswith("pyro-vae: train.jit:"), trained.stderr
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["prior"] == {
        "name": "flow_prior:FlowPrior",
        "flows": 2,
        "hidden": 8,
        "bins": 8,
        "seed": 0,
    }
    for args in (
        ["evaluate", str(run)],
        ["report", str(run)],
        ["train", "--resume", str(run), "--set", "train.max_epochs=2"],
    ):
        result = cli(*args, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr[-3000:])
    metrics = (run / "metrics.csv").read_text()
    assert "val_elbo" in metrics and len({line.split(",")[0] for line in metrics.splitlines()}) > 2


@pytest.mark.parametrize(
    "prior, message",
    [
        (
            {"name": "flow_prior:FlowPrior", "flow": 2},
            "prior.flow: unknown key; valid keys: bins, flows, hidden, seed (did you mean 'flows'?)",
        ),
        ({"name": "flow_prior:FlowPrior", "flows": "many"}, "prior.flows: expected an integer"),
        ({"name": "flow_prior:FlowPrior", "flows": 0}, "prior: flows must be >= 1, got 0"),
        ({"name": "no_such_module:FlowPrior"}, "prior.name: cannot import module 'no_such_module'"),
        (
            {"name": "flow_prior:Nothing"},
            "prior.name: module 'flow_prior' has no attribute 'Nothing'",
        ),
        ({"name": "flow_prior:"}, "prior.name: 'flow_prior:' is not of the form"),
    ],
)
def test_an_own_component_is_validated_as_a_built_in_one(monkeypatch, prior, message):
    monkeypatch.syspath_prepend(str(OWN_PRIOR))
    with pytest.raises(SpecError) as info:
        load_spec({"prior": prior})
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_a_bad_own_component_exits_2_with_one_line(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("prior: {name: 'no_such_module:FlowPrior'}\n")
    assert main(["train", str(spec), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot import module 'no_such_module'" in err
    assert not (tmp_path / "run").exists()


def test_an_installed_entry_point_extends_the_registry(tmp_path, monkeypatch):
    """A distribution on sys.path that declares ``[pyro_vae.prior] flow = flow_prior:FlowPrior``
    makes ``prior: flow`` valid and lists it with the built-ins."""
    info = tmp_path / "site" / "my_priors-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-priors\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent("""\
        [pyro_vae.prior]
        flow = flow_prior:FlowPrior
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(OWN_PRIOR))
    spec = load_spec({"prior": {"name": "flow", "flows": 3}, "latent_dim": 2})
    assert spec.prior.params["flows"] == 3 and "flow" in PRIORS.names()


MY_ELBO = """
from pyro.infer import Trace_ELBO


class MyELBO(Trace_ELBO):
    def __init__(self, particles: int = 1, max_plate_nesting: int = 1) -> None:
        super().__init__(
            num_particles=particles, max_plate_nesting=max_plate_nesting, vectorize_particles=True
        )
"""


def test_an_own_elbo_class_trains_from_the_command_line_and_its_entry_point_is_listed(
    tmp_path, monkeypatch, capsys
):
    """``--set estimator.name=my_module:MyELBO`` trains (issue #29 reported a KeyError, exit 1),
    and an installed ``pyro_vae.estimator`` entry point is listed by ``pyro-vae datasets``."""
    (tmp_path / "my_module.py").write_text(MY_ELBO)
    monkeypatch.delitem(sys.modules, "my_module", raising=False)  # another test's, if imported
    info = tmp_path / "my_elbos-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-elbos\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pyro_vae.estimator]\nmine = my_module:MyELBO\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    sets = [
        "estimator.name=my_module:MyELBO",
        "estimator.particles=2",
        "latent_dim=2",
        "encoder.hidden=[8]",
        "decoder.hidden=[8]",
        "data.limit=64",
        "train.max_epochs=1",
        "train.batch_size=32",
        "evaluate.num_samples=8",
        "evaluate.figures=false",
        "train.progress=false",
    ]
    args = ["train", str(ROOT / "examples/configs/digits.yaml"), "--out", str(run)]
    assert main([*args, *(x for s in sets for x in ("--set", s))]) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["estimator"] == {
        "name": "my_module:MyELBO",
        "particles": 2,
        "max_plate_nesting": 1,
    }
    capsys.readouterr()
    assert main(["datasets"]) == 0
    assert "  mine(particles=1, max_plate_nesting=1)" in capsys.readouterr().out.splitlines()
