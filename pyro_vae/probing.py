"""A linear probe of a trained run's latents: how much of the labels a linear classifier reads
off the posterior means, from few labels to all of them (``pyro-vae probe``).

For each N of ``labels`` (``None``: every labelled training item; ``data.labeled`` hides the
others), N labelled training items are drawn, stratified by class and seeded
(:func:`stratified_draw`), and two multinomial logistic regressions (scikit-learn's
``LogisticRegression``, L2 penalty C = 1, each feature standardized on the N items) are fitted
on them and scored on the whole test split:

    latents:  f(x) = μ_φ(x) = E_q[z_1 | x]   (the first latent layer's mean, as ``pyro-vae encode``
                                              gives it; a kind that reads labels encodes q(z | x, y))
    pixels:   f(x) = x                      (the same items, as the encoder reads them, on the
                                              data's own scale)

    p(y = c | x) = softmax_c(w_c · f(x) + b_c),    accuracy = (1/M) Σ_m 1[argmax_c p(c | x_m) = y_m]

over the M test items. The gap between the two rows is what the encoder's D numbers keep of the
label that the P pixels hold; the chance level is the test share of the most frequent class.
Writes ``probe.json`` (the table) and ``figures/probe.png`` (accuracy against N, log x axis)
into the run, through :class:`pyro_vae.rundir.Run`, holding its lock.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pyro_vae.registry import SpecError
from pyro_vae.rundir import PROBE_JSON, Run

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

#: ``--labels`` by default: 100 and 1000 labelled items, and all of them.
DEFAULT_LABELS: tuple[int | None, ...] = (100, 1000, None)
#: At most this many sizes in one ``--labels`` list (each is two classifier fits).
MAX_SIZES = 16
FLAG = "--labels"
ALL = "all"
EXAMPLE = "give counts or 'all', comma-separated, e.g. 100,1000,all"


@dataclass(frozen=True)
class ProbeRow:
    """Test accuracies of the two classifiers fitted on ``labels`` training items."""

    labels: int
    latent_accuracy: float
    pixel_accuracy: float


@dataclass
class ProbeResult:
    """What :func:`probe` measured: one :class:`ProbeRow` per number of labels, on
    ``test_points`` test items of ``num_classes`` classes, latents of ``latent_dim`` numbers
    against ``pixels`` of them, draws seeded with ``seed``; ``chance`` is the test share of the
    most frequent class; ``files``: what was written into the run."""

    run: str
    rows: list[ProbeRow]
    num_classes: int
    test_points: int
    latent_dim: int
    pixels: int
    seed: int
    chance: float
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The table and its settings, as ``probe.json`` holds them."""
        return {k: v for k, v in asdict(self).items() if k not in ("run", "files")}

    def table(self) -> str:
        """A markdown table: a row per number of labels, the two accuracies side by side."""
        lines = [
            "| labels | latents E_q[z\\|x] | pixels |",
            "|---:|---:|---:|",
            *(
                f"| {r.labels} | {r.latent_accuracy:.3f} | {r.pixel_accuracy:.3f} |"
                for r in self.rows
            ),
        ]
        return "\n".join(lines)

    def lines(self) -> list[str]:
        """What ``pyro-vae probe`` prints: the settings, the table and the files written."""
        return [
            (
                f"probe {self.run}: logistic regression, test accuracy on {self.test_points} "
                f"test items of {self.num_classes} classes (chance {self.chance:.3f}); latents "
                f"{self.latent_dim}-d against pixels {self.pixels}-d, seed {self.seed}"
            ),
            self.table(),
            *(f"probe: {path}" for path in self.files),
        ]

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_markdown_(self) -> str:
        return "\n\n".join(self.lines())


def parse_labels(text: str) -> tuple[int | None, ...]:
    """``"100,1000,all"`` → ``(100, 1000, None)``: counts ≥ 1 or ``all``, at most
    :data:`MAX_SIZES` of them; a SpecError naming ``--labels`` otherwise."""
    parts = [part.strip() for part in text.split(",")]
    sizes: list[int | None] = []
    for part in parts:
        if part.lower() == ALL:
            sizes.append(None)
        elif part.isdigit() and int(part) >= 1:
            sizes.append(int(part))
        else:
            raise SpecError(FLAG, f"{part!r} in {text!r} is not a count >= 1 or '{ALL}'; {EXAMPLE}")
    return checked_sizes(sizes)


def checked_sizes(labels: Sequence[int | None]) -> tuple[int | None, ...]:
    """``labels`` as a tuple without repeats, after a SpecError naming ``--labels`` for an empty
    list, more than :data:`MAX_SIZES` sizes or one that is not an int ≥ 1 or None (all)."""
    sizes = tuple(dict.fromkeys(labels))
    if not sizes:
        raise SpecError(FLAG, f"no sizes given; {EXAMPLE}")
    if len(sizes) > MAX_SIZES:
        raise SpecError(FLAG, f"{len(sizes)} sizes; at most {MAX_SIZES} in one probe")
    for n in sizes:
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise SpecError(FLAG, f"{n!r} is not a count >= 1 or None (all); {EXAMPLE}")
    return sizes


