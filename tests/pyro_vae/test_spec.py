"""The spec: defaults, round trip, overrides, and a one-line error for every bad input."""

import pytest

from pyro_vae.components.priors import PRIORS
from pyro_vae.registry import SpecError
from pyro_vae.spec import Spec, apply_overrides, dump_spec, load_spec, parse_spec, parse_yaml


def test_defaults_are_a_valid_spec():
    spec = load_spec(None)
    assert spec.data.name == "digits" and spec.prior.name == "standard_normal"
    assert spec.encoder.params["hidden"] == (200, 200)


@pytest.mark.parametrize(
    "path", sorted(__import__("pathlib").Path("examples/configs").glob("*.yaml"))
)
def test_example_configs_round_trip(path):
    spec = load_spec(path)
    again = parse_spec(dump_spec(spec))
    assert again == spec
    assert load_spec(again.to_dict()) == spec


def test_overrides_reach_any_key_and_coerce_types():
    spec = load_spec(
        None,
        [
            "prior.name=mixture",
            "prior.components=3",
            "train.lr=3e-4",
            "encoder.hidden=[32, 16]",
            "latent_dim=4",
            "estimator.name=iwae",
            "estimator.particles=5",
        ],
    )
    assert spec.prior.name == "mixture" and spec.prior.params["components"] == 3
    assert spec.train.lr == pytest.approx(3e-4)
    assert spec.encoder.params["hidden"] == (32, 16)
    assert spec.latent_dim == 4 and spec.estimator.params["particles"] == 5


def test_changing_a_component_name_drops_the_old_components_params():
    raw = {"prior": {"name": "mixture", "components": 5}}
    assert apply_overrides(raw, ["prior.name=vamp"]) == {"prior": {"name": "vamp"}}
    assert raw == {"prior": {"name": "mixture", "components": 5}}  # input untouched
    assert load_spec(raw, ["prior.name=vamp"]).prior.name == "vamp"


def test_every_prior_is_reachable_by_name():
    assert set(PRIORS.names()) >= {"standard_normal", "normal", "mixture", "vamp"}


BAD = [
    ({"priorr": {}}, "priorr", "valid keys"),
    (
        {"prior": {"name": "gaussian"}},
        "prior.name",
        "choices: flow, mixture, normal, standard_normal, vamp",
    ),
    ({"prior": {"name": "flow", "flows": 0}}, "prior", "flows must be >= 1"),
    ({"guide": {"name": "iaff"}}, "guide.name", "did you mean 'iaf'"),
    ({"guide": {"name": "low_rank", "rank": 0}}, "guide", "rank must be >= 1"),
    ({"guide": "planar", "estimator": "dreg"}, "estimator.name", "planar flows have none"),
    (
        {"likelihood": {"name": "discretized_logistic", "values": "float"}},
        "likelihood.values",
        "unit, integer",
    ),
    ({"prior": {"name": "mixture", "components": 0}}, "prior", "components must be >= 1"),
    (
        {"prior": {"name": "mixture", "componets": 3}},
        "prior.componets",
        "did you mean 'components'",
    ),
    (
        {"likelihood": {"name": "normal", "learn": "sometimes"}},
        "likelihood.learn",
        "fixed, global, per_dim",
    ),
    ({"likelihood": {"name": "normal", "scale": -1.0}}, "likelihood", "scale must be a positive"),
    ({"encoder": {"name": "mlp", "hidden": [10, "x"]}}, "encoder.hidden[1]", "expected an integer"),
    ({"encoder": {"name": "mlp", "activation": "sigmoid"}}, "encoder.activation", "tanh"),
    ({"latent_dim": 0}, "latent_dim", ">= 1"),
    ({"latent_dim": 2.5}, "latent_dim", "expected an integer"),
    ({"beta": -1}, "beta", "positive"),
    ({"train": {"batch_size": 0}}, "train", "batch_size must be >= 1"),
    ({"train": {"lr": "fast"}}, "train.lr", "expected a number"),
    ({"train": {"epochs": 3}}, "train.epochs", "max_epochs"),
    ({"evaluate": {"num_samples": 0}}, "evaluate", "num_samples must be >= 1"),
    ({"estimator": {"name": "iwae", "particles": 0}}, "estimator", "particles"),
    ({"estimator": {"name": "elbo"}}, "estimator.name", "trace"),
    ({"data": {"name": "cifar"}}, "data.name", "digits"),
    ({"data": {"name": "digits", "binarize": "yes"}}, "data.binarize", "dynamic"),
    ([1, 2], "", "mapping"),
]


