"""Benchmark 3: the published Fashion-MNIST table reproduced under its own protocol.

One name throughout: ``python -m benchmarks.published``, ``make bench-published`` (and
``bench-published-bg``), section key ``published``, results in ``<results>/published/``, state in
``$XDG_CACHE_HOME/pyro-vae/bench-published`` (default ``~/.cache/pyro-vae/bench-published``).

The presets ``examples/configs/published/fashion-mnist-{vae,vamp,hvae}.yaml`` hold the protocol
of Tomczak & Welling's VampPrior code, reused by the Exemplar VAE table (Norouzi et al. 2020):
gated 2 × 300 networks, latent 40, Adam lr 5·10⁻⁴, batch 100, a 100-epoch KL warm-up, early
stopping on the validation ELBO (patience 50, at most 2000 epochs), the best validation
checkpoint scored by IS with K = 5000 on the whole test set. IWAE k = 5 with DReG on the VAE's
networks is our own extra row.

The models run one after another, each (model, seed) in its own run directory in the state
folder (``--state``, outside the work tree). A run directory holds only what
:mod:`pyro_vae.rundir` lists, so ``Run.is_run`` accepts it and every pyro-vae command treats
it as a run (``--overwrite`` included). What the job records about a run is kept beside it, in
files named after it::

    STATE/<model>-seed<s>/               the run
    STATE/<model>-seed<s>.progress.json  after every epoch: epoch, validation ELBO, best so far,
                                         epochs since the best, seconds of each epoch
                                         (its running time: a pause of the job is left
                                         out, :mod:`benchmarks.pauses`)
    STATE/<model>-seed<s>.done.json      once training ended: epochs, why it stopped
    STATE/<model>-seed<s>.peek.json      ``--report --peek``: a cheap score of a running model

(These names, the models and the seeds are :mod:`benchmarks.protocol`'s.) From these the job
goes on where it stopped:

* a run with a checkpoint and no ``done.json`` continues from ``checkpoints/last.ckpt``
  (written every epoch, so a killed job loses at most the epoch it was in);
* a run with ``done.json`` is scored at its best validation checkpoint and the result kept in
  ``<results>/published/<model>-seed<s>.json`` (with the validation curve, so that the section
  can be written again without the state folder), each test image's log p̂(x) beside it in
  ``<model>-seed<s>.log-px.npy`` (both committed): a model with a result is never trained
  again. A result without its ``.log-px.npy`` is scored again, with the same checkpoint, seed
  and K, for the ``.log-px.npy`` alone;
* the seconds per epoch in ``progress.json`` give the time-left estimates printed at the start
  and after every epoch.

Earlier versions of this job kept the three files inside the run directory; each is read from
there when it is not found beside the run, so a run they started continues from where it was,
and one they finished is scored, not trained again.

The weights a finished row was scored with are shipped beside its result
(``<model>-seed<s>.weights.pt``, their SHA-256 in ``weights.json``): :mod:`benchmarks.weights`
exports them from the state folder and scores them again (``make reproduce-table``).

``--report`` trains nothing: it writes this section (finished rows, epochs reached and validation
ELBO of the running ones, the learning curves) from what the state and results hold, at every
seed found there. ``--tightness`` trains nothing either: it measures how loose each scored
run's IS bound is, AIS against IS on 200 test images (:mod:`benchmarks.tightness`, records
``<model>-seed<s>.tightness.json``), and the section shows how far that could move each gain.

All models are scored on the same test images, so a gain over the VAE is judged paired: with
d_i = log p̂_model(x_i) − log p̂_VAE(x_i) over the N test images,

    gain = mean_i d_i,    s.e. = std_i(d_i) / √N

(the IS noise of both estimates is inside d_i). It is far smaller than either row's s.e., which
holds the spread of log p(x) over images.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from benchmarks import tightness
from benchmarks.carry import default_carry, restore_entry
from benchmarks.common import REPO, Options, Section, Skip, prepared, spec_from, table
from benchmarks.pauses import RunningClock
from benchmarks.protocol import (
    DONE,
    KEY,
    MODELS,
    PEEK,
    PROGRESS,
    Entry,
    Model,
    all_seeds,
    default_state,
    entries,
    read_json,
)
from benchmarks.report import number
from pyro_vae.atomic import write_atomic, write_text_atomic
from pyro_vae.engine import Interrupted
from pyro_vae.figures import read_metrics
from pyro_vae.registry import SpecError
from pyro_vae.rundir import Run, RunInUse

TITLE = "Quality: the published Fashion-MNIST table, its own protocol"
PAPER = (
    "Exemplar VAE (Norouzi et al. 2020), Table 1, Fashion-MNIST, dynamic binarization, "
    "with the VampPrior code's protocol (Tomczak & Welling 2018)"
)
PROTOCOL = (
    "Protocol (the presets `examples/configs/published/`): gated 2 × 300 networks, latent 40, "
    "encoder log-variance clipped to [−6, 2], Bernoulli decoder, Adam lr 5·10⁻⁴, batch 100, KL "
    "warm-up over 100 epochs, early stopping on the validation ELBO (patience 50, at most 2000 "
    "epochs), 50 000 / 10 000 train / validation images, the best validation checkpoint scored "
    f"by IS with K = 5000 on all 10 000 test images. Published: {PAPER}."
)
#: What a row's train time holds (:mod:`benchmarks.pauses`).
TRAIN_TIME = (
    "Train time: the sum of the epochs' seconds, one torch thread, beside whatever else ran. "
    "Since 2026-12-08 a pause of the job (`kill -STOP` while a CI run had the cores) is left out; "
    "a row finished before then may hold such pauses (about half an hour each)."
)
HEADERS = (
    "model",
    "seed",
    "epochs",
    "best val ELBO",
    "test log p(x) ± s.e. over images",
    "published (ours − published)",
    "test ELBO",
    "active units",
    "train time",
    "eval time",
)
EARLIER = (
    "Under our earlier protocol (784-200-200-50 tanh MLP, 100 epochs, lr 10⁻³, batch 128, "
    "no warm-up, last checkpoint) the VAE scored −237.01 ± 0.51 and the VampPrior "
    "−237.33 ± 0.71 (mean ± s.d. over 3 seeds): no better than N(0, I)."
)
REFERENCE = (
    "For judging a run in progress: a plain-PyTorch implementation of this protocol, "
    "outside pyro-vae, scored −231.0 at epoch 100, −229.8 at 200, −228.9 at 400 and "
    "−228.7 at 500 on the first 1000 test images with K = 1000, and −229.06 on the "
    "whole test set with K = 5000 when stopped at epoch 500."
)
DIFFERENCES = (
    "Where our runs knowingly differ from the VampPrior code (checked against its "
    "`utils/training.py`, `utils/perform_experiment.py`, `utils/distributions.py`, "
    "`models/VAE.py` and the Exemplar VAE loader): (1) plain Adam; theirs is AdamNormGrad, each "
    "parameter's gradient divided by its L2 norm before Adam (the plain-PyTorch implementation "
    "above, with plain Adam, reached −229.06 at epoch 500); our loss is the batch sum scaled by "
    "N/B, theirs the batch mean, which Adam's update does not see (up to its ε); (2) the KL "
    "weight rises per step, β_t = (t + 1)/T over 100 epochs' steps, theirs per epoch, "
    "β = epoch/100; (3) early stopping counts from the first epoch, theirs restarts its count "
    "until the warm-up ends; (4) the validation ELBO takes the closed-form KL of N(0, I), theirs "
    "a one-sample Monte Carlo KL (the same expectation); (5) the decoder's logits enter the "
    "Bernoulli directly, theirs clamp its probabilities to [10⁻⁵, 1 − 10⁻⁵] (log p(x|z) differs "
    "only where a pixel's probability is below 10⁻⁵); (6) the 50 000 / 10 000 split is a "
    "permutation seeded 0 and validation and test are binarized once by torch's generator "
    "seeded 0, theirs by NumPy's (seed 777): other bits, the same distribution. Selection uses "
    "the validation set only."
)
POINTS = ".log-px.npy"  # suffix of the per-test-image log p̂(x) beside a result record
CURVES = f"{KEY}-curves.svg"
WEIGHTS = "weights.json"  # the shipped weights' manifest in <results>/published (weights.py)
PRESET_EPOCHS = 2000  # train.max_epochs of the presets: the bound of a time-left estimate


#: The targets of BENCHMARKS.md's summary, (model, what, at least): a test log p(x) within
#: 0.3 nats of the published figure, or "vae+1": a gain of at least 1 nat over our VAE.
TARGETS = (
    ("vae", "≥ −229.0", -229.0),
    ("vamp", "≥ −227.6", -227.6),
    ("vamp", "vae+1", 1.0),
    ("hvae", "vae+1", 1.0),
)
#: digits stand in for Fashion-MNIST and the networks shrink, so a run takes seconds
TOY = (
    "data.name=digits",
    "data.binarize=dynamic",
    "data.limit=64",
    "encoder.hidden=[16]",
    "decoder.hidden=[16]",
    "train.batch_size=16",
    "train.warmup_epochs=1",
    "train.early_stopping_patience=50",
    "evaluate.num_samples=16",
)


def overrides(model: Model, seed: int, options: Options, max_epochs: int | None) -> list[str]:
    out = [*model.extra, f"train.seed={seed}", "train.progress=false"]
    if options.toy:
        out += [*TOY, "latent_dim=[4, 4]" if model.name == "hvae" else "latent_dim=4"]
        out += ["prior.pseudo_inputs=4"] if model.name == "vamp" else []
    if max_epochs is not None:
        out.append(f"train.max_epochs={max_epochs}")
    if options.device.type == "cuda":
        out.append("train.accelerator=gpu")
    return out


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


class Progress(L.Callback):
    """After each epoch (its validation included): one line with the validation ELBO, the best
    so far, seconds per epoch and the time left, and the entry's ``progress.json``.

    An epoch's seconds are its running time on ``clock`` (pauses of the job left out); an
    epoch resumed in its middle is counted at its pace (its seconds × batches per epoch /
    batches it ran). Time left: at most (max_epochs − e)·s, at least (patience − epochs since
    the best)·s (the earliest early stop); s is the :func:`pace` of this process's epochs."""

    def __init__(self, entry: Entry, clock: RunningClock) -> None:
        self.entry, self.clock = entry, clock
        self.seconds: list[float] = (entry.read(PROGRESS) or {}).get("epoch_seconds", [])
        self.session: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start, self.start_step = self.clock.running(), trainer.global_step

    on_train_start = on_train_epoch_start  # a run resumed mid-epoch starts without the epoch hook

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        per_epoch, ran = trainer.num_training_batches, trainer.global_step - self.start_step
        share = ran / per_epoch if 0 < ran < per_epoch < math.inf else 1.0
        seconds = (self.clock.running() - self.start) / share
        epoch = trainer.current_epoch + 1
        self.seconds = self.seconds[: epoch - 1] + [seconds]
        self.session.append(seconds)
        per_epoch = pace(self.session)
        val = float(trainer.callback_metrics.get("val_elbo", float("nan")))
        stopper = trainer.early_stopping_callback  # checks after this hook: apply its rule
        best, waited, patience = float("nan"), 0, 0
        if stopper is not None:
            best, waited, patience = float(stopper.best_score), stopper.wait_count, stopper.patience
            best, waited = (val, 0) if val > best else (best, waited + 1)
        self.entry.write(
            PROGRESS,
            {
                "epoch": epoch,
                "val_elbo": val,
                "best_val_elbo": best,
                "epochs_since_best": waited,
                "epoch_seconds": self.seconds,
            },
        )
        most = (trainer.max_epochs - epoch) * per_epoch
        least = min(max(patience - waited, 0) * per_epoch, most) if patience else most
        print(
            f"{self.entry.label}: epoch {epoch}/{trainer.max_epochs}, val ELBO {val:.2f} (best "
            f"{best:.2f}, {waited} epochs ago), {per_epoch:.1f} s/epoch; left: "
            f"{_duration(least)} (earliest early stop) to {_duration(most)}",
            flush=True,
        )


