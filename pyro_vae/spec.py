"""The declarative spec: typed, validated, YAML in and out, dotted ``--set`` overrides.

Every key has a default; an unknown key, name or bad value is a :class:`SpecError` naming the
dotted key, the value and the valid choices. Validating a spec imports neither torch nor Pyro
(the registries are :mod:`pyro_vae.components` and :mod:`pyro_vae.data`), so a typo is
answered at once.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pyro_vae.atomic import write_text_atomic
from pyro_vae.components.estimators import ESTIMATORS
from pyro_vae.components.guides import GUIDES, NO_STOPPED_DENSITY
from pyro_vae.components.likelihoods import LIKELIHOODS
from pyro_vae.components.models import MODELS
from pyro_vae.components.networks import NETWORKS
from pyro_vae.components.priors import PRIORS
from pyro_vae.data import DATASETS
from pyro_vae.registry import (
    Component,
    Registry,
    SpecError,
    choices_text,
    did_you_mean,
    parse_kwargs,
    shown,
    signature_params,
)


@dataclass(frozen=True)
class TrainSpec:
    """Optimisation: Adam(lr) on minibatches; KL weight β·min(1, (t+1)/T_warmup) at step t.

    ``lr_schedule: cosine`` anneals lr_t = lr·(1 + cos(π t/T))/2 over all T steps.
    ``gradient_clip`` caps the global L2 norm of the gradient (0: off);
    ``early_stopping_patience`` stops after that many validations without a higher val ELBO
    (0: off). Checkpoints go to ``checkpoints/last.ckpt`` every ``checkpoint_every_steps``
    optimizer steps (0: off) and every ``checkpoint_every_epochs`` epochs (0: off), and at the
    end; the newest ``keep_checkpoints`` of them also stay as ``checkpoints/step-<N>.ckpt``.
    ``blowup_factor`` F stops training (exit 3) when the loss per point jumps above F times its
    recent median or a parameter above F times the largest at the start (0: only NaN/inf).
    ``logger``: one of ``csv``, ``tensorboard``, ``mlflow`` or a list of them; metrics.csv is
    written always, TensorBoard event files (``tensorboard/``, the spec and final scores in its
    HParams view) and an MLflow run besides where named (:mod:`pyro_vae.tracking`). MLflow logs
    to ``mlflow_uri`` (default: the local store ``mlruns/`` beside the run directory) in the
    experiment ``mlflow_experiment`` (default: the name of the folder holding the run directory,
    so a sweep's runs share one), the run named as its directory.
    ``accelerator``/``devices``/``num_nodes``/``strategy`` as in Lightning's Trainer; ``ddp``
    runs one process per device and node (``torchrun`` or SLURM start the nodes). ``jit`` replays the estimator's loss from a ``torch.jit`` trace after its first
    step at each batch shape and β (:class:`inference.compiled.TracedLoss`, checked against the
    eager loss once); ``false`` runs Pyro's handlers every step, as ``dreg`` always does (its
    gradient hook is Python, which a trace does not hold).
    """

    max_epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: Literal["constant", "cosine"] = "constant"
    seed: int = 0
    warmup_epochs: float = 0.0
    gradient_clip: float = 0.0
    early_stopping_patience: int = 0
    checkpoint_every_steps: int = 0
    checkpoint_every_epochs: int = 1
    keep_checkpoints: int = 3
    blowup_factor: float = 1000.0
    log_every_n_steps: int = 50
    logger: str | tuple[str, ...] = "csv"
    mlflow_uri: str | None = None
    mlflow_experiment: str | None = None
    accelerator: Literal["auto", "cpu", "gpu"] = "cpu"
    devices: int = 1
    num_nodes: int = 1
    strategy: Literal["auto", "ddp"] = "auto"
    progress: bool = True
    jit: bool = True

    def __post_init__(self) -> None:
        _at_least(self.max_epochs, 1, "max_epochs")
        _at_least(self.batch_size, 1, "batch_size")
        _at_least(self.devices, 1, "devices")
        _at_least(self.num_nodes, 1, "num_nodes")
        _at_least(self.keep_checkpoints, 1, "keep_checkpoints")
        _at_least(self.log_every_n_steps, 1, "log_every_n_steps")
        for name in (
            "early_stopping_patience",
            "checkpoint_every_steps",
            "checkpoint_every_epochs",
        ):
            _at_least(getattr(self, name), 0, name)
        _positive(self.lr, "lr")
        for name in ("warmup_epochs", "gradient_clip", "blowup_factor"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be >= 0, got {value}")
        _check_loggers(self.logger)
        for name in ("mlflow_uri", "mlflow_experiment"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise SpecError(f"train.{name}", "is empty; leave it out for the default")

    @property
    def loggers(self) -> tuple[str, ...]:
        """The logger names, one or several (``csv`` needs none: metrics.csv is always written)."""
        return (self.logger,) if isinstance(self.logger, str) else self.logger


LOGGERS = ("csv", "tensorboard", "mlflow")


def _check_loggers(value: str | tuple[str, ...]) -> None:
    names = (value,) if isinstance(value, str) else value
    for name in names:
        if name not in LOGGERS:
            raise SpecError(
                "train.logger",
                f"{shown(name)} is not one of: {', '.join(LOGGERS)} "
                "(or a list of them; metrics.csv is written either way)"
                + did_you_mean(name, LOGGERS),
            )
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice is not None:
        raise SpecError(
            "train.logger",
            f"{shown(twice)} is named twice; a list names each of "
            f"{', '.join(LOGGERS)} at most once",
        )


@dataclass(frozen=True)
class EvaluateSpec:
    """Importance-sampled log p(x) with ``num_samples`` particles per data point; ``figures``:
    draw ``figures/<split>/`` when a split is scored (a sweep turns it off unless its experiment
    says otherwise; :meth:`pyro_vae.rundir.Run.figures` draws them on demand)."""

    num_samples: int = 1000
    split: Literal["train", "val", "test"] = "test"
    memory_budget_mb: float = 512.0
    figures: bool = True

    def __post_init__(self) -> None:
        _at_least(self.num_samples, 1, "num_samples")
        _positive(self.memory_budget_mb, "memory_budget_mb")


def _at_least(value: int, low: int, name: str) -> None:
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


def _positive(value: float, name: str) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number, got {value}")


COMPONENTS: dict[str, Registry] = {
    "data": DATASETS,
    "model": MODELS,
    "prior": PRIORS,
    "likelihood": LIKELIHOODS,
    "encoder": NETWORKS,
    "decoder": NETWORKS,
    "guide": GUIDES,
    "estimator": ESTIMATORS,
}
SECTIONS: dict[str, type] = {"train": TrainSpec, "evaluate": EvaluateSpec}
DEFAULTS: dict[str, Any] = {
    "data": {"name": "digits", "binarize": "dynamic"},  # runnable with the bernoulli default
    "model": {"name": "vae"},
    "prior": {"name": "standard_normal"},
    "likelihood": {"name": "bernoulli"},
    "encoder": {"name": "mlp"},
    "decoder": {"name": "mlp"},
    "guide": {"name": "diagonal"},
    "estimator": {"name": "trace"},
}


@dataclass(frozen=True)
class Spec:
    """A whole VAE experiment. ``Spec.from_dict`` validates; ``to_dict`` inverts it.
    ``model`` is the model kind (:mod:`pyro_vae.models`): how the data's labels enter."""

    data: Component
    model: Component
    prior: Component
    likelihood: Component
    encoder: Component
    decoder: Component
    guide: Component
    estimator: Component
    latent_dim: int | tuple[int, ...] = 16  # a list: stochastic layers, bottom (z_1) first
    beta: float = 1.0
    train: TrainSpec = field(default_factory=TrainSpec)
    evaluate: EvaluateSpec = field(default_factory=EvaluateSpec)

    @property
    def latent_dims(self) -> tuple[int, ...]:
        """The sizes of z_1 … z_L."""
        dims = self.latent_dim
        return dims if isinstance(dims, tuple) else (dims,)

    @classmethod
    def from_dict(cls, raw: Any) -> Spec:
        raw = _mapping(raw)
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in raw:
            if key not in valid:
                raise SpecError(
                    str(key),
                    f"unknown key; valid keys: {choices_text(valid)}"
                    + did_you_mean(str(key), valid),
                )
        values: dict[str, Any] = {}
        for key, registry in COMPONENTS.items():
            value, default = raw.get(key), _default(key, values)
            if value is None:
                value = default
            elif isinstance(value, Mapping) and "name" not in value:
                value = {**default, **value}  # parameters for the default component
            if key == "likelihood":
                value = _following_data(value, values["data"])
            values[key] = registry.parse(value, key)
        for key, section in SECTIONS.items():
            sub = raw.get(key) or {}
            if not isinstance(sub, Mapping):
                raise SpecError(key, f"expected a mapping, got {shown(sub)}")
            try:
                values[key] = section(**parse_kwargs(section, sub, key))
            except ValueError as exc:
                if isinstance(exc, SpecError):
                    raise
                raise SpecError(key, str(exc)) from None
        scalars = parse_kwargs(
            _Scalars, {k: raw[k] for k in ("latent_dim", "beta") if k in raw}, ""
        )
        _Scalars(**scalars)
        spec = cls(**values, **scalars)
        _check_combinations(spec)
        return spec

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Component):
                out[f.name] = value.to_dict()
            elif dataclasses.is_dataclass(value):
                out[f.name] = dataclasses.asdict(value)
            else:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