@pytest.mark.parametrize("raw,key,fragment", BAD, ids=[b[1] or "list" for b in BAD])
def test_bad_specs_name_the_key_and_the_choices(raw, key, fragment):
    with pytest.raises(SpecError) as info:
        Spec.from_dict(raw)
    assert info.value.key == key
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("latent_dim: 4\nprior: {name: vamp\ntrain: {}\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "line 3" in str(info.value) and str(path) in str(info.value)


def test_missing_spec_file_is_named(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")


def test_bad_override_syntax():
    with pytest.raises(SpecError, match="key=value"):
        load_spec(None, ["latent_dim"])


def test_the_loader_keeps_aliases_and_merges_a_spec_may_use():
    text = (
        "encoder: &net {name: mlp, hidden: [8, 8], activation: relu}\n"
        "decoder: {<<: *net, hidden: [4]}\n"
        "train: &t {max_epochs: 3}\nevaluate: {num_samples: 7}\n"
    )
    spec = parse_spec(text)
    assert spec.encoder.params["hidden"] == (8, 8)
    assert spec.decoder.params == {"hidden": (4,), "activation": "relu"}
    assert spec.train.max_epochs == 3


def bomb(levels: int, width: int = 10) -> str:
    """``levels`` levels of ``width`` aliases each: width**levels strings once expanded."""
    lines = [
        'a0: &a0 ["x"]',
        *(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)),
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("a: &a [*a]\n", ("line 1, column 8", "alias *a", "recursive")),
        ("a: &a {b: *a}\n", ("alias *a", "recursive")),
        (bomb(9), ("more than 100000 values", "alias bomb")),
        ("a: " + "[" * 101 + "]" * 101 + "\n", ("nested deeper than 100",)),
        (
            "latent_dim: 2\nbeta: 1\nlatent_dim: 3\n",
            ("line 3", "duplicate key 'latent_dim'", "first on line 1"),
        ),
        ("train: {seed: 1, seed: 2}\n", ("duplicate key 'seed'",)),
        ("latent_dim: " + "9" * 4301 + "\n", ("integer of 4301 characters",)),
        ("latent_dim: " + "9" * 20 + "\n", ("latent_dim", "out of range")),
        ("train: {seed: 4294967296}\n", ("train.seed", "[0, 2**32)")),
        ("data: {seed: -1}\n", ("data.seed", "-1")),
        ("beta: " + "9" * 400 + "\n", ("beta", "about 400 digits", "out of range")),
        ("latent_dim: 2\n" + "#" * 2**20, ("1048590 characters", "at most 1048576")),
    ],
)
def test_refused_documents_are_one_line(text, fragments):
    with pytest.raises(SpecError) as error:
        parse_spec(text)
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_the_expansion_bound_is_on_expanded_values_not_on_aliases():
    """10**4 strings from 4 levels of aliases load (a spec of that size is odd, not hostile);
    10**5 more do not."""
    assert len(parse_yaml(bomb(4))["a4"]) == 10
    with pytest.raises(SpecError, match="more than 100000 values"):
        parse_yaml(bomb(5))


def test_a_long_value_is_clipped_in_the_message():
    with pytest.raises(SpecError) as error:
        load_spec(None, ["train.max_epochs=" + "x" * 100_000])
    assert len(str(error.value)) < 200 and "(100002 characters)" in str(error.value)


def test_a_directory_is_not_a_spec_file(tmp_path):
    with pytest.raises(SpecError, match="is a directory"):
        load_spec(tmp_path)


def test_likelihood_values_follow_data_values_unless_set():
    """Before, likelihood.values had to repeat data.values (its default was unit)."""
    from pyro_vae.prepared import prepare

    base = [
        "data.binarize=none",
        "likelihood.name=discretized_logistic",
        "latent_dim=2",
        "encoder.hidden=[8]",
        "decoder.hidden=[8]",
    ]
    spec = load_spec(None, [*base, "data.values=integer"])
    assert spec.likelihood.params["values"] == "integer"
    assert parse_spec(dump_spec(spec)) == spec
    prepare(spec)  # the data check passes: integers 0..16 where the likelihood expects them
    assert load_spec(None, base).likelihood.params["values"] == "unit"
    mine = load_spec(None, [*base, "data.values=integer", "likelihood.values=unit"])
    assert mine.likelihood.params["values"] == "unit"  # set: kept as given
    raw = {
        "data": {"name": "digits", "binarize": "none", "values": "integer"},
        "likelihood": "discretized_logistic",
    }
    assert load_spec(raw).likelihood.params["values"] == "integer"
