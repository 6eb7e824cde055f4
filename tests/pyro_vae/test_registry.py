"""A spec, and so a run's config.yaml, only ever constructs components: a name that resolves to
anything but a subclass of its kind's base (pyro_vae.entries; an estimator may be a pyro.infer.ELBO)
is refused before it is called, whichever command reads the run, and reading a run that names
code outside pyro-vae says which modules it imports."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import pyro_vae
from pyro_vae.cli import EXIT_USER_ERROR, main
from pyro_vae.components.priors import PRIORS
from pyro_vae.entries import LikelihoodEntry, PriorEntry
from pyro_vae.registry import Registry, SpecError, frozen_params
from pyro_vae.spec import load_spec

DIGITS = str(Path("examples/configs/digits.yaml").resolve())
TINY = [
    "latent_dim=2",
    "encoder.hidden=[8]",
    "decoder.hidden=[8]",
    "train.batch_size=32",
    "train.progress=false",
    "data.limit=64",
    "train.max_epochs=1",
    "evaluate.num_samples=4",
]

OWN = """
import torch
from pyro_vae.entries import PriorEntry
from pyro_vae.likelihoods import BernoulliLikelihood
from pyro_vae.priors import StandardNormalPrior
from pyro_vae.registry import frozen_params

CALLED = []


@frozen_params
class NotAPrior:  # the right shape, but no PriorEntry
    def build(self, latent_dim, encoder, train_data):
        CALLED.append("NotAPrior")
        return StandardNormalPrior(latent_dim)


@frozen_params
class LikelihoodAsPrior(PriorEntry):  # a prior by its base, returning a likelihood
    def build(self, latent_dim, encoder, train_data):
        return BernoulliLikelihood()


@frozen_params
class Abstract(PriorEntry):  # no build
    pass


@frozen_params
class Honest(PriorEntry):
    def build(self, latent_dim, encoder, train_data):
        return StandardNormalPrior(latent_dim)
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", DIGITS, *(f"--set={s}" for s in TINY), "--out", str(run)]) == 0
    return run