@dataclass(frozen=True)
class _Scalars:
    latent_dim: int | tuple[int, ...] = 16
    beta: float = 1.0

    def __post_init__(self) -> None:
        dims = self.latent_dim if isinstance(self.latent_dim, tuple) else (self.latent_dim,)
        try:
            if not dims:
                raise ValueError("needs at least one layer size")
            for d in dims:
                _at_least(d, 1, "value" if len(dims) == 1 else "each layer size")
        except ValueError as exc:
            raise SpecError("latent_dim", str(exc)) from None
        try:
            _positive(self.beta, "value")
        except ValueError as exc:
            raise SpecError("beta", str(exc)) from None


def _default(key: str, parsed: Mapping[str, Component]) -> dict[str, Any]:
    """The component ``key`` defaults to: the estimator the model kind names
    (:attr:`pyro_vae.entries.ModelEntry.default_estimator`), else :data:`DEFAULTS`'."""
    if key == "estimator":
        return {"name": MODELS.entry(parsed["model"].name, "model.name").default_estimator}
    return DEFAULTS[key]


def _following_data(likelihood: Any, data: Component) -> Any:
    """The likelihood's entry with ``values`` (how the data hold their levels) taken from
    ``data.values`` where the likelihood has that parameter and the spec leaves it out."""
    entry = {"name": likelihood} if isinstance(likelihood, str) else likelihood
    if (
        not isinstance(entry, Mapping)
        or "values" in entry
        or "values" not in data.params
        or "values" not in signature_params(LIKELIHOODS.entry(entry.get("name"), "likelihood.name"))
    ):
        return likelihood
    return {**entry, "values": data.params["values"]}