def pace(seconds: Sequence[float]) -> float:
    """Seconds an epoch for the time left: the median of ``seconds``, which an epoch stretched
    by a pause (SIGSTOP, a suspended laptop) or a burst of other load does not move."""
    return statistics.median(seconds)


def remaining(entry: Entry, max_epochs: int) -> str:
    """A started run's epochs and time left at its recorded :func:`pace` (its last 20 epochs),
    for the start-up summary."""
    progress = entry.read(PROGRESS)
    if not progress or not progress["epoch_seconds"]:
        return "not started"
    per_epoch = pace(progress["epoch_seconds"][-20:])
    return (
        f"epoch {progress['epoch']}/{max_epochs}, {per_epoch:.1f} s/epoch, at most "
        f"{_duration((max_epochs - progress['epoch']) * per_epoch)} left"
    )


def train_model(entry: Entry, options: Options, max_epochs: int | None) -> dict[str, Any]:
    """Train (or continue) the entry's run until its training ends; its ``done.json``."""
    from pyro_vae.pipeline import fit

    done = entry.read(DONE)
    if done is not None:
        return done
    clock = RunningClock().start()
    run_dir, callbacks = entry.run_dir, [Progress(entry, clock)]
    start = clock.running()
    if Run(run_dir).last.is_file():
        changed = [f"train.max_epochs={max_epochs}"] if max_epochs is not None else []
        prep = prepared(Run(run_dir).resume_spec(changed))
        print(f"{entry.label}: resuming {run_dir}", flush=True)
        trainer = fit(prep, run_dir, resume=True, callbacks=callbacks)
    else:
        prep = prepared(
            spec_from(entry.model.preset, overrides(entry.model, entry.seed, options, max_epochs))
        )
        print(f"{entry.label}: starting {run_dir}", flush=True)
        trainer = fit(prep, run_dir, overwrite=True, callbacks=callbacks)
    stopper = trainer.early_stopping_callback
    early = stopper is not None and stopper.stopped_epoch > 0
    done = {
        "epochs": trainer.current_epoch,
        "stopped": "early stopping" if early else "max_epochs",
        "best_val_elbo": float(stopper.best_score) if stopper else None,
        "train_s_this_process": clock.running() - start,
    }
    entry.write(DONE, done)
    return done


