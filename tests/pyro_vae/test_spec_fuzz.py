"""Fuzzing the spec loader: any YAML document is a valid spec or one clean SpecError."""

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pyro_vae.registry import SpecError
from pyro_vae.spec import COMPONENTS, SECTIONS, Spec, parse_spec

KEYS = [
    "data",
    "latent_dim",
    "beta",
    "prior",
    "likelihood",
    "encoder",
    "decoder",
    "estimator",
    "train",
    "evaluate",
    "name",
    "hidden",
    "activation",
    "particles",
    "alpha",
    "components",
    "pseudo_inputs",
    "levels",
    "scale",
    "learn",
    "binarize",
    "values",
    "limit",
    "seed",
    "max_epochs",
    "batch_size",
    "lr",
    "num_samples",
    "channels",
    "path",
    "key",
    "shape",
]
NAMES = sorted({n for r in COMPONENTS.values() for n in r.names()})

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(NAMES)
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=20,
)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


def assert_clean(text: str) -> None:
    try:
        spec = parse_spec(text)
    except SpecError as exc:
        message = str(exc)
        assert message and "\n" not in message.strip("\n"), message
        return
    assert isinstance(spec, Spec)
    assert parse_spec(spec.to_yaml()) == spec  # whatever loads, round-trips


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
@example({"data": {"\n": None}})  # found by the fuzz: a key's line break once split the error
def test_any_structured_document_is_a_spec_or_a_spec_error(doc):
    assert_clean(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_text_is_a_spec_or_a_spec_error(text):
    assert_clean(text)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(list(COMPONENTS)),
    st.sampled_from(NAMES),
    st.dictionaries(st.sampled_from(KEYS), scalars, max_size=3),
)
def test_components_with_random_params(kind, name, params):
    assert_clean(yaml.safe_dump({kind: {"name": name, **params}}))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(list(SECTIONS)), st.dictionaries(st.sampled_from(KEYS), scalars, max_size=4))
def test_sections_with_random_values(section, params):
    assert_clean(yaml.safe_dump({section: params}))