def _check_combinations(spec: Spec) -> None:
    """Pairings that would train something other than what the spec says.

    Estimators that score a draw with the guide's parameters stopped (stl, dreg) need log q at a
    value the guide did not draw, which some flows cannot give; and they stop each site's
    density as a whole, which in a hierarchy also cuts q(z_2 | z_1)'s dependence on z_1.
    mean_field takes KL(q(z_1|x) ‖ p(z_1|z_2)) in closed form at a z_2 drawn given z_1: biased.
    The VampPrior mixes q(z | u_k) of the one-layer guide. The model kind checks its own
    (:meth:`pyro_vae.entries.ModelEntry.check`)."""
    MODELS.instantiate(spec.model, "model").check(spec)
    estimator, guide = spec.estimator.name, spec.guide.name
    stops = getattr(ESTIMATORS.entry(estimator, "estimator.name"), "stop_guide_params", False)
    if stops and guide in NO_STOPPED_DENSITY:
        raise SpecError(
            "estimator.name",
            f"{estimator} scores each draw with the guide's "
            f"parameters stopped, which needs the inverse of the guide's flow, and "
            f"{guide} flows have none; use guide iaf or another estimator",
        )
    if len(spec.latent_dims) == 1:
        return
    if stops or estimator == "mean_field":
        why = (
            "stops the guide's parameters inside each layer's density, which also cuts "
            "q(z2|z1)'s dependence on z1"
            if stops
            else "takes KL(q(z1|x) ‖ p(z1|z2)) in closed form at a z2 drawn given z1: biased"
        )
        raise SpecError(
            "estimator.name", f"{estimator} {why}; with stochastic layers use trace, iwae or renyi"
        )
    if spec.prior.name == "vamp":
        raise SpecError(
            "prior.name",
            "vamp mixes the one-layer guide's q(z|u_k); with "
            "stochastic layers use standard_normal, normal, mixture or flow",
        )


