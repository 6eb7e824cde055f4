"""Benchmark 5: annealed importance sampling, speed and (for a trained run) quality.

Speed (``python -m benchmarks.ais``): ``inference.ais_log_marginal_likelihood`` on the
Fashion-MNIST VAE of ``examples/configs/fashion-mnist.yaml`` (784-200-200-50 tanh MLP, Bernoulli
logits; untrained weights, speed does not depend on them) against :func:`floor_ais`, the same
algorithm in plain PyTorch: the same chains (16 + 4 pilot), sigmoidal schedule, 10 leapfrog
steps, per-point step sizes adapted on the pilot chains, accept rule, on the same
``POINTS_PER_CALL`` images per call as ``pyro-vae evaluate --method ais``. The floor encodes the
images once and differentiates only the decoder, the Gaussian terms by hand:

    b = Σ_i x_i l_i − softplus(l_i) − ½‖z‖² − (D/2) log 2π,   ∇b = ∇_z[Σ_i …] − z,   l = dec(z)
    a = Σ_d log N(z_d; μ_d, σ_d²),                            ∇a = −(z − μ)/σ².

The two alternate in blocks of a few annealing steps; the time per image of a full run (T steps)
is the measured time per step × T (the per-call set-up, a few evaluations, is negligible there).

Quality (``python -m benchmarks.ais --quality RUN_DIR``): on the first 500 test images of a
trained run, IS at K = 5000 against AIS with 16 chains at 1 000 and 10 000 steps (the mean gap
AIS − IS with its standard error over images), and BDMC on 50 simulated images. About 5 hours
on 2 threads, so it saves its work in pieces (``--state``) and a rerun continues after the last.
Several jobs can share the pieces, one per core: each piece is locked while it is scored, and a job
passes over the pieces another live job holds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.common import (
    Options,
    Section,
    describe,
    interleaved,
    plural,
    ratios,
    scoring_setup,
    table,
)
from inference.ais import ADAPT_RATE, AISOptions, ais_log_marginal_likelihood, beta_schedule
from pyro_vae.annealing import POINTS_PER_CALL, Annealing, evaluate_ais, evaluate_bdmc, merge_ais
from pyro_vae.atomic import write_json_atomic
from pyro_vae.cache import cache_dir
from pyro_vae.vae import VAE

FLOOR_TARGET = 1.2
CHAINS, PILOT, LEAPFROG, STEP_SIZE, TARGET_ACCEPT = 16, 4, 10, 0.05, 0.65
FULL_STEPS = (1000, 10000)
PIECE = 25  # test images per saved piece of the quality run


@dataclass(frozen=True)
class Sizes:
    images: int  # per call (and block)
    steps: int  # annealing steps per block
    blocks: int


def config(options: Options) -> tuple[str, list[str], Sizes]:
    if options.toy:
        return (
            "digits.yaml",
            ["latent_dim=4", "encoder.hidden=[16]", "decoder.hidden=[16]"],
            Sizes(4, 3, 2),
        )
    return "fashion-mnist.yaml", [], Sizes(POINTS_PER_CALL, 11, 12)


@torch.no_grad()
def floor_ais(
    encoder: nn.Module,
    decoder: nn.Module,
    x: Tensor,
    num_steps: int,
    num_chains: int = CHAINS,
    pilot: int = PILOT,
    leapfrog_steps: int = LEAPFROG,
    step_size: float = STEP_SIZE,
    target: float = TARGET_ACCEPT,
) -> Tensor:
    """AIS log p̂(x) per row of x, plain PyTorch (module docstring), the algorithm of
    :mod:`inference.ais` for a diagonal-Normal guide, N(0, I) prior and Bernoulli logits."""
    loc, scale = encoder(x)
    k, (n, d) = num_chains + pilot, loc.shape
    half_log_2pi = 0.5 * math.log(2 * math.pi)

    def evaluate(z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        with torch.enable_grad():
            z = z.detach().requires_grad_()
            logits = decoder(z)
            lik = (x * logits - F.softplus(logits)).sum(-1)
            (grad_lik,) = torch.autograd.grad(lik.sum(), z)
        z = z.detach()
        u = (z - loc) / scale
        a = (-0.5 * u.square() - scale.log() - half_log_2pi).sum(-1)
        b = lik.detach() - 0.5 * z.square().sum(-1) - d * half_log_2pi
        return a, b, -u / scale, grad_lik - z

    z = loc + scale * torch.randn(k, n, d, dtype=loc.dtype, device=loc.device)
    a, b, grad_a, grad_b = evaluate(z)
    betas = beta_schedule("sigmoid", num_steps)
    log_eps = torch.full((n,), math.log(step_size), dtype=torch.float64, device=x.device)
    log_w = torch.zeros(k, n, dtype=torch.float64, device=x.device)
    for t in range(1, num_steps + 1):
        log_w += (betas[t] - betas[t - 1]) * (b - a).double()
        if t == num_steps:
            break
        beta = float(betas[t])
        eps = log_eps.exp().to(z.dtype)[:, None]
        rho = torch.randn_like(z)
        h0 = -((1 - beta) * a + beta * b) + 0.5 * rho.square().sum(-1)
        grad = -((1 - beta) * grad_a + beta * grad_b)
        z1 = z
        for i in range(leapfrog_steps):
            rho = rho - (0.5 if i == 0 else 1.0) * eps * grad
            z1 = z1 + eps * rho
            a1, b1, grad_a1, grad_b1 = evaluate(z1)
            grad = -((1 - beta) * grad_a1 + beta * grad_b1)
        rho = rho - 0.5 * eps * grad
        h1 = -((1 - beta) * a1 + beta * b1) + 0.5 * rho.square().sum(-1)
        log_accept = (h0 - h1).nan_to_num(nan=-math.inf)
        accept = torch.rand_like(log_accept).log() < log_accept
        z = torch.where(accept[..., None], z1, z)
        grad_a = torch.where(accept[..., None], grad_a1, grad_a)
        grad_b = torch.where(accept[..., None], grad_b1, grad_b)
        a, b = torch.where(accept, a1, a), torch.where(accept, b1, b)
        log_eps += ADAPT_RATE * (log_accept[num_chains:].clamp(max=0).exp().mean(0) - target)
    return torch.logsumexp(log_w[:num_chains], 0) - math.log(num_chains)


def run(options: Options, command: str) -> Section:
    name, overrides, size = config(options)
    prep, vae, test, budget = scoring_setup(options, name, overrides)
    device = options.device
    estimates: dict[str, list[Tensor]] = {"ours": [], "floor": []}
    ours = AISOptions(
        num_chains=CHAINS,
        num_steps=size.steps,
        leapfrog_steps=LEAPFROG,
        step_size=STEP_SIZE,
        target_accept=TARGET_ACCEPT,
        adapt_chains=PILOT,
        memory_budget_mb=budget,
    )

    def block(route: str, fn: Callable[[Tensor], Tensor]) -> Callable[[int], None]:
        def go(b: int) -> None:
            estimates[route].append(fn(test[b * size.images : (b + 1) * size.images]))

        return go

    runs = {
        "ours": block(
            "ours",
            lambda x: ais_log_marginal_likelihood(vae.model, vae.guide, x, options=ours).log_px,
        ),
        "floor": block("floor", lambda x: floor_ais(vae.encoder, vae.decoder, x, size.steps)),
    }
    times = interleaved(runs, size.blocks, device)
    ratio = ratios(times, "ours", "floor")
    transitions = size.steps - 1
    per_step = {k: sorted(t)[len(t) // 2] / (size.images * transitions) for k, t in times.items()}
    rows = [
        [
            label,
            f"{per_step[key] * 1e3:.2f}",
            *(f"{per_step[key] * steps:.1f}" for steps in FULL_STEPS),
        ]
        for key, label in (
            ("ours", "`inference.ais_log_marginal_likelihood`"),
            ("floor", "plain-PyTorch floor"),
        )
    ]
    section = Section(
        "ais", "Annealed importance sampling: speed against a plain-PyTorch floor", command
    )
    section.target("AIS / floor, time per image", ratio.median, FLOOR_TARGET)
    section.data = {
        "ratio": ratio.__dict__,
        "seconds_per_image_step": per_step,
        "times": times,
        "images_per_call": size.images,
        "steps_per_block": size.steps,
    }
    section.body = "\n\n".join(
        [
            (
                f"Setup: {describe(prep, name, overrides)}; untrained weights; {CHAINS} chains + "
                f"{PILOT} pilot chains, {LEAPFROG} leapfrog steps, sigmoidal schedule, {size.images} "
                f"test images per call (as `pyro-vae evaluate --method ais`), "
                f"{plural(options.threads, 'thread')}. "
                f"{size.blocks} interleaved blocks of {size.steps} annealing steps per route; times per "
                "image below are the median block's time per image and transition, times T."
            ),
            table(
                ["route", "ms per image and step", *(f"s per image, T = {s}" for s in FULL_STEPS)],
                rows,
            ),
            (
                f"Paired ratio ours / floor: **{ratio.text()}**. Each of our calls also measures its "
                "memory per chain and starts its chains (about 2.5 evaluations of the model): about "
                f"{2.5 / (transitions * LEAPFROG):.0%} of a block here, nothing at T = 1000."
            ),
            (
                "Quality (IS at K = 5000 against AIS at 1 000 and 10 000 steps on 500 test images, BDMC "
                "on 50 simulated images) is `python -m benchmarks.ais --quality RUN_DIR` on a run of "
                "the published protocol; it adds its own part to this section when run."
            ),
        ]
    )
    return section


def quality(
    options: Options,
    command: str,
    run_dir: Path,
    test_points: int,
    bdmc_points: int,
    steps: tuple[int, ...] = FULL_STEPS,
    state: Path | None = None,
    score: bool = True,
) -> Section:
    """IS (K = 5000) against AIS at each of ``steps`` (1 000 and 10 000); BDMC at the first.

    Hours on a CPU, so the work is cut into pieces of :data:`PIECE` test images (and one BDMC
    run), each scored with its own seed and saved in ``state/<checkpoint digest>/``: an
    interrupted run continues after its last finished piece, with the figures an uninterrupted
    one gives. The cheap parts come first (AIS at ``steps[0]``, BDMC, then the longer runs).
    The AIS summaries are merged from the pieces (:func:`merge_ais`); with ``score`` off nothing
    is computed and the section shows the pieces finished so far."""
    from pyro_vae.checkpoints import read_checkpoint
    from pyro_vae.prepared import load_run
    from pyro_vae.rundir import Run

    prep = load_run(run_dir)
    checkpoint = Run(run_dir).evaluated_checkpoint(prep.spec)
    steps = (3, 5) if options.toy else steps
    k = 16 if options.toy else 5000
    vae: VAE = prep.vae.to(options.device)
    x = prep.bundle.split("test")[:test_points].to(options.device)
    budget = prep.spec.evaluate.memory_budget_mb
    folder = (state or options.results / "ais-quality") / hashlib.sha256(
        checkpoint.read_bytes()
    ).hexdigest()[:16]
    pieces = Pieces(folder, len(x) * sum(steps) + bdmc_points * 2 * steps[0])

    def ais(s: int) -> dict[str, Any] | None:
        done = [r for r in pieces.ais(vae, x, s, k, budget) if r]
        return merge_ais(done) if done else None

    def bdmc() -> dict[str, Any] | None:
        return pieces.score(
            f"bdmc-c{CHAINS}-l{LEAPFROG}-t{steps[0]}-{bdmc_points}",
            bdmc_points * 2 * steps[0],
            lambda: evaluate_bdmc(
                vae, x[:bdmc_points], Annealing(CHAINS, steps[0], LEAPFROG), budget
            ),
        )

    if score:  # the cheap parts first
        ais(steps[0])
        bdmc()
        for s in steps[1:]:
            ais(s)
    pieces.compute = False  # the figures: every piece saved by now, by this job or another
    b, scored = bdmc(), {s: r for s in steps if (r := ais(s))}
    rows = [
        [
            f"AIS, {CHAINS} chains × {s} steps",
            f"{r['num_points']}" + ("" if r["num_points"] == len(x) else " (so far)"),
            f"{r['log_px']:.3f} ± {r['log_px_sem']:.3f}",
            f"{r['is_log_px']:.3f}",
            f"{r['gap']:.3f} ± {r['gap_sem']:.3f}",
            f"{r['acceptance']:.2f}",
            f"{r['ais_seconds_per_point']:.1f}",
        ]
        for s, r in scored.items()
    ]
    saved = read_checkpoint(checkpoint)
    done = run_dir / "done.json"
    trained = (
        json.loads(done.read_text())["epochs"] if done.is_file() else prep.spec.train.max_epochs
    )
    section = Section("ais-quality", "Annealed importance sampling: how loose is IS?", command)
    section.data = {
        "ais": {s: {k: v for k, v in r.items() if k != "points"} for s, r in scored.items()},
        "bdmc": b and {k: v for k, v in b.items() if k != "points"},
    }
    unfinished = [s for s in steps if scored.get(s, {}).get("num_points") != len(x)]
    section.body = "\n\n".join(
        [
            (
                f"Run `{run_dir}`: {prep.spec.data.name}, {prep.spec.encoder.name} "
                f"{list(prep.spec.encoder.params.get('hidden', []))}, latent {prep.spec.latent_dim}, "
                f"trained for {trained} epochs, scored at `{checkpoint.name}` (epoch "
                f"{saved['epoch'] + 1}); the first {len(x)} test images, IS at K = {k} on the same "
                f"images; pieces of {PIECE} images, {plural(options.threads, 'thread')}."
            ),
            table(
                [
                    "method",
                    "images",
                    "log p(x) ± s.e. over images",
                    f"IS, K = {k}, same images",
                    "AIS − IS (nats) ± s.e. over images",
                    "acceptance",
                    "s per image",
                ],
                rows,
            ),
            (
                f"BDMC ({CHAINS} chains × {steps[0]} steps) on {b['num_points']} images simulated "
                f"from the model: lower {b['lower']:.3f}, upper {b['upper']:.3f}, gap **{b['gap']:.3f} "
                f"± {b['gap_sem']:.3f} nats** (± s.e. over the simulated images; "
                f"{b['seconds_per_point']:.1f} s per image)."
                if b
                else f"BDMC ({CHAINS} chains × {steps[0]} steps, {bdmc_points} simulated images): pending."
            ),
            *(
                [
                    (
                        f"**In progress:** AIS at {', '.join(map(str, unfinished))} steps has not scored all "
                        f"{len(x)} images yet; the figures above are over the images finished so far. "
                        f"`{command.replace(' --report', '')}` continues (it resumes after the last saved "
                        "piece)."
                    )
                ]
                if unfinished or not b
                else []
            ),
        ]
    )
    return section


class Pieces:
    """Scored pieces saved as JSON files in ``folder``; each is computed once, seeded by its
    name, and the log gets one line per piece with the estimated time left of this job
    (``total`` and each piece's ``work``: images × annealing steps). A missing piece is None
    when ``compute`` is off, or while another live job holds its lock (an ``flock`` on
    ``<name>.lock``, released by the kernel when that job dies, so a killed job blocks nothing)."""

    def __init__(self, folder: Path, total: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.left, self.compute = folder, total, True
        self.work = self.seconds = 0.0

    def score(
        self, name: str, work: int, compute: Callable[[], dict[str, Any]]
    ) -> dict[str, Any] | None:
        path = self.folder / f"{name}.json"
        self.left -= work
        if path.is_file() or not self.compute:
            return self._read(path)
        lock = self.folder / f"{name}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"{name}: scored by another job; passed over", flush=True)
                return None
            if path.is_file():  # finished by the job that held the lock before
                return self._read(path)
            torch.manual_seed(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
            start = time.perf_counter()
            result = compute()
            write_json_atomic(path, result)
            lock.unlink(missing_ok=True)  # a job that opened it before finds the piece saved
        finally:
            os.close(fd)
        self.work += work
        self.seconds += time.perf_counter() - start
        left_h = self.left * self.seconds / self.work / 3600
        print(
            f"{name}: {time.perf_counter() - start:.0f} s; about {left_h:.1f} h of work left "
            "at this job's pace (shared by the jobs scoring these pieces)",
            flush=True,
        )
        return result

    def ais(
        self, vae: VAE, x: Tensor, steps: int, k: int, budget: float
    ) -> list[dict[str, Any] | None]:
        """AIS (:data:`CHAINS` chains × ``steps``) beside IS at K = ``k`` on the test images
        ``x``, a piece of :data:`PIECE` images at a time: each piece's summary, None for one
        not scored (another job holds it, or ``compute`` is off)."""
        annealing = Annealing(CHAINS, steps, LEAPFROG)
        return [
            self.score(
                f"ais-c{CHAINS}-l{LEAPFROG}-t{steps}-k{k}-{start}+{len(part)}",
                len(part) * steps,
                lambda part=part: evaluate_ais(vae, part, "test", annealing, k, budget),
            )
            for start, part in zip(range(0, len(x), PIECE), x.split(PIECE))
        ]

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        return _nan_for_null(json.loads(path.read_text())) if path.is_file() else None


def _nan_for_null(value: Any) -> Any:
    """JSON's null (how :func:`write_json_atomic` writes NaN) back to NaN."""
    if isinstance(value, dict):
        return {k: _nan_for_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [math.nan if v is None else _nan_for_null(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> None:
    from benchmarks.cli import COUNT, finish, options_from, parser

    p = parser("AIS: speed against a plain-PyTorch floor; --quality RUN_DIR: IS vs AIS vs BDMC.")
    p.add_argument(
        "--quality",
        type=Path,
        metavar="RUN_DIR",
        help="score a trained run (IS K=5000, AIS 1000 and 10000 steps, BDMC)",
    )
    p.add_argument("--test-points", type=COUNT, default=500, help="test images (default 500)")
    p.add_argument("--bdmc-points", type=COUNT, default=50, help="simulated images (default 50)")
    p.add_argument(
        "--steps",
        type=COUNT,
        nargs="+",
        default=list(FULL_STEPS),
        help="AIS steps to compare (default 1000 10000; BDMC runs the first)",
    )
    p.add_argument(
        "--state",
        type=Path,
        help="where the quality run keeps its finished pieces (default "
        f"{cache_dir() / 'ais-quality'}; with --toy, "
        "beside the results)",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="with --quality: score nothing, write the section from the pieces finished so far",
    )
    args = p.parse_args(argv)
    options = options_from(args)
    if args.quality is None:
        if args.report:
            raise SystemExit("--report: only with --quality RUN_DIR")
        finish(args, options, {"ais": run})
        return
    if not (args.quality / "config.yaml").is_file():
        raise SystemExit(f"--quality {args.quality}: not a run directory (no config.yaml)")
    finish(
        args,
        options,
        {
            "ais-quality": lambda o, c: quality(
                o,
                c,
                args.quality,
                args.test_points,
                args.bdmc_points,
                tuple(args.steps),
                args.state or (None if o.toy else cache_dir() / "ais-quality"),
                not args.report,
            )
        },
    )


if __name__ == "__main__":
    main()
