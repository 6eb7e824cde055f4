"""Training through Lightning: the LightningModule wraps the estimator's ELBO module.

Per step the loss is the estimator's differentiable loss L(x_batch), a sum over the minibatch
scaled by N/B (N the full training set, on every rank), so L/N estimates the negative objective
per data point. The KL weight at step t is β_t = β · min(1, (t + 1)/T) for a warm-up of T steps
(β_t > 0 as poutine.scale requires); it derives from the global step, so it resumes by itself.

The Trainer writes into its :class:`~pyro_vae.rundir.Run`: ``checkpoints/last.ckpt`` (rewritten
atomically every ``train.checkpoint_every_steps`` steps and every ``checkpoint_every_epochs``
epochs, at the end, and where a stop signal ended training; ``best.ckpt`` with early stopping)
and ``metrics.csv``, with TensorBoard and MLflow as ``train.logger`` names them
(:mod:`pyro_vae.tracking`). A run's life around it (claiming the directory, resuming with the
weights, optimizer, scheduler, loop position, early-stopping and RNG states, mapping failures to
what the user sees) is :mod:`pyro_vae.pipeline`'s.

Under ``strategy: ddp`` Lightning re-launches the command once per extra device; rank 0 alone
writes the run directory. The data plate keeps the global N and each rank sees its own share of
every epoch's permutation (Pyro's recipe: module-local parameters, the ELBO as an nn.Module).

The training loader yields ``(x, idx)``, the batch and its rows in the training set, for the data
plate's subsample (``vae.model(x, idx)``), and ``(x, idx, y)`` with the batch's labels where the
model kind reads them (``vae.model(x, idx, y)``); the validation and test loaders then yield
``(x, y)``.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import lightning as L
import pyro
import torch
from lightning.pytorch.callbacks import EarlyStopping

from inference.compiled import TracedLoss
from pyro_vae.bundle import DataBundle, with_indices
from pyro_vae.checkpoints import RECORD
from pyro_vae.components.estimators import make_elbo
from pyro_vae.console import chatty
from pyro_vae.engine import (
    AtomicCheckpointIO,
    BestCheckpoint,
    EpochMeans,
    PeriodicCheckpoint,
    RngState,
    Throughput,
    resumable,
)
from pyro_vae.prepared import steps_per_epoch
from pyro_vae.registry import SpecError
from pyro_vae.rundir import Run
from pyro_vae.spec import Spec, TrainSpec
from pyro_vae.stops import Diverged
from pyro_vae.tracking import check as check_loggers
from pyro_vae.tracking import loggers
from pyro_vae.vae import VAE

RECENT_STEPS = 32  # the blow-up guard's window of per-point losses


def adam(params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam (Kingma & Ba 2015) with torch's fused kernel: one pass over each parameter tensor
    for all of Adam's moment and update arithmetic, 5-7× faster per step on CPU than the default
    per-tensor loop for the 784-400-50 VAE (``python -m benchmarks --only step``)."""
    return torch.optim.Adam(params, lr=lr, fused=True)


