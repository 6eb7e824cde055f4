"""``pyro-vae compare``: the same VAE trained with several ELBO estimators, side by side.

Each estimator (``iwae[k=5]``, ``renyi[alpha=0.5,k=5]``, ``my_module:MyELBO[gamma=0.2]``, ...;
``k`` is an alias of ``particles``; the older ``iwae:k=5`` still reads, :func:`split_entry`)
trains the VAE of one spec from the same initial weights and seed, for the same epochs, in its own
run directory ``OUT/runs/<label>/seed-<s>/``, once per seed s of ``--seeds R`` (the spec's seed
and the R − 1 after it); each is an ordinary, scored run (``pyro-vae aggregate OUT`` and
``report`` read it). Or, with ``--checkpoint RUN_DIR``, every estimator is scored on that run's
trained weights without training. Then, per estimator (see
:mod:`inference.compare`): its objective on a fixed validation batch, the signal-to-noise ratio of
its gradient for the guide (encoder) and the model (decoder, prior, likelihood) parameters over R
draws, the time of one loss + gradient evaluation, and the trained model's ELBO and
importance-sampled log p(x) on the evaluation split. With R > 1 seeds, ``compare.md`` shows each
column's mean ± s.e. over seeds and the log p(x) gain over the first estimator, paired per image
within each seed (:func:`pyro_vae.aggregation.paired_gains`). Writes ``compare.csv`` (a row per
estimator and seed), ``compare.md`` and
``figures/compare.png`` in OUT, holding OUT's lock (:class:`pyro_vae.rundir.Run`) from its first
write to its last: a run being trained or written by another command is refused, naming the holder.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyro_vae.components.estimators import ESTIMATORS, make_elbo
from pyro_vae.console import chatty, quiet
from pyro_vae.data import absolute_paths
from pyro_vae.registry import Component, SpecError, directory_argument
from pyro_vae.rundir import CONFIG, LOCK, Run
from pyro_vae.spec import Spec, load_spec, parse_yaml

# torch, Pyro and inference are imported by the functions that use them: the command line
# imports this module for add_compare_parser, and --help must not wait for them.
if TYPE_CHECKING:
    import torch

    from inference.compare import Row
    from pyro_vae.prepared import Prepared
    from pyro_vae.scoring import Evaluation

ALIASES = {"k": "particles"}
RUNS = "runs"
COMPARE_CSV, COMPARE_MD, FIGURE = "compare.csv", "compare.md", Path("figures") / "compare.png"
#: What a comparison that trains writes into OUT (``*`` as in glob).
TRAINED_LAYOUT = (CONFIG, RUNS, COMPARE_CSV, COMPARE_MD, FIGURE.parts[0], LOCK, ".*.tmp")
#: The columns of compare.csv and what they mean (the bound and SNR columns: inference.compare).
#: The columns compare.md shows as mean ± s.e. over seeds when there are several.
SEED_COLUMNS = ("bound", "snr_guide", "snr_model", "ms_per_step", "elbo", "log_px")
COLUMNS = {
    "estimator": "the --estimators entry",
    "seed": "train.seed of the run (the spec's seed with --checkpoint)",
    "bound": "the estimator's objective per data point on the fixed validation batch, at the "
    "spec's β (a lower bound on log p(x) when β = 1; for renyi also α ≥ 0), mean of R "
    "draws (nats)",
    "bound_std": "standard deviation of one draw of the objective (nats)",
    "bound_stderr": "Monte Carlo standard error of bound: bound_std / √R",
    "snr_guide": "gradient signal-to-noise ratio |E g| / √Var g, mean over the encoder's "
    "parameters whose gradient is noisy (Rainforth et al. 2018; an exact gradient's "
    "∞ is left out)",
    "snr_guide_median": "the same, median over the encoder's parameters",
    "snr_classifier": "gradient SNR, mean over the parameters of a latent class's q(y | x) "
    "(m2, gmvae: the site the discrete-latent estimators differ on)",
    "snr_classifier_median": "the same, median over q(y | x)'s parameters",
    "snr_model": "gradient SNR, mean over the other parameters (decoder, prior, likelihood)",
    "snr_model_median": "the same, median over the other parameters",
    "ms_per_step": "mean wall time of one loss + gradient evaluation on the batch (ms; the "
    "estimators run one after another, so a busy machine skews it)",
    "repeats": "R, gradient draws",
    "elbo": "one-sample ELBO per data point of the trained model on the evaluation split (nats)",
    "log_px": "importance-sampled log p(x) per data point on the evaluation split, a stochastic "
    "lower bound (nats)",
    "log_px_stderr": "Monte Carlo standard error of log_px: √(Σ_n se_n²) / N",
    "log_px_sem": "standard error of log_px over data points (the data's spread)",
}


def split_entry(text: str) -> tuple[str, str | None]:
    """``NAME[KEY=VALUE,...]`` → (NAME, ``KEY=VALUE,...``), the parameters None where there are
    none. NAME is a built-in's or an entry point's name, or ``module:Class`` (a colon); the old
    ``NAME:KEY=VALUE,...`` is read too, where what follows the first colon holds an ``=``
    (``iwae:k=5``) or what precedes it is a registered name, so ``my_module:MyELBO`` is a name
    and ``my_module:MyELBO[k=5]`` gives it parameters."""
    text = text.strip()
    if text.endswith("]") and "[" in text:
        name, _, params = text[:-1].partition("[")
        return name.strip(), params
    head, colon, rest = text.partition(":")
    if colon and ("=" in rest or head.strip() in ESTIMATORS.names()):
        if ":" in rest.partition("=")[0]:
            raise SpecError(
                "",
                f"give the parameters of {head.strip()}:{rest.partition(':')[0].strip()} in "
                "brackets, module:Class[KEY=VALUE,...]",
            )
        return head.strip(), rest
    return text, None


def parse_estimator(text: str) -> Component:
    """``NAME[KEY=VALUE,...]`` (or ``NAME:KEY=VALUE,...``, :func:`split_entry`) → the validated
    estimator component; values are read as YAML."""
    try:
        if "," in text and not any(c in text for c in "[:="):  # trace,iwae: a list in one word
            words = " ".join(w.strip() for w in text.split(",") if w.strip())
            raise SpecError("", f"one estimator per word: --estimators {words}")
        name, params = split_entry(text)
        raw: dict[str, Any] = {"name": name}
        for item in params.split(",") if params else []:
            key, equals, value = (s.strip() for s in item.partition("="))
            if not (key and equals and value):
                raise SpecError("", f"expected NAME[KEY=VALUE,...] (e.g. iwae[k=5]), got {item!r}")
            param = ALIASES.get(key, key)
            if param in raw:
                note = "".join(
                    f" ({alias} is an alias of {param})"
                    for alias, target in ALIASES.items()
                    if target == param
                )
                raise SpecError("", f"{param} given twice{note}")
            raw[param] = parse_yaml(value, key)
        return ESTIMATORS.parse(raw, "estimator")
    except SpecError as exc:
        where = exc.key.removeprefix("estimator").lstrip(".")
        where = f"{where}: " if where and where != "name" else ""
        raise SpecError("--estimators", f"{text!r}: {where}{exc.message}") from None


def parse_estimators(texts: Sequence[str]) -> dict[str, Component]:
    """Label (the entry as written) → component; two entries naming one estimator are an error."""
    if not texts:
        raise SpecError("--estimators", "name at least one estimator")
    out: dict[str, Component] = {}
    for text in texts:
        component = parse_estimator(text)
        same = [label for label, c in out.items() if c == component]
        if same:
            raise SpecError("--estimators", f"{same[0]!r} and {text!r} are the same estimator")
        out[text.strip()] = component
    return out


def run_name(label: str) -> str:
    """A file name for an estimator's run directory: ``iwae:k=5`` → ``iwae_k=5``,
    ``iwae[k=5]`` → ``iwae_k=5_``."""
    return re.sub(r"[^\w.=,+-]", "_", label)


def _on_device(prepared: Prepared, split: str) -> torch.Tensor:
    """Move the VAE to :func:`pyro_vae.prepared.train_device`; the split's data, there too."""
    from pyro_vae.prepared import train_device

    device = train_device(prepared.spec)
    prepared.vae.to(device)
    return prepared.bundle.split(split).to(device)


