"""``pyro-vae aggregate``: runs grouped by what they compute, seeds averaged, groups paired point
by point against a baseline.

A **group** is the set of runs whose resolved specs (``config.yaml``, flattened to dotted keys)
agree in every key but ``train.seed`` and the keys of :data:`NOT_COMPUTED`, which say how or
where a run is computed, not what. The evaluation read is ``eval-<split>[-<method>].json`` and its
per-point ``.npz``; ``evaluate.num_samples`` is taken from that evaluation (K of the scores read;
``pyro-vae evaluate --num-samples`` may differ from the spec's). A group's label names the keys
in which the groups differ (``prior.name=vamp, beta=2.0``), ``all`` when there is one group.

Per group, over its S seeds (values x_1 … x_S, one per run)::

    mean = Σ_s x_s / S        s.e. = sd(x) / √S, sd with ddof = 1   (no s.e. for S = 1: "—")

of log p(x) (``log_px``, the mean over points of the importance-sampled log p̂), the ELBO,
active units, bits/dim (where defined) and the training time: the wall seconds the run spent
training, summed over its stops and resumes (:meth:`pyro_vae.rundir.Run.train_seconds`, kept in
its marker); for a run from before that count, the marker's ``updated − created`` (whole
seconds, scoring and any wait before a resume included).

**Paired differences** against the baseline group, for log p(x) and for the ELBO: within a seed s
present in both, over the n points both evaluations scored (the same ``data_sha256`` in both
JSON summaries and the same ``index`` array in both ``.npz``; anything else is refused, naming
both runs)::

    d_i = log p̂_i(group) − log p̂_i(baseline)       d̄_s = Σ_i d_i / n
    point-level s.e. of d̄_s:  se_s = sd(d) / √n     (ddof = 1; the points' spread)

then across the S paired seeds::

    gain = Σ_s d̄_s / S
    s.e. over seeds = sd(d̄) / √S                    (ddof = 1; none for S = 1)
    point-level s.e. = √(Σ_s se_s²) / S = rms(se_s) / √S

The s.e. over seeds is the one to quote: it holds the seeds' spread and the points' noise. The
point-level s.e. is what the s.e. of the gain would be if each seed's model were exact and only
the test points were drawn; beside the other it tells how much of the uncertainty is the seeds'.
The 95 % interval of the forest plot is ``gain ± t_{0.975, S−1} · s.e. over seeds`` for S ≥ 2,
and for one seed ``gain ± z_{0.975} · point-level s.e.`` (z_{0.975} = 1.96), labelled so.

Writes ``aggregate.md`` (the tables a reviewer cites, with the formulas), ``aggregate.csv`` (one
row per group, full precision), ``aggregate.json`` (everything, per seed and per run) and
``aggregate.png`` (the forest plot), each atomically (:func:`pyro_vae.atomic.write_atomic`).
No torch here: NumPy, and matplotlib when the plot is drawn.
"""

from __future__ import annotations

