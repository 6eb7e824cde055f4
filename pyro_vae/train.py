"""Training through Lightning: the LightningModule wraps the estimator's ELBO module.

Per step the loss is the estimator's differentiable loss L(x_batch), a sum over the minibatch
scaled by N/B, so L/N estimates the negative objective per data point. The KL weight at step t is
β_t = β · min(1, (t + 1)/T) for a warm-up of T steps (β_t > 0 as poutine.scale requires).
"""

from __future__ import annotations

import math
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pyro
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from pyro_vae.data import DATASETS, DataBundle
from pyro_vae.registry import SpecError
from pyro_vae.spec import ESTIMATORS, Spec, dump_spec, load_spec
from pyro_vae.vae import VAE

CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"


class VAEModule(L.LightningModule):
    """training_step: the estimator's loss; validation_step: the one-sample ELBO with β = 1."""

    def __init__(self, vae: VAE, spec: Spec, steps_per_epoch: int) -> None:
        super().__init__()
        self.vae = vae
        self.spec = spec
        self.loss_module = ESTIMATORS.instantiate(spec.estimator, "estimator")(vae.model, vae.guide)
        self.warmup_steps = spec.train.warmup_epochs * steps_per_epoch

    def kl_scale(self, step: int) -> float:
        if self.warmup_steps <= 0:
            return self.spec.beta
        return self.spec.beta * min(1.0, (step + 1) / self.warmup_steps)

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.vae.kl_scale = self.kl_scale(self.global_step)
        with pyro.validation_enabled(False):
            loss = self.loss_module(x)
        n = self.vae.num_data or len(x)
        self.log("train_elbo", -loss.detach() / n, prog_bar=True, batch_size=len(x))
        self.log("beta", self.vae.kl_scale, batch_size=len(x))
        return loss

    def _log_elbo_terms(self, x: torch.Tensor, prefix: str) -> None:
        with pyro.validation_enabled(False):
            terms = self.vae.elbo_terms(x)
        for name, value in (("elbo", terms.elbo), ("kl", terms.kl), ("recon", terms.recon)):
            self.log(f"{prefix}_{name}", value.mean(), prog_bar=name == "elbo", batch_size=len(x),
                     on_step=False, on_epoch=True, sync_dist=True)

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        self._log_elbo_terms(x, "val")

    def test_step(self, x: torch.Tensor, batch_idx: int) -> None:
        self._log_elbo_terms(x, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.vae.parameters(), lr=self.spec.train.lr)


class VAEData(L.LightningDataModule):
    """The bundle's splits as DataLoaders (Lightning adds a DistributedSampler under DDP)."""

    def __init__(self, bundle: DataBundle, batch_size: int) -> None:
        super().__init__()
        self.bundle, self.batch_size = bundle, batch_size

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self.bundle.loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self.bundle.loader("val", self.batch_size, shuffle=False)

    def test_dataloader(self) -> torch.utils.data.DataLoader:
        return self.bundle.loader("test", self.batch_size, shuffle=False)


@dataclass
class Prepared:
    """Everything validated before a run directory is touched."""

    spec: Spec
    bundle: DataBundle
    vae: VAE


def prepare(spec: Spec) -> Prepared:
    """Load the data, build the VAE and check the data against the likelihood's support."""
    L.seed_everything(spec.train.seed, verbose=False)
    bundle = DATASETS.instantiate(spec.data, "data").load()
    if spec.train.batch_size > len(bundle.train):
        raise SpecError("train.batch_size", f"{spec.train.batch_size} is larger than the "
                        f"{len(bundle.train)} training items")
    vae = VAE.from_spec(spec, bundle.shape, bundle.levels, bundle.train)
    for split in ("train", "val", "test"):
        x = bundle.split(split)
        if split == "train" and bundle.binarize == "dynamic":
            x = torch.bernoulli(x[:1000])
        vae.check_data(x, f"data ({spec.data.name}, {split} split)")
    vae.num_data = len(bundle.train)
    return Prepared(spec, bundle, vae)


def start_run_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise SpecError("--out", f"{out} exists and is not empty; pass --overwrite or choose "
                            "another directory")
        if not (out / CONFIG).is_file():
            raise SpecError("--out", f"{out} is not a run directory (no {CONFIG}); refusing to "
                            "overwrite it")
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpecError("--out", f"cannot create {out}: {exc.strerror}") from None


def fit(prepared: Prepared, out: Path, overwrite: bool = False) -> VAEModule:
    """Train in a fresh run directory: config.yaml, checkpoints/, metrics.csv."""
    spec, bundle = prepared.spec, prepared.bundle
    start_run_dir(out, overwrite)
    dump_spec(spec, out / CONFIG)
    steps = math.ceil(len(bundle.train) / spec.train.batch_size)
    module = VAEModule(prepared.vae, spec, steps)
    trainer = L.Trainer(
        max_epochs=spec.train.max_epochs,
        accelerator=spec.train.accelerator,
        devices=spec.train.devices,
        logger=CSVLogger(save_dir=str(out), name="", version=""),
        callbacks=[ModelCheckpoint(dirpath=out / CHECKPOINTS, save_last=True, save_top_k=0)],
        log_every_n_steps=max(1, min(50, steps)),
        enable_progress_bar=spec.train.progress,
        enable_model_summary=False,
        deterministic=True,
    )
    with warnings.catch_warnings():  # the logger shares the run directory with config.yaml
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        trainer.fit(module, datamodule=VAEData(bundle, spec.train.batch_size))
    return module


def last_checkpoint(run_dir: Path) -> Path:
    path = run_dir / CHECKPOINTS / "last.ckpt"
    if not path.is_file():
        raise SpecError(str(run_dir), f"no checkpoint at {path}: is this a finished or "
                        "interrupted pyro-vae run?")
    return path


def load_run(run_dir: Path) -> Prepared:
    """Rebuild a run's VAE from its config.yaml and load the last checkpoint's weights.

    Weights only (``torch.load(weights_only=True)``): a checkpoint never runs code on loading.
    """
    if not (run_dir / CONFIG).is_file():
        raise SpecError(str(run_dir), f"not a run directory (no {CONFIG})")
    prepared = prepare(load_spec(run_dir / CONFIG))
    path = last_checkpoint(run_dir)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as exc:  # any unpickling failure means a corrupt or foreign file
        raise SpecError(str(path), f"cannot read checkpoint: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    weights = {k.removeprefix("vae."): v for k, v in state.items() if k.startswith("vae.")}
    try:
        prepared.vae.load_state_dict(weights)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise SpecError(str(path), f"checkpoint does not match {run_dir / CONFIG}: {detail}") from None
    return prepared