def score(entry: Entry, options: Options) -> tuple[dict[str, Any], np.ndarray]:
    """IS on the test split (the spec's K) with the checkpoint :func:`load_run` picks (the best
    validation ELBO's, as early stopping is on): the figures of a result record and each test
    image's log p̂(x)."""
    from pyro_vae.prepared import load_run
    from pyro_vae.scoring import evaluate_run

    prep = load_run(entry.run_dir)
    torch.manual_seed(entry.seed)
    result = evaluate_run(prep, options.device)
    scored = {
        "checkpoint": Run(entry.run_dir).evaluated_checkpoint(prep.spec).name,
        "log_px": result.log_px,
        "log_px_sem": result.log_px_sem,
        "elbo": result.elbo,
        "mc_stderr": result.log_px_stderr,
        "ess": result.ess,
        "active_units": result.active_units,
        "latent_dim": result.latent_dim,
        "test_points": result.num_points,
        "num_samples": result.num_samples,
        "eval_s": result.wall_time_s,
    }
    return scored, result.points.log_px.double().numpy()


def points_path(out: Path) -> Path:
    """Where the per-image log p̂(x) of the result record ``out`` is kept."""
    return out.with_suffix(POINTS)


def write_points(out: Path, points: np.ndarray) -> None:
    write_atomic(points_path(out), lambda f: np.save(f, points, allow_pickle=False))


def read_points(out: Path) -> np.ndarray | None:
    try:
        return np.load(points_path(out), allow_pickle=False)
    except FileNotFoundError:
        return None


