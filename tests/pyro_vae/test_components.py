"""The registries (pyro_vae.components, pyro_vae.data) hold no torch: validating any spec imports
neither torch nor Pyro. The built-in estimator entries state exactly the parameters of the ELBO
classes of inference.estimators that they build, so that the two cannot drift apart; an own
estimator is an EstimatorEntry or a pyro.infer.ELBO subclass."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest
from pyro.infer import ELBO, Trace_ELBO

from inference import estimators as elbos
from pyro_vae.components.estimators import ESTIMATORS, make_elbo
from pyro_vae.components.networks import Activation
from pyro_vae.networks import ACTIVATIONS
from pyro_vae.registry import SpecError, signature_params
from pyro_vae.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
#: a value of each estimator parameter other than its default
OTHER = {
    "particles": 3,
    "max_plate_nesting": 2,
    "data_plate": "points",
    "alpha": 0.25,
    "baseline": "none",
    "decay": 0.5,
    "temperature": 2.0,
    "final_temperature": 0.25,
    "rate": 0.01,
    "straight_through": True,
}
#: values that entry and class must both refuse, with the same message
REFUSED = [
    ("particles", 0),
    ("max_plate_nesting", 0),
    ("alpha", 1.0),
    ("alpha", math.inf),
    ("alpha", math.nan),
    ("decay", 1.0),
    ("baseline", "leave_one_out"),  # with one particle
    ("temperature", 0.0),
    ("final_temperature", 2.0),  # above the initial temperature
    ("rate", -1.0),
]


def _params(entry: type) -> list[tuple[str, object, object]]:
    return [(p.name, p.annotation, p.default) for p in signature_params(entry).values()]


def test_validating_every_example_spec_imports_neither_torch_nor_pyro():
    configs = sorted(str(p) for p in (ROOT / "examples" / "configs").rglob("*.yaml"))
    code = textwrap.dedent(f"""
        import json, sys
        import pyro_vae
        from pyro_vae.spec import load_spec
        for config in {configs!r}:
            load_spec(config)
        load_spec(None, ["prior.name=vamp", "guide.name=iaf", "estimator.name=renyi",
                         "likelihood.name=discretized_logistic", "encoder.name=conv"])
        print(json.dumps(sorted(m for m in ("torch", "pyro", "lightning") if m in sys.modules)))
        assert pyro_vae.VAE.__name__ == "VAE"  # the lazy attribute still imports it
    """)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(configs) > 5 and json.loads(done.stdout) == []


def test_the_estimator_registry_names_the_classes_of_inference():
    assert sorted(ESTIMATORS.entries) == sorted(elbos.ESTIMATORS)


@pytest.mark.parametrize("name", sorted(elbos.ESTIMATORS))
def test_an_estimator_entry_states_the_parameters_of_its_elbo_class(name):
    entry, cls = ESTIMATORS.entries[name], elbos.ESTIMATORS[name]
    assert _params(entry) == _params(cls)  # names, order, annotations, defaults
    assert entry.stop_guide_params == getattr(cls, "stop_guide_params", False)
    for values in ({}, {k: v for k, v in OTHER.items() if k in signature_params(cls)}):
        made = entry(**values).build()
        assert type(made) is cls and vars(made) == vars(cls(**values))


@pytest.mark.parametrize("name", sorted(elbos.ESTIMATORS))
def test_an_estimator_entry_refuses_what_its_elbo_class_refuses(name):
    entry, cls = ESTIMATORS.entries[name], elbos.ESTIMATORS[name]
    for key, value in REFUSED:
        if key in signature_params(cls):
            with pytest.raises(ValueError) as by_entry:
                entry(**{key: value})
            with pytest.raises(ValueError) as by_class:
                cls(**{key: value})
            assert str(by_entry.value) == str(by_class.value)


def test_the_activation_names_are_the_networks_activations():
    assert set(typing.get_args(Activation)) == set(ACTIVATIONS)


OWN = """
from pyro.infer import Trace_ELBO
from pyro_vae.entries import EstimatorEntry
from pyro_vae.registry import frozen_params


class Plain(Trace_ELBO):  # an ELBO class: its __init__ keywords are the spec keys
    def __init__(self, particles: int = 2) -> None:
        super().__init__(num_particles=particles)


@frozen_params
class Entry(EstimatorEntry):
    particles: int = 3

    def build(self):
        return Trace_ELBO(num_particles=self.particles)


@frozen_params
class NotAnELBO(EstimatorEntry):
    def build(self):
        return "an ELBO"
"""


@pytest.fixture
def own_estimators(tmp_path, monkeypatch):
    (tmp_path / "own_estimators.py").write_text(OWN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("own_estimators", None)


@pytest.mark.parametrize(
    "name, particles", [("own_estimators:Plain", 2), ("own_estimators:Entry", 3)]
)
def test_an_own_estimator_is_an_elbo_class_or_an_estimator_entry(own_estimators, name, particles):
    spec = load_spec({"estimator": {"name": name}})
    assert spec.estimator.params == {"particles": particles}
    made = make_elbo(spec.estimator)
    assert isinstance(made, Trace_ELBO) and made.num_particles == particles


def test_what_an_own_estimator_entry_builds_is_checked(own_estimators):
    spec = load_spec({"estimator": {"name": "own_estimators:NotAnELBO"}})
    with pytest.raises(SpecError) as info:
        make_elbo(spec.estimator)
    assert str(info.value) == (
        "estimator.name: 'own_estimators:NotAnELBO' returned a "
        f"builtins.str, not a {ELBO.__module__}.ELBO"
    )


def test_an_estimator_that_is_neither_is_refused_naming_both_bases():
    with pytest.raises(SpecError) as info:
        load_spec({"estimator": {"name": "pyro_vae.components.priors:Vamp"}})
    assert (
        "is the class Vamp, not a estimator class: a estimator is a subclass of "
        "pyro_vae.entries.EstimatorEntry or of pyro.infer.ELBO"
    ) in str(info.value)