def gradient_rows(
    prepared: Prepared, estimators: Mapping[str, Component], repeats: int
) -> list[Row]:
    """Rows of :func:`inference.compare.compare_estimators` for ``prepared.vae`` on the first
    ``batch_size`` validation points (with their labels for a kind that reads them), at the
    spec's β, seeded with the spec's seed."""
    import pyro

    from inference.compare import compare_estimators

    vae, spec = prepared.vae, prepared.spec
    x = _on_device(prepared, "val")[: spec.train.batch_size]
    y = prepared.labels("val", len(x))
    vae.train()
    vae.kl_scale = spec.beta
    guide = list(vae.posteriors.parameters())
    classifier = [p for m in vae.kind.guide_modules() for p in m.parameters()]  # q(y | x)
    taken = {id(p) for p in guide + classifier}
    model = [p for p in vae.parameters() if id(p) not in taken]
    groups = {"guide": guide, "classifier": classifier, "model": model}
    elbos = {label: make_elbo(c) for label, c in estimators.items()}
    with pyro.validation_enabled(False), pyro.settings.context(module_local_params=True):
        return compare_estimators(
            vae.model,
            vae.guide,
            elbos,
            x,
            repeats=repeats,
            params={name: group for name, group in groups.items() if group},
            num_data=vae.num_data or len(x),
            seed=spec.train.seed,
            y=None if y is None else y.to(x.device),
        )


