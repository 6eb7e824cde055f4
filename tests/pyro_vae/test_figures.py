"""Figures: every PNG is drawn (not blank), traversals and interpolations decode the right z,
non-image data get no image grids, and a run's set is deterministic for a seed."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from pyro_vae import figures
from pyro_vae.captions import CAPTIONS

SHAPE = (1, 8, 8)


class FakeVAE(torch.nn.Module):
    """Linear-Gaussian stand-in: mu(x) = (x - 1/2) A, sigma = 0.1, E[x|z] = sigmoid(z A^T).

    Column 1 of A (if any) is zero, so latent dimension 1 is inactive; it records every z it decodes.
    """

    def __init__(self, p: int, latent_dim: int = 3) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        a = torch.randn(p, latent_dim, generator=torch.Generator().manual_seed(1))
        a[:, 1:2] = 0.0
        self.a = torch.nn.Parameter(a / p**0.5)
        self.decoded: list[torch.Tensor] = []

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc = (x - 0.5) @ self.a
        return loc, torch.full_like(loc, 0.1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.decoded.append(z.clone())
        return torch.sigmoid(4.0 * z @ self.a.T)

    def sample(self, n: int) -> torch.Tensor:
        return self.decode(torch.randn(n, self.latent_dim))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])


def make_data(n: int, p: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.sigmoid(3.0 * torch.randn(n, 2, generator=g) @ torch.randn(2, p, generator=g))


def pixels(path: Path) -> np.ndarray:
    assert path.is_file() and path.suffix == ".png"
    return matplotlib.image.imread(path)[..., :3]


@pytest.fixture(scope="module")
def blank_variance(tmp_path_factory: pytest.TempPathFactory) -> float:
    """Pixel variance of a figure with a title, labels and empty axes: text alone reaches this."""
    fig = figures._figure(6.0, 5.0)
    fig.add_subplot().set(title="Empty axes", xlabel="x", ylabel="y")
    return float(pixels(saved(fig, tmp_path_factory.mktemp("blank") / "b.png")).var())


def saved(fig: Figure, path: Path) -> Path:
    """A figure written where its test looks at its pixels."""
    return figures.save(fig, path)


def saved_all(drawn: dict[str, Figure], folder: Path) -> list[Path]:
    """A run's figures (name → figure) written as ``folder/<name>.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [saved(fig, folder / f"{name}.png") for name, fig in drawn.items()]


def assert_grid(path: Path, blank_variance: float) -> None:
    """An image grid fills its canvas with grey levels: several times the variance of text."""
    assert pixels(path).var() > 3 * blank_variance, path.name


def assert_plot(path: Path, blank_variance: float) -> None:
    """Not blank, and data drawn: text and axes are black, points, lines and bars coloured."""
    rgb = pixels(path)
    assert rgb.var() > blank_variance / 2, path.name
    assert ((rgb.max(-1) - rgb.min(-1)) > 0.25).sum() > 200, path.name


def assert_drawn(path: Path, blank_variance: float) -> None:
    grids = {"prior_samples", "reconstructions", "traversals", "interpolation"}
    (assert_grid if path.stem in grids else assert_plot)(path, blank_variance)


