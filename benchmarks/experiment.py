"""Benchmark 9: an experiment, not a run (issue #27): four priors on Fashion-MNIST, three seeds.

``benchmarks/experiments/priors-fashion-mnist.yaml`` holds examples/experiments/priors.yaml's
cells (N(0, I), a 10-component mixture, a VampPrior of 500 pseudo-inputs, a flow) on
Fashion-MNIST (dynamically binarized, the 784-200-200-50 tanh MLP of
``examples/configs/fashion-mnist.yaml``), one short budget for every cell (10 epochs, K = 1000 on
the whole test set), seeds 0–2. ``pyro-vae sweep`` trains them (resumable: the state folder,
outside the work tree, keeps the runs; a rerun trains only what is missing), then
``pyro-vae aggregate`` gives each prior's mean ± s.e. over seeds and its gain over N(0, I),
paired per test image within each seed:

    d_i,s = log p̂_prior(x_i) − log p̂_N(0,I)(x_i)   (seed s, the same test image i)
    gain = mean_s mean_i d_i,s ± sd_s(mean_i d_i,s)/√S

``python -m benchmarks.experiment [--state DIR] [--threads 1]`` (about 40 min on one thread);
``--toy`` runs the same cells on digits at toy size.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from benchmarks.common import REPO, Options, Section
from pyro_vae.cache import cache_dir

EXPERIMENT = REPO / "benchmarks" / "experiments" / "priors-fashion-mnist.yaml"
BASELINE = ("prior.name=standard_normal",)
FIGURE = "experiment-priors-fashion-mnist.png"


def toy_experiment(folder: Path) -> Path:
    """The experiment's cells on digits, tiny networks, one epoch, two seeds (a smoke run)."""
    spec = yaml.safe_load(EXPERIMENT.read_text())
    spec["base"] = str(REPO / "examples" / "configs" / "digits.yaml")
    spec["set"] = {
        "train.max_epochs": 1,
        "evaluate.num_samples": 8,
        "data.limit": 128,
        "latent_dim": 2,
        "encoder.hidden": [8],
        "decoder.hidden": [8],
        "train.progress": False,
    }
    spec["cells"] = [
        c | ({"prior.pseudo_inputs": 10} if "prior.pseudo_inputs" in c else {})
        for c in spec["cells"]
    ]
    spec["seeds"] = 2
    path = folder / "toy.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run(options: Options, command: str, state: Path | None = None) -> Section:
    """Sweep the experiment into ``state`` (default the cache's ``sweeps/<name>``), aggregate
    it against N(0, I), and keep the aggregate's files and forest plot in the results."""
    from pyro_vae.aggregation import aggregate
    from pyro_vae.experiment import sweep

    results = options.results or REPO / "benchmarks" / "results"
    folder = results / "experiment"
    folder.mkdir(parents=True, exist_ok=True)
    experiment = toy_experiment(folder) if options.toy else EXPERIMENT
    out = state or (folder / "sweep" if options.toy else cache_dir() / "sweeps" / experiment.stem)
    done = sweep(experiment, out, threads=options.threads, progress=False)
    if done.exit_code:
        raise RuntimeError("the sweep did not finish every run: " + "; ".join(done.problems()))
    table = aggregate([out], BASELINE)
    written = table.write(folder)
    figure = next(p for p in written if p.suffix == ".png")
    shown = REPO / "docs" / "gallery" / FIGURE
    if not options.toy:
        shutil.copyfile(figure, shown)
    section = Section(
        "experiment",
        "An experiment: four priors on Fashion-MNIST, three seeds",
        command,
        data=table.to_dict(),
    )
    section.body = "\n\n".join(
        [
            "`pyro-vae sweep benchmarks/experiments/priors-fashion-mnist.yaml` then "
            f"`pyro-vae aggregate DIR --baseline {' '.join(BASELINE)}`: "
            + (
                "digits at toy size (`--toy`). "
                if options.toy
                else "Fashion-MNIST, dynamically binarized, 784-200-200-50 tanh MLP, 10 epochs for every "
                "cell, K = 1000 on the 10 000 test images. "
            )
            + "A gain is paired per test image within each seed (the same data split for every "
            "run), then averaged over seeds; its ± is the s.e. over seeds, the point-level s.e. "
            "beside it is the image-to-image and Monte Carlo noise within a seed.",
            table.group_table(),
            table.gain_table(),
            f"![paired gains](docs/gallery/{FIGURE})" if not options.toy else "",
        ]
    ).rstrip()
    return section


def main(argv: list[str] | None = None) -> None:
    from benchmarks.cli import finish, options_from, parser

    p = parser("An experiment: four priors on Fashion-MNIST, three seeds (sweep + aggregate).")
    p.add_argument(
        "--state",
        type=Path,
        help="the sweep's folder (default: the cache's "
        "sweeps/priors-fashion-mnist; with --toy, a temporary one)",
    )
    args = p.parse_args(argv)
    finish(
        args,
        options_from(args),
        {"experiment": lambda options, command: run(options, command, args.state)},
    )


if __name__ == "__main__":
    main()
