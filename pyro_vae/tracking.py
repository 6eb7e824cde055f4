"""Tracking a run beside metrics.csv: TensorBoard and MLflow, as ``train.logger`` names them.

    csv          RUN/metrics.csv, always (:class:`pyro_vae.engine.RunCSVLogger`)
    tensorboard  RUN/tensorboard/: Lightning's scalars per step and epoch; at the end the
                 flattened spec as hparams (also in tensorboard/hparams.yaml) with the final
                 ``hp/val_elbo`` and ``hp/<split>_log_px``, so the HParams view compares the runs
                 of a sweep folder, and each figure of the run as an image
    mlflow       one MLflow run, named as the run directory, in the experiment
                 ``train.mlflow_experiment`` (default: the name of the folder holding the run
                 directory: a sweep's runs share one) at ``train.mlflow_uri`` (default: the local
                 store ``mlruns/`` beside the run directory, never inside it): the flattened spec
                 as params at the start, Lightning's metrics per step and epoch, at the end the
                 evaluation's scores (``<split>_log_px``, ``<split>_elbo``, …) as metrics and
                 the figures, ``eval-*.json``/``.npz``, ``config.yaml`` and ``report.html`` (when
                 there) as artifacts

The final scores and the figures exist once :func:`pyro_vae.pipeline.score` has run:
:func:`finish` logs them then, on rank 0 (a run trained but stopped before scoring, which
``train`` then only scores, has no Trainer: :func:`finish_scored` logs them to trackers made
for it). Spec values that are lists or null
become the strings ``[200, 200]`` and ``null`` (TensorBoard's hparams take scalars and
strings); an MLflow param longer than MLflow's limit is cut, saying so (config.yaml, an
artifact, holds it whole).

A continued or resumed run logs into the MLflow run it started (found by the tag
``pyro_vae.run_key``, a digest of the run directory's absolute path), marked running again;
its params stay as first logged, a resumable key changed since is the tag
``pyro_vae.resumed_with``. ``--overwrite`` starts a new MLflow run. A local store is MLflow's
file store, which MLflow 3 keeps in maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``: the
variable is set to ``true`` for this process where unset. MLflow's global tracking URI (which
Lightning's logger sets) is put back as it was, and MLflow's log lines stay off stderr unless
:func:`pyro_vae.console.chatty`. A missing package is one line naming its extra
(``pip install 'pyro-vae[mlflow]'``), checked before training starts (:func:`check`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from pyro_vae.checkpoints import flat
from pyro_vae.console import chatty
from pyro_vae.engine import RunCSVLogger
from pyro_vae.registry import SpecError
from pyro_vae.rundir import Run
from pyro_vae.spec import Spec, TrainSpec

if TYPE_CHECKING:
    import lightning as L

    from pyro_vae.scoring import Evaluation

#: logger name -> the module it needs (the extra of the same name installs it)
MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
#: the MLflow tags that find a continued run's MLflow run again
RUN_KEY, RUN_DIR, RESUMED = "pyro_vae.run_key", "pyro_vae.run_dir", "pyro_vae.resumed_with"
CUT = " … (cut to MLflow's limit; config.yaml holds it whole)"


def check(train: TrainSpec) -> None:
    """SpecError, one line, for a logger whose package is not installed."""
    for name in train.loggers:
        if name not in MODULES:
            continue
        try:
            importlib.import_module(MODULES[name])
        except ImportError:
            raise SpecError(
                "train.logger",
                f"{name} is not installed: pip install "
                f"'pyro-vae[{name}]' (metrics.csv is written either way; leave "
                f"{name} out of train.logger to train without it)",
            ) from None


def params(spec: Spec) -> dict[str, str | int | float | bool]:
    """The spec flattened to dotted keys, each value a scalar or a string: a list as
    ``[200, 200]``, null as ``null``."""

    def scalar(value: Any) -> str | int | float | bool:
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(str(scalar(v)) for v in value) + "]"
        if value is None:
            return "null"
        return value if isinstance(value, (str, int, float, bool)) else str(value)

    return {key: scalar(value) for key, value in flat(spec.to_dict()).items()}


def loggers(spec: Spec, run: Run, first_step: int | None = None) -> list[Logger]:
    """The Trainer's loggers for ``spec``'s ``train.logger``: metrics.csv first, then
    TensorBoard and MLflow where named; ``first_step``: where a continued run starts."""
    return [RunCSVLogger(run, first_step), *trackers(spec, run, first_step, first_step is not None)]


def trackers(spec: Spec, run: Run, purge_step: int | None, resumed: bool) -> list[Logger]:
    """TensorBoard and MLflow where ``train.logger`` names them: TensorBoard dropping the events
    from ``purge_step`` on, MLflow continuing the run's MLflow run when ``resumed``."""
    out: list[Logger] = []
    names = spec.train.loggers
    if "tensorboard" in names:
        out.append(RunTensorBoard(run, params(spec), purge_step))
    if "mlflow" in names:
        out.append(RunMLflow(run, spec.train, params(spec), resumed))
    return out