def peek(entry: Entry, points: int, k: int) -> dict[str, Any] | None:
    """A cheap look at a running model: IS log p(x) of its current best checkpoint on the first
    ``points`` test images with K = ``k``, kept in the entry's ``peek.json`` (None: finished or
    not started). A mid-run figure on a subset, not the protocol's."""
    from pyro_vae.checkpoints import read_checkpoint
    from pyro_vae.prepared import load_run
    from pyro_vae.scoring import evaluate_run

    if entry.read(DONE) is not None or not Run(entry.run_dir).last.is_file():
        return None  # finished (scored in full) or not started
    prep = load_run(entry.run_dir)
    epoch = int(read_checkpoint(Run(entry.run_dir).evaluated_checkpoint(prep.spec))["epoch"]) + 1
    torch.manual_seed(entry.seed)
    result = evaluate_run(prep, torch.device("cpu"), "test", k, limit=points)
    record = {
        "epoch": epoch,
        "log_px": result.log_px,
        "log_px_sem": result.log_px_sem,
        "points": result.num_points,
        "num_samples": k,
        "eval_s": result.wall_time_s,
    }
    entry.write(PEEK, record)
    print(
        f"{entry.label}: best checkpoint (epoch {epoch}) log p(x) {result.log_px:.2f} ± "
        f"{result.log_px_sem:.2f} on the first {points} test images, K = {k}",
        flush=True,
    )
    return record


