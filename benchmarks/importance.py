"""Benchmark 2: importance-sampled log p(x) at K = 5000 on the Fashion-MNIST test images with
the 784-200-200-50 tanh MLP VAE (``examples/configs/fashion-mnist.yaml``), five routes:

  (a) ``pyro_vae.scoring.importance_log_px``: the VAE's fast path (``vae.log_weights``) through
      ``inference.marginal.estimate_from_log_weights``, split by ``evaluate.plan_chunks``;
  (b) the plain-PyTorch floor, same forward passes, same plan (``floors.floor_log_px``);
  (c) ``pyro.infer.Importance``, one image at a time (timed on a few images, scaled);
  (d) a per-image loop with the K copies of the image in one batch (``floors.copies_log_px``);
  (e) the generic traced evaluator any Pyro model gets, ``inference.log_marginal_likelihood``.

(a) and (b) alternate in blocks of images; the ratio is the median of the per-block paired
ratios. Timing does not depend on the weights, so the VAE is freshly initialised (seeded).
Peak memory of (a), (b) and (e) at the spec's default budget is measured in a fresh process as
the growth of the resident set over the evaluation (peak VmHWM − VmRSS before), on CUDA as
``max_memory_allocated`` growth.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import (
    Options,
    Section,
    clock,
    describe,
    interleaved,
    plural,
    prepared,
    ratios,
    spec_from,
    table,
)
from benchmarks.floors import copies_log_px, floor_log_px, pyro_importance_log_px
from inference import log_marginal_likelihood
from pyro_vae.scoring import FAST_CHUNK_BYTES, Plan, importance_log_px, plan_chunks
from pyro_vae.vae import VAE

FLOOR_TARGET, PYRO_TARGET = 1.10, 50.0


@dataclass(frozen=True)
class Sizes:
    num_samples: int
    blocks: int  # interleaved (a)/(b) blocks
    per_block: int  # images per block
    pyro_images: int  # (c)
    copies_images: int  # (d)
    generic_images: int  # (e), evaluated as one batch


def config(options: Options) -> tuple[str, list[str], Sizes]:
    if options.toy:
        return (
            "digits.yaml",
            ["latent_dim=4", "encoder.hidden=[16]", "decoder.hidden=[16]"],
            Sizes(64, 2, 2, 1, 2, 2),
        )
    # blocks of 8 images: importance_log_px measures its plan once per call (~2 ms)
    return "fashion-mnist.yaml", [], Sizes(5000, 12, 8, 2, 6, 6)


LABELS = {
    "a": "(a) pyro-vae `importance_log_px`",
    "b": "(b) plain PyTorch floor",
    "c": "(c) `pyro.infer.Importance`, per image",
    "d": "(d) per-image loop, K copies batched",
    "e": "(e) `inference.log_marginal_likelihood` (traced)",
}


def routes(
    vae: VAE, num_samples: int, budget_mb: float, plan: Plan
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Each route (keys of :data:`LABELS`) maps images (B, P) to their B estimates of log p(x)."""
    k = num_samples
    return {
        "a": lambda x: importance_log_px(vae, x, k, budget_mb).log_px,
        "b": lambda x: floor_log_px(vae.encoder, vae.decoder, x, k, plan.particles, plan.points),
        "c": lambda x: pyro_importance_log_px(vae, x, k),
        "d": lambda x: copies_log_px(vae.encoder, vae.decoder, x, k),
        "e": lambda x: (
            log_marginal_likelihood(
                vae.model, vae.guide, x, num_samples=k, memory_budget_mb=budget_mb
            ).log_px
        ),
    }