def finish(trainer: L.Trainer, run: Run, evaluation: Evaluation) -> None:
    """Log the final scores of ``evaluation`` and the run's figures (and, to MLflow, its
    evaluation files, config.yaml and report.html) to the Trainer's TensorBoard and MLflow
    loggers; on rank 0 only, nothing without such a logger."""
    if trainer.global_rank != 0 or rank_zero_only.rank != 0:
        return
    val_elbo = trainer.callback_metrics.get("val_elbo")
    val = None if val_elbo is None else float(val_elbo)
    _report(trainer.loggers, run, evaluation, trainer.global_step, val)


def finish_scored(spec: Spec, run: Run, evaluation: Evaluation, step: int) -> None:
    """:func:`finish` for a run trained earlier and scored now, with no Trainer: to trackers
    made for it (MLflow's run continued, TensorBoard's events kept), at the checkpoint's
    ``step``, with the last validation ELBO in metrics.csv."""
    val = run.metrics.get("val_elbo")
    seen = None if val is None else val[~np.isnan(val)]
    last = None if seen is None or not len(seen) else float(seen[-1])
    _report(trackers(spec, run, None, resumed=True), run, evaluation, step, last)


def _report(
    loggers: Sequence[Logger], run: Run, evaluation: Evaluation, step: int, val: float | None
) -> None:
    for logger in loggers:
        if isinstance(logger, RunTensorBoard):
            logger.finish(run, evaluation, val, step)
        elif isinstance(logger, RunMLflow):
            logger.finish(run, evaluation, step)


def _figures(run: Run) -> Iterator[Path]:
    folder = run.figures_dir()
    yield from sorted(folder.rglob("*.png")) if folder.is_dir() else ()


class RunTensorBoard(TensorBoardLogger):
    """``RUN/tensorboard/``: the spec as hparams (in hparams.yaml, and in the HParams view with
    the final scores from :meth:`finish`), the figures as images."""

    def __init__(self, run: Run, spec_params: Mapping[str, Any], purge_step: int | None) -> None:
        # no hp_metric: the HParams view keeps the first hparams entry it reads, the final one
        super().__init__(
            save_dir=str(run.root),
            name="tensorboard",
            version="",
            purge_step=purge_step,
            default_hp_metric=False,
        )
        self.spec_params = dict(spec_params)
        self.hparams.update(self.spec_params)  # hparams.yaml, written when the logger first saves
        _quiet()

    @rank_zero_only
    def finish(self, run: Run, evaluation: Evaluation, val_elbo: float | None, step: int) -> None:
        import matplotlib.image

        metrics = {f"hp/{evaluation.split}_log_px": evaluation.log_px}
        if val_elbo is not None:
            metrics = {"hp/val_elbo": val_elbo, **metrics}
        self.log_hyperparams(self.spec_params, metrics, step)
        for path in _figures(run):
            tag = path.relative_to(run.root).with_suffix("").as_posix()  # figures/test/samples
            image: np.ndarray = matplotlib.image.imread(path)
            self.experiment.add_image(tag, image, step, dataformats="HWC")
        self.finalize("success")  # flushed and closed