MAX_YAML_BYTES = 2**20  # a spec is a few hundred bytes; a document may hold at most 1 MiB
MAX_YAML_NODES = 100_000  # nodes with every alias expanded (an alias bomb expands to 10⁹)
MAX_YAML_DEPTH = 100  # nesting of lists and mappings (the composer and the spec recurse)


class _Refused(yaml.MarkedYAMLError):
    """A well-formed document that :class:`SpecLoader` refuses; ``problem`` says why."""


class SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, bounded, for documents from users: a recursive alias
    (``a: &a [*a]``), more than :data:`MAX_YAML_NODES` nodes once aliases are expanded, nesting
    deeper than :data:`MAX_YAML_DEPTH`, a duplicate key in a mapping, and an integer too long for
    Python's ``int`` (over 4300 digits) are refused with the line of the culprit.

    The expanded size is counted while composing: every node adds 1, every alias the expanded
    size of its anchored node, which is known once that node is complete; an alias to a node
    still being composed is a cycle.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.expanded = 0
        self.depth = 0
        self.sizes: dict[int, int] = {}  # id(anchored node) -> its expanded size, once complete

    def _count(self, size: int, mark: yaml.Mark) -> None:
        self.expanded += size
        if self.expanded > MAX_YAML_NODES:
            raise _Refused(
                None,
                None,
                f"more than {MAX_YAML_NODES} values once its aliases are expanded (an alias bomb?)",
                mark,
            )

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:  # else PyYAML's own error: an undefined alias
                if id(target) not in self.sizes:
                    raise _Refused(
                        None,
                        None,
                        f"alias *{event.anchor} refers to a node that "
                        "contains it (a recursive structure)",
                        event.start_mark,
                    )
                self._count(self.sizes[id(target)], event.start_mark)
            return super().compose_node(parent, index)
        self.depth += 1
        if self.depth > MAX_YAML_DEPTH:
            raise _Refused(
                None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", event.start_mark
            )
        before = self.expanded
        self._count(1, event.start_mark)
        node = super().compose_node(parent, index)
        self.depth -= 1
        if event.anchor is not None:
            self.sizes[id(node)] = self.expanded - before
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key, line = self.construct_object(key_node), key_node.start_mark.line + 1
                if key in seen:
                    raise _Refused(
                        None,
                        None,
                        f"duplicate key {shown(key)} (first on line {seen[key]})",
                        key_node.start_mark,
                    )
                seen[key] = line
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # int() of more than 4300 digits
            raise _Refused(
                None, None, f"integer of {len(node.value)} characters is too long", node.start_mark
            ) from None


SpecLoader.add_constructor("tag:yaml.org,2002:int", SpecLoader.construct_yaml_int)


