"""A run's life, as the commands and the Python API run it: train → score → figures.

    train(config, out)    claim RUN → fit (:mod:`pyro_vae.trainer`) → score the spec's
                          ``evaluate.split`` by importance sampling → its scores and figures
    evaluate(run, split)  score a trained run again (IS), or by AIS/BDMC (:mod:`pyro_vae.annealing`)

Every file goes through :class:`pyro_vae.rundir.Run`. A run's state moves
``training → stopped | diverged | finished``; a finished run is ``scoring`` until its scores and
figures are all written, so the same ``train`` command after any stop continues what was left:
it trains a stopped run on from its last checkpoint, scores an unscored one, and with
``resume`` continues a named run in place.

Errors (:mod:`pyro_vae.stops`): :class:`~pyro_vae.stops.Diverged` (a non-finite or blown-up step; last.ckpt is then
one from before it), :class:`~pyro_vae.stops.Interrupted` (a stop signal; a checkpoint saved
where training stopped), :class:`pyro_vae.registry.SpecError` (a user error, or a file that
cannot be written: a fresh run that had saved no checkpoint is removed, else it stays at its
last checkpoint). Training runs inside ``pyro.settings.context(module_local_params=True)``: the
parameters stay in the modules and the global param store is not touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pyro_vae.console import chatty, notice, quiet
from pyro_vae.registry import SpecError
from pyro_vae.rundir import Run
from pyro_vae.spec import Spec, load_spec

if TYPE_CHECKING:
    import lightning as L
    import torch

    from pyro_vae.prepared import Prepared
    from pyro_vae.scoring import Evaluation

Config = str | PathLike[str] | Spec


@dataclass
class Trained:
    """What :func:`train` did: the ``run``; its ``evaluation`` (None on the extra processes of
    a multi-process run, or when nothing was left to do: ``finished`` then says why)."""

    run: Run
    prepared: Prepared | None = None
    evaluation: Evaluation | None = None
    finished: str | None = None

    def lines(self) -> list[str]:
        """What ``pyro-vae train`` prints."""
        if self.finished:
            return [
                (
                    f"{self.run.root}: finished ({self.finished}); nothing to train. Raise "
                    f"train.max_epochs to continue (--set train.max_epochs=N), or score it: "
                    f"pyro-vae evaluate {self.run.root}"
                )
            ]
        if self.evaluation is None or self.prepared is None:
            return []
        return [
            f"data: {self.prepared.bundle.describe()}",
            *self.evaluation.lines(),
            f"run directory: {self.run.root}",
        ]


def run_for(
    config: Config | None,
    out: str | Path | None,
    overrides: Sequence[str],
    resume: str | Path | None,
    overwrite: bool,
) -> tuple[Run, Spec]:
    """The run directory and the spec of a ``train``: ``config`` (a YAML path or a
    :class:`Spec`) plus ``overrides`` into ``out`` (default ``runs/<config's name>``), or with
    ``resume`` that run's own config.yaml, whose ``overrides`` may change only what a resumed
    run may (:meth:`Run.resume_spec`)."""
    from pyro_vae.data import absolute_paths

    if resume is not None:
        if config is not None or out is not None or overwrite:
            raise SpecError(
                "--resume",
                "takes the run directory alone: the spec is its "
                "config.yaml and the run continues in place",
            )
        run = Run(resume)
        return run, run.resume_spec(overrides)
    if config is None:
        raise SpecError("train", "needs a YAML spec (CONFIG) or --resume RUN_DIR")
    spec = load_spec(config, overrides)
    default = Path("runs") / ("run" if isinstance(config, Spec) else Path(config).stem)
    return Run(out or default), dataclasses.replace(spec, data=absolute_paths(spec.data))


def train(
    config: Config | None = None,
    out: str | PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    resume: str | PathLike[str] | None = None,
) -> Trained:
    """Train, score and draw a run (see the module docstring): a fresh one from ``config``, a
    stopped one with the same spec continued, an unscored one scored, or ``resume`` (a run
    directory) continued in place. The spec is checked before torch is imported; the run
    directory (:meth:`Run.check_start`), the data and the model's size before Lightning is, so
    that a refusal costs no Lightning import (about 3.5 s of CPU)."""
    run, spec = run_for(config, out, overrides, resume, overwrite)
    from pyro_vae.checkpoints import checkpoint_step
    from pyro_vae.prepared import load_run, prepare
    from pyro_vae.ranks import own_process_group, rank_zero
    from pyro_vae.scoring import device_for

    quiet()  # the warnings of the data's preparation too; again after Lightning's import
    with own_process_group():  # gloo's, destroyed before the interpreter exits
        try:
            if not overwrite and run.unscored(spec):
                notice(
                    f"{run.root} holds this spec's run, trained but stopped before its "
                    "evaluation and figures were all written: scoring it"
                )
                with run.locked("train"):
                    prepared = load_run(run, spec)
                    result = score(prepared, run, device_for(spec.train.accelerator), rank0=True)
                    _tracking().finish_scored(spec, run, result, checkpoint_step(run.last))
                return Trained(run, prepared, result)
            continues = resume is None and not overwrite and run.continues(spec)
            if continues:
                notice(
                    f"{run.root} holds this spec's run, stopped ({run.state()}) before it "
                    "finished: continuing it"
                )
            elif resume is None and rank_zero():  # DDP's other ranks find rank 0's run there
                run.check_start(overwrite)
            prepared = prepare(spec)
            if resume is not None:  # the checkpoint fits the spec and data, finished or not
                run.resume_point(prepared.vae, spec, lambda: prepared.data_sha256)
                done = run.finished(spec.train.max_epochs)
                if done:
                    return Trained(run, prepared, finished=done)
            tracking = _tracking()
            trainer = fit(
                prepared, run, overwrite=overwrite, resume=resume is not None or continues
            )
            rank0 = trainer.global_rank == 0 and rank_zero()
            result = score(prepared, run, trainer.strategy.root_device, rank0)
            tracking.finish(trainer, run, result)  # TensorBoard, MLflow: final scores, figures
            return Trained(run, prepared, result if rank0 else None)
        finally:
            run.unlock()


def _tracking() -> ModuleType:
    """:mod:`pyro_vae.tracking`, which imports Lightning, quieted after the import (Lightning
    sets its own log level as it is imported)."""
    from pyro_vae import tracking

    quiet()
    return tracking


def fit(
    prepared: Prepared,
    out: Path | Run,
    overwrite: bool = False,
    resume: bool = False,
    callbacks: Sequence[L.Callback] = (),
) -> L.Trainer:
    """Train in a fresh run directory, or with ``resume`` continue the run in ``out`` from its
    last checkpoint; ``callbacks`` join the Trainer's own. Rank 0 claims the run
    (:meth:`Run.claim`) once the spec's devices are checked; given a path, it lets go at the
    end, given a :class:`Run` the caller does. Raises as the module docstring says. Rank 0 alone
    writes; it marks the run ``training``, then ``stopped``, ``diverged`` or ``finished``."""
    from lightning.pytorch.utilities import rank_zero_only

    from pyro_vae.checkpoints import spec_record
    from pyro_vae.trainer import check_devices

    spec, owned = prepared.spec, not isinstance(out, Run)
    run = Run(out) if not isinstance(out, Run) else out
    check_devices(spec.train)
    record = spec_record(spec, prepared.data_sha256)

    def start() -> int | None:
        return (
            run.resume_point(prepared.vae, spec, lambda: prepared.data_sha256) if resume else None
        )

    rank0 = rank_zero_only.rank == 0  # Lightning's DDP re-runs this command in each extra process
    if not rank0:
        return _fit(prepared, run, record, start(), rank0, callbacks)
    try:
        run.claim(overwrite, resume)  # before the checkpoint is read: no live writer moves it
        return _fit(prepared, run, record, start(), rank0, callbacks)
    finally:
        if owned:
            run.unlock()


def _fit(
    prepared: Prepared,
    run: Run,
    record: dict[str, Any],
    first_step: int | None,
    rank0: bool,
    callbacks: Sequence[L.Callback] = (),
) -> L.Trainer:
    import pyro
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from pyro_vae.atomic import remove_partial_files
    from pyro_vae.engine import PeriodicCheckpoint, ranks_in_sync, stop_on_signals
    from pyro_vae.rundir import CHECKPOINTS
    from pyro_vae.stops import Diverged, Interrupted
    from pyro_vae.trainer import VAEData, VAEModule, make_trainer

    spec, bundle, resume = prepared.spec, prepared.bundle, first_step is not None
    start = time.perf_counter()

    def trained() -> float:
        return time.perf_counter() - start

    try:
        if rank0:
            if resume:
                remove_partial_files(run.root / CHECKPOINTS)
            run.write_config(spec)
            if bundle.transform != "none":
                run.write_transform(bundle.transform_state())
            run.mark("training")
        module = VAEModule(prepared.vae, spec, record)
        trainer = make_trainer(spec, run, len(bundle.train), first_step, callbacks)
        data = VAEData(bundle, spec.train.batch_size, spec.train.seed)
        checkpoint = next(c for c in trainer.callbacks if isinstance(c, PeriodicCheckpoint))
        # Lightning's progress bar writes to stdout, which holds results alone
        with (
            warnings.catch_warnings(),
            stop_on_signals(checkpoint),
            contextlib.redirect_stdout(sys.stderr),
            pyro.settings.context(module_local_params=True),
        ):
            # the logger shares the run directory with config.yaml
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            # train_* metrics are rank 0's share (a random part of each epoch); val_* are synced
            warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
            warnings.filterwarnings("ignore", message="Encountered NaN")  # Diverged says it
            warnings.showwarning = _one_line_notices(warnings.showwarning)
            trainer.fit(
                module, datamodule=data, ckpt_path=run.last if resume else None, weights_only=True
            )
    except Diverged as exc:
        if rank0:
            run.fall_back(exc.step - 1)
            run.mark("diverged", trained_s=trained())
        hint = f" --set train.lr={spec.train.lr / 10:g}"
        where = (
            run.where(hint)
            if run.last.is_file()
            else "no checkpoint passed the guard; "
            f"start again with --overwrite and a lower train.lr (e.g.{hint})"
        )
        raise Diverged(exc.step, exc.reason, where) from None
    except (Interrupted, SIGTERMException) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGTERM
        step = exc.step if isinstance(exc, Interrupted) else checkpoint.saved_step
        if rank0:
            run.mark("stopped", trained_s=trained())
        raise Interrupted(signum, step, run.where()) from None
    except OSError as exc:
        fresh = rank0 and not resume and not run.last.is_file()
        if fresh:  # nothing worth keeping; a rerun of the same command must not find it
            run.discard()
        where = f"nothing was saved; {run.root} removed" if fresh else run.where()
        raise SpecError(exc.filename or str(run.root), f"{exc.strerror or exc}; {where}") from None
    digests = ranks_in_sync(module.vae)
    if len(digests) > 1:
        if trainer.global_rank == 0:
            run.write_ddp_report(digests)
        if len(set(digests)) > 1:
            raise RuntimeError(f"DDP replicas ended with different parameters: {digests}")
    if rank0:
        run.mark("finished", trained_s=trained())
    return trainer


def _one_line_notices(show: Callable[..., None]) -> Callable[..., None]:
    """``warnings.showwarning`` that prints a :class:`inference.compiled.TraceNotice` as one
    line on stderr (the loss runs eagerly: nothing for the user to fix) and passes other
    warnings to ``show``."""
    from inference.compiled import TraceNotice

    def showwarning(
        message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
    ) -> None:
        if issubclass(category, TraceNotice):
            print(f"pyro-vae: train.jit: {message}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)

    return showwarning


def score(prepared: Prepared, run: Run, device: torch.device, rank0: bool) -> Evaluation:
    """The evaluation that ends ``train``: the spec's split scored by importance sampling (on
    every rank of a multi-process run), its scores, figures and the training curves written by
    rank 0. A stop signal or a file that cannot be written (a full disk) here ends it with one
    line; the trained run stays, and the same command (or ``--resume``) scores it
    (:meth:`Run.unscored`)."""
    from pyro_vae.engine import stopped_during
    from pyro_vae.scoring import evaluate_run

    def where() -> str:
        if run.unscored(prepared.spec):
            return (
                f"{run.root} keeps the trained run; the same command or pyro-vae train "
                f"--resume {run.root} scores it"
            )
        return f"its scores and figures are written in {run.root}"

    progress = prepared.spec.train.progress and chatty()
    with stopped_during("the evaluation", where):
        result = evaluate_run(prepared, device, progress=progress)
        if rank0:
            try:
                with run.scoring():
                    write_scores(prepared, run, result, curves=True)
            except OSError as exc:
                raise SpecError(
                    exc.filename or str(run.root), f"{exc.strerror or exc}; {where()}"
                ) from None
    return result


def write_scores(prepared: Prepared, run: Run, result: Evaluation, curves: bool) -> None:
    """``eval-<split>.json`` and ``.npz`` of the evaluated split and, unless the spec's
    ``evaluate.figures`` is false, ``figures/<split>/``, nothing of another split's; with
    ``curves`` the training curves too (``figures/training_curves.png``). A linked figures folder is refused before anything is
    written."""
    from pyro_vae.figures import (
        curve_series,
        evaluation_figures,
        plot_training_curves,
        read_metrics,
    )

    draw = prepared.spec.evaluate.figures
    if draw:
        run.directory(run.figures_dir(result.split))
    run.write_evaluation(result.summary(prepared.data_sha256), result.arrays())
    if not draw:
        return
    run.write_figures(
        evaluation_figures(prepared.vae, prepared.bundle, result, prepared.spec.train.seed),
        result.split,
    )
    if curves and run.metrics_csv.is_file() and curve_series(read_metrics(run.metrics_csv)):
        run.write_figures({"training_curves": plot_training_curves(run.metrics_csv)})


def evaluate(
    run: str | PathLike[str] | Run,
    split: str | None = None,
    num_samples: int | None = None,
    limit: int | None = None,
    accelerator: str | None = None,
    progress: bool = False,
) -> Evaluation:
    """Score a trained run by importance sampling (the spec's ``evaluate`` section unless
    given), holding its lock: ``eval-<split>.json``/``.npz`` and ``figures/<split>/`` written,
    nothing of another split's."""
    from pyro_vae.prepared import load_run
    from pyro_vae.scoring import device_for, evaluate_run

    run = run if isinstance(run, Run) else Run(run)
    run.require_config()
    check_positive("--num-samples", num_samples)
    check_positive("--limit", limit)
    quiet()
    with run.locked("evaluate"):  # before reading: scores of one checkpoint
        prepared = load_run(run)
        device = device_for(accelerator or prepared.spec.train.accelerator)
        result = evaluate_run(prepared, device, split, num_samples, progress=progress, limit=limit)
        write_scores(prepared, run, result, curves=False)
    return result