def train_then_score(entry: Entry, options: Options, max_epochs: int | None) -> None:
    """Train the run to its end, then score it into its result record holding the run's lock, so
    that two jobs sharing the state folder never score one run twice (RunInUse: another job has
    it)."""
    done = train_model(entry, options, max_epochs)
    out = entry.result
    with Run(entry.run_dir).locked(f"benchmarks.{KEY}: scoring"):
        if out.is_file():  # scored by another job while this one waited to train
            return
        scored, points = score(entry, options)
        progress = entry.read(PROGRESS) or {"epoch_seconds": []}
        record = {
            "model": entry.model.name,
            "seed": entry.seed,
            "epochs": done["epochs"],
            "stopped": done["stopped"],
            "best_val_elbo": done["best_val_elbo"],
            **scored,
            "train_s": sum(progress["epoch_seconds"]),
            "curve": curve(entry.run_dir),
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        write_points(out, points)  # first: a record without its points gets them scored again
        write_text_atomic(out, json.dumps(record, indent=1) + "\n")
    print(
        f"{entry.model.label} seed {entry.seed}: test log p(x) {record['log_px']:.2f}", flush=True
    )


def score_points_again(entry: Entry, options: Options) -> None:
    """Per-image log p̂(x) for a result kept without them: the same checkpoint, seed and K give
    the same draws, so the mean must be the recorded one. It is checked against 5 Monte Carlo
    errors of that mean (the record's mean per-image IS error / √N), so that another checkpoint
    or data can never slip in; the record itself is left as it is."""
    out = entry.result
    record = json.loads(out.read_text())
    with Run(entry.run_dir).locked(f"benchmarks.{KEY}: scoring"):
        if points_path(out).is_file():  # another job did it
            return
        print(f"{entry.label}: scoring the test set again for its per-image log p(x)", flush=True)
        try:
            again, points = score(entry, options)
        except FileNotFoundError as exc:  # the run directory (its checkpoint) is gone
            print(f"{entry.label}: cannot be scored again: {exc}", flush=True)
            return
        tolerance = 5 * record["mc_stderr"] / math.sqrt(record["test_points"])
        same = (again["checkpoint"], again["test_points"], again["num_samples"]) == (
            record["checkpoint"],
            record["test_points"],
            record["num_samples"],
        )
        if not same or abs(again["log_px"] - record["log_px"]) > tolerance:
            print(
                f"{entry.label}: not kept: scored again, log p(x) is {again['log_px']:.4f} on "
                f"{again['test_points']} images with {again['checkpoint']}, the record "
                f"{out} says {record['log_px']:.4f} on {record['test_points']} with "
                f"{record['checkpoint']} (allowed: ±{tolerance:.4f})",
                flush=True,
            )
            return
        write_points(out, points)
    print(
        f"{entry.label}: per-image log p(x) kept in {points_path(out)} (mean "
        f"{again['log_px']:.4f}, recorded {record['log_px']:.4f})",
        flush=True,
    )


def train_all(chosen: list[Entry], options: Options, max_epochs: int | None) -> None:
    """Train and score each entry without a complete result, in order. An entry another job
    holds is left to it; a model whose data or preset this code cannot use is skipped, with
    its other seeds."""
    for entry in chosen:
        finished = entry.result.is_file()
        print(
            f"  {entry.label}: "
            f"{'finished' if finished else remaining(entry, max_epochs or PRESET_EPOCHS)}"
        )
    skipped: set[str] = set()
    for entry in chosen:
        if entry.model.name in skipped or points_path(entry.result).is_file():
            continue
        try:
            if entry.result.is_file():
                score_points_again(entry, options)
            else:
                train_then_score(entry, options, max_epochs)
        except RunInUse as exc:  # another job trains or scores it: on to the next
            print(f"{entry.label}: left to another job ({exc})", flush=True)
        except (Skip, SpecError) as exc:  # no data; a preset this code cannot run
            print(f"{entry.model.label}: skipped ({exc})", flush=True)
            skipped.add(entry.model.name)
        except Interrupted as exc:  # Ctrl-C: saved where it stopped
            raise SystemExit(f"{entry.label}: {exc}") from None


def run(
    options: Options,
    command: str,
    state: Path,
    seeds: tuple[int, ...],
    names: tuple[str, ...],
    max_epochs: int | None,
    train: bool,
    peek_at: tuple[int, int] | None = None,
    tighten: bool = False,
    carry: Path | None = None,
) -> Section:
    """With ``peek_at`` = (points, K), a cheap look at each chosen (model, seed) that is
    running; with ``train``, train and score each one not finished yet; with ``tighten``, AIS
    against IS for each one scored (:mod:`benchmarks.tightness`); then the section from the
    state folder and the results folder: the whole table at every seed found there, whichever
    models this job was given (another job may be training the others); a training job's own
    seeds are rows before anything of them is found, a job that trains nothing adds only the
    protocol's :data:`SEEDS`. A job that trains or tightens first restores each chosen run that
    ``carry`` holds further than ``state`` (:mod:`benchmarks.carry`)."""
    assert options.results is not None
    results = options.results / KEY
    by_name = {m.name: m for m in MODELS}
    chosen = entries([by_name[n] for n in dict.fromkeys(names)], seeds, state, results)
    if peek_at is not None:
        for entry in chosen:
            peek(entry, *peek_at)
    if (train or tighten) and carry is not None:
        for entry in chosen:
            try:
                line = restore_entry(entry, carry)
            except SpecError as exc:  # a carried file changed, a manifest not ours: stop here
                raise SystemExit(f"{entry.label}: not restored from {carry}: {exc}") from None
            if line:
                print(line, flush=True)
    if train:
        print(f"code: {REPO}; state: {state}; results: {results}", flush=True)
        train_all(chosen, options, max_epochs)
    if tighten:
        tighten_all(chosen, options)
    return section(options, command, state, seeds if train else SEEDS, results)


def tighten_all(chosen: list[Entry], options: Options) -> None:
    """AIS against IS for each scored entry, in order (:func:`benchmarks.tightness.score`); an
    entry not scored yet is passed over."""
    for entry in chosen:
        if not entry.result.is_file():
            print(f"{entry.label}: not scored yet; no tightness", flush=True)
            continue
        if tightness.read(entry.result) is None and not entry.on_disk:
            print(f"{entry.label}: its run is no longer on disk; no tightness", flush=True)
            continue
        r = tightness.score(entry.run_dir, entry.result, entry.state, options)
        if r is None:
            print(f"{entry.label}: tightness pieces left to another job", flush=True)
            continue
        print(
            f"{entry.label}: AIS − IS {r['gap']:.3f} ± {r['gap_sem']:.3f} nats on "
            f"{r['num_points']} test images, kept in {tightness.record_path(entry.result)}",
            flush=True,
        )


def curve(run_dir: Path) -> list[list[float]]:
    """[epoch, val ELBO] per validated epoch (1-based) from the run's metrics.csv."""
    try:
        metrics = read_metrics(run_dir / "metrics.csv")
    except (FileNotFoundError, ValueError):
        return []
    if "val_elbo" not in metrics:
        return []
    rows = {
        int(e) + 1: float(v)
        for e, v in zip(metrics["epoch"], metrics["val_elbo"])
        if not math.isnan(v)
    }  # NaN: a row without validation
    return [[e, rows[e]] for e in sorted(rows)]


#: The seeds the table always has a row for (a job's default).
SEEDS = (0,)
#: The models the table shows at every seed of the report; the others are one-seed rows (their
#: other seeds appear only once scored).
SEEDED = ("vae", "vamp")


def section(
    options: Options, command: str, state: Path, seeds: tuple[int, ...], results: Path
) -> Section:
    """The section: a row per (model, seed), finished or not, the gains over the VAE, the
    targets (not at toy size) and the learning curves."""
    out = Section(KEY, TITLE, command)
    seeds = all_seeds(seeds, state, results)
    rows, pending, unkept = [], [], []
    finished: dict[str, list[dict[str, Any]]] = {}
    tight: list[tuple[str, int, dict[str, Any]]] = []
    vae_tight: dict[int, dict[str, Any]] = {}
    untight: list[str] = []  # scored, the bound not measured yet
    gone: list[str] = []  # scored, the run no longer on disk to measure it
    for entry in entries(MODELS, seeds, state, results):
        bound = tightness.read(entry.result)
        if bound is not None:
            tight.append((entry.model.label, entry.seed, bound))
            if entry.model.name == "vae":
                vae_tight[entry.seed] = bound
        record = read_json(entry.result)
        kept = record.pop("curve", []) if record else []  # a record keeps the curve it ended on
        out.data[entry.name] = {"result": record, "curve": curve(entry.run_dir) or kept}
        one_seed = entry.model.name not in SEEDED and entry.seed != min(seeds)
        if record is None and one_seed and entry.read(PROGRESS) is None:
            continue  # a one-seed model: no row for the seeds it is not trained at
        if record is None:
            rows.append(pending_row(entry, options))
            pending.append(entry.label)
            continue
        rows.append(finished_row(entry, record, options.toy))
        finished.setdefault(entry.model.name, []).append(record)
        if bound is None:  # scored, its bound not measured: can it be, from its run?
            (untight if entry.on_disk else gone).append(entry.label)
        if not points_path(entry.result).is_file():
            unkept.append(entry.label)
    gains = paired_gains(results, seeds)
    out.data["gains_over_vae"] = {
        name: {"gain": g, "stderr": e, "seeds": k} for name, (g, e, k) in gains.items()
    }
    if not options.toy:  # toy runs are on digits: the published figures do not apply
        check_targets(out, finished, gains)
    out.data["tightness"] = {
        f"{label} (seed {seed})": {k: v for k, v in r.items() if k != "points"}
        for label, seed, r in tight
    }
    out.body = "\n\n".join(
        part
        for part in [
            PROTOCOL,
            table(HEADERS, rows),
            TRAIN_TIME,
            seeds_text(finished, options.toy),
            gains_text(gains, finished, unkept, bool(tight)),
            tightness.text(tight, vae_tight, untight, gone),
            pending_text(pending, state),
            weights_text(results, seeds, state),
            REFERENCE,
            figure_text(out.data, seeds, options.results / CURVES),
            EARLIER,
            DIFFERENCES,
        ]
        if part
    )
    return out


def published_cell(model: Model, toy: bool, log_px: float | None = None) -> str:
    """The published test log p(x), with ours minus it when ``log_px`` is given; "–" when there
    is none to compare with (or at toy size)."""
    if model.published is None or toy:
        return "–"
    gap = "" if log_px is None else f" ({log_px - model.published:+.2f})"
    return f"{model.published:.2f}{gap}"


def finished_row(entry: Entry, record: dict[str, Any], toy: bool) -> list[object]:
    """The table row of a scored entry, from its result record."""
    return [
        entry.model.label,
        entry.seed,
        f"{record['epochs']} ({record['stopped']})",
        f"{record['best_val_elbo']:.2f}",
        f"**{record['log_px']:.2f} ± {record['log_px_sem']:.2f}**",
        published_cell(entry.model, toy, record["log_px"]),
        f"{record['elbo']:.2f}",
        f"{record['active_units']}/{record['latent_dim']}",
        f"{record['train_s'] / 3600:.2f} h",
        f"{record['eval_s']:.0f} s",
    ]


def pending_row(entry: Entry, options: Options) -> list[object]:
    """The table row of an entry not scored yet: the epoch reached and the best validation ELBO
    (from its ``progress.json``), a ``peek.json`` figure if one was taken, or why it cannot
    start."""
    progress, seen = entry.read(PROGRESS), entry.read(PEEK)
    where = (
        runnable(entry.model, entry.seed, options)
        if not progress
        else (
            f"{progress['epoch']} (running; val ELBO {progress['val_elbo']:.2f} now, best "
            f"{progress['epochs_since_best']} epochs ago)"
        )
    )
    best = f"{progress['best_val_elbo']:.2f}" if progress else "–"
    now = (
        "pending"
        if not seen
        else (
            f"pending; {seen['log_px']:.2f} ± {seen['log_px_sem']:.2f} at epoch {seen['epoch']} on "
            f"the first {seen['points']} test images, K = {seen['num_samples']}"
        )
    )
    return [
        entry.model.label,
        entry.seed,
        where,
        best,
        now,
        published_cell(entry.model, options.toy),
        "–",
        "–",
        _seconds(progress),
        "–",
    ]


def check_targets(
    out: Section,
    finished: dict[str, list[dict[str, Any]]],
    gains: dict[str, tuple[float, float, int]],
) -> None:
    """The :data:`TARGETS` of the finished models onto ``out``: a "vae+1" gain paired when both
    models' per-image scores are kept, else the difference of their mean log p(x)."""
    for name, what, limit in TARGETS:
        mine = finished.get(name)
        if not mine:
            continue
        mean = statistics.fmean(r["log_px"] for r in mine)
        if what != "vae+1":
            out.target(f"{name} test log p(x)", mean, limit, " nats", at_most=False, fmt=".2f")
        elif "vae" in finished:
            gain = (
                gains[name][0]
                if name in gains
                else mean - statistics.fmean(r["log_px"] for r in finished["vae"])
            )
            out.target(
                f"{name} − vae, test log p(x)", gain, limit, " nats", at_most=False, fmt=".2f"
            )


def paired_gains(results: Path, seeds: tuple[int, ...]) -> dict[str, tuple[float, float, int]]:
    """Model name → (gain over the VAE, its standard error, S), for each model whose per-image
    scores and the VAE's are kept for S ≥ 1 of ``seeds``. Per seed, paired over the test images
    (the module's formula): d_i = log p̂_model(x_i) − log p̂_VAE(x_i), g_s = mean_i d_i. One
    seed: g_s ± std_i(d_i)/√n, the **s.e. over images**; S ≥ 2: the mean of the g_s ± their
    std/√S, the **s.e. over seeds** (which holds the images' noise and the seeds')."""
    gains = {}
    for model in MODELS[1:]:
        per_seed = []
        for seed in seeds:
            mine = read_points(results / f"{model.name}-seed{seed}.json")
            vae = read_points(results / f"vae-seed{seed}.json")
            if mine is None or vae is None or mine.shape != vae.shape or len(vae) < 2:
                continue
            d = mine - vae
            per_seed.append((float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))))
        if len(per_seed) == 1:
            gains[model.name] = (*per_seed[0], 1)
        elif per_seed:
            g = [gain for gain, _ in per_seed]
            se = statistics.stdev(g) / math.sqrt(len(g))
            gains[model.name] = (statistics.fmean(g), se, len(g))
    return gains