def run(options: Options, command: str) -> Section:
    name, overrides, size = config(options)
    prep = prepared(spec_from(name, overrides))
    device, k = options.device, size.num_samples
    torch.manual_seed(0)
    vae = prep.vae.to(device).eval()
    test = prep.bundle.split("test").to(device)
    budget = prep.spec.evaluate.memory_budget_mb
    plan = plan_chunks(vae, test[: size.per_block], k, budget)
    route = routes(vae, k, budget, plan)
    a, b, c, d, e = route
    n_ab = size.blocks * size.per_block
    estimates: dict[str, dict[int, torch.Tensor]] = {key: {} for key in route}  # route → block

    def block_runner(key: str) -> Callable[[int], None]:
        def go(i: int) -> None:
            estimates[key][i] = route[key](test[i * size.per_block : (i + 1) * size.per_block])

        return go

    times = interleaved({a: block_runner(a), b: block_runner(b)}, size.blocks, device)
    per_image = {key: sum(times[key]) / n_ab for key in (a, b)}
    count = {a: n_ab, b: n_ab, c: size.pyro_images, d: size.copies_images, e: size.generic_images}
    for key in (c, d, e):
        x = test[: count[key]]
        per_image[key] = (
            clock(lambda: estimates[key].__setitem__(0, route[key](x)), device) / count[key]
        )
    ratio = ratios(times, a, b)
    mean = {key: float(torch.cat(list(estimates[key].values())).mean()) for key in (a, b)}
    m = min(count[c], size.per_block)  # images every route scored: the first m of block 0
    subset = {key: float(estimates[key][0][:m].mean()) for key in route}
    speedup = per_image[c] / per_image[a]
    section = Section("is", f"Importance-sampled log p(x), K = {k}", command)
    section.target("(a) / (b) floor, time per image", ratio.median, FLOOR_TARGET)
    section.target(
        "(c) Pyro Importance / (a), time per image", speedup, PYRO_TARGET, unit="×", at_most=False
    )
    probed = [a] if options.toy else [a, b, e]  # toy: one probe keeps the smoke test short
    peaks = peak_memory(
        probed, name, overrides, k, budget, options, {a: 1, b: 1, e: size.generic_images}
    )
    rows = []
    for key in route:
        peak = f"{peaks[key]:.0f}" if key in peaks else "–"
        rows.append(
            [
                LABELS[key],
                f"{1 / per_image[key]:.2f}",
                f"{per_image[key] * 1e3:.1f}",
                f"{per_image[key] / per_image[a]:.2f}×",
                count[key],
                f"{subset[key]:.2f}",
                peak,
            ]
        )
    full = len(test) * per_image[a]
    section.data = {
        "per_image_s": per_image,
        "images_timed": count,
        "ratio_a_b": ratio.__dict__,
        "speedup_c_over_a": speedup,
        "plan": plan.__dict__,
        "mean_log_px_ab": mean,
        "mean_log_px_first_images": subset,
        "peak_mib": peaks,
        "test_images": len(test),
    }
    section.body = "\n\n".join(
        [
            (
                f"Setup: {describe(prep, name, overrides)}; untrained weights (speed does not depend on "
                f"them), K = {k}, default `evaluate.memory_budget_mb` = {budget:g} MiB (the fast path "
                f"caps a call at {FAST_CHUNK_BYTES // 2**20} MiB: {plural(plan.points, 'image')} per "
                f"call, {plan.particles} particles per chunk), "
                f"{plural(options.threads, 'thread')}. (a)/(b): {size.blocks} interleaved blocks of "
                f"{size.per_block} test images; (c), (d), (e) timed once on the first images and scaled."
            ),
            table(
                [
                    "route",
                    "images/s",
                    "ms per image",
                    "time vs (a)",
                    "images timed",
                    f"mean log p̂, first {m} images",
                    "peak MiB",
                ],
                rows,
            ),
            (
                f"(a)/(b) paired ratio: **{ratio.text()}**. (c)/(a): **{speedup:.0f}×**. Mean log p̂ "
                f"over the {n_ab} images of (a) and (b): {mean[a]:.3f} vs {mean[b]:.3f} nats (independent "
                f"draws). At (a)'s rate the whole {len(test)}-image test set takes {full:.0f} s."
            ),
            (
                "Peak memory: growth of the process's resident set during one evaluation (fresh "
                f"process, {'GPU memory allocated' if device.type == 'cuda' else 'RSS'}), for (a) and "
                "(b) one image, for (e) its batch of images; it includes allocator slack, not only "
                "live tensors."
            ),
        ]
    )
    return section


def peak_memory(
    keys: list[str],
    config_name: str,
    overrides: list[str],
    num_samples: int,
    budget_mb: float,
    options: Options,
    images: dict[str, int],
) -> dict[str, float]:
    """MiB of memory growth while each route evaluates ``images[key]`` images, each in a fresh
    process (the processes run side by side: only their memory is measured)."""

    def args(key: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "benchmarks.importance",
            "--route",
            key,
            "--config",
            config_name,
            "--num-samples",
            str(num_samples),
            "--budget",
            str(budget_mb),
            "--images",
            str(images[key]),
            "--threads",
            str(options.threads),
            "--device",
            str(options.device),
            *(f"--set={o}" for o in overrides),
        ]

    root = Path(__file__).resolve().parent.parent
    children = {
        key: subprocess.Popen(
            args(key), cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for key in keys
    }
    peaks = {}
    for key, child in children.items():
        out, err = child.communicate()
        if child.returncode:
            raise RuntimeError(f"peak-memory child for route {key} failed:\n{err[-2000:]}")
        peaks[key] = float(json.loads(out.strip().splitlines()[-1])["peak_mib"])
    return peaks


def _status_bytes(field: str) -> int:
    """A memory line of /proc/self/status (VmRSS: resident now; VmHWM: its peak), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); ``ru_maxrss`` cannot be used, as a child
    process inherits its parent's peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # then VmHWM is the peak since exec: still an upper bound


def _measure(argv: list[str] | None = None) -> None:
    """Child process of :func:`peak_memory`: one evaluation, print the growth as JSON."""
    parser = argparse.ArgumentParser()
    for flag in ("--config", "--device"):
        parser.add_argument(flag, required=True)
    for flag in ("--num-samples", "--images", "--threads"):
        parser.add_argument(flag, type=int, required=True)
    parser.add_argument("--budget", type=float, required=True)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--route", choices=list(LABELS), required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    spec = spec_from(args.config, args.set)
    shape = (1, 28, 28) if spec.data.name in ("mnist", "fashion-mnist") else (1, 8, 8)
    torch.manual_seed(0)
    vae = VAE.from_spec(spec, shape).to(device).eval()
    x = torch.bernoulli(torch.full((args.images, math.prod(shape)), 0.5, device=device))
    plan = plan_chunks(vae, x, args.num_samples, args.budget)
    fn = routes(vae, args.num_samples, args.budget, plan)[args.route]
    # warm-up on a few particles: lazy initialisation and thread pools are not the
    # evaluation's cost, and a full-size warm-up would leave its peak in ru_maxrss
    warm = Plan(1, min(8, plan.particles))
    routes(vae, min(8, args.num_samples), args.budget, warm)[args.route](x[:1])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn(x)
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        before = _status_bytes("VmRSS")
        _reset_peak_rss()
        fn(x)
        peak = _status_bytes("VmHWM") - before
    print(json.dumps({"peak_mib": max(peak, 0) / 2**20}))


if __name__ == "__main__":
    _measure()