def check_positive(flag: str, value: int | None) -> None:
    """SpecError naming ``flag`` for a count below 1 (None: not given)."""
    if value is not None and value < 1:
        raise SpecError(flag, f"must be >= 1, got {value}")


def evaluate_annealed(
    run: str | PathLike[str] | Run,
    method: str = "ais",
    split: str | None = None,
    num_samples: int | None = None,
    limit: int | None = None,
    *,
    accelerator: str | None = None,
    chains: int | None = None,
    steps: int | None = None,
    leapfrog: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """AIS beside IS on the first ``limit`` points of a split (``method="ais"``), or BDMC on
    points simulated from the model (``"bdmc"``), holding the run's lock
    (:mod:`pyro_vae.annealing`): what C chains × T steps keep in memory checked first, a long
    run's time announced, the summary, per-point arrays and figure written into the run.
    Returns the summary."""
    from pyro_vae import annealing
    from pyro_vae.prepared import load_run
    from pyro_vae.scoring import device_for

    run = run if isinstance(run, Run) else Run(run)
    run.require_config()
    check_positive("--num-samples", num_samples)
    given = {"num_chains": chains, "num_steps": steps, "leapfrog_steps": leapfrog}
    options = annealing.Annealing(
        **{name: value for name, value in given.items() if value is not None}, limit=limit
    )
    quiet()
    with run.locked("evaluate"):
        prepared = load_run(run)
        device = device_for(accelerator or prepared.spec.train.accelerator)
        spec, bundle = prepared.spec.evaluate, prepared.bundle
        split, vae = split or spec.split, prepared.vae.to(device)
        default = annealing.BDMC_POINTS if method == "bdmc" else None
        x = bundle.split(split)[: options.limit or default].to(device)
        # a kind scored given its labels, log p(x | y) (cvae): the split's labels (ais), or the
        # classes in turn (bdmc simulates); a latent class (m2, gmvae) is summed, log p(x)
        y = None
        if vae.kind.scored_given_labels:
            y = prepared.labels(split, len(x)) if method == "ais" else vae.labels_for(len(x))
            y = y.to(device)
        k = num_samples or spec.num_samples
        options.check_memory(len(x), method, spec.memory_budget_mb)
        annealing.announce_duration(vae, x, split, method, options, k, spec.memory_budget_mb, y)
        if method == "ais":
            summary = annealing.evaluate_ais(
                vae,
                x,
                split,
                options,
                k,
                spec.memory_budget_mb,
                progress=progress,
                log_jacobian=bundle.log_jacobian,
                y=y,
            )
        else:  # the split's rows set the simulated points' number and shape, not their values
            summary = annealing.evaluate_bdmc(
                vae,
                x,
                options,
                spec.memory_budget_mb,
                progress=progress,
                scale=bundle.scale_name,
                y=y,
            )
        annealing.write(run, summary, prepared.data_sha256)
    return summary
