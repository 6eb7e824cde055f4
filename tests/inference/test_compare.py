"""Estimator comparison rows: closed-form bounds on PPCA, the numbers of gradient_statistics, and
the markdown / CSV renderings."""

from __future__ import annotations

import csv
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from ppca import PPCA
from pyro.nn import PyroModule
from torch import Tensor, nn

from inference.compare import compare_estimators, estimator_row, markdown_table, write_csv
from inference.estimators import make_estimator
from inference.gradients import gradient_statistics

N = 40  # the data size the plate scales to; each batch is a subsample of B = 5 points


class Model(PyroModule):
    """PPCA of x − shift in a data plate of size N subsampled to the batch."""

    def __init__(self, ppca: PPCA) -> None:
        super().__init__()
        self.ppca, self.shift = ppca, nn.Parameter(torch.zeros(ppca.P))

    def forward(self, x: Tensor) -> None:
        with pyro.plate("data", N, subsample=x):
            z = pyro.sample("z", dist.Normal(torch.zeros(self.ppca.d), 1.0).to_event(1))
            mean = z @ self.ppca.W.T + self.ppca.b + self.shift
            pyro.sample("x", dist.Normal(mean, self.ppca.sigma).to_event(1), obs=x)


class Encoder(PyroModule):
    """q(z | x) = N(A x + c, diag s²): with PPCA's linear_encoder, the exact posterior."""

    def __init__(self, ppca: PPCA) -> None:
        super().__init__()
        A, c, s = ppca.linear_encoder()
        self.A, self.c, self.log_s = nn.Parameter(A), nn.Parameter(c), nn.Parameter(s.log())

    def forward(self, x: Tensor) -> None:
        with pyro.plate("data", N, subsample=x):
            pyro.sample("z", dist.Normal(x @ self.A.T + self.c, self.log_s.exp()).to_event(1))


@pytest.fixture
def ppca() -> PPCA:
    return PPCA.make()


ESTIMATORS = {
    "trace": ("trace", {}),
    "mean_field": ("mean_field", {}),
    "iwae:k=3": ("iwae", {"particles": 3}),
    "renyi": ("renyi", {"alpha": 0.5}),
    "stl": ("stl", {}),
    "dreg:k=3": ("dreg", {"particles": 3}),
}


def test_every_bound_is_log_px_per_point_under_the_exact_posterior(ppca) -> None:
    # With q = p(z | x), log w = log p(x) for every z: each estimator's objective is Σ_b log p(x_b)
    # times N/B with no Monte Carlo spread; divided by N it is the batch mean of log p(x).
    # Float32 rounding of log p(x, z) − log q(z) (terms of size ~10) is below 1e-4 per point.
    # mean_field's E_q[log p(x | z)] stays a one-sample Monte Carlo term (only the KL is exact): it
    # equals log p(x) in expectation only, checked to 4 of its standard errors (R = 20 draws: a
    # t-test with 19 degrees of freedom, two-sided p < 0.001).
    x = ppca.sample(5)
    estimators = {label: make_estimator(name, **kw) for label, (name, kw) in ESTIMATORS.items()}
    rows = compare_estimators(Model(ppca), Encoder(ppca), estimators, x, repeats=20, num_data=N)
    exact = ppca.log_px(x).mean().item()
    assert [r["estimator"] for r in rows] == list(ESTIMATORS)
    for row in rows:
        if row["estimator"] == "mean_field":
            assert row["bound_std"] > 1e-2
            assert abs(row["bound"] - exact) < 4 * row["bound_stderr"]
        else:
            assert row["bound"] == pytest.approx(exact, abs=1e-4), row["estimator"]
            assert row["bound_std"] < 1e-4
        assert row["repeats"] == 20 and row["ms_per_step"] > 0
        assert set(row) >= {"snr_guide", "snr_guide_median", "snr_model", "snr_model_median"}


def test_a_row_holds_the_numbers_of_gradient_statistics(ppca) -> None:
    model, guide, x = Model(ppca), Encoder(ppca), ppca.sample(5)
    with torch.no_grad():
        guide.c.add_(0.3)  # a mismatched guide: the bound now varies from draw to draw
    estimator = make_estimator("iwae", particles=3)
    groups = {"encoder": list(guide.parameters()), "shift": [model.shift]}
    pyro.set_rng_seed(3)
    stats = gradient_statistics(model, guide, estimator, x, repeats=7, params=groups)
    pyro.set_rng_seed(3)
    row = estimator_row(
        "iwae:k=3", model, guide, estimator, x, repeats=7, params=groups, num_data=N
    )
    assert list(row) == [
        "estimator",
        "bound",
        "bound_std",
        "bound_stderr",
        "snr_encoder",
        "snr_encoder_median",
        "snr_shift",
        "snr_shift_median",
        "ms_per_step",
        "repeats",
    ]
    assert row["bound"] == pytest.approx(stats.objective_mean / N)
    assert row["bound_std"] == pytest.approx(stats.objective_std / N) and row["bound_std"] > 0
    assert row["bound_stderr"] == pytest.approx(stats.objective_std / N / math.sqrt(7))
    for name in groups:
        assert row[f"snr_{name}"] == pytest.approx(stats.groups[name].mean_snr)
        assert row[f"snr_{name}_median"] == pytest.approx(stats.groups[name].median_snr)
    # the same seed gives the same rows; the seed is reset before each estimator
    twice = [
        compare_estimators(
            model, guide, {"a": estimator, "b": estimator}, x, repeats=3, num_data=N, seed=5
        )
        for _ in range(2)
    ]
    assert twice[0][0]["bound"] == twice[0][1]["bound"] == twice[1][0]["bound"]
    with pytest.raises(ValueError, match="num_data must be >= 1, got 0"):
        estimator_row("x", model, guide, estimator, x, repeats=2, num_data=0)


ROWS = [
    {"estimator": "iwae:k=5", "bound": -87.123456, "repeats": 10},
    {"estimator": "a|b", "bound": float("nan"), "log_px": -85.0},
]


def test_markdown_table() -> None:
    assert markdown_table(ROWS).splitlines() == [
        "| estimator | bound | repeats | log_px |",
        "|---|---:|---:|---:|",
        "| iwae:k=5 | -87.123 | 10 |  |",
        "| a\\|b | nan |  | -85 |",
    ]
    assert markdown_table(ROWS, ["bound"], digits=3).splitlines()[2] == "| -87.1 |"


def test_csv_keeps_full_precision_and_blank_missing_cells(tmp_path) -> None:
    path = write_csv(ROWS, tmp_path / "rows.csv")
    read = list(csv.DictReader(open(path, newline="")))
    assert list(read[0]) == ["estimator", "bound", "repeats", "log_px"]
    assert float(read[0]["bound"]) == ROWS[0]["bound"] and read[0]["log_px"] == ""
    assert read[1]["estimator"] == "a|b" and math.isnan(float(read[1]["bound"]))
    write_csv(ROWS, path, ["log_px", "estimator"])
    assert open(path).readline().strip() == "log_px,estimator"