class VAEModule(L.LightningModule):
    """training_step: the estimator's loss; validation_step: the one-sample ELBO with β = 1.

    Logged on every ``log_every_n_steps``-th step (the steps Lightning writes to its loggers)
    ``train_loss_step`` (L/N, also on the progress bar), ``beta_step``, ``lr_step`` and the
    batch's ELBO, KL and reconstruction term (one extra forward pass without gradients); per
    epoch the means of ``train_loss``, ``beta`` and ``lr`` over all its steps (``*_epoch``) and
    ``val_elbo``, ``val_kl``, ``val_recon`` over the validation set, all weighted by batch size.
    Per-batch values are summed on the device (:class:`~pyro_vae.engine.EpochMeans`) rather than
    passed to ``self.log`` each batch: no host read and none of Lightning's per-call cost. Under
    DDP the train_* values are rank 0's batches; the val_* values are averaged over ranks.

    An estimator with a schedule of its own, ``anneal(t)`` (gumbel's temperature τ_t), is set
    to the global step t before each training step, so a resumed run continues the schedule.
    """

    def __init__(self, vae: VAE, spec: Spec, record: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.vae = vae
        self.spec = spec
        self.record = record  # what each checkpoint was trained from (checkpoints.spec_record)
        self.recent: deque[float] = deque(maxlen=RECENT_STEPS)  # |loss per point|, newest last
        self.theta_start = 0.0  # the largest |parameter| when this process began training
        estimator = make_elbo(spec.estimator)
        self.loss_module = estimator(vae.model, vae.guide)
        jit = spec.train.jit and getattr(estimator, "traceable", True)
        self.traced_loss = TracedLoss(self.loss_module, vae) if jit else None
        # β ≠ 1 (a warm-up's changes every step) enters one trace as an input tensor
        self.traced_scaled = (
            TracedLoss(self._scaled_loss, vae, inputs=("kl_scale",)) if jit else None
        )
        self.warmup_steps = 0.0
        self.last_loss = torch.zeros(())
        self.epoch_means = EpochMeans()  # training: a run resumed mid-epoch continues it
        self.eval_means = EpochMeans()  # validation or test: started afresh by each pass

    def steps_per_epoch(self) -> int:
        return steps_per_epoch(
            self.vae.num_data or 0, self.spec.train.batch_size, self.trainer.world_size
        )

    def on_train_start(self) -> None:
        self.warmup_steps = self.spec.train.warmup_epochs * self.steps_per_epoch()
        if self.spec.train.lr_schedule == "constant":  # the spec's lr wins over a checkpoint's
            for group in self.trainer.optimizers[0].param_groups:
                group["lr"] = self.spec.train.lr

    def kl_scale(self, step: int) -> float:
        if self.warmup_steps <= 0:
            return self.spec.beta
        return self.spec.beta * min(1.0, (step + 1) / self.warmup_steps)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, idx, *y = batch
        self.vae.kl_scale = self.kl_scale(self.global_step)
        if anneal := getattr(self.loss_module.elbo, "anneal", None):
            anneal(self.global_step)  # gumbel's τ_t follows the run's step, across a resume
        with pyro.validation_enabled(False):
            loss = self.loss(x, idx, *y)
        self.last_loss = loss.detach()
        n, b = self.vae.num_data or len(x), len(x)
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        scalars = {"train_loss": self.last_loss / n, "beta": self.vae.kl_scale, "lr": lr}
        self.epoch_means.add(scalars, b)
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            for name, value in scalars.items():
                self.log(
                    f"{name}_step",
                    value,
                    prog_bar=name == "train_loss",
                    on_step=True,
                    on_epoch=False,
                    batch_size=b,
                )
            with torch.no_grad():
                for name, value in self._elbo_terms((x, *y), "train").items():
                    self.log(name, value, batch_size=b, on_step=True, on_epoch=True)
        return loss

    def loss(self, x: torch.Tensor, idx: torch.Tensor, *y: torch.Tensor) -> torch.Tensor:
        """The estimator's loss at the current β on rows ``idx`` (labels ``y`` where the kind
        reads them), from a trace where
        ``train.jit`` is on: one for β = 1, one taking β as an input tensor for every other β (a
        trace per β of a warm-up would never be replayed); each is keyed by the VAE's other
        Python constants (:class:`~inference.compiled.TracedLoss`)."""
        beta = self.vae.kl_scale
        if beta == 1.0:
            return (
                self.loss_module(x, idx, *y)
                if self.traced_loss is None
                else self.traced_loss(x, idx, *y)
            )
        b = torch.tensor(beta, device=x.device)  # eager too: the same program, jit or not
        return (
            self._scaled_loss(x, idx, b, *y)
            if self.traced_scaled is None
            else self.traced_scaled(x, idx, b, *y)
        )

    def _scaled_loss(
        self, x: torch.Tensor, idx: torch.Tensor, beta: torch.Tensor, *y: torch.Tensor
    ) -> torch.Tensor:
        """The estimator's loss with ``poutine.scale(β)`` on the latents, β a tensor."""
        scale, self.vae.kl_scale = self.vae.kl_scale, beta
        try:
            return self.loss_module(x, idx, *y)
        finally:
            self.vae.kl_scale = scale

    def on_train_epoch_end(self) -> None:
        for name, value in self.epoch_means.pop().items():
            self.log(
                f"{name}_epoch", value, prog_bar=name == "train_loss", on_step=False, on_epoch=True
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.record is not None:
            checkpoint[RECORD] = self.record

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Stop before a non-finite or blown-up step reaches the parameters (ranks agree).

        One host read per step of (s, ℓ, m): s = L + Σ_p Σ_i ∂L/∂θ_pi over the optimizer's
        parameters is non-finite iff a term is (NaN or ±inf propagates through the sum; a sum of
        finite terms overflows only past 3.4e38); ℓ = L/N, the loss per point; m = max_i |θ_i|,
        the parameters the previous steps made. With F = ``train.blowup_factor`` (0: off), the
        step is also refused when

            m   > F · max(1, m at this process's first step)          (the weights blew up)
            |ℓ| > F · max(1, median of |ℓ| over the last 32 steps)    (the loss jumped)

        (1 nat and 1 as floors: a loss or weights near 0 have no scale to jump from). Both flag
        the weights already in place, so checkpoints from this step on are not trusted."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grads = [p.grad for p in params if p.grad is not None]
        n = self.vae.num_data or 1
        # min and max of each tensor, no |θ| copies: 0.15 against 0.26 ms a step (784-200-200-50)
        extremes = torch.stack([e for p in params for e in torch.aminmax(p.detach())])
        grad_sum = torch.stack([g.sum() for g in grads]).sum() if grads else 0.0
        s, loss, theta = torch.stack(
            [self.last_loss + grad_sum, self.last_loss / n, extremes.abs().max().to(self.last_loss)]
        ).tolist()
        reason = self._blowup(s, loss, theta)
        if not self.trainer.strategy.reduce_boolean_decision(reason is None, all=True):
            raise Diverged(self.global_step + 1, reason or "another rank diverged")

    def _blowup(self, s: float, loss: float, theta: float) -> str | None:
        """Why this step must not be taken (see :meth:`on_before_optimizer_step`), or None."""
        if not math.isfinite(s):
            return f"non-finite loss or gradient (loss per point {loss:g})"
        factor = self.spec.train.blowup_factor
        if not self.recent:
            self.theta_start = theta
        typical = statistics.median(self.recent) if self.recent else abs(loss)
        self.recent.append(abs(loss))
        if factor and theta > factor * max(1.0, self.theta_start):
            return (
                f"a parameter grew to |θ| = {theta:.3g}, over {factor:g}× the largest at the "
                f"start, {self.theta_start:.3g} (train.blowup_factor)"
            )
        if factor and abs(loss) > factor * max(1.0, typical):
            return (
                f"the loss per point jumped to {loss:.3g}, over {factor:g}× its recent "
                f"median {typical:.3g} (train.blowup_factor)"
            )
        return None

    def _elbo_terms(
        self, batch: torch.Tensor | tuple[torch.Tensor, ...], prefix: str
    ) -> dict[str, torch.Tensor]:
        """The batch means of the one-sample ELBO, KL and reconstruction term, named; ``batch``
        is x, or (x, y) with labels."""
        x, *y = (batch,) if isinstance(batch, torch.Tensor) else batch
        with pyro.validation_enabled(False):
            terms = self.vae.elbo_terms(x, *y)
        return {
            f"{prefix}_{name}": value.mean()
            for name, value in (("elbo", terms.elbo), ("kl", terms.kl), ("recon", terms.recon))
        }

    def on_validation_epoch_start(self) -> None:
        self.eval_means = EpochMeans()

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch: torch.Tensor | tuple[torch.Tensor, ...], _: int) -> None:
        self._add_terms(batch, "val")

    def test_step(self, batch: torch.Tensor | tuple[torch.Tensor, ...], _: int) -> None:
        self._add_terms(batch, "test")

    def _add_terms(self, batch: torch.Tensor | tuple[torch.Tensor, ...], prefix: str) -> None:
        """The batch's ELBO terms into the epoch's means, weighted by its size."""
        x = batch if isinstance(batch, torch.Tensor) else batch[0]
        self.eval_means.add(self._elbo_terms(batch, prefix), len(x))

    def on_validation_epoch_end(self) -> None:
        """Each rank's means, weighted by its item count in Lightning's sync: the mean over
        all ranks' items."""
        weight = self.eval_means.weight
        for name, value in self.eval_means.pop().items():
            self.log(
                name,
                value,
                prog_bar=name == "val_elbo",
                batch_size=weight,
                on_step=False,
                on_epoch=True,
                sync_dist=True,
            )

    on_test_epoch_end = on_validation_epoch_end

    def configure_optimizers(self) -> Any:
        optimizer = adam(self.vae.parameters(), self.spec.train.lr)
        if self.spec.train.lr_schedule == "constant":
            return optimizer
        steps = self.spec.train.max_epochs * self.steps_per_epoch()
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class VAEData(L.LightningDataModule):
    """The bundle's splits as DataLoaders; training order from an epoch-seeded, resumable sampler
    that also shards the data over DDP ranks."""

    def __init__(self, bundle: DataBundle, batch_size: int, seed: int) -> None:
        super().__init__()
        self.bundle, self.batch_size, self.seed = bundle, batch_size, seed

    @property
    def labels(self) -> bool:
        """Whether the batches carry labels: the trained VAE's kind reads them."""
        return self.trainer.lightning_module.vae.reads_labels

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        loader = with_indices(
            self.bundle.loader("train", self.batch_size, shuffle=False, labels=self.labels)
        )
        return resumable(loader, self.seed, self.trainer.global_rank, self.trainer.world_size)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._fixed("val")

    def test_dataloader(self) -> torch.utils.data.DataLoader:
        return self._fixed("test")

    def _fixed(self, split: str) -> torch.utils.data.DataLoader:
        return self.bundle.loader(
            split,
            self.batch_size,
            shuffle=False,
            generator=torch.Generator().manual_seed(self.seed),
            labels=self.labels,
        )


def check_devices(train: TrainSpec) -> None:
    """SpecError for an accelerator or device count this machine does not have."""
    gpus = torch.cuda.device_count()
    if train.accelerator == "gpu" and gpus == 0:
        raise SpecError(
            "train.accelerator",
            "gpu requested, but torch finds no CUDA device "
            "(torch.cuda.is_available() is False); use cpu or auto",
        )
    if train.accelerator != "cpu" and 0 < gpus < train.devices:
        raise SpecError("train.devices", f"{train.devices} GPUs requested, {gpus} available")
    check_loggers(train)  # tensorboard, mlflow: installed


def make_trainer(
    spec: Spec,
    run: Run,
    num_data: int,
    first_step: int | None = None,
    extra: Sequence[L.Callback] = (),
) -> L.Trainer:
    """The Trainer of ``run`` on ``num_data`` training items; ``first_step``: the
    checkpoint step a resumed run starts at; ``extra``: the caller's own callbacks. Metrics are
    logged every ``log_every_n_steps`` steps, or every epoch's last step when epochs are shorter."""
    t = spec.train
    world_size = t.devices * t.num_nodes
    log_every = min(t.log_every_n_steps, steps_per_epoch(num_data, t.batch_size, world_size))
    callbacks: list[L.Callback] = [RngState(), Throughput()]
    if t.early_stopping_patience:
        callbacks.append(
            EarlyStopping(monitor="val_elbo", mode="max", patience=t.early_stopping_patience)
        )
        callbacks.append(
            BestCheckpoint(  # best.ckpt: the weights at the highest val ELBO
                dirpath=run.checkpoint("best").parent,
                filename="best",
                monitor="val_elbo",
                mode="max",
                save_top_k=1,
                save_weights_only=True,
                enable_version_counter=False,
            )
        )
    callbacks += extra  # at an epoch's end Lightning calls these before the monitoring callbacks
    # a Checkpoint, last: its epoch-end save holds EarlyStopping's and ModelCheckpoint's judgement
    callbacks.append(
        PeriodicCheckpoint(
            run, t.checkpoint_every_steps, t.checkpoint_every_epochs, t.keep_checkpoints
        )
    )
    cpu = t.accelerator == "cpu" or not torch.cuda.is_available()
    return L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        logger=loggers(spec, run, first_step),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO(run)],
        gradient_clip_val=t.gradient_clip or None,
        log_every_n_steps=log_every,
        # PeriodicCheckpoint, a Checkpoint, stands in for Lightning's default ModelCheckpoint
        enable_checkpointing=True,
        num_sanity_val_steps=0,
        enable_progress_bar=t.progress and chatty(),
        enable_model_summary=False,
        deterministic=True if cpu else "warn",  # some CUDA kernels have no deterministic twin
    )
