"""Benchmark 3, quick form: test log p(x) after one short epoch, trained and scored as a user would
(``pyro_vae.trainer.prepare`` + ``fit``, then ``pyro_vae.scoring.evaluate`` with K = 5000).

Fashion-MNIST, dynamically binarized, 784-200-200-50 tanh MLP, Bernoulli likelihood
(``examples/configs/fashion-mnist.yaml``): a VAE (k = 1), IWAE k = 5 trained with DReG, and a
VampPrior (500 pseudo-inputs); and the embedded ``digits`` with the categorical likelihood over 17
grey levels (``examples/configs/digits-categorical.yaml``). A smoke run of the whole path: its
numbers are not comparable with the literature.

``python -m benchmarks.quality`` runs this section alone, ``python -m benchmarks`` with the speed
sections. The published protocol (hours; resumable) is :mod:`benchmarks.published`.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import Options, Section, Skip, prepared, spec_from, table
from pyro_vae.scoring import evaluate
from pyro_vae.trainer import fit

PUBLISHED = {"VAE (k=1)": -228.70, "VampPrior": -227.35}
PAPER = "Exemplar VAE (Norouzi et al. 2020), Fashion-MNIST, dynamic binarization"
# (label, example config, overrides)
MODELS = (
    ("VAE (k=1)", "fashion-mnist.yaml", ()),
    ("IWAE k=5, DReG", "fashion-mnist.yaml", ("estimator.name=dreg", "estimator.particles=5")),
    ("VampPrior", "fashion-mnist.yaml", ("prior.name=vamp", "prior.pseudo_inputs=500")),
    ("digits, categorical-17", "digits-categorical.yaml", ()),
)
TOY_NETS = ("latent_dim=4", "encoder.hidden=[16]", "decoder.hidden=[16]")


@dataclass(frozen=True)
class Protocol:
    epochs: int  # Fashion-MNIST models
    digits_epochs: int
    seeds: tuple[int, ...]
    train_limit: int | None  # training images (None: all)
    test_points: int | None  # test images scored (None: all)
    num_samples: int


#: our earlier 100-epoch protocol on our configs (``benchmarks.richer`` trains its rows with it)
FULL = Protocol(epochs=100, digits_epochs=60, seeds=(0, 1, 2), train_limit=None,
                test_points=None, num_samples=5000)
QUICK = Protocol(epochs=1, digits_epochs=10, seeds=(0,), train_limit=6000, test_points=200,
                 num_samples=5000)
TOY = Protocol(epochs=1, digits_epochs=1, seeds=(0,), train_limit=64, test_points=4,
               num_samples=16)


def overrides_for(config: str, extra: tuple[str, ...], protocol: Protocol,
                  seed: int, options: Options) -> list[str]:
    digits = config.startswith("digits")
    # toy: digits stand in for Fashion-MNIST (a new data.name resets data's other keys: first)
    swap = ["data.name=digits", "data.binarize=dynamic"] if options.toy and not digits else []
    out = [*swap, *extra, f"train.seed={seed}", "train.progress=false",
           f"train.max_epochs={protocol.digits_epochs if digits else protocol.epochs}",
           f"evaluate.num_samples={protocol.num_samples}"]
    if protocol.train_limit and not digits:
        out.append(f"data.limit={protocol.train_limit}")
    if options.toy:
        out += [*TOY_NETS, f"data.limit={protocol.train_limit}", "train.batch_size=16"]
        if "prior.name=vamp" in extra:
            out.append("prior.pseudo_inputs=4")
    if options.device.type == "cuda":
        out.append("train.accelerator=gpu")
    return out


def train_and_score(config: str, overrides: list[str], protocol: Protocol,
                    options: Options) -> dict[str, float]:
    prep = prepared(spec_from(config, overrides))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        fit(prep, Path(tmp) / "run")
    train_s = time.perf_counter() - start
    x = prep.bundle.split("test")[:protocol.test_points].to(options.device)
    torch.manual_seed(prep.spec.train.seed)
    result = evaluate(prep.vae.to(options.device), x, "test", protocol.num_samples,
                      prep.spec.evaluate.memory_budget_mb)
    return {"log_px": result.log_px, "log_px_sem": result.log_px_sem, "elbo": result.elbo,
            "mc_stderr": result.log_px_stderr, "ess": result.ess,
            "active_units": result.active_units, "latent_dim": result.latent_dim,
            "active_per_layer": result.active_per_layer,
            "bits_per_dim": result.bits_per_dim or float("nan"), "test_points": len(x),
            "train_items": len(prep.bundle.train), "train_s": train_s,
            "eval_s": result.wall_time_s}


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def _load_runs(path: Path | None) -> dict[str, dict[str, float]]:
    """Finished runs kept by a long benchmark (``benchmarks.richer``), {} when none."""
    try:
        return json.loads(path.read_text()) if path else {}
    except FileNotFoundError:
        return {}


def quick(options: Options, command: str) -> Section:
    """The section under :data:`QUICK` (:data:`TOY` at toy size)."""
    return run(options, command, TOY if options.toy else QUICK)


def run(options: Options, command: str, protocol: Protocol) -> Section:
    """Each (model, seed) trained and scored, seeds outermost."""
    section = Section("quality-quick", "Quality: test log p(x) (quick smoke run)", command)
    rows, notes = [], []
    finished: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in MODELS}
    skipped: dict[str, str] = {}
    for seed in protocol.seeds:
        for label, config, extra in MODELS:
            if label in skipped:
                continue
            try:
                finished[label].append(train_and_score(
                    config, overrides_for(config, extra, protocol, seed, options), protocol,
                    options))
            except Skip as exc:
                skipped[label] = str(exc)
    for label, config, extra in MODELS:
        if label in skipped:
            notes.append(f"{label}: skipped ({skipped[label]})")
            continue
        runs = finished[label]
        section.data[label] = runs
        if any(r["active_units"] == 0 for r in runs):
            notes.append(f"**{label}: posterior collapse** (no active unit: q(z|x) ≈ p(z), "
                         "the decoder ignores z, so the ELBO equals log p̂ and its Monte Carlo "
                         "error is ~0).")
        epochs = protocol.digits_epochs if config.startswith("digits") else protocol.epochs
        published = PUBLISHED.get(label)
        log_px = [r["log_px"] for r in runs]
        shown = published is not None and not options.toy
        gap = f" ({statistics.fmean(log_px) - published:+.2f})" if shown else ""
        bpd = "" if config != "digits-categorical.yaml" else \
            f"; {statistics.fmean(r['bits_per_dim'] for r in runs):.3f} bits/dim"
        rows.append([
            label, " ".join([f"`{config}`", *(f"`--set {o}`" for o in extra)]), epochs,
            f"{runs[0]['train_items']} / {runs[0]['test_points']}",
            ", ".join(map(str, protocol.seeds)), f"**{_mean_std(log_px)}**{bpd}",
            f"{published:.2f}{gap}" if shown else "–",
            _mean_std([r["elbo"] for r in runs]),
            f"{statistics.fmean(r['mc_stderr'] for r in runs):.3f}",
            f"{runs[0]['active_units']}/{runs[0]['latent_dim']}",
            f"{sum(r['train_s'] for r in runs):.1f}", f"{sum(r['eval_s'] for r in runs):.1f}"])
    section.body = "\n\n".join([
        f"Protocol: {_epochs(protocol.epochs)} on Fashion-MNIST "
        f"({_epochs(protocol.digits_epochs)} on digits), seeds {list(protocol.seeds)}, "
        "training images "
        f"{protocol.train_limit or 'all'}, test images scored {protocol.test_points or 'all'}, "
        f"K = {protocol.num_samples}; Adam lr and batch as in each config. Published: {PAPER}."
        " **Quick run: one short epoch on a subset, so the figures are far from converged "
        "and not comparable with the published ones; `make bench-published` runs the published "
        "protocol (section 3 above).**",
        table(["model", "config", "epochs", "train / test images", "seeds",
               "test log p(x) (mean ± std over seeds)", "published (ours − published)",
               "test ELBO", "mean MC s.e.", "active units", "train s (all seeds)",
               "eval s (all seeds)"], rows),
        "log p(x) is the importance-sampled stochastic lower bound (mean over test images); "
        "MC s.e. is the mean per-image Monte Carlo standard error of that bound.",
        *notes,
    ])
    return section


def main(argv: list[str] | None = None) -> None:
    from benchmarks.cli import finish, options_from, parser

    p = parser("Quality, quick form: one short epoch on a subset (minutes); the published "
               "protocol is python -m benchmarks.published.")
    args = p.parse_args(argv)
    finish(args, options_from(args), {"quality-quick": quick})


if __name__ == "__main__":
    main()
