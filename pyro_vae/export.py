"""Arrays out of a trained run: posterior parameters of a split, and samples from the model.

    encode:  mean = μ_φ(x'),  scale = σ_φ(x')   of q(z | x') = N(μ, diag σ²), per item of a split
    sample:  z ~ p(z),  x' ~ p(x' | z)  (or x' = E[x' | z] with ``means``),  x = t⁻¹(x')
             a kind that reads labels (cvae): y given,  z ~ p(z | y),  x' ~ p(x' | z, y)

x' is the data as the model sees it (:attr:`pyro_vae.bundle.DataBundle.transform`); samples are
returned as the data's own values, ``x`` of shape (n, *item shape), beside ``z`` (n, D) and,
for a kind that reads labels, each sample's class ``y`` (n,): t⁻¹ undoes standardize, and
maps a dequantized x' = (k + u)/d to its level k (:meth:`pyro_vae.bundle.DataBundle.to_values`).
Both run on the CPU.

Samples are drawn BATCH at a time, and the same seed gives the same values whatever n is split
into. :func:`write_samples` streams them into the .npz batch by batch, so memory holds one batch
(and the first ``keep`` rows of x) for any n; :func:`check_samples` first bounds n, by
arithmetic: at most :data:`MAX_SAMPLES`, and the file (n times the bytes of one sample) within
the free space of its disk.

:func:`encode_run` and :func:`sample_run` are ``pyro-vae encode`` and ``sample``: they check the
files they will write before computing anything (the suffix, not a directory, not an existing
file unless ``overwrite``), and hold the run's lock when a file lies inside the run.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyro
import torch

from pyro_vae.atomic import write_atomic
from pyro_vae.bundle import DataBundle
from pyro_vae.registry import SpecError
from pyro_vae.rundir import Run
from pyro_vae.vae import VAE

BATCH = 1000  # items per encoder or decoder call
MAX_SAMPLES = 10**9  # samples per call of sample: beyond, n is a typo (or 2**63)
HEADER_BYTES = 4096  # an upper bound on the .npz's own bytes: two .npy headers, zip records
PLOTTED = 1024  # samples that sample --png draws, at most: a 32 × 32 grid
#: the file options of encode and sample, and the suffix each must end in
SUFFIXES = {"--out": ".npz", "--png": ".png"}


@torch.no_grad()
def encode_split(
    vae: VAE, bundle: DataBundle, split: str, limit: int | None = None
) -> dict[str, np.ndarray]:
    """``mean`` and ``scale`` (N, D) of q(z | x) for the first ``limit`` items of ``split``
    (all by default), and ``labels`` (N,) where the data set has them."""
    x = bundle.split(split)[:limit]
    y = bundle.split_labels(split)[:limit] if vae.reads_labels else None  # q(z | x, y)
    vae.eval()
    parts = [
        vae.encode(x[i : i + BATCH], None if y is None else y[i : i + BATCH])
        for i in range(0, len(x), BATCH)
    ]
    out = {
        "mean": torch.cat([p[0] for p in parts]).numpy(),
        "scale": torch.cat([p[1] for p in parts]).numpy(),
    }
    labels = bundle.labels.get(split)
    if labels is not None:
        out["labels"] = labels[:limit].numpy()
    return out


@torch.no_grad()
def draw(
    vae: VAE,
    bundle: DataBundle,
    n: int,
    each: Callable[[dict[str, np.ndarray]], object],
    means: bool = False,
    seed: int = 0,
    label: int | None = None,
) -> None:
    """``each(batch)`` for successive batches of at most :data:`BATCH` of n samples, ``batch``
    holding ``z`` (b, D) drawn from the prior (z_1, drawn top-down, with stochastic layers) and
    ``x`` (b, *shape) drawn from p(x | z), or its mean with ``means``, on the data's own scale;
    seeded, the caller's RNG state untouched (``each`` must not draw from torch's RNG). A kind
    that reads labels draws from p(x | z, y) p(z | y) with y = ``label``, else the classes in
    turn (:meth:`pyro_vae.vae.VAE.labels_for`), and the batch holds those ``y`` (b,) too."""
    vae.eval()
    with torch.random.fork_rng(), pyro.validation_enabled(False):
        torch.manual_seed(seed)
        for start in range(0, n, BATCH):
            y = vae.labels_for(min(BATCH, n - start), label, start)
            z = vae.sample_codes(min(BATCH, n - start), y)
            out = vae.decoder_output(z, y)
            x = vae.likelihood.mean(out) if means else vae.likelihood.forward(out).sample()
            batch = {
                "x": bundle.to_values(x.float()).reshape(len(z), *bundle.shape).numpy(),
                "z": z.numpy(),
            }
            each(batch if y is None else {**batch, "y": y.numpy()})


def sample(
    vae: VAE,
    bundle: DataBundle,
    n: int,
    means: bool = False,
    seed: int = 0,
    label: int | None = None,
) -> dict[str, np.ndarray]:
    """The n samples of :func:`draw` in memory: ``x`` (n, *shape), ``z`` (n, D) and, for a kind
    that reads labels, ``y`` (n,)."""
    parts: list[dict[str, np.ndarray]] = []
    draw(vae, bundle, n, parts.append, means, seed, label)
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def check_samples(
    vae: VAE,
    bundle: DataBundle,
    n: int,
    path: Path,
    means: bool = False,
    label: int | None = None,
) -> dict[str, tuple[int, ...]]:
    """The item shape of each array of the .npz of n samples (``x``, ``z``, ``y``), after a SpecError
    naming ``-n`` where n > :data:`MAX_SAMPLES`, or where the file, n·b bytes (b those of one
    sample, drawn apart from the caller's RNG) plus :data:`HEADER_BYTES`, and the temporary copies
    of z (and y) that :func:`write_samples` keeps beside it exceed the free space of ``path``'s
    disk (``shutil.disk_usage``)."""
    one = sample(vae, bundle, 1, means, label=label)
    size = n * sum(a.nbytes for a in one.values()) + HEADER_BYTES
    if n > MAX_SAMPLES:
        raise SpecError(
            "-n",
            f"{n} samples would take {_size(size)}; at most {MAX_SAMPLES} "
            "per call (split them over calls with --seed)",
        )
    folder = path.absolute().parent
    kept = sum(a.nbytes for name, a in one.items() if name != "x")
    need, free = size + n * kept, shutil.disk_usage(folder).free
    if need > free:
        raise SpecError(
            "-n",
            f"{n} samples need {_size(need)} on disk ({_size(size)} of .npz "
            f"and a temporary copy of z), more than the {_size(free)} free in "
            f"{folder}; lower -n or choose another --out",
        )
    return {name: a.shape[1:] for name, a in one.items()}


def write_samples(
    path: Path,
    vae: VAE,
    bundle: DataBundle,
    n: int,
    means: bool = False,
    seed: int = 0,
    keep: int = 0,
    label: int | None = None,
) -> np.ndarray | None:
    """The n samples of :func:`draw` written to the .npz ``path`` (atomically) as
    ``numpy.savez(path, x=x, z=z)`` (and ``y=y`` for a kind that reads labels) writes them, batch
    by batch: a zip holds one entry after another, so z and y go to unnamed temporary files
    beside ``path`` while x is written, and are copied after it. Returns (copies of) the first
    ``keep`` rows of x, None if ``keep`` is 0."""
    head: list[np.ndarray] = []
    headers: dict[str, dict[str, object]] = {}

    def write(f: BinaryIO) -> None:
        with (
            zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf,
            ExitStack() as stack,
        ):
            later: dict[str, BinaryIO] = {}  # z (and y), until x is whole
            with zf.open("x.npy", mode="w", force_zip64=True) as x_file:

                def each(batch: dict[str, np.ndarray]) -> None:
                    if not headers:  # C order, as the bytes are written
                        headers.update(
                            {
                                name: {
                                    **np.lib.format.header_data_from_array_1_0(a),
                                    "fortran_order": False,
                                    "shape": (n, *a.shape[1:]),
                                }
                                for name, a in batch.items()
                            }
                        )
                        np.lib.format.write_array_header_1_0(x_file, headers["x"])
                    x_file.write(batch["x"].tobytes())
                    for name in [name for name in batch if name != "x"]:
                        if name not in later:
                            later[name] = stack.enter_context(
                                tempfile.TemporaryFile(dir=path.absolute().parent)
                            )
                        later[name].write(batch[name].tobytes())
                    room = keep - sum(map(len, head))
                    if room > 0:
                        head.append(batch["x"][:room].copy())

                draw(vae, bundle, n, each, means, seed, label)
            for name, kept in later.items():
                kept.seek(0)
                with zf.open(f"{name}.npy", mode="w", force_zip64=True) as npy:
                    np.lib.format.write_array_header_1_0(npy, headers[name])
                    shutil.copyfileobj(kept, npy, 2**20)

    write_atomic(path, write)
    return np.concatenate(head) if head else None


def _size(nbytes: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} bytes"


def new_files(overwrite: bool, **outputs: str | Path | None) -> None:
    """Check the files a command will write (``out=``, ``png=``: the path or None) before it
    computes anything: the option's suffix, not a directory, in a folder that exists, and not an
    existing file unless ``overwrite``, so that no file of the user's is replaced by mistake."""
    for name, path in outputs.items():
        flag = f"--{name}"
        suffix = SUFFIXES[flag]
        if path is None:
            continue
        if not str(path).endswith(suffix):
            raise SpecError(flag, f"{path}: give a file name ending in {suffix}")
        if Path(path).is_dir():
            raise SpecError(flag, f"{path} is a directory; give a file name")
        if not Path(path).absolute().parent.is_dir():
            raise SpecError(
                flag, f"{path}: the folder {Path(path).parent} does not exist; create it first"
            )
        if Path(path).exists() and not overwrite:
            raise SpecError(
                flag, f"{path} exists; pass --overwrite to replace it, or choose another name"
            )


def writing_into(run: Run, *outputs: str | Path | None, command: str) -> AbstractContextManager:
    """The run's lock (:meth:`Run.locked`), to take before reading the run, when one of
    ``outputs``, files a command writes, lies inside the run directory; nothing otherwise
    (reading a run needs no lock: its files are replaced whole)."""
    root = run.root.resolve()
    if not any(root in Path(p).resolve().parents for p in outputs if p):
        return nullcontext()
    run.require_config()
    return run.locked(command)


def encode_run(
    run: Run,
    out: str | Path,
    split: str = "test",
    limit: int | None = None,
    overwrite: bool = False,
) -> dict[str, np.ndarray]:
    """``pyro-vae encode``: :func:`encode_split` of a trained run, saved as the .npz ``out``
    (atomically, exactly that name); returns the arrays."""
    from pyro_vae.prepared import load_run

    new_files(overwrite, out=out)
    with writing_into(run, out, command="encode"):
        prepared = load_run(run)
        arrays = encode_split(prepared.vae, prepared.bundle, split, limit)
        write_atomic(Path(out), lambda f: np.savez(f, **arrays))
    return arrays


@dataclass
class Sampled:
    """What :func:`sample_run` wrote: n samples of ``shapes`` (item shapes of x, z and, for a
    kind that reads labels, y) in ``out``, and the first ``plotted`` drawn in ``png``."""

    out: Path
    n: int
    shapes: dict[str, tuple[int, ...]]
    means: bool
    png: Path | None = None
    plotted: int = 0

    def lines(self) -> list[str]:
        what = "means E[x|z]" if self.means else "draws x ~ p(x|z)"
        lines = [
            (
                f"sample: {self.out}: x {[self.n, *self.shapes['x']]} ({what}), z "
                f"{[self.n, *self.shapes['z']]} ~ p(z)"
                + (f", y [{self.n}] (the class of each)" if "y" in self.shapes else "")
            )
        ]
        if self.png is not None:
            first = f" (the first {self.plotted})" if self.plotted < self.n else ""
            lines.append(f"sample: {self.png}{first}")
        return lines


def sample_run(
    run: Run,
    out: str | Path,
    n: int = 1000,
    png: str | Path | None = None,
    means: bool = False,
    seed: int | None = None,
    overwrite: bool = False,
    label: int | None = None,
) -> Sampled:
    """``pyro-vae sample``: n samples of a trained run into the .npz ``out``, batch by batch
    (:func:`write_samples`), after bounding n (:func:`check_samples`); ``png`` draws the first
    :data:`PLOTTED` (a grid for images, a scatter against the test data otherwise); ``seed``
    defaults to the run's ``train.seed``; ``label``: the class k to draw from, for a model kind
    that reads labels (``cvae``: x ~ p(x | z, y = k)), else the classes in turn."""
    from pyro_vae.figures import is_image_shape, plot_samples, plot_samples_vs_data, save
    from pyro_vae.prepared import load_run

    if n < 1:
        raise SpecError("-n", f"must be >= 1, got {n}")
    new_files(overwrite, out=out, png=png)
    with writing_into(run, out, png, command="sample"):
        prepared = load_run(run)
        bundle, path = prepared.bundle, Path(out)
        seed = prepared.spec.train.seed if seed is None else seed
        shapes = check_samples(prepared.vae, bundle, n, path, means=means, label=label)
        head = write_samples(
            path,
            prepared.vae,
            bundle,
            n,
            means=means,
            seed=seed,
            keep=PLOTTED if png else 0,
            label=label,
        )
        done = Sampled(path, n, shapes, means)
        if png is not None and head is not None:
            x = head.reshape(len(head), -1)
            what = "means E[x|z]" if means else "draws x ~ p(x|z)"
            if is_image_shape(bundle.shape):
                fig = plot_samples(
                    x,
                    bundle.shape,
                    bundle.levels if bundle.integer_values else None,
                    title=f"Samples ({what})",
                )
            else:
                fig = plot_samples_vs_data(bundle.to_values(bundle.split("test")), x)
            done.png, done.plotted = save(fig, png), len(x)
    return done
