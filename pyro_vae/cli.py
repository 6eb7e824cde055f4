"""``pyro-vae train | evaluate | encode | sample | compare | report | datasets``: the command line.

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
inside the run; a second writer exits 2 naming the holder's pid. ``--overwrite`` replaces only a
pyro-vae run (:meth:`pyro_vae.rundir.Run.is_run`), never the working directory or a parent of
it. Rerunning ``train CONFIG --out DIR`` on a run that was stopped before it finished, with the
same spec, continues it (a requeued cluster job).

``pyro-vae train --resume RUN_DIR`` continues RUN_DIR in place from its last checkpoint, with the
spec in RUN_DIR/config.yaml; ``--set`` may then change only train.max_epochs, train.lr,
train.gradient_clip, train.progress, train.logger, train.jit, train.keep_checkpoints,
train.blowup_factor and evaluate.* (``pyro_vae.rundir.RESUMABLE``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pyro_vae.compare import add_compare_parser
from pyro_vae.console import chatty, configure, quiet
from pyro_vae.registry import SpecError, clip, directory_argument
from pyro_vae.rundir import Run, eval_path, figures_path, run_config

if TYPE_CHECKING:
    import torch

    from pyro_vae.scoring import Evaluation
    from pyro_vae.prepared import Prepared

EXIT_INTERNAL = 1  # a bug: one line naming the command and a log file with the traceback
EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
DESCRIPTION = ("pyro-vae: train variational autoencoders from YAML specs, score them by "
               "importance sampling, export latents and samples. Results go to stdout; progress "
               "and warnings to stderr, only on a terminal unless --verbose.")


def device_overrides(args: argparse.Namespace) -> list[str]:
    """--accelerator/--devices/--num-nodes/--strategy as ``train.*`` overrides."""
    flags = {"accelerator": args.accelerator, "devices": args.devices,
             "num_nodes": args.num_nodes, "strategy": args.strategy}
    return [f"train.{k}={v}" for k, v in flags.items() if v is not None]


def cmd_train(args: argparse.Namespace) -> int:
    from pyro_vae.data import absolute_paths
    from pyro_vae.rundir import notice, resume_point
    from pyro_vae.spec import load_spec

    overrides = [*args.set, *device_overrides(args)]
    if args.resume:
        if args.config or args.out or args.overwrite:
            raise SpecError("--resume", "takes the run directory alone: the spec is its "
                            "config.yaml and the run continues in place")
        run = Run(args.resume)
        spec = run.resume_spec(overrides)
    elif args.config:
        run = Run(args.out if args.out else Path("runs") / Path(args.config).stem)
        spec = load_spec(args.config, overrides)
        spec = dataclasses.replace(spec, data=absolute_paths(spec.data))
    else:
        raise SpecError("train", "needs a YAML spec (CONFIG) or --resume RUN_DIR")
    # The spec is valid: only now the training stack, whose import (Lightning) takes seconds.
    from lightning.pytorch.utilities import rank_zero_only

    from pyro_vae.engine import Interrupted
    from pyro_vae.scoring import device_for
    from pyro_vae.prepared import load_run, prepare
    from pyro_vae.trainer import Diverged

    quiet()  # after Lightning's import, which sets its own log level
    if not args.overwrite and run.unscored(spec):
        notice(f"{run.root} holds this spec's run, trained but stopped before its evaluation "
               "and figures were all written: scoring it")
        try:
            with run.locked("train"):
                prepared = load_run(run.root, spec)
                return _score(prepared, run, device_for(spec.train.accelerator), rank0=True)
        except Interrupted as exc:
            print(f"pyro-vae: {exc}", file=sys.stderr)
            return exc.exit_code
    resume = bool(args.resume) or (not args.overwrite and run.continues(spec))
    if resume and not args.resume:
        notice(f"{run.root} holds this spec's run, stopped ({run.state()}) before it finished: "
               "continuing it")
    prepared = prepare(spec)
    if args.resume:  # the checkpoint fits the spec and data, finished or not
        resume_point(run.root, prepared.vae, spec, lambda: prepared.data_sha256)
        done = run.finished(spec.train.max_epochs)
        if done:
            print(f"{run.root}: finished ({done}); nothing to train. Raise train.max_epochs to "
                  f"continue (--set train.max_epochs=N), or score it: pyro-vae evaluate "
                  f"{run.root}")
            return 0
    try:
        return _train(prepared, run, args.overwrite, resume)
    except (Diverged, Interrupted) as exc:
        if rank_zero_only.rank == 0:  # all DDP ranks stop together: one line is enough
            error = "error: " if isinstance(exc, Diverged) else ""
            print(f"pyro-vae: {error}{exc}", file=sys.stderr)
        return EXIT_DIVERGED if isinstance(exc, Diverged) else exc.exit_code
    finally:
        run.unlock()


def _train(prepared: Prepared, run: Run, overwrite: bool, resume: bool) -> int:
    """Fit, evaluate and draw the figures, with the run locked throughout (by rank 0)."""
    from pyro_vae.trainer import fit

    trainer = fit(prepared, run, overwrite=overwrite, resume=resume)
    return _score(prepared, run, trainer.strategy.root_device, trainer.global_rank == 0)


def _score(prepared: Prepared, run: Run, device: torch.device, rank0: bool) -> int:
    """The evaluation that ends ``train``: scores, figures and the printed summary. A stop
    signal or a file that cannot be written (a full disk) here ends the command with one line;
    the trained run stays, and the same command (or ``--resume``) scores it
    (:meth:`Run.unscored`)."""
    from pyro_vae.engine import stopped_during
    from pyro_vae.scoring import evaluate_run

    def where() -> str:
        if run.unscored(prepared.spec):
            return (f"{run.root} keeps the trained run; the same command or pyro-vae train "
                    f"--resume {run.root} scores it")
        return f"its scores and figures are written in {run.root}"

    progress = prepared.spec.train.progress and chatty()
    with stopped_during("the evaluation", where):
        result = evaluate_run(prepared, device, progress=progress)
        if rank0:
            try:
                with run.scoring():
                    write_evaluation(prepared, run, result, curves=True)
            except OSError as exc:
                raise SpecError(exc.filename or str(run.root),
                                f"{exc.strerror or exc}; {where()}") from None
    if rank0:
        print("\n".join([f"data: {prepared.bundle.describe()}", *result.lines()]))
        print(f"run directory: {run.root}")
    return 0


def write_evaluation(prepared: Prepared, run: Run, result: Evaluation, curves: bool) -> None:
    """``eval-<split>.json`` and ``figures/<split>/`` of the evaluated split, nothing of another
    split's; with ``curves`` the training curves too (``figures/training_curves.png``). A linked
    figures folder is refused before anything is written."""
    from pyro_vae.figures import (OnDataScale, curve_series, plot_log_px, plot_training_curves,
                                  read_metrics, write_run_figures)

    bundle, split = prepared.bundle, result.split
    folder = run.directory(figures_path(run.root, split))
    result.to_json(eval_path(run.root, split))
    vae = OnDataScale(prepared.vae, bundle.to_model, bundle.to_data)
    data = bundle.to_data(bundle.split(split)[:result.num_points])
    write_run_figures(vae, data, bundle.shape, folder, labels=bundle.labels.get(split),
                      levels=bundle.levels if bundle.integer else None,
                      seed=prepared.spec.train.seed)
    plot_log_px(result.points.log_px, result.points.ess, folder / "log_px.png",
                num_samples=result.num_samples)
    metrics = run.root / "metrics.csv"
    if curves and metrics.is_file() and curve_series(read_metrics(metrics)):
        plot_training_curves(metrics, folder.parent / "training_curves.png")


def _limit(value: int | None) -> int | None:
    if value is not None and value < 1:
        raise SpecError("--limit", f"must be >= 1, got {value}")
    return value


def cmd_evaluate(args: argparse.Namespace) -> None:
    from pyro_vae.scoring import device_for, evaluate_run
    from pyro_vae.prepared import load_run

    quiet()
    run = Path(args.run_dir)
    run_config(run)
    with Run(run).locked("evaluate") as locked:  # before reading: scores of one checkpoint
        prepared = load_run(run)
        if args.num_samples is not None and args.num_samples < 1:
            raise SpecError("--num-samples", f"must be >= 1, got {args.num_samples}")
        device = device_for(args.accelerator or prepared.spec.train.accelerator)
        if args.method != "is":
            return evaluate_annealed(prepared, locked, args, device)
        result = evaluate_run(prepared, device, args.split, args.num_samples,
                              progress=chatty(), limit=_limit(args.limit))
        write_evaluation(prepared, locked, result, curves=False)
    print("\n".join(result.lines()))


def evaluate_annealed(prepared: Prepared, run: Run, args: argparse.Namespace,
                      device: torch.device) -> None:
    """``--method ais|bdmc`` (:mod:`pyro_vae.annealing`): AIS beside IS on a split, or BDMC on
    points simulated from the model, written into the locked ``run`` (a linked figures folder
    refused); what C and T keep in memory checked first, a long run's time announced, and
    progress over the annealing steps on stderr."""
    from pyro_vae import annealing

    spec, bundle = prepared.spec.evaluate, prepared.bundle
    options = annealing.Annealing(args.chains, args.steps, args.leapfrog, args.limit)
    split, vae = args.split or spec.split, prepared.vae.to(device)
    default = annealing.BDMC_POINTS if args.method == "bdmc" else None
    x = bundle.split(split)[:options.limit or default].to(device)
    num_samples = args.num_samples or spec.num_samples
    options.check_memory(len(x), args.method, spec.memory_budget_mb)
    annealing.announce_duration(vae, x, split, args.method, options, num_samples,
                                spec.memory_budget_mb)
    if args.method == "ais":
        summary = annealing.evaluate_ais(vae, x, split, options, num_samples,
                                         spec.memory_budget_mb, progress=chatty(),
                                         log_jacobian=bundle.log_jacobian)
    else:  # the split's rows set the simulated points' number and shape, not their values
        summary = annealing.evaluate_bdmc(vae, x, options, spec.memory_budget_mb,
                                          progress=chatty(), scale=bundle.scale_name)
    run.directory(figures_path(run.root, summary["split"]))
    annealing.write(run.root, summary)
    print("\n".join(annealing.lines(summary)))


PLOTTED = 1024  # samples that sample --png draws, at most: a 32 × 32 grid
#: the file options of encode and sample, and the suffix each must end in
SUFFIXES = {"--out": ".npz", "--png": ".png"}


def _new_files(overwrite: bool, **outputs: str | None) -> None:
    """Check the files a command will write (``out=``, ``png=``: the path or None) before it
    computes anything: the option's suffix, not a directory, and not an existing file unless
    ``--overwrite``, so that no file of the user's is replaced by mistake."""
    for name, path in outputs.items():
        flag = f"--{name}"
        suffix = SUFFIXES[flag]
        if path is None:
            continue
        if not path.endswith(suffix):
            raise SpecError(flag, f"{path}: give a file name ending in {suffix}")
        if Path(path).is_dir():
            raise SpecError(flag, f"{path} is a directory; give a file name")
        if Path(path).exists() and not overwrite:
            raise SpecError(flag, f"{path} exists; pass --overwrite to replace it, or "
                            "choose another name")


