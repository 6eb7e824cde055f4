"""``pyro-vae train | evaluate | compare | report | datasets``: the command line.

Exit status: 0 done; 2 a user error (bad arguments or spec, missing or corrupt file, data outside
the likelihood's support, a directory that is not a run, ...), one line on stderr, before anything
is written; also a file that cannot be written (full disk, no permission): one line naming it, the
run kept at its last checkpoint; 3 training diverged (a non-finite loss or gradient), one line
naming the step and the last good checkpoint, which is left intact; 130 Ctrl-C: training saves a
checkpoint where it stopped and says how to resume (a second Ctrl-C stops at once, the run kept
at its previous checkpoint).

``pyro-vae train --resume RUN_DIR`` continues RUN_DIR in place from its last checkpoint, with the
spec in RUN_DIR/config.yaml; ``--set`` may then change only train.max_epochs, train.lr,
train.gradient_clip, train.progress, train.logger and evaluate.* (see ``pyro_vae.train.RESUMABLE``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pyro_vae.compare import add_compare_parser
from pyro_vae.registry import SpecError

if TYPE_CHECKING:
    from pyro_vae.evaluate import Evaluation
    from pyro_vae.train import Prepared

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
FIGURES = "figures"


def _quiet() -> None:
    """Keep Lightning's banners and known-harmless warnings off the terminal (after Lightning's
    import, which sets its own log level)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for pattern in (".*exists and is not empty.*", ".*does not have many workers.*",
                    ".*LeafSpec.*", ".*litlogger.*", ".*Checkpoint directory.*"):
        warnings.filterwarnings("ignore", message=pattern)


def device_overrides(args: argparse.Namespace) -> list[str]:
    """--accelerator/--devices/--strategy as ``train.*`` overrides."""
    flags = {"accelerator": args.accelerator, "devices": args.devices, "strategy": args.strategy}
    return [f"train.{k}={v}" for k, v in flags.items() if v is not None]


def cmd_train(args: argparse.Namespace) -> int:
    from lightning.pytorch.utilities import rank_zero_only

    from pyro_vae.engine import Interrupted
    from pyro_vae.spec import load_spec
    from pyro_vae.train import Diverged, evaluate_run, fit, prepare, resume_spec

    _quiet()
    overrides = [*args.set, *device_overrides(args)]
    if args.resume:
        if args.config or args.out or args.overwrite:
            raise SpecError("--resume", "takes the run directory alone: the spec is its "
                            "config.yaml and the run continues in place")
        out = Path(args.resume)
        spec = resume_spec(out, overrides)
    elif args.config:
        out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
        spec = load_spec(args.config, overrides)
    else:
        raise SpecError("train", "needs a YAML spec (CONFIG) or --resume RUN_DIR")
    prepared = prepare(spec)
    try:
        trainer = fit(prepared, out, overwrite=args.overwrite, resume=bool(args.resume))
    except (Diverged, Interrupted) as exc:
        if rank_zero_only.rank == 0:  # all DDP ranks stop together: one line is enough
            print(f"pyro-vae: {'error: ' if isinstance(exc, Diverged) else ''}{exc}", file=sys.stderr)
        return EXIT_DIVERGED if isinstance(exc, Diverged) else EXIT_INTERRUPTED
    result = evaluate_run(prepared, trainer.strategy.root_device, progress=spec.train.progress)
    if trainer.global_rank == 0:
        result.to_json(out / "eval.json")
        write_figures(prepared, out, result)
        print("\n".join(result.lines()))
        print(f"run directory: {out}")
    return 0


def write_figures(prepared: Prepared, run: Path, result: Evaluation) -> None:
    from pyro_vae.figures import plot_log_px, write_run_figures

    bundle, split = prepared.bundle, result.split
    folder = run / FIGURES
    folder.mkdir(exist_ok=True)
    write_run_figures(prepared.vae, bundle.split(split), bundle.shape, folder,
                      labels=bundle.labels.get(split),
                      levels=bundle.levels if bundle.integer else None,
                      metrics_csv=run / "metrics.csv", seed=prepared.spec.train.seed)
    plot_log_px(result.points.log_px, result.points.ess, folder / "log_px.png",
                num_samples=result.num_samples)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from pyro_vae.train import device_for, evaluate_run, load_run

    _quiet()
    run = Path(args.run_dir)
    prepared = load_run(run)
    if args.num_samples is not None and args.num_samples < 1:
        raise SpecError("--num-samples", f"must be >= 1, got {args.num_samples}")
    device = device_for(args.accelerator or prepared.spec.train.accelerator)
    result = evaluate_run(prepared, device, args.split, args.num_samples)
    result.to_json(run / "eval.json")
    write_figures(prepared, run, result)
    print("\n".join(result.lines()))


def cmd_report(args: argparse.Namespace) -> None:
    from pyro_vae.report import write_report

    print(f"report: {write_report(Path(args.run_dir))}")


def cmd_datasets(args: argparse.Namespace) -> None:
    """Every registry entry with its parameters: ``name(key=default, key (required))``."""
    import inspect

    from pyro_vae.registry import signature_params
    from pyro_vae.spec import COMPONENTS

    for kind, registry in COMPONENTS.items():
        if kind == "decoder":
            continue
        print(f"{'encoder / decoder' if kind == 'encoder' else kind}:")
        for name in registry.names():
            params = signature_params(registry[name]).items()
            text = ", ".join(f"{k} (required)" if p.default is inspect.Parameter.empty
                             else f"{k}={p.default!r}" for k, p in params)
            print(f"  {name}({text})")


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as a SpecError (one line, exit 2) instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise SpecError(self.prog, f"{message}; see {self.prog} --help")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pyro-vae", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="fit a VAE from a YAML spec, or resume a run")
    t.add_argument("config", nargs="?", help="YAML spec (see examples/configs)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key, e.g. --set prior.name=vamp (repeatable)")
    t.add_argument("--out", help="run directory (default runs/<config name>)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    t.add_argument("--resume", metavar="RUN_DIR",
                   help="continue RUN_DIR from its last checkpoint (no CONFIG, --out, --overwrite)")
    t.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], help="sets train.accelerator")
    t.add_argument("--devices", type=int, metavar="N", help="sets train.devices")
    t.add_argument("--strategy", choices=["auto", "ddp"],
                   help="sets train.strategy (ddp: one process per device)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="importance-sampled log p(x) of a trained run")
    e.add_argument("run_dir")
    e.add_argument("--num-samples", type=int, help="K importance samples per data point")
    e.add_argument("--split", choices=["train", "val", "test"])
    e.add_argument("--accelerator", choices=["auto", "cpu", "gpu"],
                   help="where to evaluate (default: the run's train.accelerator)")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("report", help="write RUN_DIR/report.html: one self-contained page")
    r.add_argument("run_dir")
    r.set_defaults(func=cmd_report)

    add_compare_parser(sub)

    d = sub.add_parser("datasets", help="list the registries: data, priors, likelihoods, ...")
    d.set_defaults(func=cmd_datasets)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
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
    return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
