"""Benchmark 1: the training step against a plain-PyTorch VAE, and one whole Lightning epoch.

Step: what ``VAEModule.training_step`` runs: the estimator's loss (``VAEModule.loss``, replayed
from its ``torch.jit`` trace) on ``vae.model``/``vae.guide`` with validation off, then the fused
Adam of ``VAEModule.configure_optimizers`` (zero_grad, backward, step, as Lightning's automatic
optimisation does); against :class:`~benchmarks.floors.PlainVAE` with the same networks and the
same optimizer, on the same pre-drawn minibatches (data loading excluded on both sides). Three
more rows: the ELBO module run eagerly through Pyro's handlers (``train.jit=false``), the VAE's
own densities without Pyro (``vae.log_weights`` for ``trace``, ``vae.elbo_terms`` for
``mean_field``), and the plain loop with torch's default (unfused) Adam. The same comparison for
``trace`` at the published protocol's size (``examples/configs/published/fashion-mnist-vae.yaml``:
gated 2 × 300, latent 40, batch 100).

Epoch: ``pyro_vae.pipeline.fit``, the user's path (Lightning, validation, logging and the
per-epoch checkpoint included), against two floors: a plain loop over the same DataLoader that
also runs a validation pass and saves a checkpoint, and a bare LightningModule
(:class:`_BareModule`: the plain loss, validation pass and checkpoint, nothing logged, no
callbacks), Lightning's own floor. A callback added to fit's Trainer times each of its epochs
and runs one epoch of each floor after it (their order flipping every epoch), so the three
alternate in one process and every pyro-vae epoch is paired with one epoch of each floor. Both
ratios are reported, each with its n and spread; on CPU the target divides by the bare
LightningModule (what pyro-vae adds to Lightning), on a GPU by the plain loop.
"""

from __future__ import annotations

import copy
import itertools
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pyro
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.common import (
    Options,
    Section,
    Spread,
    describe,
    interleaved,
    plural,
    prepared,
    ratios,
    spec_from,
    table,
)
from benchmarks.floors import PlainVAE
from benchmarks.report import number
from pyro_vae import trainer
from pyro_vae.bundle import with_indices
from pyro_vae.pipeline import fit
from pyro_vae.prepared import Prepared
from pyro_vae.trainer import VAEModule

#: step / plain PyTorch; epoch / bare LightningModule on CPU (what pyro-vae adds to Lightning);
#: epoch / plain loop on a GPU (a bare LightningModule is already ~1.15× the plain loop on CPU)
STEP_TARGET, EPOCH_TARGET, GPU_EPOCH_TARGET = 1.10, 1.05, 1.15
ESTIMATORS = ("trace", "mean_field")
#: the published protocol's size (gated 2 × 300, latent 40, batch 100), ``trace`` at β = 1
GATED = "published/fashion-mnist-vae.yaml"


def config(options: Options) -> tuple[str, list[str], dict[str, int]]:
    """(example config, overrides, sizes): Fashion-MNIST 784-400-50, batch 128; toy: digits."""
    if options.toy:
        return (
            "digits.yaml",
            [
                "latent_dim=4",
                "encoder.hidden=[16]",
                "decoder.hidden=[16]",
                "data.limit=96",
                "train.batch_size=32",
            ],
            {"blocks": 2, "steps": 2, "epochs": 1},
        )
    return (
        "fashion-mnist.yaml",
        ["encoder.hidden=[400]", "decoder.hidden=[400]"],
        {"blocks": 30, "steps": 20, "epochs": 10},
    )


def gated_config(options: Options) -> tuple[str, list[str]]:
    """The published preset (toy: digits, gated 16 units)."""
    if options.toy:
        return GATED, [
            "data.name=digits",
            "data.binarize=dynamic",
            "latent_dim=4",
            "encoder.hidden=[16]",
            "decoder.hidden=[16]",
            "data.limit=96",
            "train.batch_size=32",
        ]
    return GATED, []


