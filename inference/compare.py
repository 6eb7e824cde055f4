"""Estimator comparison: one row of numbers per ELBO estimator on one model, guide and batch.

For an estimator whose loss on the batch is ℓ (Pyro's convention: the negative objective summed
over the minibatch times the data plate's scale N/B), R independent draws ℓ_1..ℓ_R give

    bound        = −mean_r(ℓ_r) / N          the objective per data point (nats)
    bound_std    = std_r(ℓ_r) / N            the spread of one draw
    bound_stderr = bound_std / √R            the Monte Carlo standard error of ``bound``
    snr_<group>  = mean over the noisy coordinates of |E g| / √Var g, and its median
                   (``snr_<group>_median``; a coordinate with an exact gradient has SNR ∞)
    ms_per_step  = mean wall time of one loss + gradient evaluation

with the gradient statistics of :func:`inference.gradients.gradient_statistics` (Rainforth et al.
2018, eq. 3). Rows are plain dicts, so callers can add columns (a test log p(x), say) before
rendering them with :func:`markdown_table` or :func:`write_csv`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyro
from pyro.infer import ELBO
from torch import Tensor

from inference.gradients import gradient_statistics

Row = dict[str, Any]


def estimator_row(
    label: str,
    model,
    guide,
    estimator: ELBO,
    *args: Any,
    repeats: int = 100,
    params: Mapping[str, Iterable[Tensor]] | None = None,
    num_data: int = 1,
    **kwargs: Any,
) -> Row:
    """The row of ``estimator`` (named ``label``) on ``model(*args, **kwargs)`` and
    ``guide(*args, **kwargs)``: see the module docstring. ``num_data`` is N, the data size the data
    plate scales the loss to (1 leaves the bound as Pyro's total); ``params`` groups parameters as
    in :func:`~inference.gradients.gradient_statistics` (default "guide" and "model")."""
    if num_data < 1:
        raise ValueError(f"num_data must be >= 1, got {num_data}")
    stats = gradient_statistics(
        model, guide, estimator, *args, repeats=repeats, params=params, **kwargs
    )
    row: Row = {
        "estimator": label,
        "bound": stats.objective_mean / num_data,
        "bound_std": stats.objective_std / num_data,
        "bound_stderr": stats.objective_std / num_data / math.sqrt(repeats),
    }
    for name, group in stats.groups.items():
        row[f"snr_{name}"] = group.mean_snr
        row[f"snr_{name}_median"] = group.median_snr
    row["ms_per_step"] = 1000 * stats.seconds_per_step
    row["repeats"] = repeats
    return row


def compare_estimators(
    model,
    guide,
    estimators: Mapping[str, ELBO],
    *args: Any,
    repeats: int = 100,
    params: Mapping[str, Iterable[Tensor]] | None = None,
    num_data: int = 1,
    seed: int | None = None,
    **kwargs: Any,
) -> list[Row]:
    """:func:`estimator_row` for each ``label → estimator`` on the same model, guide and batch
    (parameters are not updated); with ``seed`` the RNG is reset to it before each estimator."""
    groups = None if params is None else {k: list(v) for k, v in params.items()}
    rows = []
    for label, estimator in estimators.items():
        if seed is not None:
            pyro.set_rng_seed(seed)
        rows.append(
            estimator_row(
                label,
                model,
                guide,
                estimator,
                *args,
                repeats=repeats,
                params=groups,
                num_data=num_data,
                **kwargs,
            )
        )
    return rows


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every key of ``rows``, in order of first appearance."""
    return list(dict.fromkeys(key for row in rows for key in row))


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return "" if value is None else str(value).replace("|", "\\|")


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 5
) -> str:
    """A GitHub-flavoured markdown table of ``columns`` (default: every key), floats to ``digits``
    significant figures, numbers right-aligned; a key a row lacks is an empty cell."""
    columns = list(columns or columns_of(rows))
    numeric = [any(isinstance(r.get(c), (int, float)) for r in rows) for c in columns]
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    lines += ["| " + " | ".join(_cell(r.get(c), digits) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(
    rows: Sequence[Mapping[str, Any]], path: Path | str, columns: Sequence[str] | None = None
) -> Path:
    """The rows as CSV with a header, floats at full precision; ``columns`` (default: every key)
    selects and orders the columns, and a key a row lacks is an empty cell."""
    path = Path(path)
    path.write_text(csv_text(rows, columns))
    return path


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """What :func:`write_csv` writes, as a string."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(
        out, fieldnames=list(columns or columns_of(rows)), restval="", extrasaction="ignore"
    )
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