def parse_yaml(text: str, source: str = "<spec>") -> Any:
    """YAML → Python through :class:`SpecLoader`, at most :data:`MAX_YAML_BYTES` of text; a
    syntax error or a refused document becomes one line with the line and column."""
    if len(text) > MAX_YAML_BYTES:
        raise SpecError(
            source, f"{len(text)} characters of YAML; a spec holds at most {MAX_YAML_BYTES}"
        )
    try:
        return yaml.load(text, Loader=SpecLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        kind = "YAML refused" if isinstance(exc, _Refused) else "YAML syntax error"
        raise SpecError(source, f"{kind} at {where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError(source, f"YAML error: {exc}") from None


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested dict.

    Setting ``X.name`` to a different component drops X's other old parameters (they belong to
    the old component); parameters set by other overrides are kept.
    """
    out: dict[str, Any] = _deep_copy(raw)
    for item in overrides:
        if "=" not in item:
            raise SpecError("--set", f"expected key=value, got {shown(item)}")
        path, text = item.split("=", 1)
        keys = path.strip().split(".")
        if not all(keys):
            raise SpecError("--set", f"bad key {shown(path)}")
        value = parse_yaml(text, f"--set {path}")
        node = out
        for i, k in enumerate(keys[:-1]):
            child = node.get(k)
            if child is None or isinstance(child, str):
                child = {"name": child} if isinstance(child, str) else {}
                node[k] = child
            elif not isinstance(child, dict):
                raise SpecError(".".join(keys[: i + 1]), f"is {shown(child)}, not a mapping")
            node = child
        leaf = keys[-1]
        if (
            leaf == "name"
            and keys[0] in COMPONENTS
            and len(keys) == 2
            and node.get("name") != value
        ):
            node.clear()
        node[leaf] = value
    return out


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def load_spec(
    source: str | Path | Mapping[str, Any] | Spec | None = None, overrides: Sequence[str] = ()
) -> Spec:
    """A spec from a YAML file path, a dict, a :class:`Spec`, or None (all defaults), plus
    ``key=value`` overrides."""
    if source is None:
        raw: Any = {}
    elif isinstance(source, Spec):
        raw = source.to_dict()
    elif isinstance(source, Mapping):
        raw = source
    else:
        raw = _read_yaml(Path(source))
    return Spec.from_dict(apply_overrides(_mapping(raw), overrides))


def load_run_spec(config: Path, overrides: Sequence[str] = ()) -> Spec:
    """A run's ``config.yaml`` (plus overrides), for reading a run that may come from anyone:
    before its components are resolved, one line on stderr names every module outside
    pyro-vae that it makes this process import (:func:`outside_code`)."""
    raw = apply_overrides(_mapping(_read_yaml(config)), overrides)
    outside = outside_code(raw)
    if outside:
        _trust_notice(
            f"pyro-vae: {config} imports code from outside pyro-vae: "
            f"{'; '.join(outside)}. Reading a run runs the code it names: trust it "
            'as you trust that code (README, "Security")'
        )
    return Spec.from_dict(raw)


def outside_code(raw: Mapping[str, Any]) -> list[str]:
    """``key.name: module`` for each component of ``raw`` named by ``module:Class`` or by an
    installed entry point (its module), not by a built-in name."""
    out = []
    for key, registry in COMPONENTS.items():
        value = raw.get(key)
        name = value.get("name") if isinstance(value, Mapping) else value
        if not isinstance(name, str) or name in registry:
            continue
        if ":" in name:
            out.append(f"{key}.name: {shown(name.partition(':')[0])}")
            continue
        plugin = registry.plugins().get(name)
        if plugin is not None:
            out.append(
                f"{key}.name: {shown(plugin.value.partition(':')[0])} (entry point {shown(name)})"
            )
    return out


_noticed: set[str] = set()


def _trust_notice(text: str) -> None:
    """``text`` on stderr once per process, by rank 0 of a multi-process run; shown whatever
    the verbosity: what code a run imports is never hidden."""
    if text not in _noticed and os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0":
        _noticed.add(text)
        print(text, file=sys.stderr, flush=True)


def _read_yaml(path: Path) -> Any:
    """A spec file's YAML, at most :data:`MAX_YAML_BYTES`."""
    if path.is_dir():
        raise SpecError(
            str(path), "is a directory; CONFIG is a YAML spec file (see examples/configs)"
        )
    if not path.is_file():
        raise SpecError(str(path), "spec file not found")
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise SpecError(
                str(path), f"{path.stat().st_size} bytes; a spec holds at most {MAX_YAML_BYTES}"
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), f"cannot read spec file: {exc}") from None
    return parse_yaml(text, str(path))


def parse_spec(text: str, overrides: Sequence[str] = ()) -> Spec:
    """A spec from YAML text."""
    return Spec.from_dict(apply_overrides(_mapping(parse_yaml(text)), overrides))


def _mapping(raw: Any) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SpecError("", f"a spec is a mapping of keys to values, got {type(raw).__name__}")
    return raw


def dump_spec(spec: Spec, path: Path | None = None) -> str:
    """The spec as YAML, also written (atomically) to ``path`` when given."""
    text = spec.to_yaml()
    if path is not None:
        write_text_atomic(path, text)
    return text