def train_step(
    module: VAEModule,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor],
    step: int,
    loss_fn: Callable[..., torch.Tensor] | None = None,
) -> None:
    """What ``VAEModule.training_step`` computes on a batch ``(x, idx)`` (β for the step, the
    estimator's loss with validation off; ``loss_fn`` is ``module.loss``, the traced loss, by
    default, or ``module.loss_module``, Pyro eager), then Lightning's automatic optimisation:
    zero_grad, backward, step."""
    module.vae.kl_scale = module.kl_scale(step)
    with pyro.validation_enabled(False):
        loss = (loss_fn or module.loss)(*batch)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def step_runs(prep: Prepared, steps: int, device: torch.device) -> dict[str, Callable[[int], None]]:
    """Five callables, each running ``steps`` optimisation steps on the same minibatches (the
    block index they take is unused: every block reuses the batches)."""
    spec = prep.spec
    vae = prep.vae.to(device)
    module = VAEModule(vae, spec)
    optimizer = module.configure_optimizers()
    eager = VAEModule(copy.deepcopy(vae), spec)
    eager_opt = eager.configure_optimizers()
    untraced = VAEModule(copy.deepcopy(vae), spec)
    untraced_opt = untraced.configure_optimizers()
    plain = PlainVAE(vae).to(device)
    plain_opt = trainer.adam(plain.parameters(), spec.train.lr)
    textbook = PlainVAE(vae).to(device)
    textbook_opt = torch.optim.Adam(textbook.parameters(), lr=spec.train.lr)
    loader = with_indices(prep.bundle.loader("train", spec.train.batch_size, shuffle=True))
    pairs = [
        (x.to(device), idx.to(device))
        for x, idx in itertools.islice(itertools.cycle(loader), steps)
    ]
    batches = [x for x, _ in pairs]
    analytic_kl = spec.estimator.name == "mean_field"

    def ours(_block: int) -> None:
        for i, batch in enumerate(pairs):
            train_step(module, optimizer, batch, i)

    def pyro_eager(_block: int) -> None:
        for i, batch in enumerate(pairs):
            train_step(eager, eager_opt, batch, i, eager.loss_module)

    def densities(_block: int) -> None:
        v = untraced.vae
        for x in batches:
            with pyro.validation_enabled(False):  # as on the pyro-vae route
                elbo = v.elbo_terms(x).elbo if analytic_kl else v.log_weights(x)(1)
            loss = -(v.num_data / len(x)) * elbo.sum()
            untraced_opt.zero_grad()
            loss.backward()
            untraced_opt.step()

    def floor(net: PlainVAE, opt: torch.optim.Optimizer) -> Callable[[int], None]:
        def run(_block: int) -> None:
            for x in batches:
                loss = net.loss(x)
                opt.zero_grad()
                loss.backward()
                opt.step()

        return run

    return {
        "pyro-vae": ours,
        "Pyro eager": pyro_eager,
        "densities, no Pyro": densities,
        "plain PyTorch": floor(plain, plain_opt),
        "plain, default Adam": floor(textbook, textbook_opt),
    }


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
    """Times each epoch of fit's Trainer (start to next start, the floors' epochs taken out) and
    after each one runs one epoch of every floor, their order flipping every epoch, so the three
    alternate in one process: each pyro-vae epoch has a plain-loop epoch and a bare
    LightningModule epoch beside it, and a drift of the machine's speed cancels in their
    ratios."""

    def __init__(self, floors: dict[str, Callable[[], float]]) -> None:
        self.floors = floors
        self.times: dict[str, list[float]] = {PYRO_VAE: [], **{name: [] for name in floors}}
        self.guard: list[float] = []  # seconds in the guard, per pyro-vae epoch
        self._start = 0.0
        self._floor_time = 0.0
        self._guard = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Times ``VAEModule.on_before_optimizer_step`` (the finite-and-blow-up guard) inside
        the epochs: Lightning looks the hook up on the instance."""
        inner = pl_module.on_before_optimizer_step

        def timed(optimizer: torch.optim.Optimizer) -> None:
            start = time.perf_counter()
            inner(optimizer)
            self._guard += time.perf_counter() - start

        pl_module.on_before_optimizer_step = timed  # type: ignore[method-assign]

    def _mark(self) -> None:
        now = time.perf_counter()
        if self._start:
            self.times[PYRO_VAE].append(now - self._start - self._floor_time)
            self.guard.append(self._guard)
        self._start, self._guard = now, 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        start = time.perf_counter()
        names = list(self.floors)
        if len(self.times[PYRO_VAE]) % 2:
            names.reverse()
        for name in names:
            with torch.enable_grad():
                self.times[name].append(self.floors[name]())
        self._floor_time = time.perf_counter() - start

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark()


class _OneEpoch(L.Callback):
    """The seconds of a one-epoch fit from its epoch's start to the end of training (validation
    and the module's checkpoint included; the Trainer's set-up and tear-down left out)."""

    def __init__(self) -> None:
        self.start = self.seconds = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.start


class _BareModule(L.LightningModule):
    """The plain VAE's loss, validation pass and per-epoch checkpoint in a LightningModule; one
    optimizer for its whole life, so that one-epoch fits continue its Adam state."""

    def __init__(self, plain: PlainVAE, lr: float, checkpoint: Path) -> None:
        super().__init__()
        self.plain, self.checkpoint = plain, checkpoint
        self.optimizer = trainer.adam(self.plain.parameters(), lr)

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.plain.loss(x)

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        self.plain.elbo(x)

    def on_train_epoch_end(self) -> None:
        self.trainer.save_checkpoint(self.checkpoint)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer


#: the routes of the epoch comparison
PYRO_VAE, PLAIN, BARE = "pyro-vae", "plain PyTorch loop", "bare LightningModule"


def epoch_times(
    prep: Prepared, epochs: int, device: torch.device
) -> tuple[dict[str, list[float]], list[float]]:
    """Seconds per epoch of each route over ``epochs`` triples after one warm-up triple:
    ``pyro_vae.pipeline.fit`` (the user's path), and after each of its epochs one epoch of the
    plain loop and one of :class:`_BareModule` (a one-epoch fit of a fresh Trainer around the
    same module and optimizer), run from a callback of fit's Trainer; and the seconds of each
    pyro-vae epoch spent in its finite-and-blow-up guard."""
    spec = prep.spec
    plain = PlainVAE(prep.vae).to(device)
    plain_opt = trainer.adam(plain.parameters(), spec.train.lr)
    batches = prep.bundle.loader("train", spec.train.batch_size, shuffle=True)
    val = prep.bundle.loader("val", spec.train.batch_size, shuffle=False)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        bare = _BareModule(PlainVAE(prep.vae).to(device), spec.train.lr, out / "bare.ckpt")

        def plain_epoch() -> float:
            start = time.perf_counter()
            for x in batches:
                loss = plain.loss(x.to(device))
                plain_opt.zero_grad()
                loss.backward()
                plain_opt.step()
            for x in val:
                plain.elbo(x.to(device))
            torch.save(
                {"model": plain.state_dict(), "optimizer": plain_opt.state_dict()},
                out / "plain.ckpt",
            )
            return time.perf_counter() - start

        def bare_epoch() -> float:
            one = _OneEpoch()
            L.Trainer(
                max_epochs=1,
                accelerator="gpu" if device.type == "cuda" else "cpu",
                devices=1,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                num_sanity_val_steps=0,
                callbacks=[one],
            ).fit(bare, batches, val)
            return one.seconds

        clock = _EpochClock({PLAIN: plain_epoch, BARE: bare_epoch})
        fit(prep, out / "run", callbacks=[clock])
    return {route: seconds[1:] for route, seconds in clock.times.items()}, clock.guard[1:]


def epoch_text(
    times: dict[str, list[float]],
    guard: list[float],
    steps_per_epoch: int,
    step_extra_ms: float,
    cuda: bool,
) -> tuple[str, dict[str, Any], str]:
    """(the epoch table and what it says, the record's data, the note under the targets);
    ``guard``: the seconds of each pyro-vae epoch spent in the finite-and-blow-up guard."""
    pairs = {
        (PYRO_VAE, PLAIN): "pyro-vae / plain PyTorch loop",
        (PYRO_VAE, BARE): "pyro-vae / bare LightningModule",
        (BARE, PLAIN): "bare LightningModule / plain PyTorch loop",
    }
    spreads = {
        key: Spread.of([a / b for a, b in zip(times[key[0]], times[key[1]])]) for key in pairs
    }
    target = (PYRO_VAE, PLAIN) if cuda else (PYRO_VAE, BARE)
    limit = GPU_EPOCH_TARGET if cuda else EPOCH_TARGET
    rows = [
        [
            label + (" **(the target)**" if key == target else ""),
            f"**{spreads[key].median:.3f}×**"
            if key[0] == PYRO_VAE
            else f"{spreads[key].median:.3f}×",
            f"{spreads[key].q1:.3f}–{spreads[key].q3:.3f}",
            f"{spreads[key].low:.3f}–{spreads[key].high:.3f}",
            spreads[key].n,
        ]
        for key, label in pairs.items()
    ]
    seconds = table(
        ["route", "s per epoch (median)", "range"],
        [
            [route, f"{Spread.of(t).median:.2f}", f"{min(t):.2f}–{max(t):.2f}"]
            for route, t in times.items()
        ],
    )
    ratios_table = table(["paired ratio (per epoch triple)", "median", "IQR", "range", "n"], rows)
    extra = {
        route: (Spread.of(times[route]).median - Spread.of(times[PLAIN]).median)
        / steps_per_epoch
        * 1e3
        for route in (PYRO_VAE, BARE)
    }
    ours, bare = extra[PYRO_VAE], extra[BARE]
    guard_ms = Spread.of(guard).median / steps_per_epoch * 1e3
    share = Spread.of(
        [g / (t - b) for g, t, b in zip(guard, times[PYRO_VAE], times[BARE]) if t > b] or [math.nan]
    ).median
    mine = spreads[target]
    where = (
        f"Per step, pyro-vae's epoch costs {ours:.2f} ms more than the plain loop's (medians): "
        f"the training step itself {step_extra_ms:.2f} ms (`trace` row above), Lightning's own "
        f"loop {bare:.2f} ms (the bare LightningModule's excess), the other "
        f"{ours - step_extra_ms - bare:.2f} ms what `VAEModule`/`fit` add and noise. Of that, "
        f"the finite-and-blow-up guard (`VAEModule.on_before_optimizer_step`, timed inside the "
        f"epochs) takes **{guard_ms:.2f} ms a step**, {share:.0%} of pyro-vae's excess over "
        "the bare LightningModule (median per epoch): it reads every parameter and every "
        "gradient once a step (min/max and sum), memory-bound, so that a NaN, an infinity or "
        "a blow-up stops the run before the step reaches the weights; the rest is the "
        "callbacks, the resumable sampler and the logging steps' extra forward pass. "
        + (
            f"On a GPU the target divides by the plain loop: ≤ {GPU_EPOCH_TARGET:.2f}×."
            if cuda
            else f"On CPU the bare LightningModule alone is {spreads[(BARE, PLAIN)].median:.3f}× the "
            "plain loop, so the CPU target divides by it: what pyro-vae adds on top of "
            f"Lightning, ≤ {EPOCH_TARGET:.2f}× (on a GPU the target divides by the plain loop, "
            f"≤ {GPU_EPOCH_TARGET:.2f}×)."
        )
    )
    other = (PYRO_VAE, BARE) if cuda else (PYRO_VAE, PLAIN)
    floor, other_floor = (
        ("the plain PyTorch loop", "a bare LightningModule")
        if cuda
        else ("a bare LightningModule", "the plain PyTorch loop")
    )
    note = (
        f"The epoch row of section {number('step')} divides by **{floor}** "
        f"({mine.median:.3f}×, IQR {mine.q1:.3f}–{mine.q3:.3f}, n={mine.n} paired epochs; "
        f"target ≤ {limit:.2f}×); against {other_floor} the same epoch is "
        f"{spreads[other].median:.3f}× (IQR {spreads[other].q1:.3f}–{spreads[other].q3:.3f}, "
        f"n={spreads[other].n}), with no target"
        + (
            "."
            if cuda
            else " on CPU (Lightning's own loop, the bare LightningModule, is "
            f"{spreads[(BARE, PLAIN)].median:.3f}× the plain one)."
        )
    )
    data = {
        "seconds": times,
        "ratios": {label: spreads[key].__dict__ for key, label in pairs.items()},
        "target_divides_by": target[1],
        "extra_ms_per_step": extra,
        "guard_seconds": guard,
        "guard_ms_per_step": guard_ms,
        "guard_share_of_excess_over_bare": share,
    }
    return "\n\n".join([seconds, ratios_table, where]), data, note


def run(options: Options, command: str) -> Section:
    name, overrides, size = config(options)
    section = Section(
        "step",
        "Training step vs plain PyTorch; epoch vs plain PyTorch and a bare LightningModule",
        command,
    )
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
        eager = ratios(times, "Pyro eager", "plain PyTorch")
        untraced = ratios(times, "densities, no Pyro", "plain PyTorch")
        textbook = ratios(times, "pyro-vae", "plain, default Adam")
        syncs = host_syncs(runs["pyro-vae"], size["steps"])
        floor_syncs = host_syncs(runs["plain PyTorch"], size["steps"])
        rows.append(
            [
                f"`{estimator}`",
                *(f"{ms[k].median:.2f}" for k in runs),
                f"**{ratio.median:.3f}×**",
                f"{ratio.q1:.3f}–{ratio.q3:.3f}",
                f"{eager.median:.3f}×",
                f"{untraced.median:.3f}×",
                f"{textbook.median:.3f}×",
                f"{syncs:g} / {floor_syncs:g}",
            ]
        )
        section.target(f"step ({estimator}) / plain PyTorch", ratio.median, STEP_TARGET)
        section.data[estimator] = {
            "ms_per_step": {k: v.__dict__ for k, v in ms.items()},
            "ratio": ratio.__dict__,
            "eager_ratio": eager.__dict__,
            "untraced_ratio": untraced.__dict__,
            "default_adam_ratio": textbook.__dict__,
            "host_syncs_per_step": syncs,
            "floor_host_syncs_per_step": floor_syncs,
        }
    gated_name, gated_overrides = gated_config(options)
    gated = prepared(spec_from(gated_name, gated_overrides + base[len(overrides) :]))
    times = interleaved(
        step_runs(gated, size["steps"], options.device), size["blocks"], options.device
    )
    ms = {k: Spread.of([t / size["steps"] * 1e3 for t in v]) for k, v in times.items()}
    ratio = ratios(times, "pyro-vae", "plain PyTorch")
    rows.append(
        [
            "`trace`, gated 2×300, batch 100 (published preset)",
            *(f"{ms[k].median:.2f}" for k in times),
            f"**{ratio.median:.3f}×**",
            f"{ratio.q1:.3f}–{ratio.q3:.3f}",
            *(
                f"{ratios(times, k, f).median:.3f}×"
                for k, f in (
                    ("Pyro eager", "plain PyTorch"),
                    ("densities, no Pyro", "plain PyTorch"),
                    ("pyro-vae", "plain, default Adam"),
                )
            ),
            "–",
        ]
    )
    section.target(
        "step (trace, gated 2×300, batch 100) / plain PyTorch", ratio.median, STEP_TARGET
    )
    section.data["gated"] = {
        "ms_per_step": {k: v.__dict__ for k, v in ms.items()},
        "ratio": ratio.__dict__,
    }
    prep = preps["trace"]
    times, guard = epoch_times(prep, size["epochs"], options.device)
    steps_per_epoch = -(-len(prep.bundle.train) // prep.spec.train.batch_size)
    trace_ms = section.data["trace"]["ms_per_step"]
    step_extra = trace_ms["pyro-vae"]["median"] - trace_ms["plain PyTorch"]["median"]
    cuda = options.device.type == "cuda"
    epoch_body, epoch_data, note = epoch_text(times, guard, steps_per_epoch, step_extra, cuda)
    section.data["epoch"] = {"steps_per_epoch": steps_per_epoch, **epoch_data}
    section.data["targets_note"] = note
    divides_by = epoch_data["target_divides_by"]
    epoch = epoch_data["ratios"][f"pyro-vae / {divides_by}"]
    section.target(
        f"epoch, pyro-vae (`trace`) / {divides_by} (median of n={epoch['n']} paired epochs)",
        epoch["median"],
        GPU_EPOCH_TARGET if cuda else EPOCH_TARGET,
    )
    section.body = "\n\n".join(
        [
            (
                f"Setup: {describe(prep, name, overrides)}; Adam lr {prep.spec.train.lr}, "
                f"{plural(options.threads, 'thread')}. {size['blocks']} interleaved blocks of "
                f"{size['steps']} "
                "steps per route; ratio = median of the per-block paired ratios (IQR beside it)."
            ),
            table(
                [
                    "estimator",
                    "pyro-vae ms/step",
                    "Pyro eager ms/step",
                    "densities w/o Pyro ms/step",
                    "plain ms/step",
                    "plain, default Adam ms/step",
                    "ratio",
                    "ratio IQR",
                    "Pyro eager ratio",
                    "w/o Pyro ratio",
                    "pyro-vae / plain with default Adam",
                    "host syncs/step (ours / plain)",
                ],
                rows,
            ),
            (
                "*pyro-vae*: exactly what `VAEModule.training_step` runs: the estimator's loss replayed "
                "from its `torch.jit` trace (`train.jit`, on by default; "
                "`inference.compiled.TracedLoss`), then torch's fused Adam. *Pyro eager* "
                "(`train.jit=false`): the same ELBO module run through Pyro's handlers every step (for "
                "`trace` and `mean_field` with a reparameterized guide their fast path: the traced "
                "sites' scaled log densities summed in one graph). *densities w/o Pyro*: the same "
                "VAE's distributions summed in plain torch (`vae.log_weights` / `vae.elbo_terms`), no "
                "Pyro messengers. *plain*: the hand-written loss with the same fused Adam, the floor "
                "of the target. *plain, default Adam*: the same loop with `torch.optim.Adam`'s default "
                "per-tensor implementation, what a textbook loop runs; its column shows what a user "
                "gains against it. The gap between Pyro eager and the densities is Pyro's handler "
                "machinery (plates, trace, replay: Python per sample site), the gap between the "
                "densities and the floor the `torch.distributions` objects and, for `trace`, the Monte "
                "Carlo log q − log p in place of the closed-form KL; the trace removes both kinds of "
                "Python and leaves the tensor ops. *host syncs*: `.item()`-style reads of a tensor "
                "into a Python number per step; the trace's are its recorded shape arithmetic "
                "(`aten::Int` on the 0-d int64 CPU tensors of `prim::NumToTensor`), which wait for no "
                "device; fused Adam reads none."
            ),
            (
                f"Whole epoch ({steps_per_epoch} steps, validation and checkpoint included on every "
                f"route), {plural(size['epochs'], 'triple')} after a warm-up triple: each epoch of "
                "`fit` (the "
                "user's path: Lightning, `VAEModule`, its callbacks and logger) is followed by one "
                "epoch of the plain PyTorch loop over the same DataLoader (its own validation pass and "
                "checkpoint) and one of a bare LightningModule (`benchmarks.step._BareModule`: the "
                "plain loss, "
                "validation pass and checkpoint, no callbacks, no logger; a one-epoch fit, its "
                "Trainer's set-up and tear-down not timed), the two floors' order flipping every "
                "epoch. Each ratio is the median of the per-triple ratios: both are measured on the "
                "same epochs, so either can be read without the other's noise."
            ),
            epoch_body,
        ]
    )
    return section
