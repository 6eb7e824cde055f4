"""A run's parts, made from its spec without Lightning (which only training imports): the data
loaded, the VAE built and both checked (:func:`prepare`), and for a trained run its weights
loaded (:func:`load_run`), as ``evaluate``, ``encode``, ``sample`` and ``train`` start.
"""

from __future__ import annotations

import math
import os
import random
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from pyro_vae.bundle import DataBundle
from pyro_vae.checkpoints import data_digest
from pyro_vae.console import chatty
from pyro_vae.data import DATASETS, SPLITS
from pyro_vae.memory import available_memory
from pyro_vae.registry import Component, SpecError, built
from pyro_vae.rundir import TRANSFORM, Run
from pyro_vae.scoring import particles_per_chunk
from pyro_vae.spec import Spec
from pyro_vae.vae import VAE

#: Where the seed is left for Lightning, whose DDP processes re-seed from it.
SEED_VARIABLE = "PL_GLOBAL_SEED"


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators with ``seed`` and leave it in
    :data:`SEED_VARIABLE`: what Lightning's ``seed_everything(seed, verbose=False)`` does
    (``tests/pyro_vae/test_startup.py`` compares the two), without importing Lightning."""
    os.environ[SEED_VARIABLE] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def random_states_kept() -> Iterator[None]:
    """Inside the block anything may seed or draw (:func:`seed_everything`); after it Python's,
    numpy's and torch's (CPU and CUDA) generators and :data:`SEED_VARIABLE` are as before."""
    python, numpy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    seed = os.environ.get(SEED_VARIABLE)
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        if seed is None:
            os.environ.pop(SEED_VARIABLE, None)
        else:
            os.environ[SEED_VARIABLE] = seed


def steps_per_epoch(num_data: int, batch_size: int, world_size: int) -> int:
    """Optimizer steps per epoch and rank: ⌈⌈N/W⌉/B⌉ (the sampler pads N to a multiple of W)."""
    return math.ceil(math.ceil(num_data / world_size) / batch_size)


@dataclass
class Prepared:
    """Everything validated before a run directory is touched."""

    spec: Spec
    bundle: DataBundle
    vae: VAE

    @cached_property
    def data_sha256(self) -> str:
        return data_digest(self.bundle)

    def labels(self, split: str, limit: int | None = None) -> torch.Tensor | None:
        """The labels of the first ``limit`` points of ``split`` where the model kind reads
        them (:attr:`pyro_vae.vae.VAE.reads_labels`), else None."""
        return labels(self.bundle, self.vae, split, limit)


def prepare(spec: Spec) -> Prepared:
    """Load the data, build the VAE and check the data against the likelihood's support."""
    seed_everything(spec.train.seed)
    bundle = built(
        DATASETS.instantiate(spec.data, "data").load(), DataBundle, "data.name", spec.data.name
    )
    if spec.train.batch_size > len(bundle.train):
        raise SpecError(
            "train.batch_size",
            f"{spec.train.batch_size} is larger than the {len(bundle.train)} training items",
        )
    check_kl_weight(spec, len(bundle.train))
    check_step_memory(
        spec,
        bundle.shape,
        {spec.estimator.name: spec.estimator},
        spec.train.batch_size,
        "estimator.particles",
    )
    vae = VAE.from_spec(
        spec, bundle.shape, bundle.levels, bundle.train, bundle.num_classes
    )  # checks its sizes and labels
    plate = spec.estimator.params.get("data_plate")
    if plate not in (None, "data"):
        raise SpecError("estimator.data_plate", f"the VAE's data plate is 'data', got {plate!r}")
    for split in SPLITS:
        x = getattr(bundle, split)
        if len(x) == 0:  # training validates every epoch; evaluation needs its split
            if split == "val" or split == spec.evaluate.split:
                use = "training validates on it" if split == "val" else f"evaluate.split is {split}"
                raise SpecError(
                    f"data.{split}_fraction",
                    f"leaves the {split} split of {bundle.name} empty, but {use}",
                )
            continue
        if split == "train" and bundle.collate is not None:  # as training batches will be
            x = bundle.collate(x[:1000])
        vae.check_data(x, f"data ({spec.data.name}, {split} split)")
    vae.num_data = len(bundle.train)
    vae.kind.count_labels(bundle.labels.get("train"))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        if (
            spec.estimator.name == "mean_field"
            and chatty()
            and not vae.elbo_terms(bundle.train[:1], labels(bundle, vae, "train", 1)).analytic_kl
        ):
            print(
                f"pyro-vae: note: mean_field takes the KL term by Monte Carlo, log q(z|x) − "
                f"log p(z) at one draw: guide {spec.guide.name} and prior {spec.prior.name} "
                "have no closed-form KL",
                file=sys.stderr,
            )
    with torch.random.fork_rng(devices=[]):  # one particle must fit evaluate.memory_budget_mb
        particles_per_chunk(
            vae,
            bundle.split(spec.evaluate.split)[:1],
            spec.evaluate.num_samples,
            spec.evaluate.memory_budget_mb,
            labels(bundle, vae, spec.evaluate.split, 1),
        )
    return Prepared(spec, bundle, vae)