def planted(run: Path, tmp_path: Path, key: str, component: dict) -> Path:
    """A copy of ``run`` whose config.yaml names ``component`` under ``key``."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config[key] = component
    (copy / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return copy


HOSTILE = [
    ("prior", {"name": "subprocess:getoutput", "cmd": "touch {marker}"}, "a function"),
    ("prior", {"name": "os:system", "command": "touch {marker}"}, "a builtin_function_or_method"),
    ("estimator", {"name": "subprocess:getoutput", "cmd": "touch {marker}"}, "a function"),
    ("prior", {"name": "subprocess:Popen", "args": ["touch", "{marker}"]}, "the class Popen"),
    ("estimator", {"name": "subprocess:Popen", "args": ["touch", "{marker}"]}, "the class Popen"),
    ("likelihood", {"name": "pyro_vae.components.priors:Vamp"}, "the class Vamp"),
]


def _filled(component: dict, marker: Path) -> dict:
    def fill(v):
        if isinstance(v, str):
            return v.replace("{marker}", str(marker))
        return [fill(x) for x in v] if isinstance(v, list) else v

    return {k: fill(v) for k, v in component.items()}


@pytest.mark.parametrize(
    "key, component, what", HOSTILE, ids=[f"{k}-{c['name']}" for k, c, _ in HOSTILE]
)
@pytest.mark.parametrize("command", ["evaluate", "encode", "sample", "resume", "load_run"])
def test_a_run_naming_a_function_or_a_foreign_class_is_refused_before_any_call(
    finished_run, tmp_path, capsys, key, component, what, command
):
    marker = tmp_path / "pwned"  # what the shell command would create
    run = planted(finished_run, tmp_path, key, _filled(component, marker))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    if command == "load_run":
        with pytest.raises(SpecError) as info:
            pyro_vae.load_run(run)
        message = str(info.value)
    else:
        argv = {
            "evaluate": ["evaluate", str(run)],
            "encode": ["encode", str(run), "--out", str(tmp_path / "z.npz")],
            "sample": ["sample", str(run), "-n", "2", "--out", str(tmp_path / "x.npz")],
            "resume": ["train", "--resume", str(run)],
        }[command]
        assert main(argv) == EXIT_USER_ERROR
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "imports code from outside" not in line]
        assert len(lines) == 1, err
        message = lines[0]
    assert not marker.exists(), "the run's config.yaml ran a shell command"
    assert f"{key}.name: '{component['name']}' is {what}, not a {key} class" in message
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_the_console_script_runs_no_shell_command_from_a_run(finished_run, tmp_path):
    """End to end, in its own process: exit 2, the notice naming the module, then the refusal."""
    marker = tmp_path / "pwned"
    run = planted(
        finished_run, tmp_path, "prior", {"name": "os:system", "command": f"touch {marker}"}
    )
    exe = str(Path(sys.executable).with_name("pyro-vae"))
    proc = subprocess.run([exe, "evaluate", str(run)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_USER_ERROR, proc.stderr
    assert not marker.exists()
    notice, error = proc.stderr.splitlines()
    assert "imports code from outside pyro-vae: prior.name: 'os'" in notice
    assert error.startswith("pyro-vae: error: prior.name: 'os:system' is a "), error


@pytest.fixture
def own_module(tmp_path, monkeypatch):
    (tmp_path / "own_parts.py").write_text(textwrap.dedent(OWN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("own_parts", None)


@pytest.mark.parametrize(
    "name, message",
    [
        (
            "own_parts:NotAPrior",
            (
                "prior.name: 'own_parts:NotAPrior' is the class NotAPrior, not a "
                "prior class: a prior is a subclass of pyro_vae.entries.PriorEntry"
            ),
        ),
        ("own_parts:Abstract", "prior.name: 'own_parts:Abstract' does not implement build"),
        ("own_parts:CALLED", "prior.name: 'own_parts:CALLED' is a list, not a prior class"),
    ],
)
def test_an_own_component_must_subclass_its_kinds_base(own_module, name, message):
    with pytest.raises(SpecError) as info:
        load_spec({"prior": {"name": name}})
    assert str(info.value).startswith(message), str(info.value)
    import own_parts

    assert own_parts.CALLED == []  # checked before anything of it was called


def test_a_component_returning_the_wrong_kind_of_object_is_a_spec_error(
    own_module, tmp_path, capsys
):
    argv = [
        "train",
        DIGITS,
        *(f"--set={s}" for s in TINY),
        "--set",
        "prior.name=own_parts:LikelihoodAsPrior",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err == (
        "pyro-vae: error: prior.name: 'own_parts:LikelihoodAsPrior' returned a "
        "pyro_vae.likelihoods.BernoulliLikelihood, not a pyro_vae.priors.Prior"
    )


def test_reading_a_run_with_an_own_component_names_the_module_it_imports(
    own_module, tmp_path, capsys
):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                DIGITS,
                *(f"--set={s}" for s in TINY),
                "--set",
                "prior.name=own_parts:Honest",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert "imports code" not in capsys.readouterr().err  # training from one's own spec: silent
    spec = pyro_vae.load_run(run).spec
    assert spec.prior.name == "own_parts:Honest"
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert (
        f"{run / 'config.yaml'} imports code from outside pyro-vae: prior.name: "
        "'own_parts'. Reading a run runs the code it names"
    ) in err
    pyro_vae.load_run(run)  # once per process
    assert capsys.readouterr().err == ""


def test_a_run_of_built_in_components_prints_no_notice(finished_run, capsys):
    pyro_vae.load_run(finished_run)
    assert capsys.readouterr().err == ""


def test_a_registry_accepts_only_subclasses_of_its_base():
    registry: Registry = Registry("likelihood", LikelihoodEntry)
    with pytest.raises(TypeError, match="does not subclass pyro_vae.entries.LikelihoodEntry"):
        registry.register("prior")(PRIORS.entries["standard_normal"])

    @frozen_params
    class Plain:
        pass

    with pytest.raises(TypeError):
        registry.register("plain")(Plain)
    assert issubclass(PRIORS.entries["vamp"], PriorEntry)