def seeds_text(finished: dict[str, list[dict[str, Any]]], toy: bool) -> str:
    """The paragraph on the models scored at several seeds: the mean log p(x) over S seeds
    ± its **s.e. over seeds** (s.d./√S), the **s.d. over seeds**, and the published figure judged
    against that spread, (published − mean)/s.d.; the other models are one-seed rows."""
    labels = {m.name: m for m in MODELS}
    several, single = [], []
    for name, records in finished.items():
        model = labels[name]
        if len(records) < 2:
            single.append(model.label)
            continue
        values = [r["log_px"] for r in records]
        mean, sd = statistics.fmean(values), statistics.stdev(values)
        seeds = ", ".join(str(r["seed"]) for r in records)
        text = (
            f"{model.label}: **{mean:.2f} ± {sd / math.sqrt(len(values)):.2f}** (s.e. over "
            f"{len(values)} seeds: {seeds}; s.d. over seeds {sd:.2f})"
        )
        if model.published is not None and not toy:
            text += (
                f", published {model.published:.2f}: {model.published - mean:+.2f} nats from our "
                f"mean, {abs(model.published - mean) / sd:.1f} s.d. over seeds"
            )
        several.append(text)
    if not several:
        return "Every row is one seed: no spread over seeds is measured in this section yet."
    text = "Over seeds: " + "; ".join(several) + "."
    if single:
        text += (
            " " + ", ".join(single) + " are one-seed rows: judge them against the s.d. over "
            "seeds above."
        )
    if any(len(r) == 2 for r in finished.values()):
        text += " An s.d. from two seeds is a rough figure (one degree of freedom)."
    return text