def evaluation_columns(result: Evaluation) -> Row:
    """ELBO and importance-sampled log p(x) of an evaluation, with the two standard errors."""
    se = result.points.stderr.double()  # independent across points: the mean's s.e. adds in squares
    return {
        "elbo": result.elbo,
        "log_px": result.log_px,
        "log_px_stderr": float(se.square().sum().sqrt() / len(se)),
        "log_px_sem": result.log_px_sem,
    }


def compare_trained(
    spec: Spec,
    estimators: Mapping[str, Component],
    out: Run,
    repeats: int,
    seeds: Sequence[int],
    overwrite: bool = False,
) -> list[Row]:
    """Train ``spec`` once per estimator and seed, the estimators of a seed from the same
    initial weights (checked), each in ``out/runs/<label>/seed-<s>`` and scored there
    (:func:`pyro_vae.pipeline.score`). Locks ``out`` (:func:`claim`) and writes
    ``out/config.yaml`` (the spec, estimator aside) once the first model is built, so a data error
    leaves nothing behind; the caller lets the lock go."""
    import torch

    from pyro_vae.pipeline import fit, score
    from pyro_vae.prepared import check_step_memory, prepare

    rows: list[Row] = []
    for seed in seeds:
        initial = None
        for label, component in estimators.items():
            if chatty():
                print(
                    f"{label}, seed {seed}: training {spec.train.max_epochs} epoch(s)",
                    file=sys.stderr,
                )
            train = dataclasses.replace(spec.train, seed=seed)
            prepared = prepare(dataclasses.replace(spec, estimator=component, train=train))
            state = {k: v.detach().clone() for k, v in prepared.vae.state_dict().items()}
            if initial is None:
                if not rows:
                    check_step_memory(
                        spec,
                        prepared.bundle.shape,
                        estimators,
                        spec.train.batch_size,
                        "--estimators",
                    )
                    claim(out, overwrite, fresh=True)
                    out.write_config(spec)
                initial = state
            elif state.keys() != initial.keys() or not all(
                torch.equal(state[k], v) for k, v in initial.items()
            ):
                raise RuntimeError(
                    f"{label}: the VAE did not start from the first estimator's "
                    "weights; the comparison would not be fair"
                )
            run = Run(out.root / RUNS / run_name(label) / f"seed-{seed}")
            try:
                trainer = fit(prepared, run, overwrite=overwrite)
                result = score(prepared, run, trainer.strategy.root_device, rank0=True)
            finally:
                run.unlock()
            [row] = gradient_rows(prepared, {label: component}, repeats)
            rows.append({"estimator": label, "seed": seed} | row | evaluation_columns(result))
    return rows


def compare_checkpoint(
    prepared: Prepared, estimators: Mapping[str, Component], repeats: int
) -> list[Row]:
    """Every estimator on the same trained weights; the evaluation columns are shared."""
    import pyro

    from pyro_vae.prepared import train_device
    from pyro_vae.scoring import evaluate_run

    pyro.set_rng_seed(prepared.spec.train.seed)
    evaluation = evaluation_columns(evaluate_run(prepared, train_device(prepared.spec)))
    return [
        {"estimator": label, "seed": prepared.spec.train.seed} | row | evaluation
        for label, row in zip(estimators, gradient_rows(prepared, estimators, repeats))
    ]