import calendar
import dataclasses
import io
import itertools
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pyro_vae.atomic import write_atomic, write_json_atomic, write_text_atomic
from pyro_vae.checkpoints import flat
from pyro_vae.registry import SpecError, did_you_mean
from pyro_vae.rundir import CONFIG, MARKER, Run
from pyro_vae.spec import load_run_spec, parse_yaml

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SEED = "train.seed"  # the replicate axis: runs that differ only here are one group's seeds
#: Spec keys that say how or where a run is computed, not what: left out of a group's identity.
#: Not here, because they change what is trained or scored: ``train.devices`` and
#: ``train.num_nodes`` (the batch is per process, so they set the effective batch size),
#: ``train.max_epochs``, ``train.lr`` and every other optimisation key, ``data.*`` but the two
#: below, and ``evaluate.num_samples`` (read from the evaluation itself).
NOT_COMPUTED = (
    "train.progress",  # a progress bar
    "train.logger",  # TensorBoard files beside metrics.csv
    "train.mlflow_uri",  # where MLflow records the run
    "train.mlflow_experiment",
    "train.log_every_n_steps",  # how often metrics.csv gets a row
    "train.jit",  # a traced replay of the same loss, checked against eager
    "train.keep_checkpoints",  # checkpoint cadence and retention
    "train.checkpoint_every_steps",
    "train.checkpoint_every_epochs",
    "train.blowup_factor",  # when a diverging run is stopped; a finished run ran through
    "train.accelerator",  # the hardware (the same arithmetic up to rounding)
    "train.strategy",  # how the processes talk, not how many there are
    "evaluate.memory_budget_mb",  # how the K samples are chunked
    "evaluate.figures",  # whether figures were drawn
    "evaluate.split",  # the split scored at the end of train; --split picks the read
    "data.root",  # where the data files are found; data_sha256 says what
    "data.download",
)
NUM_SAMPLES = "evaluate.num_samples"
#: Per-group quantities: JSON key (or ``run_time_s``) → how the tables name it.
METRICS = {
    "log_px": "log p(x)",
    "elbo": "ELBO",
    "active_units": "active units",
    "bits_per_dim": "bits/dim",
    "run_time_s": "training time (s)",
}
#: The paired differences: per-point array in the ``.npz`` → how the tables name it.
PAIRED = {"log_px": "Δ log p(x)", "elbo": "Δ ELBO"}
AGGREGATE_MD, AGGREGATE_CSV, AGGREGATE_JSON, AGGREGATE_PNG = (
    "aggregate.md",
    "aggregate.csv",
    "aggregate.json",
    "aggregate.png",
)
DPI = 100
Z975 = 1.959963984540054  # the standard normal's 0.975 quantile
DASH = "—"
CAPTION = (
    "Paired differences against the baseline, each with its 95 % interval: mean ± "
    "t_{0.975, S−1} · s.e. over the S seeds (S ≥ 2), or, with one seed, mean ± "
    "z_{0.975} · point-level s.e. (marked 'point-level'). Right of 0: better than the "
    "baseline."
)


# ---- finding runs ------------------------------------------------------------------------------


def find_runs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The run directories named by ``paths``: each is a run directory (it holds config.yaml)
    or a directory searched recursively for them (hidden directories skipped; a run's own
    folders are not searched). SpecError naming a path that is missing or holds no run. Runs
    named twice count once; the order is the arguments', then sorted within a search."""
    found: dict[Path, Path] = {}
    for arg in paths:
        path = Path(arg)
        if not path.is_dir():
            raise SpecError(
                str(path),
                "no such directory"
                if not path.exists()
                else "is not a directory; give run directories or folders holding them",
            )
        runs = [path] if _is_run(path) else _search(path)
        if not runs and (path / CONFIG).is_file():
            runs = [path]  # a config.yaml and no marker: a run written before markers existed
        if not runs:
            raise SpecError(
                str(path), f"holds no pyro-vae run (a run directory holds {CONFIG} and {MARKER})"
            )
        for run in runs:
            found.setdefault(run.resolve(), run)
    if not found:
        raise SpecError("aggregate", "give at least one run directory or folder of runs")
    return list(found.values())


def _is_run(path: Path) -> bool:
    return (path / CONFIG).is_file() and ((path / MARKER).is_file() or Run(path).last.is_file())


def _search(root: Path) -> list[Path]:
    runs = []
    for folder, dirs, _ in os.walk(root):  # links to folders are not followed
        here = Path(folder)
        if here != root and _is_run(here):
            runs.append(here)
            dirs.clear()
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return runs


# ---- reading a run -----------------------------------------------------------------------------


def run_time(run: Path) -> float:
    """The run's training seconds (:meth:`Run.train_seconds`), else its marker's ``updated −
    created`` (see the module docstring); nan without a readable marker."""
    seconds = Run(run).train_seconds()
    if not math.isnan(seconds):
        return seconds
    try:
        record = json.loads((run / MARKER).read_text())
        start, end = (
            time.strptime(record[k], "%Y-%m-%dT%H:%M:%SZ") for k in ("created", "updated")
        )
    except (OSError, ValueError, KeyError, TypeError):
        return math.nan
    return float(calendar.timegm(end) - calendar.timegm(start))


@dataclass(frozen=True)
class Member:
    """One run of a group: its directory, seed, evaluation summary and run time."""

    path: Path
    seed: int
    evaluation: dict[str, Any]
    run_time_s: float

    def value(self, metric: str) -> float:
        raw = self.run_time_s if metric == "run_time_s" else self.evaluation.get(metric)
        return math.nan if raw is None else float(raw)


