"""``pyro-vae train | evaluate | report | datasets``: the command line.

A user error (bad spec, missing file, data outside the likelihood's support, ...) prints one
line on stderr and exits with status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pyro_vae.registry import SpecError

if TYPE_CHECKING:
    from pyro_vae.evaluate import Evaluation
    from pyro_vae.train import Prepared

EXIT_USER_ERROR = 2
FIGURES = "figures"


def _quiet() -> None:
    """Keep Lightning's banners and known-harmless warnings off the terminal."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for pattern in (".*exists and is not empty.*", ".*does not have many workers.*",
                    ".*LeafSpec.*", ".*litlogger.*", ".*Checkpoint directory.*"):
        warnings.filterwarnings("ignore", message=pattern)


def cmd_train(args: argparse.Namespace) -> None:
    from pyro_vae.evaluate import evaluate
    from pyro_vae.spec import load_spec
    from pyro_vae.train import fit, prepare

    spec = load_spec(args.config, args.set)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    prepared = prepare(spec)
    fit(prepared, out, overwrite=args.overwrite)
    result = evaluate(prepared.vae, prepared.bundle.split(spec.evaluate.split), spec.evaluate.split,
                      spec.evaluate.num_samples, spec.evaluate.memory_budget_mb)
    result.to_json(out / "eval.json")
    write_figures(prepared, out, result)
    print("\n".join(result.lines()))
    print(f"run directory: {out}")


def write_figures(prepared: Prepared, run: Path, result: Evaluation) -> None:
    from pyro_vae.figures import plot_log_px, write_run_figures

    bundle, split = prepared.bundle, result.split
    folder = run / FIGURES
    folder.mkdir(exist_ok=True)
    write_run_figures(prepared.vae, bundle.split(split), bundle.shape, folder,
                      labels=bundle.labels.get(split), levels=bundle.levels,
                      metrics_csv=run / "metrics.csv", seed=prepared.spec.train.seed)
    plot_log_px(result.points.log_px, result.points.ess, folder / "log_px.png",
                num_samples=result.num_samples)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from pyro_vae.evaluate import evaluate
    from pyro_vae.train import load_run

    run = Path(args.run_dir)
    prepared = load_run(run)
    spec = prepared.spec
    split = args.split or spec.evaluate.split
    k = args.num_samples or spec.evaluate.num_samples
    if k < 1:
        raise SpecError("--num-samples", f"must be >= 1, got {k}")
    result = evaluate(prepared.vae, prepared.bundle.split(split), split, k,
                      spec.evaluate.memory_budget_mb)
    result.to_json(run / "eval.json")
    write_figures(prepared, run, result)
    print("\n".join(result.lines()))


def cmd_report(args: argparse.Namespace) -> None:
    from pyro_vae.report import write_report

    print(f"report: {write_report(Path(args.run_dir))}")


def cmd_datasets(args: argparse.Namespace) -> None:
    from pyro_vae.spec import COMPONENTS
    from pyro_vae.registry import signature_params

    for kind, registry in COMPONENTS.items():
        if kind == "decoder":
            continue
        title = "networks" if kind == "encoder" else kind
        print(f"{title}:")
        for name in registry.names():
            params = signature_params(registry[name])
            text = ", ".join(f"{k}={p.default!r}" for k, p in params.items())
            print(f"  {name}({text})")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyro-vae", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="fit a VAE from a YAML spec")
    t.add_argument("config", help="YAML spec (see examples/configs)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key, e.g. --set prior.name=vamp (repeatable)")
    t.add_argument("--out", help="run directory (default runs/<config name>)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="importance-sampled log p(x) of a trained run")
    e.add_argument("run_dir")
    e.add_argument("--num-samples", type=int, help="K importance samples per data point")
    e.add_argument("--split", choices=["train", "val", "test"])
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("report", help="write RUN_DIR/report.html: one self-contained page")
    r.add_argument("run_dir")
    r.set_defaults(func=cmd_report)

    d = sub.add_parser("datasets", help="list the registries: data, priors, likelihoods, ...")
    d.set_defaults(func=cmd_datasets)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _quiet()
    try:
        args.func(args)
    except SpecError as exc:
        print(f"pyro-vae: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
