"""Figures of a fitted VAE: prior samples, reconstructions, latent traversals, a latent map,
interpolations, training curves, log p(x) histograms and estimator comparisons.

Each function draws on its own ``matplotlib.figure.Figure`` with an Agg canvas (no pyplot, so no
global figure state and nothing to close) and returns it; a run writes its figures through
:meth:`pyro_vae.rundir.Run.write_figures`, a file elsewhere is written by :func:`save`. Data are flat
vectors: a batch is ``(N, P)`` with a per-item ``shape``; ``(C, H, W)`` with C = 1 (grey) or 3 (RGB)
is an image, anything else a plain vector, for which no image grid is drawn. Image values in [0, 1]
or integer levels ``0..L-1`` (``levels=L``) are shown on [0, 1]; other values on their own range.

The ``vae`` is duck-typed (:class:`VAELike`): ``encode`` gives the parameters ``(mu, sigma)`` of
q(z|x), ``decode`` the mean of p(x|z), ``sample(n)`` decodes z ~ p(z).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pyro_vae.atomic import write_atomic
from pyro_vae.registry import SpecError

if TYPE_CHECKING:
    from pyro_vae.bundle import DataBundle
    from pyro_vae.scoring import Evaluation

DPI = 100
Array = np.ndarray | torch.Tensor


class VAELike(Protocol):
    """What the figures use of a VAE; ``y``: labels, for a model kind that reads them."""

    latent_dim: int

    def encode(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...

    def sample(self, n: int) -> torch.Tensor: ...

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor: ...


class OnDataScale:
    """A VAE of transformed data x' = t(x) seen on the data's own scale: ``encode(x)`` encodes
    t(x), decoded means come back through t⁻¹ (so a standardized run's figures show data units).
    """

    def __init__(self, vae: Any, to_model: Any, to_data: Any) -> None:
        self.vae, self.to_model, self.to_data = vae, to_model, to_data
        self.latent_dim: int = vae.latent_dim
        self.reads_labels: bool = getattr(vae, "reads_labels", False)

    def parameters(self) -> Any:
        return self.vae.parameters()

    def encode(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vae.encode(self.to_model(x), *_given(y))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_data(self.vae.decode(z))

    def sample(self, n: int) -> torch.Tensor:
        return self.to_data(self.vae.sample(n))

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.to_data(self.vae.reconstruct(self.to_model(x), *_given(y)))


def _given(y: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """``(y,)``, or no argument at all without labels (a VAELike of one argument)."""
    return () if y is None else (y,)


# ---------------------------------------------------------------------------------- helpers


def _numpy(x: Array | Sequence[float]) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: Path | str) -> Path:
    """``fig`` written atomically to ``path`` (a file outside a run), in the format its suffix
    names; returns the path."""
    path = Path(path)
    write_atomic(path, lambda f: fig.savefig(f, dpi=DPI, format=path.suffix.lstrip(".") or "png"))
    return path


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def is_image_shape(shape: Sequence[int]) -> bool:
    """``(C, H, W)`` with C = 1 (grey) or C = 3 (RGB)."""
    return len(shape) == 3 and shape[0] in (1, 3)


def _display_range(arrays: Sequence[np.ndarray], levels: int | None) -> tuple[float, float]:
    """The value range mapped to [0, 1]: ``[0, L-1]`` for levels, else [0, 1] or the data's own."""
    if levels is not None:
        return 0.0, float(levels - 1)
    lo, hi = min(float(a.min()) for a in arrays), max(float(a.max()) for a in arrays)
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    return lo, hi if hi > lo else lo + 1.0


def _images(x: np.ndarray, shape: Sequence[int], value_range: tuple[float, float]) -> np.ndarray:
    """``(..., P)`` → ``(..., H, W)`` grey or ``(..., H, W, 3)`` RGB on [0, 1]."""
    lo, hi = value_range
    imgs = np.clip((x - lo) / (hi - lo), 0.0, 1.0).reshape(*x.shape[:-1], *shape)
    return imgs[..., 0, :, :] if shape[0] == 1 else np.moveaxis(imgs, -3, -1)


def _rows(images: np.ndarray, columns: int) -> np.ndarray:
    """``(N, H, W[, 3])`` → ``(R, columns, H, W[, 3])``, padding the last row with white."""
    rows = -(-len(images) // columns)
    blank = np.ones((rows * columns - len(images), *images.shape[1:]))
    return np.concatenate([images, blank]).reshape(rows, columns, *images.shape[1:])


def _mosaic(images: np.ndarray, pad: int = 1) -> np.ndarray:
    """``(R, K, H, W[, 3])`` → one image with ``pad`` white pixels between the cells."""
    rows, cols, h, w = images.shape[:4]
    out = np.ones((rows * (h + pad) - pad, cols * (w + pad) - pad, *images.shape[4:]))
    for r in range(rows):
        for k in range(cols):
            out[r * (h + pad) : r * (h + pad) + h, k * (w + pad) : k * (w + pad) + w] = images[r, k]
    return out


def _image_grid(
    images: np.ndarray,
    title: str,
    row_labels: Sequence[str] = (),
    col_labels: Sequence[str] = (),
    xlabel: str = "",
) -> Figure:
    """Draw ``(R, K, H, W[, 3])`` images as one grid, greyscale, without tick marks."""
    rows, cols, h, w = images.shape[:4]
    cell = 0.7
    fig = _figure(
        cols * cell + (1.2 if row_labels else 0.3), rows * cell + 0.7 + (0.4 if xlabel else 0.0)
    )
    ax = fig.add_subplot()
    ax.imshow(_mosaic(images), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.tick_params(length=0, labelsize="small")
    ax.set_xticks(
        [k * (w + 1) + (w - 1) / 2 for k in range(cols)] if col_labels else [], list(col_labels)
    )
    ax.set_yticks(
        [r * (h + 1) + (h - 1) / 2 for r in range(rows)] if row_labels else [], list(row_labels)
    )
    ax.spines[:].set_visible(False)
    return fig


def _pca_2d(a: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project ``a`` on the first two principal axes of ``reference``; also the explained
    variance fractions ``s_i^2 / Σ s^2`` of those axes. A reference of one point has one axis:
    the second coordinate is then 0."""
    mean = reference.mean(0)
    _, s, vt = np.linalg.svd(reference - mean, full_matrices=False)
    xy = np.zeros((len(a), 2))
    xy[:, : len(vt[:2])] = (a - mean) @ vt[:2].T
    explained, power = np.zeros(2), s.astype(np.float64) ** 2  # float32 would flush 1e-300 to 0
    explained[: len(s[:2])] = power[:2] / max(float(power.sum()), 1e-300)
    return xy, explained


def _device(vae: Any) -> torch.device:
    params = getattr(vae, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    return first.device if first is not None else torch.device("cpu")


# ---------------------------------------------------------------------------------- image figures


@torch.no_grad()
def plot_prior_samples(
    vae: VAELike, shape: Sequence[int], n: int = 64, levels: int | None = None
) -> Figure:
    """A square-ish grid of ``n`` decoder means E[x|z], z ~ p(z)."""
    return plot_samples(vae.sample(n), shape, levels)


def plot_samples(
    x: Array, shape: Sequence[int], levels: int | None = None, title: str = "Samples from the prior"
) -> Figure:
    """A square-ish grid of the images ``x`` (N, P)."""
    x = _numpy(x)
    images = _images(x, shape, _display_range([x], levels))
    return _image_grid(_rows(images, math.ceil(math.sqrt(len(x)))), title)


@torch.no_grad()
def plot_reconstructions(
    vae: VAELike,
    x: torch.Tensor,
    shape: Sequence[int],
    levels: int | None = None,
    columns: int = 8,
    y: torch.Tensor | None = None,
) -> Figure:
    """Rows of data x above rows of their reconstructions decode(E_q[z|x, y]) (``y``: labels,
    for a model kind that reads them)."""
    data, recon = _numpy(x), _numpy(vae.reconstruct(x, *_given(y)))
    value_range = _display_range([data, recon], levels)
    columns = min(columns, len(data))
    pairs = np.stack([_rows(_images(a, shape, value_range), columns) for a in (data, recon)], 1)
    return _image_grid(
        pairs.reshape(-1, *pairs.shape[2:]),
        "Reconstructions",
        row_labels=["data", "recon."] * len(pairs),
    )


@torch.no_grad()
def latent_activity(vae: VAELike, x: torch.Tensor) -> torch.Tensor:
    """``A_u = Cov_x(E_q[z_u|x])`` per latent dimension; u is active when A_u > 0.01
    (Burda et al. 2015, "Importance Weighted Autoencoders")."""
    return _activity(vae.encode(x)[0])


def _activity(loc: torch.Tensor) -> torch.Tensor:
    """The variance over points of each column of ``loc`` (N, D); 0 for a single point."""
    return loc.var(dim=0) if len(loc) > 1 else torch.zeros_like(loc[0])


@torch.no_grad()
def plot_traversals(
    vae: VAELike,
    x: torch.Tensor,
    shape: Sequence[int],
    levels: int | None = None,
    index: int = 0,
    dims: int = 8,
    steps: int = 7,
) -> Figure:
    """Decode ``z = mu(x_i) + t s_u e_u`` for t on a grid over [-3, 3], one row per dimension u
    among the ``dims`` most active ones (:func:`latent_activity`, estimated on the batch ``x``).

    ``s_u`` is the standard deviation of the aggregate posterior q(z_u) = E_x q(z_u|x); by the law
    of total variance ``s_u^2 = Var_x(mu_u(x)) + E_x[sigma_u(x)^2]``. It measures how far the data
    spread along u whatever the prior, where the per-point sigma_u(x) would barely move z.
    """
    loc, scale = vae.encode(x)
    activity = _activity(loc)
    spread = (activity + scale.pow(2).mean(dim=0)).sqrt()
    order = torch.argsort(activity, descending=True)[:dims]
    t = torch.linspace(-3.0, 3.0, steps, dtype=loc.dtype, device=loc.device)
    z = loc[index].repeat(len(order), steps, 1)
    z[torch.arange(len(order))[:, None], torch.arange(steps)[None, :], order[:, None]] += (
        spread[order][:, None] * t[None, :]
    )
    out = _numpy(vae.decode(z.reshape(-1, z.shape[-1]))).reshape(len(order), steps, -1)
    images = _images(out, shape, _display_range([out], levels))
    return _image_grid(
        images,
        "Latent traversals",
        row_labels=[f"z{u} (A={activity[u]:.2f})" for u in order.tolist()],
        col_labels=[f"{v:+.1f}" for v in t.tolist()],
        xlabel="offset from the posterior mean, in aggregate-posterior sd",
    )


@torch.no_grad()
def plot_interpolation(
    vae: VAELike,
    x_start: torch.Tensor,
    x_end: torch.Tensor,
    shape: Sequence[int],
    levels: int | None = None,
    steps: int = 8,
) -> Figure:
    """One row per pair: x_a, decode((1-t) mu(x_a) + t mu(x_b)) for t in [0, 1], then x_b.

    The path is linear in z between the posterior means E_q[z|x_a] and E_q[z|x_b].
    """
    mu_a, mu_b = vae.encode(x_start)[0], vae.encode(x_end)[0]
    t = torch.linspace(0.0, 1.0, steps, dtype=mu_a.dtype, device=mu_a.device)[None, :, None]
    z = (1 - t) * mu_a[:, None] + t * mu_b[:, None]
    path_x = _numpy(vae.decode(z.reshape(-1, z.shape[-1]))).reshape(len(mu_a), steps, -1)
    rows = np.concatenate([_numpy(x_start)[:, None], path_x, _numpy(x_end)[:, None]], axis=1)
    images = _images(rows, shape, _display_range([rows], levels))
    labels = ["x_a", *(f"{v:.2f}" for v in t.flatten().tolist()), "x_b"]
    return _image_grid(
        images,
        "Interpolation in latent space",
        col_labels=labels,
        xlabel="t: z = (1-t) E_q[z|x_a] + t E_q[z|x_b]",
    )


# ---------------------------------------------------------------------------------- scatter plots


def _scatter(ax: Axes, fig: Figure, xy: np.ndarray, labels: np.ndarray | None) -> None:
    """Scatter points; a legend for up to 20 integer classes, a colorbar for other labels."""
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.6)
        return
    classes, codes = np.unique(labels, return_inverse=True)
    numeric = labels.dtype.kind in "biuf"
    if len(classes) <= 20 and (not numeric or np.all(np.mod(classes, 1) == 0)):
        colours = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
        for i, c in enumerate(classes):
            keep = codes == i
            ax.scatter(
                xy[keep, 0],
                xy[keep, 1],
                s=6,
                alpha=0.7,
                color=colours(i),
                label=f"{c:g}" if numeric else str(c),
            )
        ax.legend(
            title="label",
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            markerscale=2.0,
            fontsize="small",
            frameon=False,
        )
    else:
        points = ax.scatter(
            xy[:, 0], xy[:, 1], s=6, alpha=0.7, c=labels if numeric else codes, cmap="viridis"
        )
        fig.colorbar(points, ax=ax, label="label")


@torch.no_grad()
def plot_latent_map(
    vae: VAELike, x: torch.Tensor, labels: Array | None = None, y: torch.Tensor | None = None
) -> Figure:
    """Posterior means E_q[z|x]: as they are for D = 2, on their first two principal axes for
    D > 2, and against the posterior standard deviation for D = 1."""
    loc, scale = (_numpy(a) for a in vae.encode(x, *_given(y)))
    if loc.shape[1] == 1:
        xy, axes = np.concatenate([loc, scale], 1), ("E_q[z|x]", "sd_q[z|x]")
    elif loc.shape[1] == 2:
        xy, axes = loc, ("z1", "z2")
    else:
        xy, explained = _pca_2d(loc, loc)
        axes = tuple(
            f"PC{i + 1} of E_q[z|x] ({100 * e:.0f}% of variance)" for i, e in enumerate(explained)
        )
    fig = _figure(6.0, 5.0)
    ax = fig.add_subplot()
    _scatter(ax, fig, xy, None if labels is None else _numpy(labels).reshape(-1))
    ax.set(title=f"Latent map (posterior means, D={loc.shape[1]})", xlabel=axes[0], ylabel=axes[1])
    return fig


def plot_samples_vs_data(data: Array, samples: Array) -> Figure:
    """Data and model samples on the data's first two principal axes (raw for P ≤ 2; overlaid
    histograms for P = 1)."""
    data, samples = _numpy(data), _numpy(samples)
    fig = _figure(6.0, 5.0)
    ax = fig.add_subplot()
    if data.shape[1] == 1:
        bins = np.histogram_bin_edges(np.concatenate([data, samples]).ravel(), bins=30)
        ax.hist(data.ravel(), bins=bins, alpha=0.6, density=True, label="data")
        ax.hist(samples.ravel(), bins=bins, alpha=0.6, density=True, label="samples")
        ax.set(xlabel="x", ylabel="density")
    else:
        pca = data.shape[1] > 2
        d, s = (_pca_2d(a, data)[0] for a in (data, samples)) if pca else (data, samples)
        ax.scatter(d[:, 0], d[:, 1], s=6, alpha=0.5, label="data")
        ax.scatter(s[:, 0], s[:, 1], s=6, alpha=0.5, label="samples")
        ax.set(xlabel="PC1 of data" if pca else "x1", ylabel="PC2 of data" if pca else "x2")
    ax.set_title("Model samples and data")
    ax.legend()
    return fig


# ---------------------------------------------------------------------------------- curves, scores


def read_text(path: Path | str) -> str:
    """A UTF-8 text file as it is (no newline translation: ready for ``csv``); a SpecError
    naming the file and the first byte that is not UTF-8."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            str(path), f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start}"
        ) from None


def read_metrics(path: Path | str) -> dict[str, np.ndarray]:
    """Columns of a Lightning ``CSVLogger`` metrics.csv as float arrays, NaN where blank."""
    reader = csv.DictReader(io.StringIO(read_text(path)))
    rows = list(reader)
    return {c: np.array([_float(r.get(c)) for r in rows]) for c in reader.fieldnames or []}


#: Training-curve panels: (title, metric family); a family matches e.g. ``train_elbo``,
#: ``val_elbo``, ``train_elbo_epoch``, ``beta``, ``lr-Adam``.
CURVE_PANELS = (
    ("ELBO", "elbo"),
    ("KL divergence", "kl"),
    ("reconstruction", "recon"),
    ("KL weight β", "beta"),
    ("learning rate", "lr"),
)


def _x_axis(metrics: Mapping[str, np.ndarray]) -> tuple[str, np.ndarray]:
    """The step column when it has values, else the epoch column, else the row number."""
    for name in ("step", "epoch"):
        if name in metrics and np.isfinite(metrics[name]).any():
            return name, metrics[name]
    return "row", np.arange(len(next(iter(metrics.values()), ())), dtype=float)


Series = dict[str, tuple[np.ndarray, np.ndarray]]


def curve_series(metrics: Mapping[str, np.ndarray]) -> dict[str, Series]:
    """``{panel title: {column: (x, y)}}`` for every panel with data, x from :func:`_x_axis`."""
    x = _x_axis(metrics)[1]
    panels: dict[str, Series] = {}
    for title, family in CURVE_PANELS:
        pattern = re.compile(rf"(?:(?:train|val)_)?{family}(?:[_-].*)?")
        for column, y in metrics.items():
            keep = np.isfinite(x) & np.isfinite(y)
            if pattern.fullmatch(column) and keep.any():
                panels.setdefault(title, {})[column] = (x[keep], y[keep])
    return panels


def plot_training_curves(metrics_csv: Path | str) -> Figure:
    """One panel per metric family found in metrics.csv: per-step lines, per-epoch markers."""
    metrics = read_metrics(metrics_csv)
    panels = curve_series(metrics)
    if not panels:
        raise ValueError(
            f"{metrics_csv}: no training metrics to plot (looked for "
            f"{', '.join(f for _, f in CURVE_PANELS)} columns)"
        )
    x_name = _x_axis(metrics)[0]
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig = _figure(5.0 * cols, 3.2 * rows)
    for i, (title, series) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        for column, (x, y) in series.items():
            per_epoch = column.startswith("val") or column.endswith("epoch")
            ax.plot(
                x,
                y,
                marker="o" if per_epoch else None,
                markersize=3,
                linewidth=1.0 if per_epoch else 0.8,
                label=column,
            )
        if title == "learning rate" and all((y > 0).all() for _, y in series.values()):
            ax.set_yscale("log")
        ax.set(title=title, xlabel=x_name, ylabel=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Training curves")
    return fig


def plot_log_px(log_px: Array, ess: Array, num_samples: int | None = None) -> Figure:
    """Histograms of per-point log p(x) (importance-sampled: a stochastic lower bound) and of
    the effective sample size ESS = (Σ_k w_k)² / Σ_k w_k² of each point's K weights."""
    log_px, ess = _numpy(log_px).ravel(), _numpy(ess).ravel()
    mean = log_px.mean()
    sem = log_px.std(ddof=1) / math.sqrt(len(log_px)) if len(log_px) > 1 else 0.0
    fig = _figure(10.0, 3.6)
    left, right = fig.subplots(1, 2)
    left.hist(log_px, bins=30, color="tab:blue", alpha=0.8)
    left.axvline(mean, color="black", linestyle="--", label=f"mean {mean:.2f} ± {sem:.2f}")
    left.set(
        title=f"log p(x) per data point (N={len(log_px)})",
        xlabel="log p(x) (nats)",
        ylabel="data points",
    )
    left.legend(fontsize="small")
    right.hist(ess, bins=30, color="tab:orange", alpha=0.8)
    k = f" of K={num_samples}" if num_samples else ""
    right.set(
        title=f"Effective sample size{k} (median {np.median(ess):.1f})",
        xlabel="ESS",
        ylabel="data points",
    )
    return fig


#: Estimator-comparison panels: column → axis label. ``{column}_stderr`` gives error bars.
COMPARISON_METRICS = {
    "bound": "training bound (nats)",
    "log_px": "log p(x) (nats)",
    "snr_guide": "gradient SNR, guide",
    "snr_model": "gradient SNR, model",
    "ms_per_step": "ms per step",
}


def plot_estimator_comparison(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """One panel per metric present in ``rows`` (one row per estimator): points with ±1 standard
    error for the bounds (they are negative; bars from 0 would mislead), bars for SNR and time."""
    metrics = [m for m in COMPARISON_METRICS if any(np.isfinite(_float(r.get(m))) for r in rows)]
    if not metrics:
        raise ValueError(
            f"no comparison metrics in rows (looked for {', '.join(COMPARISON_METRICS)})"
        )
    labels = [str(r.get("estimator", f"row {i}")) for i, r in enumerate(rows)]
    y = np.arange(len(rows))
    fig = _figure(3.2 * len(metrics) + 1.0, 0.4 * len(rows) + 1.6)
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    for ax, m in zip(axes, metrics):
        values = np.array([_float(r.get(m)) for r in rows])
        errors = np.nan_to_num(np.array([_float(r.get(f"{m}_stderr")) for r in rows]))
        errors = errors if errors.any() else None
        if m in ("bound", "log_px"):
            ax.errorbar(values, y, xerr=errors, fmt="o", capsize=3)
        else:
            ax.barh(y, values, xerr=errors, capsize=3, color="tab:blue", alpha=0.8)
        ax.set(title=COMPARISON_METRICS[m], xlabel=m)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels)
    axes[0].invert_yaxis()
    fig.suptitle("Estimator comparison")
    return fig


# ---------------------------------------------------------------------------------- a run's set


def run_figures(
    vae: VAELike,
    data: torch.Tensor,
    shape: Sequence[int],
    labels: Array | None = None,
    levels: int | None = None,
    seed: int = 0,
    max_points: int = 2000,
) -> dict[str, Figure]:
    """The figures a run draws from a split, by the names of :data:`pyro_vae.captions.CAPTIONS`: the latent map,
    and for images prior samples, reconstructions, traversals and interpolations; for plain
    vectors samples against data instead.

    Uses a random subset of at most ``max_points`` data points; the torch RNG is forked and seeded
    with ``seed``, so the figures are deterministic and the caller's RNG state is untouched.
    """
    if len(data) < 1:
        raise ValueError("run_figures needs at least 1 data point, got none")
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        idx = torch.randperm(len(data))[:max_points]
        x = data[idx.to(data.device)].to(_device(vae))
        subset_labels = None if labels is None else _numpy(labels)[idx.numpy()]
        y = (
            torch.as_tensor(subset_labels, device=x.device)
            if getattr(vae, "reads_labels", False) and subset_labels is not None
            else None
        )
        drawn = {"latent_map": plot_latent_map(vae, x, subset_labels, y)}
        if not is_image_shape(shape):
            drawn["samples_vs_data"] = plot_samples_vs_data(x, vae.sample(min(len(x), 1000)))
            return drawn
        drawn["prior_samples"] = plot_prior_samples(vae, shape, levels=levels)
        drawn["reconstructions"] = plot_reconstructions(
            vae, x[:16], shape, levels, y=None if y is None else y[:16]
        )
        if y is not None:  # traversals and paths of a code mean nothing without its label
            return drawn
        drawn["traversals"] = plot_traversals(vae, x, shape, levels)
        pairs = min(4, len(x) // 2)
        if pairs:  # one data point makes no pair
            drawn["interpolation"] = plot_interpolation(
                vae, x[:pairs], x[pairs : 2 * pairs], shape, levels
            )
    return drawn


def evaluation_figures(
    vae: Any, bundle: DataBundle, result: Evaluation, seed: int = 0
) -> dict[str, Figure]:
    """The figures of an evaluated split (``figures/<split>/``): :func:`run_figures` of the
    VAE on the data's own scale (:class:`OnDataScale`), with the split's labels and levels, on
    the points ``result`` scored, and the histogram of their log p̂(x) (:func:`plot_log_px`)."""
    data = bundle.to_data(bundle.split(result.split)[: result.num_points])
    drawn = run_figures(
        OnDataScale(vae, bundle.to_model, bundle.to_data),
        data,
        bundle.shape,
        labels=bundle.labels.get(result.split),
        levels=bundle.levels if bundle.integer else None,
        seed=seed,
    )
    drawn["log_px"] = plot_log_px(
        result.points.log_px, result.points.ess, num_samples=result.num_samples
    )
    return drawn


def plot_ais(
    is_log_px: Array, ais_log_px: Array, num_samples: int, num_chains: int, num_steps: int
) -> Figure:
    """Per point: IS log p̂(x) (K = ``num_samples``) against AIS log p̂(x) (C chains × T steps),
    with the identity line, and the histogram of the gap AIS − IS (both are stochastic lower
    bounds, so a positive gap is how much IS missed)."""
    is_, ais = _numpy(is_log_px).ravel(), _numpy(ais_log_px).ravel()
    gap = ais - is_
    fig = _figure(10.0, 4.0)
    left, right = fig.subplots(1, 2)
    left.scatter(is_, ais, s=8, alpha=0.6, color="tab:blue")
    lo, hi = min(is_.min(), ais.min()), max(is_.max(), ais.max())
    left.plot([lo, hi], [lo, hi], "k--", linewidth=1, label="AIS = IS")
    left.set(
        title=f"log p(x) per data point (N={len(gap)})",
        xlabel=f"IS, K={num_samples}",
        ylabel=f"AIS, {num_chains} chains × {num_steps} steps",
    )
    left.legend(fontsize="small")
    _gap_histogram(right, gap, "AIS − IS (nats)")
    return fig


def plot_bdmc(lower: Array, upper: Array) -> Figure:
    """Per simulated point: the BDMC bounds (sorted by the lower bound) and their gap."""
    lower, upper = _numpy(lower).ravel(), _numpy(upper).ravel()
    order = np.argsort(lower)
    fig = _figure(10.0, 4.0)
    left, right = fig.subplots(1, 2)
    x = np.arange(len(lower))
    left.plot(x, lower[order], "^", color="tab:blue", markersize=4, label="lower (forward AIS)")
    left.plot(x, upper[order], "v", color="tab:red", markersize=4, label="upper (reverse AIS)")
    left.set(
        title=f"BDMC bounds on log p(x) (N={len(lower)})",
        xlabel="simulated point (by lower bound)",
        ylabel="log p(x) (nats)",
    )
    left.legend(fontsize="small")
    _gap_histogram(right, upper - lower, "upper − lower (nats)")
    return fig


def _gap_histogram(ax: Axes, gap: np.ndarray, label: str) -> None:
    sem = gap.std(ddof=1) / math.sqrt(len(gap)) if len(gap) > 1 else 0.0
    ax.hist(gap, bins=30, color="tab:orange", alpha=0.8)
    ax.axvline(
        gap.mean(), color="black", linestyle="--", label=f"mean {gap.mean():.3f} ± {sem:.3f}"
    )
    ax.set(title="Gap per data point", xlabel=label, ylabel="data points")
    ax.legend(fontsize="small")
