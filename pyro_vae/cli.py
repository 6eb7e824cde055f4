"""``pyro-vae train | evaluate | encode | sample | probe | compare | report | datasets``: the
command line.

Results go to stdout; progress bars, notices and warnings to stderr, and only when stderr is a
terminal or with ``--verbose`` (:mod:`pyro_vae.console`).

Exit status: 0 done; 1 an internal error (a bug), one line naming the command and the log file
that holds the traceback; 2 a user error (bad arguments or spec, missing or corrupt file, data
outside the likelihood's support, a directory that is not a run, a run in use by another
command, an output file of encode or sample that exists, without --overwrite, ...), one line
on stderr, before anything is written; also a file that cannot be written (full disk, no
permission): one line naming it, the run kept at its last checkpoint;
3 training diverged (a non-finite loss or gradient), one line naming the step and the last good
checkpoint, which is left intact; 130 Ctrl-C, 143 SIGTERM, 138 SIGUSR1 (128 + the signal):
training saves a checkpoint where it stopped and says how to resume (a second Ctrl-C stops at
once, the run kept at its previous checkpoint).

A run directory is locked while a command writes into it: train (from its first write to its
evaluation and figures), evaluate, report, compare, and encode or sample when their output lies
inside the run, and probe; a second writer exits 2 naming the holder's pid. ``--overwrite`` replaces only a
pyro-vae run (:meth:`pyro_vae.rundir.Run.is_run`), never the working directory or a parent of
it. Rerunning ``train CONFIG --out DIR`` on a run that was stopped before it finished, with the
same spec, continues it (a requeued cluster job).

``pyro-vae train --resume RUN_DIR`` continues RUN_DIR in place from its last checkpoint, with the
spec in RUN_DIR/config.yaml; ``--set`` may then change only the keys that do not alter what a
checkpoint means (``pyro_vae.checkpoints.RESUMABLE``: max_epochs, lr, logging, ...) and
evaluate.*.

Each command parses its arguments, calls one library function (:mod:`pyro_vae.pipeline`,
:mod:`pyro_vae.export`, :mod:`pyro_vae.probing`, :mod:`pyro_vae.comparison`, :mod:`pyro_vae.report`)
and prints what it returns.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pyro_vae.comparison import add_compare_parser
from pyro_vae.console import ShowVersion, chatty, configure, crash_log, quiet
from pyro_vae.experiment import add_sweep_parser
from pyro_vae.registry import SpecError, clip, directory_argument
from pyro_vae.rundir import Run
from pyro_vae.stops import Diverged, Interrupted

EXIT_INTERNAL = 1  # a bug: one line naming the command and a log file with the traceback
EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
DESCRIPTION = (
    "pyro-vae: train variational autoencoders from YAML specs, score them by "
    "importance sampling, export latents and samples. Results go to stdout; progress "
    "and warnings to stderr, only on a terminal unless --verbose."
)


def device_overrides(args: argparse.Namespace) -> list[str]:
    """--accelerator/--devices/--num-nodes/--strategy as ``train.*`` overrides."""
    flags = {
        "accelerator": args.accelerator,
        "devices": args.devices,
        "num_nodes": args.num_nodes,
        "strategy": args.strategy,
    }
    return [f"train.{k}={v}" for k, v in flags.items() if v is not None]


def cmd_train(args: argparse.Namespace) -> int:
    from pyro_vae import pipeline

    overrides = [*args.set, *device_overrides(args)]
    try:
        trained = pipeline.train(args.config, args.out, overrides, args.overwrite, args.resume)
    except (Diverged, Interrupted) as exc:
        from pyro_vae.ranks import rank_zero

        if rank_zero():  # all DDP ranks stop together: one line is enough
            error = "error: " if isinstance(exc, Diverged) else ""
            print(f"pyro-vae: {error}{exc}", file=sys.stderr)
        return EXIT_DIVERGED if isinstance(exc, Diverged) else exc.exit_code
    lines = trained.lines()
    if lines:
        print("\n".join(lines))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pyro_vae import pipeline

    if args.method == "is":
        result = pipeline.evaluate(
            args.run_dir,
            args.split,
            args.num_samples,
            args.limit,
            args.accelerator,
            progress=chatty(),
        )
        print("\n".join(result.lines()))
        return 0
    from pyro_vae import annealing

    summary = pipeline.evaluate_annealed(
        args.run_dir,
        args.method,
        args.split,
        args.num_samples,
        args.limit,
        accelerator=args.accelerator,
        chains=args.chains,
        steps=args.steps,
        leapfrog=args.leapfrog,
        progress=chatty(),
    )
    print("\n".join(annealing.lines(summary)))
    return 0


def cmd_encode(args: argparse.Namespace) -> None:
    from pyro_vae.export import encode_run
    from pyro_vae.pipeline import check_positive

    quiet()
    check_positive("--limit", args.limit)
    arrays = encode_run(Run(args.run_dir), args.out, args.split, args.limit, args.overwrite)
    n, d = arrays["mean"].shape
    extra = ", labels" if "labels" in arrays else ""
    print(f"encode: {args.out}: mean, scale ({n}, {d}){extra} of q(z|x), {args.split} split")


def cmd_sample(args: argparse.Namespace) -> None:
    from pyro_vae.export import sample_run

    quiet()
    done = sample_run(
        Run(args.run_dir),
        args.out,
        args.n,
        png=args.png,
        means=args.means,
        seed=args.seed,
        overwrite=args.overwrite,
        label=args.label,
    )
    print("\n".join(done.lines()))


def cmd_probe(args: argparse.Namespace) -> None:
    from pyro_vae.probing import parse_labels, probe

    quiet()
    print(probe(args.run_dir, parse_labels(args.labels), args.seed))


def cmd_report(args: argparse.Namespace) -> None:
    from pyro_vae.report import write_report

    print(f"report: {write_report(Path(args.run_dir))}")


def cmd_aggregate(args: argparse.Namespace) -> None:
    from pyro_vae.aggregation import aggregate

    result = aggregate(args.paths, args.baseline, args.split, args.method)
    print("\n".join(result.lines()))
    print("\n".join(f"aggregate: {path}" for path in result.write(args.out)))


def cmd_datasets(args: argparse.Namespace) -> None:
    """Every registry entry with its parameters: ``name(key=default, key (required))``."""
    from pyro_vae.registry import parameters_text
    from pyro_vae.spec import COMPONENTS

    for kind, registry in COMPONENTS.items():
        if kind == "decoder":
            continue
        print(f"{'encoder / decoder' if kind == 'encoder' else kind}:")
        for name in registry.names():
            print(f"  {name}({parameters_text(registry[name])})")


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as a SpecError (one line, exit 2) instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise SpecError(self.prog, f"{message}; see {self.prog} --help")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pyro-vae", description=DESCRIPTION)
    p.add_argument("--version", action=ShowVersion)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="fit a VAE from a YAML spec, or resume a run")
    t.add_argument("config", nargs="?", help="YAML spec (see examples/configs)")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec key, e.g. --set prior.name=vamp (repeatable)",
    )
    t.add_argument(
        "--out", type=directory_argument, help="run directory (default runs/<config name>)"
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the pyro-vae run in --out (never a directory that is not a run)",
    )
    t.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue RUN_DIR from its last checkpoint (no CONFIG, --out, --overwrite)",
    )
    t.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], help="sets train.accelerator")
    t.add_argument("--devices", type=int, metavar="N", help="sets train.devices (per node)")
    t.add_argument(
        "--num-nodes",
        type=int,
        metavar="N",
        help="sets train.num_nodes (machines started by torchrun or SLURM)",
    )
    t.add_argument(
        "--strategy",
        choices=["auto", "ddp"],
        help="sets train.strategy (ddp: one process per device)",
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="importance-sampled log p(x) of a trained run")
    e.add_argument("run_dir")
    e.add_argument("--num-samples", type=int, help="K importance samples per data point")
    e.add_argument(
        "--split",
        choices=["train", "val", "test"],
        help="the split to score (default: the run's evaluate.split); writes "
        "eval-SPLIT.json and figures/SPLIT/ only",
    )
    e.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="score the first N points only (bdmc: simulate N points, default 50)",
    )
    e.add_argument(
        "--accelerator",
        choices=["auto", "cpu", "gpu"],
        help="where to evaluate (default: the run's train.accelerator)",
    )
    e.add_argument(
        "--method",
        choices=["is", "ais", "bdmc"],
        default="is",
        help="is: importance sampling (default); ais: annealed importance sampling "
        "beside IS, writes eval-SPLIT-ais.json; bdmc: bounds on simulated data, "
        "writes eval-simulated-bdmc.json",
    )
    e.add_argument("--chains", type=int, default=16, help="AIS chains per point (default 16)")
    e.add_argument("--steps", type=int, default=1000, help="AIS annealing steps (default 1000)")
    e.add_argument(
        "--leapfrog", type=int, default=10, help="leapfrog steps per HMC transition (default 10)"
    )
    e.set_defaults(func=cmd_evaluate)

    n = sub.add_parser("encode", help="posterior means and scales of a split, as an .npz")
    n.add_argument("run_dir")
    n.add_argument(
        "--split", choices=["train", "val", "test"], default="test", help="default: test"
    )
    n.add_argument(
        "--out",
        required=True,
        metavar="FILE.npz",
        help="writes arrays mean and scale (N, latent_dim), and labels (N,) where "
        "the data have them",
    )
    n.add_argument("--limit", type=int, metavar="N", help="the first N items only")
    n.add_argument("--overwrite", action="store_true", help="replace FILE.npz if it exists")
    n.set_defaults(func=cmd_encode)

    m = sub.add_parser("sample", help="samples from the model, as an .npz (and a PNG)")
    m.add_argument("run_dir")
    m.add_argument("-n", type=int, default=1000, help="number of samples (default 1000)")
    m.add_argument(
        "--out",
        required=True,
        metavar="FILE.npz",
        help="writes arrays x (n, *item shape), on the data's own scale, z (n, latent_dim) "
        "and, for a model kind with labels (cvae), y (n,), the class of each sample",
    )
    m.add_argument(
        "--means",
        action="store_true",
        help="x = E[x|z] (decoder means) instead of draws from p(x|z)",
    )
    m.add_argument(
        "--png",
        metavar="FILE.png",
        help="also draw them: a grid for images, "
        "a scatter against the test data on its first two principal axes otherwise",
    )
    m.add_argument("--seed", type=int, help="default: the run's train.seed")
    m.add_argument(
        "--label",
        type=int,
        metavar="K",
        help="a model kind with labels (cvae): draw from class K, x ~ p(x|z, y=K) "
        "(default: the classes in turn)",
    )
    m.add_argument(
        "--overwrite", action="store_true", help="replace FILE.npz and FILE.png if they exist"
    )
    m.set_defaults(func=cmd_sample)

    b = sub.add_parser(
        "probe",
        help="linear probe: logistic regression on the posterior means E_q[z|x] against one "
        "on the pixels, for a few numbers of labels; writes probe.json and figures/probe.png",
    )
    b.add_argument("run_dir")
    b.add_argument(
        "--labels",
        default="100,1000,all",
        metavar="N,N,...",
        help="how many labelled training items each classifier is fitted on (a stratified, "
        "seeded draw; 'all': every one), comma-separated (default 100,1000,all)",
    )
    b.add_argument("--seed", type=int, help="draws the labelled items (default: train.seed)")
    b.set_defaults(func=cmd_probe)

    r = sub.add_parser("report", help="write RUN_DIR/report.html: one self-contained page")
    r.add_argument("run_dir")
    r.set_defaults(func=cmd_report)

    add_compare_parser(sub)

    a = sub.add_parser(
        "aggregate",
        help="runs grouped by spec less the seed: mean ± s.e. over "
        "seeds, and paired per-point gains against a baseline group",
    )
    a.add_argument(
        "paths",
        nargs="+",
        metavar="DIR|RUN_DIR",
        help="run directories, or folders searched for them (a sweep's --out)",
    )
    a.add_argument(
        "--baseline",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="the group the others are paired against (default: the first)",
    )
    a.add_argument("--split", choices=["train", "val", "test"], default="test")
    a.add_argument(
        "--method",
        choices=["is", "ais"],
        default="is",
        help="which evaluation's per-point scores to pair (default: is)",
    )
    a.add_argument(
        "--out",
        type=directory_argument,
        help="where aggregate.md, .csv, .json "
        "and .png go (default: the runs' common parent folder)",
    )
    a.set_defaults(func=cmd_aggregate)

    add_sweep_parser(sub)

    d = sub.add_parser("datasets", help="list the registries: data, priors, likelihoods, ...")
    d.set_defaults(func=cmd_datasets)
    for command in sub.choices.values():
        command.add_argument(
            "--verbose",
            action="store_true",
            help="show progress bars, "
            "notices and warnings on stderr even when it is not a terminal",
        )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    command = "pyro-vae"
    try:
        with warnings.catch_warnings():  # the filters last as long as the command
            args = parser().parse_args(argv)
            command = f"pyro-vae {args.command}"
            configure(args.verbose)
            return args.func(args) or 0
    except SpecError as exc:
        print(f"pyro-vae: error: {exc}", file=sys.stderr)
    except BrokenPipeError:  # stdout closed early (pyro-vae datasets | head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # a file that cannot be written or read: full disk, permissions, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"pyro-vae: error: {where}{exc.strerror or exc}", file=sys.stderr)
    except KeyboardInterrupt:  # outside training, where nothing needs saving
        print("pyro-vae: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug, or a fault nothing above names: one line, no traceback
        try:
            log = crash_log(command, sys.argv[1:] if argv is None else argv)
        except Exception:  # no home directory, ...: the line still goes out
            log = None
        where = f"traceback in {log}" if log else "no log could be written"
        what = clip(" ".join(f"{type(exc).__name__}: {exc}".split()), 300)
        print(f"pyro-vae: internal error in '{command}': {what}; {where}", file=sys.stderr)
        return EXIT_INTERNAL
    return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