def gains_text(
    gains: dict[str, tuple[float, float, int]],
    finished: dict[str, Any],
    unkept: list[str],
    tight: bool = False,
) -> str:
    """The paragraph on gains over the VAE: paired where per-image scores are kept (``unkept``:
    the labels of the finished models whose scores are not), over the seeds both have;
    ``tight``: the section shows how tight each model's bound is."""
    labels = {m.name: m.label for m in MODELS}
    shown = [
        f"{labels[n]} {g:+.2f} ± {e:.2f} nats "
        + ("(one seed, s.e. over images)" if k == 1 else f"(mean over {k} seeds, s.e. over seeds)")
        for n, (g, e, k) in gains.items()
    ]
    text = (
        "The ± of a row is the s.e. over images (the standard error of its mean over the "
        "test images): it holds how much log p(x) varies from image to image, not how much "
        "another seed would differ. Every model is scored on the same images, so a gain "
        "over the VAE is judged paired: per seed, the mean per-image difference; over the "
        "seeds both models have, the mean of those"
    )
    text += (": " + "; ".join(shown) + ".") if shown else "."
    text += " Each figure is an IS lower bound, so a gain is one in log p(x) as far as both " + (
        "bounds are equally tight: the table below measures each one's looseness (AIS against "
        "IS) and how far it could move each gain."
        if tight
        else f"bounds are equally tight; section {number('ais-quality')} measures how tight "
        "the VAE's is (AIS against IS)."
    )
    if unkept and "vae" in finished and len(finished) > 1:
        text += (
            " Per-image scores are missing for " + ", ".join(unkept) + " (scored before "
            f"they were kept; `make bench-{KEY}` scores them again)."
        )
    return text


def pending_text(pending: list[str], state: Path) -> str:
    """The paragraph naming the entries not scored yet, and how to continue them."""
    if not pending:
        return "All runs finished."
    return (
        "**Not finished (their targets pending): " + ", ".join(pending) + ".** The job "
        f"continues from its checkpoints: `make bench-{KEY}` (state folder: "
        f"`{_home(state)}`; `make bench-carry` carries them to another machine through "
        "`benchmarks/carry/`)."
    )


def weights_text(results: Path, seeds: tuple[int, ...], state: Path) -> str:
    """The paragraph on the shipped weights (``<results>/published/weights.json``): which
    model and seed each file is (its row is in the table, which shows every seed with a
    record); the table's scored rows without a file, and why (their run is gone, or not
    exported yet); how ``make reproduce-table`` scores the files again."""
    files = (read_json(results / WEIGHTS) or {}).get("files") or {}
    labels = {m.name: m.label for m in MODELS}
    shown = [
        f"`{name}`: {labels.get(entry['model'], entry['model'])}, **seed "
        f"{entry['seed']}**, epoch {entry['epoch']} ({entry['checkpoint']}), "
        f"{entry['bytes'] / 1e6:.1f} MB, SHA-256 `{entry['sha256'][:16]}…`"
        for name, entry in files.items()
    ]
    text = (
        "**Shipped weights** (float32, the VAE's parameters only, in a file that "
        "`torch.load(weights_only=True)` reads; SHA-256 and sizes in "
        f"`benchmarks/results/published/{WEIGHTS}`): " + "; ".join(shown) + "."
        if shown
        else "**Shipped weights:** none yet."
    )
    unshipped = [
        e
        for e in entries(MODELS, seeds, state, results)
        if e.result.is_file() and f"{e.name}.weights.pt" not in files
    ]
    gone = [e.label for e in unshipped if not e.on_disk]
    waiting = [e.label for e in unshipped if e.label not in gone]
    if gone:
        text += (
            " None for " + ", ".join(gone) + " in the table: their runs are no longer on "
            "disk, so their weights cannot be exported."
        )
    if waiting:
        text += (
            " " + ", ".join(waiting) + ": scored, not exported yet (`python -m "
            "benchmarks.weights export` writes the best validation checkpoint's weights "
            "and their SHA-256)."
        )
    return text + (
        " `make reproduce-table` (`python -m benchmarks.weights reproduce`) makes a run "
        "directory from the preset and each file (outside the work tree), scores it with "
        "`pyro-vae evaluate` (the row's K = 5000 on all 10 000 test images; `LIMIT=N`: the "
        "first N) and pairs each image's log p̂(x) with the committed one: a row is reproduced "
        "when the mean difference is within 4 s.e. of it, the two estimates differing by their "
        "Monte Carlo noise only."
    )