def write_metrics_csv(path: Path) -> Path:
    """CSVLogger layout: per-step rows, per-epoch validation rows, blanks elsewhere; no lr column."""
    fields = ["epoch", "step", "train_elbo", "train_kl", "train_recon", "beta", "val_elbo"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        for epoch in range(4):
            for s in range(5):
                step = 5 * epoch + s
                w.writerow(
                    {
                        "epoch": epoch,
                        "step": step,
                        "train_elbo": -100 + 10 * np.log1p(step),
                        "train_kl": 5 + np.sqrt(step),
                        "train_recon": -95 + 9 * np.log1p(step),
                        "beta": min(1.0, step / 10),
                    }
                )
            w.writerow(
                {"epoch": epoch, "step": 5 * epoch + 4, "val_elbo": -98 + 9 * np.log1p(epoch)}
            )
    return path


def test_image_figures_are_drawn(tmp_path: Path, blank_variance: float) -> None:
    vae, x = FakeVAE(64), make_data(40, 64)
    paths = [
        saved(figures.plot_prior_samples(vae, SHAPE, n=30), tmp_path / "prior_samples.png"),
        saved(figures.plot_reconstructions(vae, x[:12], SHAPE), tmp_path / "reconstructions.png"),
        saved(figures.plot_traversals(vae, x, SHAPE), tmp_path / "traversals.png"),
        saved(
            figures.plot_interpolation(vae, x[:3], x[3:6], SHAPE), tmp_path / "interpolation.png"
        ),
        saved(figures.plot_latent_map(vae, x, labels=torch.arange(40) % 4), tmp_path / "map.png"),
        saved(
            figures.plot_latent_map(vae, x, labels=np.array(list("ab") * 20)),
            tmp_path / "map_text.png",
        ),
        saved(figures.plot_latent_map(vae, x, labels=x[:, 0]), tmp_path / "map_continuous.png"),
    ]
    for path in paths:
        assert_drawn(path, blank_variance)
    import matplotlib.pyplot as plt  # nothing may be left registered in pyplot's figure manager

    assert plt.get_fignums() == []


def test_integer_levels_and_rgb_images_are_drawn(tmp_path: Path, blank_variance: float) -> None:
    levels = figures._images(np.array([[0.0, 2.0, 4.0, 4.0]]), (1, 2, 2), (0.0, 4.0))
    np.testing.assert_allclose(levels, [[[0.0, 0.5], [1.0, 1.0]]])
    rgb = figures._images(np.arange(12.0)[None], (3, 2, 2), (0.0, 11.0))
    assert rgb.shape == (1, 2, 2, 3) and rgb[0, 0, 1, 2] == pytest.approx(
        9 / 11
    )  # pixel (0,1), blue
    vae = FakeVAE(3 * 16)
    path = saved(figures.plot_prior_samples(vae, (3, 4, 4), n=9, levels=256), tmp_path / "rgb.png")
    assert_grid(path, blank_variance)


def test_traversals_sweep_the_active_dimensions_by_three_aggregate_sd(tmp_path: Path) -> None:
    vae, x = FakeVAE(64), make_data(50, 64)
    saved(figures.plot_traversals(vae, x, SHAPE, index=7, dims=2, steps=5), tmp_path / "trav.png")
    z = vae.decoded[-1].reshape(2, 5, 3)
    loc, _scale = vae.encode(x)
    activity = loc.var(0)
    torch.testing.assert_close(figures.latent_activity(vae, x), activity)
    assert activity[1] == 0.0  # the inactive dimension is not among the two rows
    spread = (activity + 0.01).sqrt()  # Var_x(mu_u) + E_x[sigma_u^2], sigma = 0.1
    for row, u in enumerate(torch.argsort(activity, descending=True)[:2].tolist()):
        assert u != 1
        offset = z[row] - loc[7]
        torch.testing.assert_close(offset[:, u], torch.linspace(-3, 3, 5) * spread[u])
        others = [d for d in range(3) if d != u]
        assert offset[:, others].abs().max() == 0.0


def test_interpolation_runs_between_the_posterior_means(tmp_path: Path) -> None:
    vae, x = FakeVAE(64), make_data(6, 64)
    saved(figures.plot_interpolation(vae, x[:2], x[2:4], SHAPE, steps=5), tmp_path / "interp.png")
    z = vae.decoded[-1].reshape(2, 5, 3)
    mu_a, mu_b = vae.encode(x[:2])[0], vae.encode(x[2:4])[0]
    torch.testing.assert_close(z[:, 0], mu_a)
    torch.testing.assert_close(z[:, -1], mu_b)
    torch.testing.assert_close(z[:, 2], (mu_a + mu_b) / 2)


def test_training_curves_skip_blanks_and_missing_columns(
    tmp_path: Path, blank_variance: float
) -> None:
    csv_path = write_metrics_csv(tmp_path / "metrics.csv")
    panels = figures.curve_series(figures.read_metrics(csv_path))
    assert list(panels) == ["ELBO", "KL divergence", "reconstruction", "KL weight β"]
    x, _y = panels["ELBO"]["val_elbo"]
    np.testing.assert_array_equal(x, [4, 9, 14, 19])  # only the 4 rows that carry a val_elbo
    assert len(panels["ELBO"]["train_elbo"][0]) == 20
    assert_drawn(
        saved(figures.plot_training_curves(csv_path), tmp_path / "curves.png"), blank_variance
    )
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,step,other\n0,0,1\n")
    with pytest.raises(ValueError, match="no training metrics"):
        figures.plot_training_curves(empty)


def test_log_px_and_estimator_comparison(tmp_path: Path, blank_variance: float) -> None:
    rng = np.random.default_rng(0)
    path = saved(
        figures.plot_log_px(rng.normal(-90, 5, 200), rng.uniform(1, 100, 200), num_samples=100),
        tmp_path / "log_px.png",
    )
    assert_drawn(path, blank_variance)
    rows = [  # as read back from compare.csv: strings, blanks, a missing column
        {
            "estimator": "trace",
            "bound": "-95.1",
            "log_px": "-90.2",
            "log_px_stderr": "0.3",
            "snr_guide": "2.5",
            "snr_model": "9.0",
            "ms_per_step": "7.1",
        },
        {
            "estimator": "iwae",
            "bound": "-92.0",
            "log_px": "-89.1",
            "log_px_stderr": "",
            "snr_guide": "0.8",
            "snr_model": "12.0",
            "ms_per_step": "15.3",
        },
        {
            "estimator": "dreg",
            "bound": -91.8,
            "log_px": -88.9,
            "snr_guide": 3.1,
            "snr_model": 12.5,
            "ms_per_step": 16.0,
        },
    ]
    assert_drawn(
        saved(figures.plot_estimator_comparison(rows), tmp_path / "cmp.png"), blank_variance
    )
    with pytest.raises(ValueError, match="no comparison metrics"):
        figures.plot_estimator_comparison([{"estimator": "trace"}])


def test_run_figures_for_images_are_deterministic(tmp_path: Path, blank_variance: float) -> None:
    vae, x = FakeVAE(64), make_data(30, 64)
    state = torch.get_rng_state()
    first = saved_all(
        figures.run_figures(vae, x, SHAPE, labels=np.arange(30) % 3, seed=3), tmp_path / "a"
    )
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    assert {p.stem for p in first} == {
        "latent_map",
        "prior_samples",
        "reconstructions",
        "traversals",
        "interpolation",
    }
    assert set(CAPTIONS) >= {p.stem for p in first}
    for path in first:
        assert_drawn(path, blank_variance)
    again = saved_all(
        figures.run_figures(vae, x, SHAPE, labels=np.arange(30) % 3, seed=3), tmp_path / "b"
    )
    saved_all(figures.run_figures(vae, x, SHAPE, seed=4), tmp_path / "c")
    for a, b in zip(first, again):
        assert a.read_bytes() == b.read_bytes(), a.name
    samples = [(tmp_path / d / "prior_samples.png").read_bytes() for d in ("a", "c")]
    assert samples[0] != samples[1]  # another seed, other samples


def test_vector_data_get_no_image_grids(tmp_path: Path, blank_variance: float) -> None:
    for p, dim in ((5, 3), (2, 2), (1, 1)):
        vae, x = FakeVAE(p, latent_dim=dim), make_data(40, p)
        paths = saved_all(figures.run_figures(vae, x, (p,)), tmp_path / f"p{p}")
        assert sorted(q.name for q in paths) == ["latent_map.png", "samples_vs_data.png"]
        for path in paths:
            assert_drawn(path, blank_variance)


def test_one_point_draws_every_figure_but_the_interpolation(
    tmp_path: Path, blank_variance: float
) -> None:
    """A split of one evaluation point: no pair to interpolate, no spread for the traversals'
    ranking (every activity 0) nor for a second principal axis (drawn at 0)."""
    paths = saved_all(figures.run_figures(FakeVAE(64), make_data(1, 64), SHAPE), tmp_path / "img")
    assert {p.stem for p in paths} == {
        "latent_map",
        "prior_samples",
        "reconstructions",
        "traversals",
    }
    vectors = saved_all(
        figures.run_figures(FakeVAE(5, latent_dim=3), make_data(1, 5), (5,)), tmp_path / "vec"
    )
    assert {p.stem for p in vectors} == {"latent_map", "samples_vs_data"}
    for path in paths + vectors:
        assert path.stat().st_size > 0
    assert_drawn(tmp_path / "img" / "prior_samples.png", blank_variance)
    with pytest.raises(ValueError, match="at least 1 data point"):
        figures.run_figures(FakeVAE(64), make_data(0, 64), SHAPE)
