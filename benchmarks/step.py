"""Benchmark 1: the training step against a plain-PyTorch VAE, and one whole Lightning epoch.

Step: what ``VAEModule.training_step`` runs: the estimator's ELBO module (built by
``VAEModule``) on ``vae.model``/``vae.guide`` with validation off, then Adam from
``VAEModule.configure_optimizers`` (zero_grad, backward, step, as Lightning's automatic
optimisation does); against :class:`~benchmarks.floors.PlainVAE` with the same networks and its
own Adam, on the same pre-drawn minibatches (data loading excluded on both sides). A third row
runs the VAE's own densities without Pyro's tracing (``vae.log_weights`` for ``trace``,
``vae.elbo_terms`` for ``mean_field``) to split the overhead into "densities" and "tracing".

Epoch: ``pyro_vae.train.fit``, the user's path (Lightning, validation, logging and the
per-epoch checkpoint included), against a plain loop over the same DataLoader that also runs a
validation pass and saves a checkpoint. A callback added to fit's Trainer times each Lightning
epoch and runs one plain epoch after it, so the two alternate in one process.
"""

from __future__ import annotations

import copy
import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import lightning as L
import pyro
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.common import (Options, Section, Spread, describe, interleaved, prepared,
                               ratios, spec_from, table)
from benchmarks.floors import PlainVAE
from pyro_vae import train
from pyro_vae.train import Prepared, VAEModule

STEP_TARGET, EPOCH_TARGET = 1.10, 1.15
ESTIMATORS = ("trace", "mean_field")


def config(options: Options) -> tuple[str, list[str], dict[str, int]]:
    """(example config, overrides, sizes): Fashion-MNIST 784-400-50, batch 128; toy: digits."""
    if options.toy:
        return "digits.yaml", ["latent_dim=4", "encoder.hidden=[16]", "decoder.hidden=[16]",
                               "data.limit=96", "train.batch_size=32"], \
            {"blocks": 2, "steps": 2, "epochs": 1}
    return "fashion-mnist.yaml", ["encoder.hidden=[400]", "decoder.hidden=[400]"], \
        {"blocks": 30, "steps": 20, "epochs": 3}


def train_step(module: VAEModule, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               step: int) -> None:
    """What ``VAEModule.training_step`` computes (β for the step, the estimator's loss with
    validation off), then Lightning's automatic optimisation: zero_grad, backward, step."""
    module.vae.kl_scale = module.kl_scale(step)
    with pyro.validation_enabled(False):
        loss = module.loss_module(x)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def step_runs(prep: Prepared, steps: int, device: torch.device) -> dict[str, Callable[[int], None]]:
    """Three callables, each running ``steps`` optimisation steps on the same minibatches (the
    block index they take is unused: every block reuses the batches)."""
    spec = prep.spec
    vae = prep.vae.to(device)
    module = VAEModule(vae, spec)
    optimizer = module.configure_optimizers()
    untraced = VAEModule(copy.deepcopy(vae), spec)
    untraced_opt = untraced.configure_optimizers()
    plain = PlainVAE(vae).to(device)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=spec.train.lr)
    loader = prep.bundle.loader("train", spec.train.batch_size, shuffle=True)
    batches = [x.to(device) for x in itertools.islice(itertools.cycle(loader), steps)]
    analytic_kl = spec.estimator.name == "mean_field"

    def ours(_block: int) -> None:
        for i, x in enumerate(batches):
            train_step(module, optimizer, x, i)

    def densities(_block: int) -> None:
        v = untraced.vae
        for x in batches:
            with pyro.validation_enabled(False):  # as on the pyro-vae route
                elbo = v.elbo_terms(x).elbo if analytic_kl else v.log_weights(x)(1)
            loss = -(v.num_data / len(x)) * elbo.sum()
            untraced_opt.zero_grad()
            loss.backward()
            untraced_opt.step()

    def floor(_block: int) -> None:
        for x in batches:
            loss = plain.loss(x)
            plain_opt.zero_grad()
            loss.backward()
            plain_opt.step()

    return {"pyro-vae": ours, "densities, no tracing": densities, "plain PyTorch": floor}