def labels(bundle: DataBundle, vae: VAE, split: str, limit: int | None) -> torch.Tensor | None:
    """:meth:`Prepared.labels` before the Prepared is made."""
    return bundle.split_labels(split)[:limit] if vae.reads_labels else None


def train_device(spec: Spec) -> torch.device:
    """Where the spec trains: a GPU when it asks for one and torch has one."""
    gpu = spec.train.accelerator != "cpu" and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def check_step_memory(
    spec: Spec, shape: tuple[int, ...], estimators: Mapping[str, Component], points: int, key: str
) -> None:
    """SpecError naming ``key`` when a step of one of ``estimators`` (label → component)
    cannot fit, checked by arithmetic before training or scoring starts: k particles of
    B = ``points`` data points, each decoded to the P values of an item of ``shape``, hold at
    least k·B·P float32 (4 bytes), the decoder's output alone; the bound is the memory free
    where the spec trains (a GPU's, or :func:`pyro_vae.memory.available_memory`; unchecked where
    it cannot be read)."""
    device = train_device(spec)
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else available_memory()
    size = math.prod(shape)
    for label, component in estimators.items():
        k = component.params.get("particles", 1)
        need = 4 * k * points * size
        if free is not None and need > free:
            raise SpecError(
                key,
                f"{label}: {k} particles × {points} points × {size} values = "
                f"{k * points * size:.3g} floats per step, at least "
                f"{need / 2**30:.3g} GiB, more than the {free / 2**30:.3g} GiB of "
                "memory free; lower the particles or train.batch_size",
            )


def check_kl_weight(spec: Spec, num_data: int) -> None:
    """SpecError when the smallest KL weight, β_0 = β·min(1, 1/T) at the first step of a T-step
    warm-up, is below float32's smallest normal number: the KL term would vanish from the loss
    (or β_0 round to 0, which poutine.scale refuses)."""
    t = spec.train
    steps = t.warmup_epochs * steps_per_epoch(num_data, t.batch_size, t.devices)
    first, tiny = spec.beta * min(1.0, 1.0 / steps) if steps else spec.beta, 1.2e-38
    if not first >= tiny:
        key = "train.warmup_epochs" if steps > 1 else "beta"
        raise SpecError(
            key,
            f"makes the first step's KL weight β·min(1, 1/T) = {first:.3g} "
            f"(β = {spec.beta:g}, T = {steps:g} warm-up steps), below float32's "
            f"smallest normal number {tiny:g}: the KL term would vanish",
        )


def load_run(run: Path | str | Run, spec: Spec | None = None) -> Prepared:
    """Rebuild a run's VAE from its config.yaml (or ``spec``, e.g. with other ``evaluate``
    settings) and load the weights of :meth:`Run.evaluated_checkpoint` (the best validation
    ELBO's with early stopping, else the last), checked against the spec and data the checkpoint
    was trained on; the data transform refitted on loading must equal the one the run saved
    (transform.json)."""
    run = run if isinstance(run, Run) else Run(run)
    prepared = prepare(spec or run.spec)
    run.load_weights(prepared.vae, prepared.spec, lambda: prepared.data_sha256)
    saved = run.transform_state()
    if saved is not None and saved != prepared.bundle.transform_state():
        raise SpecError(
            str(run.root / TRANSFORM),
            "the data now give another transform than the run was "
            "trained with (its training split changed): restore the data file",
        )
    return prepared