def figure_text(data: dict[str, Any], seeds: tuple[int, ...], path: Path) -> str:
    """Draws the learning curves into ``path``; the markdown that shows them: an image link
    when ``path`` is in the folder BENCHMARKS.md links to, else the path."""
    figure = plot_curves(data, MODELS, seeds, path)
    if figure.parent.parts[-2:] == ("benchmarks", "results"):
        return f"![validation ELBO per epoch](benchmarks/results/{figure.name})"
    return f"Learning curves: `{figure}`."


def runnable(model: Model, seed: int, options: Options) -> str:
    """'not started', or why this code cannot run the model's preset."""
    try:
        spec_from(model.preset, overrides(model, seed, options, None))
    except SpecError as exc:
        return f"cannot run yet: {exc}"
    return "not started"


def _home(path: Path) -> str:
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def _seconds(progress: dict[str, Any] | None) -> str:
    if not progress:
        return "–"
    return f"{sum(progress['epoch_seconds']) / 3600:.2f} h so far"


def plot_curves(
    data: dict[str, Any], models: Sequence[Model], seeds: tuple[int, ...], path: Path
) -> Path:
    """Validation ELBO against epoch, one line per (model, seed), the published test log p(x)
    as dashed horizontal lines in the model's colour (a test figure beside validation curves:
    a reference level, not a like-for-like comparison). SVG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    lows = []
    for i, model in enumerate(models):
        colour = f"C{i}"
        for seed in seeds:
            line = data[f"{model.name}-seed{seed}"]["curve"]
            if line:
                ax.plot(*zip(*line), color=colour, lw=1, label=f"{model.label} (seed {seed})")
                lows.append(max(v for _, v in line) - 15)
        if model.published is not None:
            ax.axhline(
                model.published,
                color=colour,
                ls="--",
                lw=1,
                label=f"{model.label}, published test log p(x)",
            )
    if lows:
        ax.set_ylim(bottom=min(lows))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation ELBO (nats)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Date": None})
    return path


def main(argv: list[str] | None = None) -> None:
    from benchmarks.cli import COUNT, SEED, finish, options_from, parser

    p = parser("The published Fashion-MNIST protocol (hours; resumes from the state folder).")
    p.add_argument(
        "--state",
        type=Path,
        help=f"folder of the run directories and the job's files beside them "
        f"(default {default_state()}; with --toy, beside the results)",
    )
    p.add_argument(
        "--models",
        default=",".join(m.name for m in MODELS),
        help="comma-separated, run in this order (default %(default)s)",
    )
    p.add_argument("--seeds", type=SEED, nargs="+", default=list(SEEDS), help="default 0")
    p.add_argument(
        "--max-epochs", type=COUNT, help=f"cap every run (default: the presets' {PRESET_EPOCHS})"
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--report",
        action="store_true",
        help="train nothing: write the section from the state and results so far",
    )
    p.add_argument(
        "--peek",
        type=COUNT,
        nargs=2,
        metavar=("POINTS", "K"),
        help="with --report: first score each running model's best checkpoint on "
        "the first POINTS test images with K samples (cheap, not the protocol)",
    )
    what.add_argument(
        "--tightness",
        action="store_true",
        help="train nothing: AIS (16 chains x 1000 steps) against IS on the first 200 test "
        "images of each chosen scored run (resumable), then the section",
    )
    p.add_argument(
        "--carry",
        type=Path,
        help="folder of runs carried from another machine (benchmarks/carry.py), restored "
        "first where they went further than the state's (default benchmarks/carry; with --toy, "
        "beside the results)",
    )
    args = p.parse_args(argv)
    names = tuple(n.strip() for n in args.models.split(",") if n.strip())
    unknown = sorted(set(names) - {m.name for m in MODELS})
    if unknown:
        p.error(
            f"--models: unknown {', '.join(unknown)}; choices: {', '.join(m.name for m in MODELS)}"
        )

    if args.state is not None and not args.state.is_dir() and (args.report or args.tightness):
        p.error(f"--state {args.state}: no such folder (--report and --tightness train nothing)")

    def runner(o: Options, c: str) -> Section:
        state = args.state or (o.results / "state" if o.toy else default_state())
        return run(
            o,
            c,
            state,
            tuple(args.seeds),
            names,
            args.max_epochs,
            not (args.report or args.tightness),
            tuple(args.peek) if args.peek else None,
            args.tightness,
            args.carry or (o.results / "carry" if o.toy else default_carry()),
        )

    finish(args, options_from(args), {KEY: runner})


if __name__ == "__main__":
    main()