def cmd_encode(args: argparse.Namespace) -> None:
    from pyro_vae.export import encode_split
    from pyro_vae.prepared import load_run

    quiet()
    _new_files(args.overwrite, out=args.out)
    with _writing_into(args.run_dir, args.out, command="encode"):
        prepared = load_run(Path(args.run_dir))
        arrays = encode_split(prepared.vae, prepared.bundle, args.split, _limit(args.limit))
        _save_npz(args.out, arrays)
    n, d = arrays["mean"].shape
    extra = ", labels" if "labels" in arrays else ""
    print(f"encode: {args.out}: mean, scale ({n}, {d}){extra} of q(z|x), {args.split} split")


def cmd_sample(args: argparse.Namespace) -> None:
    """Draw -n samples into --out, batch by batch (:func:`pyro_vae.export.write_samples`), after
    bounding n (:func:`pyro_vae.export.check_samples`); --png draws the first :data:`PLOTTED`."""
    from pyro_vae.export import check_samples, write_samples
    from pyro_vae.figures import is_image_shape, plot_samples, plot_samples_vs_data
    from pyro_vae.prepared import load_run

    quiet()
    if args.n < 1:
        raise SpecError("-n", f"must be >= 1, got {args.n}")
    _new_files(args.overwrite, out=args.out, png=args.png)
    with _writing_into(args.run_dir, args.out, args.png, command="sample"):
        prepared = load_run(Path(args.run_dir))
        bundle, out = prepared.bundle, Path(args.out)
        seed = prepared.spec.train.seed if args.seed is None else args.seed
        shapes = check_samples(prepared.vae, bundle, args.n, out, means=args.means)
        head = write_samples(out, prepared.vae, bundle, args.n, means=args.means, seed=seed,
                             keep=PLOTTED if args.png else 0)
        what = "means E[x|z]" if args.means else "draws x ~ p(x|z)"
        print(f"sample: {args.out}: x {[args.n, *shapes['x']]} ({what}), z "
              f"{[args.n, *shapes['z']]} ~ p(z)")
        if head is not None:
            x = head.reshape(len(head), -1)
            if is_image_shape(bundle.shape):
                plot_samples(x, bundle.shape, args.png,
                             bundle.levels if bundle.integer_values else None,
                             title=f"Samples ({what})")
            else:
                plot_samples_vs_data(bundle.to_values(bundle.split("test")), x, args.png)
            print(f"sample: {args.png}" + (f" (the first {len(x)})" if len(x) < args.n else ""))