def stratified_draw(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of n of the items labelled ``y`` (sorted), stratified: each of the K classes
    present keeps one item, and the other n − K go to the classes in proportion to their
    n_c − 1 further items (largest remainders), so class c gets

        n_c' = 1 + ⌊(n − K)(n_c − 1)/(N − K)⌋ (+1 for the classes of largest remainder),

    never more than its n_c; the items of each class drawn uniformly without replacement."""
    classes, counts = np.unique(y, return_counts=True)
    spare, pool = n - len(classes), len(y) - len(classes)
    share = spare * (counts - 1) / pool if pool else np.zeros(len(counts))
    quota = 1 + np.floor(share).astype(np.int64)
    left = n - int(quota.sum())
    quota[np.argsort(-(share - np.floor(share)), kind="stable")[:left]] += 1
    chosen = [
        rng.choice(np.flatnonzero(y == c), size=int(k), replace=False)
        for c, k in zip(classes, quota)
    ]
    return np.sort(np.concatenate(chosen))


def accuracy(
    train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray, seed: int
) -> float:
    """Test accuracy of a multinomial logistic regression on standardized features (module
    docstring), fitted on (``train``, ``y_train``)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed)
    )
    with warnings.catch_warnings():  # a probe reports what 1000 L-BFGS steps reach
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit(train, y_train)
    return float((classifier.predict(test) == y_test).mean())


def plot_probe(result: ProbeResult) -> Figure:
    """Test accuracy against the number of labels (log x axis): latents and pixels, with the
    chance level dashed."""
    from pyro_vae.figures import _figure

    fig = _figure(6.0, 4.0)
    ax = fig.subplots()
    n = [r.labels for r in result.rows]
    ax.plot(n, [r.latent_accuracy for r in result.rows], "o-", label="latents E_q[z|x]")
    ax.plot(n, [r.pixel_accuracy for r in result.rows], "s--", label="pixels")
    ax.axhline(result.chance, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set(
        xscale="log",
        xlabel="labelled training items",
        ylabel=f"test accuracy ({result.test_points} items)",
        title="Linear probe: logistic regression",
        ylim=(0, 1.02),
    )
    ax.legend(fontsize="small")
    return fig


def probe(
    run: Run | str | os.PathLike[str],
    labels: Sequence[int | None] = DEFAULT_LABELS,
    seed: int | None = None,
) -> ProbeResult:
    """Fit the two classifiers of the module docstring on N labelled training items for each N
    of ``labels`` (None: all of them) and score them on the test split; ``seed`` (default the
    run's ``train.seed``) draws the items. Writes ``probe.json`` and ``figures/probe.png`` into
    the run, holding its lock. SpecError naming ``--labels`` when the run's data have no labels,
    or an N exceeds the training split or falls below its number of classes.

    >>> result = pyro_vae.probe("runs/digits", labels=[50, 200, None])  # doctest: +SKIP
    >>> result.rows[-1].latent_accuracy                                 # doctest: +SKIP
    """
    from pyro_vae.export import encode_split

    run = run if isinstance(run, Run) else Run(run)
    sizes = checked_sizes(labels)
    run.require_config()
    with run.locked("probe"):
        prepared = run.load()
        bundle, vae = prepared.bundle, prepared.vae
        y_train, y_test = (bundle.labels.get(s) for s in ("train", "test"))
        if y_train is None or y_test is None:
            raise SpecError(FLAG, f"the data of {run.root} ({bundle.name}) have no labels to probe")
        known = np.flatnonzero(y_train.numpy() >= 0)  # data.labeled hides the rest as -1
        y_train_np, y_test_np = y_train.numpy()[known], y_test.numpy()
        total, classes = len(known), len(np.unique(y_train_np))
        counts = list(dict.fromkeys(total if n is None else n for n in sizes))
        for n in counts:
            if not classes <= n <= total:
                raise SpecError(
                    FLAG,
                    f"{n} labels: give from {classes} (the classes of the training split) to "
                    f"{total} (its labelled items), or '{ALL}'",
                )
        seed = prepared.spec.train.seed if seed is None else seed
        latents = {s: encode_split(vae, bundle, s)["mean"] for s in ("train", "test")}
        pixels = {s: bundle.to_values(bundle.split(s)).numpy() for s in ("train", "test")}
        latents["train"], pixels["train"] = latents["train"][known], pixels["train"][known]
        rows = []
        for n in counts:
            rng = np.random.default_rng(seed)
            rows_n = np.arange(total) if n == total else stratified_draw(y_train_np, n, rng)
            y_n = y_train_np[rows_n]
            rows.append(
                ProbeRow(
                    n,
                    accuracy(latents["train"][rows_n], y_n, latents["test"], y_test_np, seed),
                    accuracy(pixels["train"][rows_n], y_n, pixels["test"], y_test_np, seed),
                )
            )
        result = ProbeResult(
            run=str(run.root),
            rows=rows,
            num_classes=classes,
            test_points=len(y_test_np),
            latent_dim=latents["test"].shape[1],
            pixels=pixels["test"].shape[1],
            seed=seed,
            chance=float(np.bincount(y_test_np).max() / len(y_test_np)),
        )
        written = [
            run.write_json(run.root / PROBE_JSON, result.to_json()),
            *run.write_figures({"probe": plot_probe(result)}),
        ]
    result.files = [str(p) for p in written]
    return result


__all__ = ["DEFAULT_LABELS", "ProbeResult", "ProbeRow", "parse_labels", "probe"]