# ---- statistics --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its standard error sd/√n (ddof = 1; nan for one value); ``values``
    are the seeds' (nan where a run has none, left out of n)."""

    values: tuple[float, ...]
    mean: float
    se: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Estimate:
        values = tuple(float(v) for v in values)
        mean, se, n = mean_se(values)
        return cls(values, mean, se, n)

    def text(self) -> str:
        return plus_minus(self.mean, self.se)


def mean_se(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, standard error sd/√n (ddof = 1; nan for n < 2) and n of the values that are not
    nan (an infinite value stays, and makes the result infinite or nan)."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, 0
    se = float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan
    return float(np.mean(x)), se, len(x)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t with ``df`` ≥ 1 degrees of freedom: bisection
    on P(|T| ≤ t) in closed form (Abramowitz & Stegun 26.7.3-4, θ = arctan(t/√df))."""
    if df < 1 or not 0.5 < p < 1:
        raise ValueError(f"t_quantile needs p in (0.5, 1) and df >= 1, got {p}, {df}")
    target = 2 * p - 1

    def within(t: float) -> float:  # P(|T| <= t)
        theta = math.atan(t / math.sqrt(df))
        c2, s = math.cos(theta) ** 2, math.sin(theta)
        if df % 2:
            term, total = 1.0, 1.0
            for k in range(1, (df - 1) // 2):
                term *= c2 * 2 * k / (2 * k + 1)
                total += term
            return 2 / math.pi * (theta + (s * math.cos(theta) * total if df > 1 else 0.0))
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        return s * total

    low, high = 0.0, 1.0
    while within(high) < target:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if within(mid) < target else (low, mid)
        if high - low < 1e-13 * high:
            break
    return (low + high) / 2


@dataclass(frozen=True)
class Gain:
    """The paired difference of ``metric`` (``log_px`` or ``elbo``) between ``group`` and
    ``baseline``, per point within each shared seed and then across seeds (formulas: the module
    docstring). ``per_seed``, ``per_seed_se`` and ``points`` are d̄_s, se_s and n per seed."""

    group: str
    baseline: str
    metric: str
    seeds: tuple[int, ...]
    per_seed: tuple[float, ...]
    per_seed_se: tuple[float, ...]
    points: tuple[int, ...]
    mean: float
    se: float
    point_se: float
    low: float
    high: float
    interval: str  # how [low, high] was formed

    @classmethod
    def of(
        cls,
        group: str,
        baseline: str,
        metric: str,
        pairs: Sequence[tuple[int, np.ndarray, np.ndarray]],
    ) -> Gain:
        """From (seed, group's per-point values, baseline's per-point values), points aligned."""
        seeds, means, ses, counts = [], [], [], []
        for seed, mine, theirs in pairs:
            d = np.asarray(mine, dtype=np.float64) - np.asarray(theirs, dtype=np.float64)
            seeds.append(seed)
            means.append(float(np.mean(d)) if len(d) else math.nan)
            ses.append(float(np.std(d, ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan)
            counts.append(len(d))
        S = len(seeds)
        mean = float(np.mean(means)) if S else math.nan
        se = float(np.std(means, ddof=1) / math.sqrt(S)) if S > 1 else math.nan
        point_se = float(math.sqrt(np.sum(np.square(ses))) / S) if S else math.nan
        if S > 1:
            q, interval = t_quantile(0.975, S - 1), f"t_0.975,{S - 1} x s.e. over {S} seeds"
            half = q * se
        else:
            interval = "z_0.975 x point-level s.e. (one seed)" if S else "no seed in common"
            half = Z975 * point_se
        return cls(
            group,
            baseline,
            metric,
            tuple(seeds),
            tuple(means),
            tuple(ses),
            tuple(counts),
            mean,
            se,
            point_se,
            mean - half,
            mean + half,
            interval,
        )

    @property
    def point_level(self) -> bool:
        """Whether the interval is the point-level one (one seed)."""
        return len(self.seeds) == 1


# ---- groups ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """Runs that differ only in ``train.seed`` (and :data:`NOT_COMPUTED`): ``spec`` is their
    flattened spec less those keys, ``members`` one run per seed (ascending), ``metrics`` the
    mean ± s.e. over seeds of each of :data:`METRICS`."""

    label: str
    spec: dict[str, Any]
    members: tuple[Member, ...]
    metrics: dict[str, Estimate]

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(m.seed for m in self.members)

    @property
    def runs(self) -> dict[int, Path]:
        return {m.seed: m.path for m in self.members}


def group_key(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A flattened spec less ``train.seed`` and :data:`NOT_COMPUTED`."""
    return {k: v for k, v in spec.items() if k != SEED and k not in NOT_COMPUTED}


def differing_keys(specs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The keys whose values are not the same in all ``specs`` (sorted)."""
    return sorted(k for k in set().union(*specs) if len({_canonical(s.get(k)) for s in specs}) > 1)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _shown(value: Any) -> str:
    """A spec value as written after ``KEY=``: strings bare, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _read_members(
    runs: Sequence[Path], split: str, method: str
) -> list[tuple[dict[str, Any], Member]]:
    out = []
    for run in runs:
        spec = flat(load_run_spec(run / CONFIG).to_dict())
        evaluation = Run(run).summary(split, method)
        if evaluation.get("split", split) != split:
            raise SpecError(
                str(Run(run).eval_path(split, method)),
                f"holds an evaluation of the {evaluation.get('split')!r} split, not {split!r}",
            )
        if evaluation.get("num_samples") is not None:
            spec[NUM_SAMPLES] = evaluation["num_samples"]  # the K of the scores read
        out.append((spec, Member(run, int(spec[SEED]), evaluation, run_time(run))))
    return out


def make_groups(runs: Sequence[Path], split: str = "test", method: str = "is") -> list[Group]:
    """The runs grouped by :func:`group_key` of their specs, sorted by label; SpecError naming
    two runs of one group with the same seed."""
    buckets: dict[str, tuple[dict[str, Any], list[Member]]] = {}
    for spec, member in _read_members(runs, split, method):
        key = group_key(spec)
        buckets.setdefault(_canonical(key), (key, []))[1].append(member)
    differing = differing_keys([key for key, _ in buckets.values()])
    groups = []
    for key, members in buckets.values():
        members.sort(key=lambda m: m.seed)
        for a, b in itertools.pairwise(members):
            if a.seed == b.seed:
                raise SpecError(
                    str(b.path),
                    f"and {a.path} have the same spec and {SEED}="
                    f"{a.seed}: one group holds one run per seed; aggregate one of "
                    "them",
                )
        label = group_label(key, differing, [k for k, _ in buckets.values()])
        metrics = {m: Estimate.of(r.value(m) for r in members) for m in METRICS}
        groups.append(Group(label, key, tuple(members), metrics))
    if len({g.label for g in groups}) < len(groups):  # cannot happen; never merge two groups
        groups = [
            dataclasses.replace(
                g, label=", ".join(f"{k}={_shown(g.spec.get(k))}" for k in differing)
            )
            for g in groups
        ]
    return sorted(groups, key=lambda g: g.label)


def group_label(
    spec: Mapping[str, Any], differing: Sequence[str], specs: Sequence[Mapping[str, Any]]
) -> str:
    """``key=value`` for each key of ``differing`` that ``spec`` has, but a component's
    parameter (``prior.pseudo_inputs``) where the component's name differs between groups and
    every group of this one's component agrees on it; ``all`` for nothing."""
    parts = []
    for key in differing:
        if key not in spec:
            continue
        component, _, param = key.partition(".")
        name = f"{component}.name"
        if param and param != "name" and name in differing:
            same = [s for s in specs if s.get(name) == spec.get(name)]
            if len({_canonical(s.get(key)) for s in same}) == 1:
                continue
        parts.append(f"{key}={_shown(spec[key])}")
    return ", ".join(parts) or "all"


def choose_baseline(groups: Sequence[Group], baseline: Sequence[str] = ()) -> Group:
    """The one group whose spec has every ``KEY=VALUE`` of ``baseline`` (values read as YAML);
    the first group without any. SpecError naming the key and the groups' values when none
    has a value, or naming the groups when several match."""
    if not baseline:
        return groups[0]
    keys = set().union(*(g.spec for g in groups))
    left = list(groups)
    for item in baseline:
        key, equals, text = (s.strip() for s in item.partition("="))
        if not (key and equals):
            raise SpecError("--baseline", f"expected KEY=VALUE, got {item!r}")
        if key == SEED or key in NOT_COMPUTED:
            raise SpecError(
                key,
                "does not tell groups apart (runs that differ only in it are "
                "one group); choose a key in which the groups differ",
            )
        if key not in keys:
            raise SpecError(key, "is not a spec key" + did_you_mean(key, keys))
        value = parse_yaml(text, f"--baseline {key}")
        match = [g for g in left if g.spec.get(key) == value or _shown(g.spec.get(key)) == text]
        if not match:
            values = sorted({_shown(g.spec.get(key)) for g in left})
            raise SpecError(
                key,
                f"no group has {key}={text}; the groups"
                f"{' left' if len(left) < len(groups) else ''} have "
                f"{key} = {', '.join(values)}",
            )
        left = match
    if len(left) > 1:
        raise SpecError(
            "--baseline",
            f"{len(left)} groups match {' '.join(baseline)}: "
            f"{'; '.join(g.label for g in left)}; add a KEY=VALUE that tells them "
            "apart",
        )
    return left[0]


def paired_gains(
    groups: Sequence[Group], baseline: Group, split: str = "test", method: str = "is"
) -> list[Gain]:
    """For each group but the baseline and each of :data:`PAIRED`, the :class:`Gain` over the
    seeds both hold. SpecError naming both runs when a seed's two evaluations did not score the
    same points (:func:`check_same_points`)."""
    cache: dict[Path, dict[str, np.ndarray]] = {}

    def points(member: Member) -> dict[str, np.ndarray]:
        if member.path not in cache:
            cache[member.path] = Run(member.path).points(split, method)
        return cache[member.path]

    base = {m.seed: m for m in baseline.members}
    gains = []
    for group in groups:
        if group is baseline:
            continue
        shared = [(m, base[m.seed]) for m in group.members if m.seed in base]
        for mine, theirs in shared:
            check_same_points(mine, theirs, points(mine), points(theirs))
        for metric in PAIRED:
            pairs = [
                (
                    mine.seed,
                    _array(points(mine), metric, mine),
                    _array(points(theirs), metric, theirs),
                )
                for mine, theirs in shared
            ]
            gains.append(Gain.of(group.label, baseline.label, metric, pairs))
    return gains


def _array(points: Mapping[str, np.ndarray], name: str, member: Member) -> np.ndarray:
    if name not in points:
        raise SpecError(str(member.path), f"its per-point results hold no {name!r} array")
    return np.asarray(points[name], dtype=np.float64)


def check_same_points(
    mine: Member,
    theirs: Member,
    my_points: Mapping[str, np.ndarray],
    their_points: Mapping[str, np.ndarray],
) -> None:
    """SpecError, one line naming both runs, unless both evaluations record the same
    ``data_sha256`` and hold the same ``index`` array (the same rows of the same split)."""
    where = f"and {theirs.path} (the baseline, {SEED}={theirs.seed})"
    a, b = mine.evaluation.get("data_sha256"), theirs.evaluation.get("data_sha256")
    if not a or not b:
        raise SpecError(
            str(mine.path),
            f"{where} cannot be paired point by point: "
            f"{'its' if not a else 'the baseline’s'} evaluation records no "
            "data_sha256; score it again",
        )
    if a != b:
        raise SpecError(
            str(mine.path),
            f"{where} were scored on different data (data_sha256 "
            f"{a[:12]}… and {b[:12]}…); paired differences need the same points",
        )
    i, j = (np.asarray(p.get("index", ())) for p in (my_points, their_points))
    if i.shape != j.shape or not np.array_equal(i, j):
        what = (
            f"{i.size} and {j.size} points"
            if i.size != j.size
            else f"the same number of points ({i.size}) but other rows or another order"
        )
        raise SpecError(
            str(mine.path),
            f"{where} were scored on different points ({what}: "
            "their index arrays differ); paired differences need the same points",
        )


# ---- the result --------------------------------------------------------------------------------


def plus_minus(mean: float, se: float) -> str:
    """``mean ± se`` to two significant digits of the s.e. (at least 2 decimals, at most 6);
    ``—`` for what is not defined."""
    if math.isnan(mean):
        return DASH
    digits = decimals(se)
    return f"{mean:.{digits}f} ± {DASH if math.isnan(se) else f'{se:.{digits}f}'}"


def decimals(se: float) -> int:
    if not math.isfinite(se) or se <= 0:
        return 3
    return min(6, max(2, 1 - math.floor(math.log10(se))))


def _row(cells: Sequence[str]) -> str:
    """A markdown table row (a ``|`` inside a cell escaped)."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _number(value: float, digits: int) -> str:
    return DASH if math.isnan(value) else f"{value:.{digits}f}"


@dataclass
class Aggregate:
    """Groups, the baseline and the paired gains of one aggregation; :meth:`write` writes it,
    ``repr`` (and a notebook) shows its tables."""

    groups: list[Group]
    baseline: Group
    gains: list[Gain]
    split: str = "test"
    method: str = "is"
    differing: list[str] = field(default_factory=list)

    def gain(self, group: str, metric: str = "log_px") -> Gain | None:
        return next((g for g in self.gains if g.group == group and g.metric == metric), None)

    # ---- tables ---------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """One row per group for aggregate.csv: the differing keys, seeds, each metric's mean,
        s.e. and n, and each paired gain's mean, both s.e.'s and interval (full precision)."""
        rows = []
        for group in self.groups:
            row: dict[str, Any] = {
                "group": group.label,
                "baseline": group is self.baseline,
                **{k: _shown(group.spec[k]) if k in group.spec else "" for k in self.differing},
                "seeds": " ".join(map(str, group.seeds)),
                "n_seeds": len(group.members),
            }
            for name, est in group.metrics.items():
                row |= {f"{name}_mean": est.mean, f"{name}_se": est.se, f"{name}_n": est.n}
            for metric in PAIRED:
                gain = self.gain(group.label, metric)
                if gain is not None:
                    row |= {
                        f"gain_{metric}": gain.mean,
                        f"gain_{metric}_se": gain.se,
                        f"gain_{metric}_point_se": gain.point_se,
                        f"gain_{metric}_low": gain.low,
                        f"gain_{metric}_high": gain.high,
                        f"gain_{metric}_seeds": len(gain.seeds),
                    }
            rows.append(
                {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            )
        return rows

    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self.rows():
            seen.update(dict.fromkeys(row))
        return list(seen)

    def csv(self) -> str:
        import csv

        out = io.StringIO(newline="")
        writer = csv.DictWriter(out, fieldnames=self.columns(), restval="")
        writer.writeheader()
        writer.writerows(self.rows())
        return out.getvalue()

    def group_table(self) -> str:
        heads = [
            "group",
            "seeds",
            *(f"{name}, mean ± s.e. over seeds" for name in METRICS.values()),
        ]
        lines = [_row(heads), "|---|---|" + "---:|" * len(METRICS)]
        for g in self.groups:
            label = f"{g.label} (baseline)" if g is self.baseline and self.gains else g.label
            cells = [label, ", ".join(map(str, g.seeds)), *(g.metrics[m].text() for m in METRICS)]
            lines.append(_row(cells))
        return "\n".join(lines)

    def gain_table(self) -> str:
        heads = ["group", "paired seeds", "points per seed"]
        for name in PAIRED.values():
            heads += [
                f"{name}, mean ± s.e. over seeds",
                f"{name}: point-level s.e.",
                f"{name}: 95 % interval",
            ]
        lines = [_row(heads), "|---|---|---:|" + "---:|" * 3 * len(PAIRED)]
        for group in self.groups:
            if group is self.baseline:
                continue
            gains = [self.gain(group.label, m) for m in PAIRED]
            first = gains[0]
            assert first is not None
            counts = sorted(set(first.points))
            cells = [
                group.label,
                ", ".join(map(str, first.seeds)) or DASH,
                ", ".join(map(str, counts)) or DASH,
            ]
            for gain in gains:
                assert gain is not None
                digits = decimals(gain.se if len(gain.seeds) > 1 else gain.point_se)
                interval = (
                    DASH
                    if math.isnan(gain.mean)
                    else f"[{gain.low:.{digits}f}, {gain.high:.{digits}f}]"
                    f"{' point-level' if gain.point_level else ''}"
                )
                cells += [
                    plus_minus(gain.mean, gain.se),
                    _number(gain.point_se, decimals(gain.point_se)),
                    interval,
                ]
            lines.append(_row(cells))
        return "\n".join(lines)

    def markdown(self) -> str:
        """aggregate.md: what was aggregated, both tables, and how every figure was formed."""
        runs = sum(len(g.members) for g in self.groups)
        method = "importance sampling" if self.method == "is" else self.method
        what = f"{self.split} split, {method}"
        parts = [
            f"# Aggregate: {what}",
            "",
            (
                f"{runs} runs in {len(self.groups)} group(s): runs whose resolved specs differ "
                f"only in {SEED} (and in keys that do not change what is computed) are one "
                "group's seeds."
            ),
            "",
            self.group_table(),
            "",
        ]
        if self.gains:
            parts += [
                f"## Paired differences against {self.baseline.label}",
                "",
                (
                    "Within a seed, the mean over the points both runs scored (the same data "
                    "and rows) of each point's difference; then the mean over seeds."
                ),
                "",
                self.gain_table(),
                "",
            ]
        parts += [
            (
                "- mean ± s.e. over seeds: mean of the S runs' values ± sd/√S (ddof 1); — "
                "where S = 1."
            ),
            (
                "- log p(x): the mean over points of the importance-sampled log p̂(x), a "
                "stochastic lower bound (nats); ELBO likewise; active units: "
                "Cov_x(E_q[z_u|x]) > 0.01."
            ),
            (
                "- training time: wall seconds spent training, over the run's stops and "
                "resumes (for a run from before that count: its marker's created → updated, "
                "scoring included)."
            ),
        ]
        if self.gains:
            parts += [
                (
                    "- Δ: d_i = value_i(group) − value_i(baseline) per point i within a seed; "
                    "d̄_s its mean over the n points, se_s = sd(d)/√n."
                ),
                "- Δ, mean ± s.e. over seeds: mean of d̄_s ± sd(d̄)/√S.",
                (
                    "- point-level s.e.: √(Σ_s se_s²)/S, the s.e. if each seed's model were "
                    "exact and only the points were drawn."
                ),
                (
                    "- 95 % interval: mean ± t_{0.975,S−1} · s.e. over seeds (S ≥ 2); with one "
                    "seed, mean ± 1.96 · point-level s.e. (marked point-level)."
                ),
            ]
        return "\n".join(parts) + "\n"

    def lines(self) -> list[str]:
        """What the command prints: the tables."""
        out = [self.group_table()]
        if self.gains:
            out += ["", f"paired differences against {self.baseline.label}:", self.gain_table()]
        return out

    def __repr__(self) -> str:
        return "\n".join(self.lines())

    def _repr_markdown_(self) -> str:
        return self.markdown()

    # ---- output ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything: the groups with their specs, runs and per-seed values, the gains with
        their per-seed means, s.e.'s and point counts (nan and ±inf become null on writing)."""
        return {
            "split": self.split,
            "method": self.method,
            "baseline": self.baseline.label,
            "group_keys": self.differing,
            "excluded_keys": [SEED, *NOT_COMPUTED],
            "groups": [
                {
                    "label": g.label,
                    "baseline": g is self.baseline,
                    "spec": g.spec,
                    "runs": [
                        {
                            "path": str(m.path),
                            "seed": m.seed,
                            "run_time_s": m.run_time_s,
                            **{
                                k: m.evaluation.get(k)
                                for k in (
                                    "log_px",
                                    "elbo",
                                    "active_units",
                                    "bits_per_dim",
                                    "num_points",
                                    "num_samples",
                                    "data_sha256",
                                    "points_sha256",
                                )
                            },
                        }
                        for m in g.members
                    ],
                    "metrics": {k: dataclasses.asdict(e) for k, e in g.metrics.items()},
                }
                for g in self.groups
            ],
            "gains": [dataclasses.asdict(g) for g in self.gains],
        }

    def figure(self) -> Figure:
        """The forest plot: one panel per paired metric, one row per group, its gain with its
        95 % interval (:data:`CAPTION`), a vertical line at 0."""
        return forest_plot(
            self.gains,
            [g.label for g in self.groups if g is not self.baseline],
            self.baseline.label,
        )

    def write(self, out: str | os.PathLike[str] | None = None) -> list[Path]:
        """aggregate.md, .csv, .json and .png in ``out`` (created where missing; default: the
        common parent of the runs); returns their paths."""
        folder = Path(out) if out is not None else self.default_out()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpecError("--out", f"cannot create {folder}: {exc.strerror}") from None
        if not folder.is_dir():
            raise SpecError("--out", f"{folder} is not a directory")
        paths = [
            folder / name for name in (AGGREGATE_MD, AGGREGATE_CSV, AGGREGATE_JSON, AGGREGATE_PNG)
        ]
        write_text_atomic(paths[0], self.markdown())
        write_text_atomic(paths[1], self.csv())
        write_json_atomic(paths[2], self.to_dict())
        fig = self.figure()
        write_atomic(paths[3], lambda f: fig.savefig(f, format="png", dpi=DPI))
        return paths

    def default_out(self) -> Path:
        parents = [str(m.path.resolve().parent) for g in self.groups for m in g.members]
        return Path(os.path.commonpath(parents))


def forest_plot(gains: Sequence[Gain], labels: Sequence[str], baseline: str) -> Figure:
    """Each group's paired gains (rows, in ``labels`` order) per metric (panels), points with
    their interval, a line at 0, :data:`CAPTION` beneath. Without gains, one panel saying so."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ticks = [f"{label} ({_seeds(gains, label)})" for label in labels]
    width = 3.6 * len(PAIRED) + 0.065 * max((len(t) for t in ticks), default=0) + 0.5
    fig = Figure(figsize=(width, 0.45 * max(len(labels), 1) + 2.4), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(PAIRED), sharey=True, squeeze=False)[0]
    if not labels:
        for ax in axes:
            ax.text(
                0.5,
                0.5,
                "one group: nothing to pair",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            ax.set_axis_off()
        fig.suptitle(f"Aggregate: {baseline}")
        return fig
    y = np.arange(len(labels))
    for ax, (metric, name) in zip(axes, PAIRED.items()):
        found = {g.group: g for g in gains if g.metric == metric}
        for row, label in enumerate(labels):
            gain = found.get(label)
            if gain is None or math.isnan(gain.mean):
                continue
            low, high = gain.mean - gain.low, gain.high - gain.mean
            err = None if math.isnan(low) else [[low], [high]]
            ax.errorbar(
                [gain.mean],
                [row],
                xerr=err,
                fmt="s" if gain.point_level else "o",
                color="tab:orange" if gain.point_level else "tab:blue",
                capsize=3,
            )
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set(title=f"{name} (nats)", xlabel=f"{name} vs baseline")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, ticks)
    axes[0].set_ylim(len(labels) - 0.5, -0.5)
    fig.suptitle(f"Paired differences against {baseline}")
    fig.get_layout_engine().set(rect=(0, 0.1, 1, 0.9))  # room for the caption beneath
    fig.text(0.01, 0.01, CAPTION, fontsize=7, wrap=True, va="bottom")
    return fig


def _seeds(gains: Sequence[Gain], label: str) -> str:
    """How many seeds a group's gains pair: ``1 seed, point-level`` for the point-level
    interval."""
    n = max((len(g.seeds) for g in gains if g.group == label), default=0)
    return "1 seed, point-level" if n == 1 else f"{n} seeds"


def aggregate(
    paths: Iterable[str | os.PathLike[str]],
    baseline: Sequence[str] = (),
    split: str = "test",
    method: str = "is",
    out: str | os.PathLike[str] | None = None,
) -> Aggregate:
    """Aggregate the runs under ``paths`` (:func:`find_runs`) on ``split`` by ``method``: groups
    (:func:`make_groups`), the baseline (:func:`choose_baseline`) and the paired gains
    (:func:`paired_gains`); with ``out``, also written there (:meth:`Aggregate.write`)."""
    runs = find_runs(paths)
    groups = make_groups(runs, split, method)
    base = choose_baseline(groups, baseline)
    gains = paired_gains(groups, base, split, method)
    result = Aggregate(groups, base, gains, split, method, differing_keys([g.spec for g in groups]))
    if out is not None:
        result.write(out)
    return result
