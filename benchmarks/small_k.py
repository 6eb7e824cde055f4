"""Benchmark 2, its second part: importance-sampled log p(x) at small K on the whole Fashion-MNIST
test set, and the chunk size of the fast path, with the 784-200-200-50 tanh MLP VAE of its first
part (:mod:`benchmarks.importance`).

* At K = 10 and K = 100 the fast path (``pyro_vae.scoring.importance_log_px``) puts several
  points in one call (:func:`pyro_vae.scoring.plan_chunks`); the plain-PyTorch floor
  (``floors.floor_log_px``) runs the same plan. The two alternate over blocks of test images;
  the ratio is the median of the per-block paired ratios. For contrast, the one-point-per-call
  plan of earlier versions is timed on the first images.
* Chunk size: each cap on the bytes of one call gives a plan (points per call, particles per
  chunk); both routes are timed with each, at K = 5000 and K = 100, to choose the cap
  (``pyro_vae.scoring.FAST_CHUNK_BYTES``) that is fastest on this machine.

Timing does not depend on the weights, so the VAE is freshly initialised (seeded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from benchmarks.common import (
    Options,
    Section,
    clock,
    describe,
    interleaved,
    plural,
    ratios,
    scoring_setup,
    table,
)
from benchmarks.floors import floor_log_px
from pyro_vae.scoring import FAST_CHUNK_BYTES, Plan, importance_log_px, plan_chunks
from pyro_vae.vae import VAE

FLOOR_TARGET = 1.10
MIB = 2**20


@dataclass(frozen=True)
class Sizes:
    small_k: tuple[int, ...]
    blocks: int  # interleaved blocks over the test images (all of them)
    single_images: int  # timed with one point per call
    caps_mib: tuple[int, ...]
    sweep_k: tuple[int, ...]
    sweep_images: dict[int, int]  # K → images per timed sweep run


def config(options: Options) -> tuple[str, list[str], Sizes]:
    if options.toy:
        return (
            "digits.yaml",
            ["latent_dim=4", "encoder.hidden=[16]", "decoder.hidden=[16]"],
            Sizes((10, 100), 2, 8, (1, 32), (100,), {100: 16}),
        )
    return (
        "fashion-mnist.yaml",
        [],
        Sizes((10, 100), 10, 500, (4, 8, 16, 32, 64), (5000, 100), {5000: 24, 100: 2000}),
    )


def routes(vae: VAE, k: int, plan: Plan) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    return {
        "ours": lambda x: importance_log_px(vae, x, k, 1e9, plan=plan).log_px,
        "floor": lambda x: floor_log_px(
            vae.encoder, vae.decoder, x, k, plan.particles, plan.points
        ),
    }


def run(options: Options, command: str) -> Section:
    name, overrides, size = config(options)
    prep, vae, test, budget = scoring_setup(options, name, overrides)
    device = options.device
    section = Section(
        "is-small", "Importance-sampled log p(x) at small K, and the chunk size", command
    )
    rows, data = [], {}
    for k in size.small_k:
        plan = plan_chunks(vae, test, k, budget)
        route = routes(vae, k, plan)
        per_block = -(-len(test) // size.blocks)
        blocks = {
            key: (lambda fn: lambda i: fn(test[i * per_block : (i + 1) * per_block]))(fn)
            for key, fn in route.items()
        }
        times = interleaved(blocks, size.blocks, device)
        ratio = ratios(times, "ours", "floor")
        per_image = {key: sum(t) / len(test) for key, t in times.items()}
        few = test[: size.single_images]
        single = clock(
            lambda: importance_log_px(vae, few, k, budget, plan=Plan(1, k)), device
        ) / len(few)
        section.target(f"K = {k}: ours / floor, time per image", ratio.median, FLOOR_TARGET)
        rows.append(
            [
                k,
                f"{plan.points} × {plan.particles}",
                f"{per_image['ours'] * 1e3:.3f}",
                f"{per_image['floor'] * 1e3:.3f}",
                ratio.text(),
                f"{single * 1e3:.3f}",
                f"{single / per_image['ours']:.0f}×",
                f"{per_image['ours'] * len(test):.1f}",
            ]
        )
        data[f"k{k}"] = {
            "plan": plan.__dict__,
            "per_image_s": per_image,
            "ratio": ratio.__dict__,
            "one_per_call_s": single,
        }
    sweep_rows = []
    for k in size.sweep_k:
        x = test[: size.sweep_images[k]]
        for cap in size.caps_mib:
            plan = plan_chunks(vae, x, k, budget, cap_bytes=cap * MIB)
            route = routes(vae, k, plan)
            times = interleaved(
                {key: (lambda fn: lambda i: fn(x))(fn) for key, fn in route.items()}, 2, device
            )
            ms = {key: 1e3 * sum(t) / (2 * len(x)) for key, t in times.items()}
            sweep_rows.append(
                [
                    k,
                    cap,
                    f"{plan.points} × {plan.particles}",
                    f"{ms['ours']:.3f}",
                    f"{ms['floor']:.3f}",
                ]
            )
            data.setdefault("sweep", []).append(
                {"k": k, "cap_mib": cap, "plan": plan.__dict__, "ms_per_image": ms}
            )
    section.data = data
    section.body = "\n\n".join(
        [
            (
                f"Setup: {describe(prep, name, overrides)}; untrained weights, all {len(test)} test "
                f"images, default `evaluate.memory_budget_mb` = {budget:g} MiB, the fast path's cap "
                f"{FAST_CHUNK_BYTES // MIB} MiB per call, {plural(options.threads, 'thread')}. Ours and "
                "the floor "
                f"run the same plan (points per call × particles per chunk) and alternate over "
                f"{size.blocks} blocks of test images."
            ),
            table(
                [
                    "K",
                    "plan",
                    "ours, ms/image",
                    "floor, ms/image",
                    "ours / floor (paired)",
                    f"one point per call, ms/image (first {size.single_images})",
                    "batched speed-up",
                    "whole test set, s",
                ],
                rows,
            ),
            "Chunk size: time per image with the cap on one call's bytes set to each value "
            "(2 interleaved runs of ours and the floor on the first test images; the caps run one "
            "after another, so a changing load confounds them, unlike the paired ratios above). "
            + fastest(data.get("sweep", [])),
            table(["K", "cap (MiB)", "plan", "ours, ms/image", "floor, ms/image"], sweep_rows),
        ]
    )
    return section


def fastest(sweep: list[dict]) -> str:
    """The cap that gave our route its lowest time per image, per K."""
    best = {}
    for row in sweep:
        k = row["k"]
        if k not in best or row["ms_per_image"]["ours"] < best[k]["ms_per_image"]["ours"]:
            best[k] = row
    return (
        "Fastest for ours: "
        + "; ".join(f"K = {k}: {r['cap_mib']} MiB" for k, r in best.items())
        + "."
    )