def _writing_into(run_dir: str, *outputs: str | None, command: str) -> AbstractContextManager:
    """The run's lock (:meth:`Run.locked`), to take before reading the run, when one of
    ``outputs``, files a command writes, lies inside the run directory; nothing otherwise
    (reading a run needs no lock: its files are replaced whole)."""
    root = Path(run_dir).resolve()
    if not any(root in Path(p).resolve().parents for p in outputs if p):
        return nullcontext()
    run_config(Path(run_dir))
    return Run(run_dir).locked(command)


def _save_npz(path: str, arrays: dict[str, Any]) -> None:
    """``numpy.savez`` to ``path`` exactly (no ``.npz`` appended), atomically."""
    import numpy as np

    from pyro_vae.atomic import write_atomic

    write_atomic(Path(path), lambda f: np.savez(f, **arrays))


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
    p = _Parser(prog="pyro-vae", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="fit a VAE from a YAML spec, or resume a run")
    t.add_argument("config", nargs="?", help="YAML spec (see examples/configs)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key, e.g. --set prior.name=vamp (repeatable)")
    t.add_argument("--out", type=directory_argument,
                   help="run directory (default runs/<config name>)")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the pyro-vae run in --out (never a directory that is not a run)")
    t.add_argument("--resume", metavar="RUN_DIR",
                   help="continue RUN_DIR from its last checkpoint (no CONFIG, --out, --overwrite)")
    t.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], help="sets train.accelerator")
    t.add_argument("--devices", type=int, metavar="N", help="sets train.devices (per node)")
    t.add_argument("--num-nodes", type=int, metavar="N",
                   help="sets train.num_nodes (machines started by torchrun or SLURM)")
    t.add_argument("--strategy", choices=["auto", "ddp"],
                   help="sets train.strategy (ddp: one process per device)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="importance-sampled log p(x) of a trained run")
    e.add_argument("run_dir")
    e.add_argument("--num-samples", type=int, help="K importance samples per data point")
    e.add_argument("--split", choices=["train", "val", "test"],
                   help="the split to score (default: the run's evaluate.split); writes "
                        "eval-SPLIT.json and figures/SPLIT/ only")
    e.add_argument("--limit", type=int, metavar="N", help="score the first N points only "
                   "(bdmc: simulate N points, default 50)")
    e.add_argument("--accelerator", choices=["auto", "cpu", "gpu"],
                   help="where to evaluate (default: the run's train.accelerator)")
    e.add_argument("--method", choices=["is", "ais", "bdmc"], default="is",
                   help="is: importance sampling (default); ais: annealed importance sampling "
                        "beside IS, writes eval-SPLIT-ais.json; bdmc: bounds on simulated data, "
                        "writes eval-simulated-bdmc.json")
    e.add_argument("--chains", type=int, default=16, help="AIS chains per point (default 16)")
    e.add_argument("--steps", type=int, default=1000, help="AIS annealing steps (default 1000)")
    e.add_argument("--leapfrog", type=int, default=10,
                   help="leapfrog steps per HMC transition (default 10)")
    e.set_defaults(func=cmd_evaluate)

    n = sub.add_parser("encode", help="posterior means and scales of a split, as an .npz")
    n.add_argument("run_dir")
    n.add_argument("--split", choices=["train", "val", "test"], default="test",
                   help="default: test")
    n.add_argument("--out", required=True, metavar="FILE.npz",
                   help="writes arrays mean and scale (N, latent_dim), and labels (N,) where "
                        "the data have them")
    n.add_argument("--limit", type=int, metavar="N", help="the first N items only")
    n.add_argument("--overwrite", action="store_true", help="replace FILE.npz if it exists")
    n.set_defaults(func=cmd_encode)

    m = sub.add_parser("sample", help="samples from the model, as an .npz (and a PNG)")
    m.add_argument("run_dir")
    m.add_argument("-n", type=int, default=1000, help="number of samples (default 1000)")
    m.add_argument("--out", required=True, metavar="FILE.npz",
                   help="writes arrays x (n, *item shape), on the data's own scale, and "
                        "z (n, latent_dim)")
    m.add_argument("--means", action="store_true",
                   help="x = E[x|z] (decoder means) instead of draws from p(x|z)")
    m.add_argument("--png", metavar="FILE.png", help="also draw them: a grid for images, "
                   "a scatter against the test data on its first two principal axes otherwise")
    m.add_argument("--seed", type=int, help="default: the run's train.seed")
    m.add_argument("--overwrite", action="store_true",
                   help="replace FILE.npz and FILE.png if they exist")
    m.set_defaults(func=cmd_sample)

    r = sub.add_parser("report", help="write RUN_DIR/report.html: one self-contained page")
    r.add_argument("run_dir")
    r.set_defaults(func=cmd_report)

    add_compare_parser(sub)

    d = sub.add_parser("datasets", help="list the registries: data, priors, likelihoods, ...")
    d.set_defaults(func=cmd_datasets)
    for command in sub.choices.values():
        command.add_argument("--verbose", action="store_true", help="show progress bars, "
                             "notices and warnings on stderr even when it is not a terminal")
    return p


def crash_log(command: str, argv: Sequence[str]) -> Path | None:
    """Write the traceback being handled, with the command line and versions, to a new file in
    ``$XDG_CACHE_HOME/pyro-vae/logs`` (default ``~/.cache``), else in the temp directory; its
    path, or None when neither can be written."""
    import platform
    import tempfile
    import time
    import traceback
    from importlib.metadata import PackageNotFoundError, version

    from pyro_vae.cache import cache_dir

    try:
        release = version("pyro-vae")
    except PackageNotFoundError:  # run from a source tree
        release = "(not installed)"
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = (f"pyro-vae {release}, Python {platform.python_version()}, "
            f"{platform.platform()}\ncommand: {command}; argv: {list(argv)!r}\n\n"
            f"{traceback.format_exc()}")
    for folder in (cache_dir() / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return folder / name
        except OSError:
            continue
    return None


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
