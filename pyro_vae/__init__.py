"""pyro-vae: declarative variational autoencoders in Pyro.

    import pyro_vae
    run = pyro_vae.train("examples/configs/digits.yaml", out="runs/digits",
                         overrides=["train.max_epochs=5"])      # trained, scored, figures written
    run.evaluation("test")          # log p(x) by importance sampling, per point too (.points)
    run.figures("test")             # matplotlib figures by name
    pyro_vae.evaluate(run, "val", num_samples=1000)              # score another split
    run = pyro_vae.load_run("runs/digits")                       # later: run.vae, run.spec, ...
    pyro_vae.encode(run, "latents.npz")             # posterior means and scales of a split
    pyro_vae.sample(run, "samples.npz", n=64, png="grid.png")    # draws from the model
    pyro_vae.probe(run, labels=[100, 1000, None])   # logistic regression on E_q[z|x] vs pixels
    pyro_vae.compare("examples/configs/digits.yaml", ["trace", "iwae[k=5]"], seeds=3)
    done = pyro_vae.sweep("examples/experiments/priors.yaml", "runs/priors")  # cells x seeds
    pyro_vae.aggregate([done.out], baseline=["prior.name=standard_normal"])   # paired gains

Every command of the command line is a function here, and as quiet (progress and warnings go to
stderr only when it is a terminal), but ``report`` (:func:`pyro_vae.report.write_report`) and
``datasets`` (the registries of :mod:`pyro_vae.spec`). Importing the package imports neither torch nor Pyro, and changes no
global state (no warning filter, log level, param store or ``pyro.settings``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pyro_vae.registry import SpecError
from pyro_vae.rundir import Run
from pyro_vae.spec import Spec, dump_spec, load_spec

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from pyro_vae.aggregation import Aggregate
    from pyro_vae.comparison import Comparison
    from pyro_vae.experiment import SweepResult
    from pyro_vae.export import Sampled
    from pyro_vae.probing import ProbeResult
    from pyro_vae.scoring import Evaluation
    from pyro_vae.search import SearchResult
    from pyro_vae.vae import VAE

PathLike = str | os.PathLike[str]


def __getattr__(name: str) -> Any:
    """``VAE``, imported on first use: ``import pyro_vae`` (and validating a spec) imports
    neither torch nor Pyro."""
    if name == "VAE":
        from pyro_vae.vae import VAE

        return VAE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def train(
    spec: Spec | PathLike,
    out: PathLike | None = None,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    resume: PathLike | None = None,
) -> Run:
    """Train a VAE from ``spec`` (a :class:`Spec` or a YAML path) plus ``overrides``
    (``"key=value"``) into the run directory ``out`` (default ``runs/<spec name>``), then score
    its ``evaluate.split`` and write the figures, as ``pyro-vae train`` does; ``resume``: a run
    directory to continue instead. A stopped run with the same spec is continued, an unscored
    one scored. Returns the :class:`Run`, its VAE and data already loaded.

    >>> run = pyro_vae.train("examples/configs/digits.yaml", overrides=["train.max_epochs=1"])
    >>> run.evaluation("test").log_px           # doctest: +SKIP
    """
    from pyro_vae import pipeline
    from pyro_vae.console import quieted

    with quieted():
        config = None if resume is not None else spec
        trained = pipeline.train(config, out, overrides, overwrite, resume)
    return trained.run if trained.prepared is None else trained.run.attach(trained.prepared)


def evaluate(
    run: Run | PathLike,
    split: str = "test",
    method: str = "is",
    num_samples: int | None = None,
    limit: int | None = None,
    *,
    chains: int | None = None,
    steps: int | None = None,
    leapfrog: int | None = None,
) -> Evaluation | dict[str, Any]:
    """Score a trained run's ``split`` as ``pyro-vae evaluate`` does, writing into it:
    ``method="is"`` (importance sampling, K = ``num_samples``, default the spec's) returns the
    :class:`~pyro_vae.scoring.Evaluation`; ``"ais"`` or ``"bdmc"`` (``chains=``, ``steps=``,
    ``leapfrog=``) the annealing summary. ``limit``: the first N points only.

    >>> pyro_vae.evaluate("runs/digits", "val", num_samples=1000).log_px  # doctest: +SKIP
    """
    from pyro_vae import pipeline
    from pyro_vae.console import chatty, quieted

    given = {"chains": chains, "steps": steps, "leapfrog": leapfrog}
    with quieted():
        if method == "is":
            if annealing := [name for name, value in given.items() if value is not None]:
                raise SpecError(
                    "evaluate", f"{', '.join(annealing)}: options of method ais or bdmc, not of is"
                )
            return pipeline.evaluate(run, split, num_samples, limit, progress=chatty())
        if method not in ("ais", "bdmc"):
            raise SpecError("method", f"{method!r}; choose is, ais or bdmc")
        return pipeline.evaluate_annealed(
            run,
            method,
            split,
            num_samples,
            limit,
            chains=chains,
            steps=steps,
            leapfrog=leapfrog,
            progress=chatty(),
        )


def load_run(path: PathLike) -> Run:
    """The run directory ``path``: ``.vae`` (the weights ``evaluate`` scores, in eval mode:
    ``best.ckpt`` when the run stopped early on it, else the last checkpoint), ``.spec``,
    ``.data``, ``.metrics``, ``.evaluation(split)`` with per-point arrays, ``.figures(split)``.
    Loading leaves the caller's random states as they were. SpecError when ``path`` is not a
    run directory, has no checkpoint, or its checkpoint does not fit its spec and data.

    ``vae, spec = load_run(path)``, the form of earlier versions, still works, with a
    FutureWarning.

    >>> run = pyro_vae.load_run("runs/digits")          # doctest: +SKIP
    >>> run.vae.sample(16).shape                        # doctest: +SKIP
    """
    run = Run(path)
    run.load()
    return run


def encode(
    run: Run | PathLike,
    out: PathLike,
    split: str = "test",
    limit: int | None = None,
    overwrite: bool = False,
) -> dict[str, np.ndarray]:
    """The posterior means and scales of q(z|x) for ``split`` (the first ``limit`` points),
    saved as the .npz ``out`` and returned, as ``pyro-vae encode`` does: ``mean``, ``scale``
    (N, D) and ``labels`` (N,) where the data have labels.

    >>> pyro_vae.encode("runs/digits", "latents.npz")["mean"].shape  # doctest: +SKIP
    """
    from pyro_vae.console import quieted
    from pyro_vae.export import encode_run
    from pyro_vae.pipeline import check_positive

    check_positive("--limit", limit)
    with quieted():
        return encode_run(
            run if isinstance(run, Run) else Run(run), os.fspath(out), split, limit, overwrite
        )


def sample(
    run: Run | PathLike,
    out: PathLike,
    n: int = 1000,
    png: PathLike | None = None,
    means: bool = False,
    seed: int | None = None,
    overwrite: bool = False,
    label: int | None = None,
) -> Sampled:
    """``n`` samples of the model saved as the .npz ``out`` (x and z; ``means``: E[x|z]
    instead of draws), the first of them drawn in ``png``, as ``pyro-vae sample`` does; ``seed``
    defaults to the run's ``train.seed``, ``label`` is the class to draw for a kind that reads
    labels. Returns what was written (:class:`~pyro_vae.export.Sampled`).

    >>> pyro_vae.sample("runs/digits", "samples.npz", n=64, png="grid.png")  # doctest: +SKIP
    """
    from pyro_vae.console import quieted
    from pyro_vae.export import sample_run

    with quieted():
        return sample_run(
            run if isinstance(run, Run) else Run(run),
            os.fspath(out),
            n,
            png=None if png is None else os.fspath(png),
            means=means,
            seed=seed,
            overwrite=overwrite,
            label=label,
        )


def sweep(
    experiment: PathLike | Mapping[str, Any],
    out: PathLike | None = None,
    jobs: int = 1,
    threads: int | None = None,
    *,
    search: str | None = None,
    trials: int | None = None,
    storage: str | None = None,
) -> SweepResult | SearchResult:
    """Train every run of the experiment file ``experiment`` (spec × cells × grid × seeds,
    :mod:`pyro_vae.experiment`) into the folder ``out`` (default ``runs/<file stem>``), as
    ``pyro-vae sweep`` does: in this process, or in ``jobs`` worker processes with ``threads``
    torch threads each. The same call again skips finished runs, continues stopped ones and
    scores unscored ones. Returns the :class:`~pyro_vae.experiment.SweepResult` (``.runs``: each
    run's path, cell, seed and state; ``.exit_code``), whose folder :func:`aggregate` reads.
    ``search="optuna"``, ``trials=N``: the experiment's ``search:`` section instead, as
    ``pyro-vae sweep --search optuna`` (:func:`pyro_vae.search.search`).

    ``experiment`` may be the file's content as a dict instead, with ``out`` given: it is kept
    as ``out/.sweep/experiment.yaml``, its ``base`` taken from the working directory.

    >>> done = pyro_vae.sweep("examples/experiments/priors.yaml", "runs/priors")  # doctest: +SKIP
    >>> pyro_vae.aggregate([done.out], baseline=["prior.name=standard_normal"])  # doctest: +SKIP
    """
    from pyro_vae.console import chatty, quieted
    from pyro_vae.experiment import experiment_file
    from pyro_vae.experiment import sweep as run_all

    if isinstance(experiment, Mapping):
        if out is None:
            raise SpecError("sweep", "an experiment given as a dict needs out=, its folder")
        experiment = experiment_file(experiment, os.fspath(out))
    with quieted():
        return run_all(
            os.fspath(experiment),
            None if out is None else os.fspath(out),
            jobs,
            threads,
            progress=chatty(),
            search=search,
            trials=trials,
            storage=storage,
        )


def compare(
    config: Spec | PathLike | None = None,
    estimators: Sequence[str] = (),
    *,
    checkpoint: Run | PathLike | None = None,
    out: PathLike | None = None,
    overrides: Sequence[str] = (),
    epochs: int | None = None,
    repeats: int = 100,
    seeds: int = 1,
    overwrite: bool = False,
) -> Comparison:
    """ELBO estimators compared as ``pyro-vae compare`` does (:mod:`pyro_vae.comparison`): the spec
    ``config`` (a :class:`Spec` or a YAML path, + ``overrides``; ``epochs`` replaces its
    max_epochs) trained once per estimator
    (``"iwae[k=5]"``, ``"my_module:MyELBO"``; default every registered one) and seed, each from
    the same initial weights; or, with ``checkpoint``, a trained run's weights scored under each.
    Per estimator: its bound, the gradient SNR over ``repeats`` draws, ms per step, ELBO and
    log p(x); with ``seeds`` > 1, mean ± s.e. over seeds and the log p(x) gain over the first
    estimator paired per image. Writes compare.md, compare.csv and figures/compare.png into
    ``out``; returns the :class:`~pyro_vae.comparison.Comparison` (``.rows``, ``.table``).

    >>> pyro_vae.compare("examples/configs/digits.yaml", ["trace", "iwae[k=5]"], epochs=5)  # doctest: +SKIP
    """
    from pyro_vae.comparison import compare as run_each
    from pyro_vae.console import quieted

    if isinstance(checkpoint, Run):
        checkpoint = checkpoint.root
    with quieted():
        return run_each(
            config if config is None or isinstance(config, Spec) else os.fspath(config),
            estimators,
            checkpoint=None if checkpoint is None else os.fspath(checkpoint),
            out=None if out is None else os.fspath(out),
            overrides=overrides,
            epochs=epochs,
            repeats=repeats,
            seeds=seeds,
            overwrite=overwrite,
        )


def aggregate(
    paths: Sequence[PathLike],
    baseline: Sequence[str] = (),
    split: str = "test",
    method: str = "is",
    out: PathLike | None = None,
) -> Aggregate:
    """Runs grouped by their spec less the seed, mean ± s.e. over seeds, and paired per-point
    gains against a baseline group, as ``pyro-vae aggregate`` (:mod:`pyro_vae.aggregation`);
    written to ``out`` when given."""
    from pyro_vae.aggregation import aggregate as grouped

    return grouped(paths, baseline, split, method, out)


def probe(
    run: Run | PathLike,
    labels: Sequence[int | None] = (100, 1000, None),
    seed: int | None = None,
) -> ProbeResult:
    """A linear probe of a trained run, as ``pyro-vae probe`` (:mod:`pyro_vae.probing`): for each
    N of ``labels`` (None: every training item), a logistic regression fitted on the posterior
    means E_q[z|x] of N labelled training items (a stratified draw seeded with ``seed``, default
    the run's) and one on their pixels, both scored on the test split; writes ``probe.json`` and
    ``figures/probe.png`` into the run. Returns the :class:`~pyro_vae.probing.ProbeResult` (a
    markdown table in a notebook).

    >>> result = pyro_vae.probe("runs/digits", labels=[50, 200, None])  # doctest: +SKIP
    >>> [(r.labels, r.latent_accuracy, r.pixel_accuracy) for r in result.rows]  # doctest: +SKIP
    """
    from pyro_vae.console import quieted
    from pyro_vae.probing import probe as linear_probe

    with quieted():
        return linear_probe(run, labels, seed)


__all__ = [
    "VAE",
    "Run",
    "Spec",
    "SpecError",
    "aggregate",
    "compare",
    "dump_spec",
    "encode",
    "evaluate",
    "load_run",
    "load_spec",
    "probe",
    "sample",
    "sweep",
    "train",
]