class _HostSyncs(TorchDispatchMode):
    """Counts device→host reads (``.item()``, ``bool(t)``): each one stalls a GPU pipeline."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def host_syncs(fn: Callable[[int], None], steps: int) -> float:
    with _HostSyncs() as counter:
        fn(0)
    return counter.count / steps


class _EpochClock(L.Callback):
    """Times each Lightning epoch (start to next start, the plain epoch taken out) and runs one
    plain epoch after it, so Lightning and plain epochs alternate in one process."""

    def __init__(self, plain_epoch: Callable[[], None]) -> None:
        self.plain_epoch = plain_epoch
        self.lightning: list[float] = []
        self.plain: list[float] = []
        self._start = 0.0
        self._plain_time = 0.0

    def _mark(self) -> None:
        now = time.perf_counter()
        if self._start:
            self.lightning.append(now - self._start - self._plain_time)
        self._start = now

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        start = time.perf_counter()
        with torch.enable_grad():
            self.plain_epoch()
        self._plain_time = time.perf_counter() - start
        self.plain.append(self._plain_time)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark()


def epoch_pairs(prep: Prepared, epochs: int,
                device: torch.device) -> tuple[list[float], list[float]]:
    """Seconds per epoch, (Lightning, plain), over ``epochs`` pairs after one warm-up pair."""
    spec = prep.spec
    plain = PlainVAE(prep.vae).to(device)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=spec.train.lr)
    batches = prep.bundle.loader("train", spec.train.batch_size, shuffle=True)
    val = prep.bundle.loader("val", spec.train.batch_size, shuffle=False)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)

        def plain_epoch() -> None:
            for x in batches:
                loss = plain.loss(x.to(device))
                plain_opt.zero_grad()
                loss.backward()
                plain_opt.step()
            for x in val:
                plain.elbo(x.to(device))
            torch.save({"model": plain.state_dict(), "optimizer": plain_opt.state_dict()},
                       out / "plain.ckpt")

        clock = _EpochClock(plain_epoch)
        make_trainer = train.make_trainer

        def clocked_trainer(*args: object, **kwargs: object) -> L.Trainer:
            trainer = make_trainer(*args, **kwargs)
            trainer.callbacks.append(clock)
            return trainer

        with mock.patch.object(train, "make_trainer", clocked_trainer):
            train.fit(prep, out / "run")
    return clock.lightning[1:], clock.plain[1:]


def run(options: Options, command: str) -> Section:
    name, overrides, size = config(options)
    section = Section("step", "Training step and epoch vs plain PyTorch", command)
    rows = []
    base = overrides + ["train.progress=false", f"train.max_epochs={size['epochs'] + 1}"]
    if options.device.type == "cuda":
        base.append("train.accelerator=gpu")
    preps = {}
    for estimator in ESTIMATORS:
        prep = preps[estimator] = prepared(spec_from(name, base + [f"estimator.name={estimator}"]))
        runs = step_runs(prep, size["steps"], options.device)
        times = interleaved(runs, size["blocks"], options.device)
        ms = {k: Spread.of([t / size["steps"] * 1e3 for t in v]) for k, v in times.items()}
        ratio = ratios(times, "pyro-vae", "plain PyTorch")
        untraced = ratios(times, "densities, no tracing", "plain PyTorch")
        syncs = host_syncs(runs["pyro-vae"], size["steps"])
        floor_syncs = host_syncs(runs["plain PyTorch"], size["steps"])
        rows.append([f"`{estimator}`", f"{ms['pyro-vae'].median:.2f}",
                     f"{ms['densities, no tracing'].median:.2f}",
                     f"{ms['plain PyTorch'].median:.2f}", f"**{ratio.median:.3f}×**",
                     f"{ratio.q1:.3f}–{ratio.q3:.3f}", f"{untraced.median:.3f}×",
                     f"{syncs:g} / {floor_syncs:g}"])
        section.target(f"step ({estimator}) / plain PyTorch", ratio.median, STEP_TARGET)
        section.data[estimator] = {"ms_per_step": {k: v.__dict__ for k, v in ms.items()},
                                   "ratio": ratio.__dict__, "untraced_ratio": untraced.__dict__,
                                   "host_syncs_per_step": syncs,
                                   "floor_host_syncs_per_step": floor_syncs}
    prep = preps["trace"]
    lightning_s, plain_s = epoch_pairs(prep, size["epochs"], options.device)
    epoch = Spread.of([a / b for a, b in zip(lightning_s, plain_s)])
    steps_per_epoch = -(-len(prep.bundle.train) // prep.spec.train.batch_size)
    section.target("Lightning epoch (trace) / plain epoch", epoch.median, EPOCH_TARGET)
    section.data["epoch"] = {"lightning_s": lightning_s, "plain_s": plain_s,
                             "ratio": epoch.__dict__, "steps_per_epoch": steps_per_epoch}
    epoch_text = table(
        ["", "Lightning (pyro-vae, `trace`)", "plain PyTorch loop", "paired ratio"],
        [["seconds per epoch (median)", f"{Spread.of(lightning_s).median:.2f}",
          f"{Spread.of(plain_s).median:.2f}", f"**{epoch.median:.3f}×** "
          f"(range {epoch.low:.3f}–{epoch.high:.3f}, n={epoch.n})"]])
    trace_ms = section.data["trace"]["ms_per_step"]
    step_extra = trace_ms["pyro-vae"]["median"] - trace_ms["plain PyTorch"]["median"]
    epoch_gap = Spread.of(lightning_s).median - Spread.of(plain_s).median
    epoch_extra = epoch_gap / steps_per_epoch * 1e3
    where = (f"Per step, the Lightning epoch costs {epoch_extra:.2f} ms more than the plain one; "
             f"the training step itself accounts for {step_extra:.2f} ms of it (`trace` row), the "
             f"other {epoch_extra - step_extra:.2f} ms are Lightning's loop and what "
             "`VAEModule`/`fit` add per step (metric logging, the finite-gradient check, "
             "callbacks).")
    section.body = "\n\n".join([
        f"Setup: {describe(prep, name, overrides)}; Adam lr {prep.spec.train.lr}, "
        f"{options.threads} threads. {size['blocks']} interleaved blocks of {size['steps']} "
        "steps per route; ratio = median of the per-block paired ratios (IQR beside it).",
        table(["estimator", "pyro-vae ms/step", "densities w/o tracing ms/step",
               "plain ms/step", "ratio", "ratio IQR", "w/o tracing ratio",
               "host syncs/step (ours / plain)"],
              rows),
        "*pyro-vae*: the estimator's ELBO module + Adam, exactly what `VAEModule.training_step` "
        "runs. *densities w/o tracing*: the same VAE's distributions summed in plain torch "
        "(`vae.log_weights` / `vae.elbo_terms`), no Pyro messengers: the gap between it and "
        "pyro-vae is the cost of Pyro's machinery (tracing model and guide, `Trace_ELBO`'s "
        "bookkeeping); the gap between it and the floor is the cost of going through "
        "`torch.distributions` objects and, for `trace`, of the Monte Carlo log q − log p in "
        "place of the closed-form KL. *host syncs*: `.item()`-style device→host reads per "
        "step (Adam reads its step counter once per parameter tensor on both sides; the rest "
        "are Pyro's `Trace_ELBO`).",
        f"Whole epoch ({steps_per_epoch} steps, validation and checkpoint included on both "
        f"sides, {size['epochs']} pairs after a warm-up pair):",
        epoch_text,
        where,
    ])
    return section