class RunMLflow(MLFlowLogger):
    """One MLflow run per run directory (see the module docstring)."""

    def __init__(
        self, run: Run, train: TrainSpec, spec_params: Mapping[str, Any], resumed: bool
    ) -> None:
        root = run.root.resolve()
        uri = train.mlflow_uri or (root.parent / "mlruns").as_uri()
        if _local(uri):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        key = hashlib.sha256(str(root).encode()).hexdigest()[:32]
        with _mlflow_errors(uri):
            super().__init__(
                experiment_name=train.mlflow_experiment or root.parent.name or "runs",
                run_name=root.name,
                tracking_uri=uri,
                tags={RUN_KEY: key, RUN_DIR: str(root)},
            )
        _quiet()
        self.spec_params, self.key, self.resumed = dict(spec_params), key, resumed
        self.log_hyperparams({})  # rank 0: the run and its params now, a bad URI an error now

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._initialized:
            return self._mlflow_client
        with _mlflow_errors(self._tracking_uri), _global_uri_kept():
            if self.resumed and self._run_id is None:
                self._run_id = self._run_to_continue()
            try:
                client = MLFlowLogger.experiment.fget(self)  # type: ignore[attr-defined]
            except Exception as exc:  # a sweep's other process made the experiment meanwhile
                if "already exists" not in str(exc):
                    raise
                client = MLFlowLogger.experiment.fget(self)  # type: ignore[attr-defined]
            if self.resumed:
                client.update_run(self._run_id, status="RUNNING")
        return client

    def _run_to_continue(self) -> str | None:
        experiment = self._mlflow_client.get_experiment_by_name(self._experiment_name)
        if experiment is None:
            return None
        found = self._mlflow_client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{RUN_KEY}` = '{self.key}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return found[0].info.run_id if found else None

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """The spec's params with ``params`` (a module's saved hyperparameters, were there
        any). A continued run adds those it lacks; changed values go to the tag
        ``pyro_vae.resumed_with``."""
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        values = {
            k: _cut(str(v), MAX_PARAM_VAL_LENGTH)
            for k, v in {**self.spec_params, **flat(dict(params or {}))}.items()
        }
        with _mlflow_errors(self._tracking_uri):
            client, run_id = self.experiment, self.run_id
            logged = client.get_run(run_id).data.params
            new = [Param(k, v) for k, v in values.items() if k not in logged]
            for i in range(0, len(new), 100):  # MLflow takes 100 params a batch
                client.log_batch(run_id, params=new[i : i + 100])
            changed = [f"{k}={v}" for k, v in values.items() if k in logged and logged[k] != v]
            if changed:
                client.set_tag(run_id, RESUMED, _cut(", ".join(changed), MAX_PARAM_VAL_LENGTH))

    @rank_zero_only
    def finish(self, run: Run, evaluation: Evaluation, step: int) -> None:
        summary = {
            "log_px": evaluation.log_px,
            "log_px_sem": evaluation.log_px_sem,
            "log_px_stderr": evaluation.log_px_stderr,
            "ess": evaluation.ess,
            "elbo": evaluation.elbo,
            "kl": evaluation.kl,
            "recon": evaluation.recon,
            "active_units": evaluation.active_units,
            "bits_per_dim": evaluation.bits_per_dim,
        }
        files = [
            run.config,
            run.report,
            *sorted(run.root.glob("eval-*.json")),
            *sorted(run.root.glob("eval-*.npz")),
        ]
        with _mlflow_errors(self._tracking_uri):
            self.log_metrics(
                {f"{evaluation.split}_{k}": float(v) for k, v in summary.items() if v is not None},
                step,
            )
            client, run_id = self.experiment, self.run_id
            for path in files:
                if path.is_file():
                    client.log_artifact(run_id, str(path))
            for path in _figures(run):
                folder = path.parent.relative_to(run.root).as_posix()  # figures or figures/test
                client.log_artifact(run_id, str(path), folder)
        self.finalize("success")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(CUT)] + CUT


def _local(uri: str) -> bool:
    """Whether ``uri`` may name MLflow's file store: ``file:`` or no scheme (a path)."""
    return uri.startswith("file:") or ":" not in uri


@contextlib.contextmanager
def _mlflow_errors(uri: str) -> Iterator[None]:
    """MLflow's errors (a bad URI, a store refused, a server not answering) as one line."""
    try:
        yield
    except Exception as exc:
        if not type(exc).__module__.startswith(("mlflow", "requests", "urllib3")):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SpecError("train.mlflow_uri", f"MLflow at {uri}: {first}") from None


@contextlib.contextmanager
def _global_uri_kept() -> Iterator[None]:
    """Put back MLflow's global tracking URI and ``MLFLOW_TRACKING_URI``, which Lightning's
    logger sets when it starts its run (a notebook's own MLflow calls keep their store)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    before, variable = getattr(utils, "_tracking_uri", None), os.environ.get("MLFLOW_TRACKING_URI")
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if variable is not None:
            os.environ["MLFLOW_TRACKING_URI"] = variable


def _quiet() -> None:
    """MLflow's log lines off stderr unless :func:`chatty` (its import sets up its own)."""
    if not chatty():
        logging.getLogger("mlflow").setLevel(logging.ERROR)
