"""Benchmark 4: how cost grows with size. One training epoch (pyro-vae's step over the data
set's DataLoader) as the training data doubles (1×, 2×, 4×), and ``importance_log_px`` as K
doubles, on ``examples/configs/fashion-mnist.yaml`` (784-200-200-50). Fitting t ∝ n^p by least
squares on log t against log n gives the exponent p; linear cost is p = 1. The sizes alternate
within each round; the fit uses each size's fastest round, the one least disturbed by other
processes (on this shared machine a contended round can take 10× longer).
"""

from __future__ import annotations

import dataclasses

import torch

from benchmarks.common import (
    Options,
    Section,
    clock,
    describe,
    exponent,
    plural,
    prepared,
    spec_from,
    table,
)
from benchmarks.step import train_step
from pyro_vae.bundle import with_indices
from pyro_vae.scoring import importance_log_px
from pyro_vae.trainer import VAEModule

MULTIPLES = (1, 2, 4)
LINEAR = 1.10  # at most 10 % above linear growth


def config(options: Options) -> tuple[str, list[str], dict[str, int]]:
    if options.toy:
        return (
            "digits.yaml",
            ["latent_dim=4", "encoder.hidden=[16]", "decoder.hidden=[16]", "train.batch_size=16"],
            {"points": 32, "samples": 8, "images": 2, "rounds": 1},
        )
    return "fashion-mnist.yaml", [], {"points": 8192, "samples": 1250, "images": 16, "rounds": 5}


def run(options: Options, command: str) -> Section:
    name, overrides, size = config(options)
    prep = prepared(spec_from(name, overrides))
    device, spec = options.device, prep.spec
    vae = prep.vae.to(device)
    module = VAEModule(vae, spec)
    optimizer = module.configure_optimizers()
    test = prep.bundle.split("test")[: size["images"]].to(device)
    budget = spec.evaluate.memory_budget_mb
    points = [size["points"] * m for m in MULTIPLES]
    samples = [size["samples"] * m for m in MULTIPLES]

    def epoch(n: int) -> None:
        bundle = dataclasses.replace(prep.bundle, train=prep.bundle.train[:n])
        loader = with_indices(bundle.loader("train", spec.train.batch_size, shuffle=True))
        for i, (x, idx) in enumerate(loader):
            train_step(module, optimizer, (x.to(device), idx.to(device)), i)

    def evaluation(k: int) -> None:
        with torch.no_grad():
            importance_log_px(vae, test, k, budget)

    epoch(points[0])  # warm-up
    evaluation(samples[0])
    epoch_s: dict[int, list[float]] = {n: [] for n in points}
    is_s: dict[int, list[float]] = {k: [] for k in samples}
    for r in range(size["rounds"]):
        order = range(len(MULTIPLES)) if r % 2 == 0 else reversed(range(len(MULTIPLES)))
        for i in order:
            epoch_s[points[i]].append(clock(lambda: epoch(points[i]), device))
            is_s[samples[i]].append(clock(lambda: evaluation(samples[i]), device))
    epoch_best = [min(epoch_s[n]) for n in points]
    is_best = [min(is_s[k]) for k in samples]
    p_epoch, p_is = exponent(points, epoch_best), exponent(samples, is_best)
    section = Section("scaling", "Scaling with data size and K", command)
    section.target("exponent: training epoch vs data size", p_epoch, LINEAR, unit="")
    section.target("exponent: importance sampling vs K", p_is, LINEAR, unit="")
    section.data = {
        "points": points,
        "epoch_s": epoch_s,
        "samples": samples,
        "is_s": is_s,
        "exponent_epoch": p_epoch,
        "exponent_is": p_is,
    }
    rows = [
        [f"{m}×", f"{n} images", f"{t:.3f}", f"{t / epoch_best[0]:.2f}"]
        for m, n, t in zip(MULTIPLES, points, epoch_best)
    ]
    rows += [
        [f"{m}×", f"K = {k} ({size['images']} test images)", f"{t:.3f}", f"{t / is_best[0]:.2f}"]
        for m, k, t in zip(MULTIPLES, samples, is_best)
    ]
    section.body = "\n\n".join(
        [
            (
                f"Setup: {describe(prep, name, overrides)}; {size['rounds']} rounds, sizes alternating; "
                f"{plural(options.threads, 'thread')}. Epoch = pyro-vae's training step (`trace`) over "
                "the DataLoader of the first n training images (dynamic binarization included)."
            ),
            table(["size", "what", "seconds (fastest round)", "vs 1×"], rows),
            (
                f"Fitted exponent p in t ∝ n^p: training epoch vs data size **{p_epoch:.3f}**, "
                f"importance sampling vs K **{p_is:.3f}** (1 = linear)."
            ),
        ]
    )
    return section