def seed_table(rows: Sequence[Row], out: Run, split: str) -> str:
    """Per estimator, each column's mean ± s.e. over seeds, and the gain in log p(x) over the
    first estimator paired per image within each seed (± the s.e. over seeds)."""
    from inference.compare import markdown_table
    from pyro_vae.aggregation import make_groups, mean_se, paired_gains, plus_minus

    labels = list(dict.fromkeys(str(r["estimator"]) for r in rows))
    runs = {
        label: [
            out.root / RUNS / run_name(label) / f"seed-{r['seed']}"
            for r in rows
            if r["estimator"] == label
        ]
        for label in labels
    }
    groups = make_groups([p for paths in runs.values() for p in paths], split)
    by_label = {
        label: next(g for g in groups if {m.path for m in g.members} == set(paths))
        for label, paths in runs.items()
    }
    gains = {
        g.group: g for g in paired_gains(groups, by_label[labels[0]], split) if g.metric == "log_px"
    }
    table = []
    for label in labels:
        mine = [r for r in rows if r["estimator"] == label]
        cells: Row = {"estimator": label, "seeds": len(mine)}
        for column in SEED_COLUMNS:
            cells[column] = plus_minus(*mean_se([float(r[column]) for r in mine])[:2])
        gain = gains.get(by_label[label].label)
        cells["log p(x) gain, paired"] = "—" if gain is None else plus_minus(gain.mean, gain.se)
        table.append(cells)
    return markdown_table(table, list(table[0]))


def write_outputs(rows: Sequence[Row], out: Run, description: str, split: str) -> str:
    """compare.csv, compare.md (description, the table over seeds when there are several, the
    table of runs, the column legend) and figures/compare.png in ``out`` (locked:
    :func:`claim`); returns the tables."""
    from inference.compare import csv_text, markdown_table
    from pyro_vae.figures import plot_estimator_comparison

    columns = [c for c in COLUMNS if any(c in r for r in rows)]
    table = markdown_table(rows, columns)
    if len({r["seed"] for r in rows}) > 1:
        table = (
            f"Mean ± s.e. over seeds; the gain is paired per {split} image within each "
            f"seed, against the first estimator:\n\n{seed_table(rows, out, split)}\n\n"
            f"Each run:\n\n{table}"
        )
    legend = "\n".join(f"- `{c}`: {COLUMNS[c]}" for c in columns)
    out.write_text(out.root / COMPARE_CSV, csv_text(rows, columns))
    text = f"# Estimator comparison\n\n{description}\n\n{table}\n\n{legend}\n"
    out.write_text(out.root / COMPARE_MD, text)
    out.write_figures({FIGURE.stem: plot_estimator_comparison(rows)})
    return table


def claim(out: Run, overwrite: bool, fresh: bool) -> None:
    """Lock ``out`` for the comparison, created where missing (:meth:`Run.create`: a run
    directory given to ``--checkpoint``, or a folder of its own). Refused: replacing a comparison
    without --overwrite, a file, and with ``fresh`` (training writes config.yaml and runs/) any
    other non-empty directory."""
    out.create("compare", lambda: _check(out.root, overwrite, fresh))


def _check(out: Path, overwrite: bool, fresh: bool) -> None:
    """An earlier comparison (its ``compare.csv``) is replaced only with ``overwrite``; files of
    the comparison's names without it are someone else's, and never replaced."""
    if out.exists() and not out.is_dir():
        raise SpecError("--out", f"{out} is not a directory")
    if (out / COMPARE_CSV).is_file():
        if not overwrite:
            raise SpecError(
                "--out",
                f"{out} already holds {COMPARE_CSV}; pass --overwrite or choose another directory",
            )
        others = sorted(p.name for p in out.iterdir()) if fresh else []
        others = [n for n in others if not any(Path(n).match(g) for g in TRAINED_LAYOUT)]
        if others:
            raise SpecError(
                "--out",
                f"{out} holds {', '.join(others[:3])} beside its "
                f"{COMPARE_CSV} (a run compared with --checkpoint?), which training "
                "a comparison there would not keep; choose another directory",
            )
        return
    if fresh and out.is_dir() and any(p.name != LOCK for p in out.iterdir()):
        raise SpecError(
            "--out", f"{out} is not empty and holds no {COMPARE_CSV}; choose another directory"
        )
    taken = [str(name) for name in (COMPARE_MD, FIGURE) if (out / name).exists()]
    if taken:
        raise SpecError(
            "--out",
            f"{out} holds {' and '.join(taken)} but no {COMPARE_CSV}, so "
            "not a comparison to replace; choose another directory",
        )


@dataclasses.dataclass
class Comparison:
    """What :func:`compare` did: a row per (estimator, seed) (the columns of :data:`COLUMNS`),
    the tables it wrote to ``compare.md``, and the folder ``out`` holding compare.md,
    compare.csv and figures/compare.png."""

    rows: list[Row]
    table: str
    out: Path

    def files(self) -> list[Path]:
        return [self.out / COMPARE_MD, self.out / COMPARE_CSV, self.out / FIGURE]

    def lines(self) -> list[str]:
        """What ``pyro-vae compare`` prints."""
        return [self.table, f"comparison: {', '.join(map(str, self.files()))}"]

    def __repr__(self) -> str:
        return "\n".join(self.lines())

    def _repr_markdown_(self) -> str:
        return self.table


def compare(
    config: str | Path | Spec | None = None,
    estimators: Sequence[str] = (),
    *,
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
    epochs: int | None = None,
    repeats: int = 100,
    seeds: int = 1,
    overwrite: bool = False,
) -> Comparison:
    """``pyro-vae compare``: train the spec ``config`` (a YAML path or a :class:`Spec`, +
    ``overrides``, ``epochs``) once per estimator (``NAME[KEY=VALUE,...]``; default every
    registered one) and seed, each from the same initial weights, or with ``checkpoint`` score a
    trained run's weights under each; the bound, gradient SNR over ``repeats`` draws, time per
    step and log p(x) of each, written into ``out`` (default ``runs/compare-<config name>``,
    ``runs/compare`` for a Spec, or the run itself). Arguments and ``out`` are
    checked before torch is imported."""
    components = parse_estimators(estimators or ESTIMATORS.names())
    if repeats < 2:
        raise SpecError("--repeats", f"must be >= 2 (a variance needs two draws), got {repeats}")
    if seeds < 1:
        raise SpecError("--seeds", f"must be >= 1, got {seeds}")
    if checkpoint:
        if config or overrides or epochs is not None or seeds != 1:
            raise SpecError(
                "--checkpoint",
                "scores a trained run as it is: give no CONFIG, --set, --epochs or --seeds with it",
            )
        folder = Run(out if out else checkpoint)
    elif config:
        name = "compare" if isinstance(config, Spec) else f"compare-{Path(config).stem}"
        folder = Run(out if out else Path("runs") / name)
    else:
        raise SpecError("compare", "give a CONFIG to train from, or --checkpoint RUN_DIR")
    try:
        if checkpoint:
            rows, spec, what = score_checkpoint(checkpoint, components, folder, overwrite, repeats)
        else:
            rows, spec, what = train_each(
                config, components, folder, overrides, epochs, repeats, seeds, overwrite
            )
        description = (
            f"{what}. Gradient statistics over R = {repeats} draws on the first "
            f"{spec.train.batch_size} validation points; ELBO and log p(x) on the "
            f"{spec.evaluate.split} split with K = {spec.evaluate.num_samples} "
            "importance samples."
        )
        table = write_outputs(rows, folder, description, spec.evaluate.split)
        return Comparison(rows, table, folder.root)
    finally:
        folder.unlock()


def cmd_compare(args: argparse.Namespace) -> None:
    quiet()  # again once training imports Lightning (:func:`train_each`)
    done = compare(
        args.config,
        args.estimators or (),
        checkpoint=args.checkpoint,
        out=args.out,
        overrides=args.set,
        epochs=args.epochs,
        repeats=args.repeats,
        seeds=args.seeds,
        overwrite=args.overwrite,
    )
    print("\n".join(done.lines()))


def score_checkpoint(
    checkpoint: str | Path,
    estimators: Mapping[str, Component],
    out: Run,
    overwrite: bool,
    repeats: int,
) -> tuple[list[Row], Spec, str]:
    """``--checkpoint RUN_DIR``: the rows, the run's spec and what was compared. ``out`` is
    locked (:func:`claim`) before anything is scored: into the run itself, before its weights
    are read (what is written comes from one state of the run); elsewhere, once the run has
    loaded (a run that cannot be scored leaves no folder behind)."""
    from pyro_vae.prepared import check_step_memory, load_run

    run = Path(checkpoint)
    into_run = out.root.resolve() == run.resolve()
    _check(out.root, overwrite, fresh=False)
    if into_run:
        Run(run).require_config()
        claim(out, overwrite, fresh=False)
    prepared = load_run(run)
    check_step_memory(
        prepared.spec,
        prepared.bundle.shape,
        estimators,
        min(prepared.spec.train.batch_size, len(prepared.bundle.val)),
        "--estimators",
    )
    if not into_run:
        claim(out, overwrite, fresh=False)
    rows = compare_checkpoint(prepared, estimators, repeats)
    return rows, prepared.spec, f"Every estimator on the trained weights of `{checkpoint}`"


def train_each(
    config: str | Path | Spec,
    estimators: Mapping[str, Component],
    out: Run,
    overrides: Sequence[str],
    epochs: int | None,
    repeats: int,
    seeds: int,
    overwrite: bool,
) -> tuple[list[Row], Spec, str]:
    """CONFIG: the rows of :func:`compare_trained`, the spec and what was compared."""
    if epochs is not None and epochs < 1:
        raise SpecError("--epochs", f"must be >= 1, got {epochs}")
    spec = load_spec(
        config, [*overrides, *([] if epochs is None else [f"train.max_epochs={epochs}"])]
    )
    spec = dataclasses.replace(spec, data=absolute_paths(spec.data))
    if spec.train.devices > 1:
        raise SpecError("train.devices", "compare trains in one process: set it to 1")
    _check(out.root, overwrite, fresh=True)
    first = spec.train.seed
    import pyro_vae.trainer  # noqa: F401  (Lightning's import sets its log level: quiet it after)

    quiet()
    rows = compare_trained(spec, estimators, out, repeats, range(first, first + seeds), overwrite)
    which = f"seed {first}" if seeds == 1 else f"each of seeds {first}–{first + seeds - 1}"
    return (
        rows,
        spec,
        (
            f"Each estimator trained {what_spec(config)} for {spec.train.max_epochs} "
            f"epoch(s) from the same initial weights ({which}); runs in "
            f"`{out.root / RUNS}`"
        ),
    )


def what_spec(config: str | Path | Spec) -> str:
    """The spec ``config`` as compare.md names it: its path, or where it came from."""
    return "a spec given in Python" if isinstance(config, Spec) else f"`{config}`"


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``pyro-vae compare`` on an ``add_subparsers()`` object."""
    c = subparsers.add_parser(
        "compare",
        help="train with several ELBO estimators from one "
        "initialization; compare bounds, gradient SNR, time and log p(x)",
    )
    c.add_argument("config", nargs="?", help="YAML spec to train from (or --checkpoint)")
    c.add_argument(
        "--estimators",
        nargs="+",
        metavar="NAME[KEY=VALUE,...]",
        help="e.g. trace mean_field 'iwae[k=5]' 'dreg[k=5]' stl 'renyi[alpha=0.5,k=5]' "
        "enum reinforce gumbel, or your own module:Class['KEY=VALUE,...'] "
        "(k = particles; NAME:KEY=VALUE,... also reads for a NAME without a colon; default: "
        "every registered estimator)",
    )
    c.add_argument("--epochs", type=int, help="training epochs (default: the spec's max_epochs)")
    c.add_argument("--repeats", type=int, default=100, help="R gradient draws (default 100)")
    c.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="S",
        help="train each estimator with S seeds (the spec's train.seed and the next "
        "S − 1); compare.md then shows mean ± s.e. over seeds and paired gains",
    )
    c.add_argument(
        "--checkpoint", metavar="RUN_DIR", help="score a trained run's weights instead of training"
    )
    c.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec key (repeatable)",
    )
    c.add_argument(
        "--out",
        type=directory_argument,
        help="output directory (default runs/compare-<config name>, or RUN_DIR with --checkpoint)",
    )
    c.add_argument("--overwrite", action="store_true", help="replace an earlier comparison")
    c.set_defaults(func=cmd_compare)
    return c
