"""A data set as the model sees it: :class:`DataBundle`, its flat float32 splits (N, P) as
tensors, the loaders that feed them, and :func:`make_bundle`, which turns the numpy splits a
data source (:mod:`pyro_vae.data`) read into a bundle: scaled, checked, binarized and transformed
as the module docstring of :mod:`pyro_vae.data` describes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from pyro_vae.data import SPLITS, Binarize, Transform
from pyro_vae.registry import SpecError, choices_text


class _Rows(Dataset):
    """Row ``i`` of a (N, P) tensor. The DataLoader fetches a batch through ``__getitems__``:
    one gather ``x[indices]`` (B, P), not B row reads and a stack (~1 ms per batch of 128)."""

    def __init__(self, x: Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> Tensor:
        return self.x[index]

    def __getitems__(self, indices: list[int]) -> Tensor:
        return self.x[torch.as_tensor(indices)]


class _Labelled(_Rows):
    """Rows of x with their labels y (N,): a batch is ``(x[indices], y[indices])``, the
    collate applied to x alone."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        super().__init__(x)
        self.y = y

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        rows = torch.as_tensor(indices)
        return self.x[rows], self.y[rows]


def _labelled(collate: Callable[[Tensor], Tensor]) -> Callable[[tuple[Tensor, Tensor]], Any]:
    """The collate of (x, y) batches: ``collate`` on x, y as it is."""

    def apply(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return collate(batch[0]), batch[1]

    return apply


def _as_batch(rows: Tensor) -> Tensor:
    """The collate of a split without a training transform: the gathered (B, P) rows."""
    return rows


def _resample(rows: Tensor) -> Tensor:
    """A fresh Bernoulli draw of a (B, P) batch of grey rows p (dynamic binarization; global
    torch RNG): x = 1[u < p], u ~ U[0, 1), so P(x = 1) = p; on CPU 2.5× faster than
    ``torch.bernoulli`` (0.6 against 1.6 ms for 128 × 784), a tenth of a training step."""
    return (torch.rand_like(rows) < rows).to(rows.dtype)


@dataclass(frozen=True)
class _Dequantize:
    """Collate a (B, P) batch of rows k/d into (k + u)/d, u ~ U[0, 1)ᴾ afresh (global torch
    RNG)."""

    divisor: float

    def __call__(self, rows: Tensor) -> Tensor:
        return rows + torch.rand_like(rows) / self.divisor


@dataclass
class DataBundle:
    """Flat float32 splits ``(N, P)`` with ``P = prod(shape)``, their labels and how they were made.

    With ``binarize="dynamic"`` ``train`` holds the grey probabilities; its loader binarizes.
    """

    name: str
    train: Tensor
    val: Tensor
    test: Tensor
    shape: tuple[int, ...]
    labels: dict[str, Tensor | None]
    levels: int | None = None
    integer: bool = False  # values are the raw levels 0..levels-1 (else in [0, 1] or arbitrary)
    binarize: Binarize = "none"
    transform: Transform = "none"
    loc: Tensor | None = None  # standardize: x' = (x − loc) / scale, per dimension
    scale: Tensor | None = None
    log_jacobian: float = 0.0  # log |∂x'/∂x| per item: log p(x) = log p'(x') + log_jacobian
    collate: Callable[[Tensor], Tensor] | None = None  # draws a training batch afresh
    notes: tuple[str, ...] = ()  # what loading decided on its own (e.g. a detected layout)
    seed: int = 0  # the data's seed: scoring the training split draws its collate once with it
    dequantized: tuple[float, bool] | None = None  # (d, unit): x' = (k + u)/d, k/(L−1) or k as data

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    @property
    def dim(self) -> int:
        return self.train.shape[1]

    @property
    def num_classes(self) -> int | None:
        """C, one more than the largest label of any split (None: no labels)."""
        present = [y for y in self.labels.values() if y is not None and len(y)]
        return int(max(int(y.max()) for y in present)) + 1 if present else None

    def split_labels(self, name: str) -> Tensor:
        """The labels of split ``name``; a SpecError naming ``model.name`` when it has none."""
        y = self.labels.get(name)
        if y is None:
            raise SpecError("model.name", f"the {name} split of {self.name} has no labels")
        return y

    @property
    def scale_name(self) -> str:
        """The scale the model sees: ``standardized``, ``dequantized`` or ``data``."""
        return {"standardize": "standardized", "dequantize": "dequantized"}.get(
            self.transform, "data"
        )

    def to_data(self, x: Tensor) -> Tensor:
        """Model scale → the data's own: x = μ + s x' for standardize, else x itself."""
        if self.loc is None or self.scale is None:
            return x
        return x * self.scale.to(x.device) + self.loc.to(x.device)

    @property
    def integer_values(self) -> bool:
        """Whether :meth:`to_values` gives the raw levels 0..L−1 (else values in [0, 1] or
        real ones)."""
        return self.integer or (self.dequantized is not None and not self.dequantized[1])

    def to_values(self, x: Tensor) -> Tensor:
        """Model scale → the values the data hold (as a load without the transform gives them):
        :meth:`to_data`, and after dequantization the level k = ⌊d x'⌋ ∈ 0..L−1 of
        x' = (k + u)/d, as k/(L − 1) for ``values: unit`` or k for ``integer``."""
        if self.dequantized is None or self.levels is None:
            return self.to_data(x)
        divisor, unit = self.dequantized
        k = torch.floor(x * divisor).clamp(0, self.levels - 1)
        return k / (self.levels - 1) if unit else k

    def to_model(self, x: Tensor) -> Tensor:
        """The data's own scale → the model's: x' = (x − μ)/s for standardize, else x."""
        if self.loc is None or self.scale is None:
            return x
        return (x - self.loc.to(x.device)) / self.scale.to(x.device)

    def transform_state(self) -> dict[str, object]:
        """The fitted transform as JSON-ready values (a run saves it beside its config)."""
        return {
            "transform": self.transform,
            "log_jacobian": self.log_jacobian,
            **{
                k: None if v is None else v.tolist()
                for k, v in (("loc", self.loc), ("scale", self.scale))
            },
        }

    def describe(self) -> str:
        """One line: the set, its splits, item shape, values and transform."""
        sizes = "/".join(str(len(getattr(self, s))) for s in SPLITS)
        values = (
            f"{self.levels} levels" + (" (integers)" if self.integer else "")
            if self.levels
            else "real values"
        )
        extra = "" if self.transform == "none" else f", {self.transform}d"
        return (
            f"{self.name}: train/val/test {sizes}, items {'×'.join(map(str, self.shape))}, "
            f"{values}{extra}" + "".join(f"; {n}" for n in self.notes)
        )

    def split(self, name: str) -> Tensor:
        """The split as the model sees it, to score or draw: for ``train`` with a training
        collate (dynamic binarization, dequantization noise), one draw of it seeded with
        ``seed``, as val and test were drawn at loading; not the grey or integer rows the
        collate starts from."""
        x = self._rows(name)
        if name != "train" or self.collate is None:
            return x
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self.collate(x)

    def _rows(self, name: str) -> Tensor:
        if name not in SPLITS:
            raise SpecError("split", f"unknown split {name!r}; choices: {choices_text(SPLITS)}")
        x = getattr(self, name)
        if len(x) == 0:
            raise SpecError("split", f"the {name} split of {self.name} is empty")
        return x

    def loader(
        self,
        split: str,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None = None,
        labels: bool = False,
    ) -> DataLoader:
        """A standard DataLoader yielding plain ``x`` batches of shape (B, P), not tuples, or
        with ``labels`` ``(x, y)``, y the (B,) labels (:meth:`split_labels`); the training
        split's batches drawn afresh through its collate."""
        collate = self.collate if split == "train" and self.collate else _as_batch
        rows = self._rows(split)
        return DataLoader(
            _Labelled(rows, self.split_labels(split)) if labels else _Rows(rows),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            collate_fn=_labelled(collate) if labels else collate,
        )


def make_bundle(
    name: str,
    arrays: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    *,
    shape: tuple[int, ...],
    levels: int | None,
    integer: bool,
    divisor: float,
    binarize: Binarize,
    transform: Transform,
    seed: int,
    source: str,
    notes: tuple[str, ...] = (),
) -> DataBundle:
    """The bundle of the splits ``arrays`` (split → items (N, ...) and labels or None): items
    as float32 rows (N, prod(shape)) divided by ``divisor``, checked to stay finite, then
    binarized and transformed, every draw seeded with ``seed``. ``levels``: integer levels of the
    items (None: real values), kept as the raw levels when ``integer``; ``source`` names the data
    in messages; ``notes``: what loading decided on its own."""
    with np.errstate(over="ignore"):  # values beyond float32's range: counted just below
        x = {
            s: torch.from_numpy(np.array(a, np.float32).reshape(len(a), math.prod(shape))).div_(
                divisor
            )
            for s, (a, _) in arrays.items()
        }
    bad = sum(v.numel() - int(torch.isfinite(v).sum()) for v in x.values())
    if bad:
        raise SpecError(
            "data",
            f"{source}: {bad} values beyond float32's range "
            f"(|x| > {np.finfo(np.float32).max:.4g}) would become inf",
        )
    labels = {
        s: None if y is None else torch.from_numpy(np.asarray(y, np.int64))
        for s, (_, y) in arrays.items()
    }
    if binarize != "none":
        x = _binarized(x, binarize == "static", seed, source)
    bundle = DataBundle(
        name=name,
        shape=shape,
        labels=labels,
        levels=levels,
        binarize=binarize,
        transform=transform,
        notes=notes,
        seed=seed,
        integer=integer,
        **x,
    )
    if binarize == "dynamic":
        bundle.collate = _resample
    if transform == "dequantize":
        _dequantize(bundle, divisor, seed)
    elif transform == "standardize":
        _standardize(bundle)
    return bundle


def _binarized(x: dict[str, Tensor], static: bool, seed: int, source: str) -> dict[str, Tensor]:
    """Bernoulli draws of val and test (and with ``static`` of train) seeded with ``seed``; the
    grey training split kept otherwise (its collate draws it afresh)."""
    for split, v in x.items():
        if len(v) and (v.min() < 0 or v.max() > 1):
            raise SpecError(
                "data.binarize",
                f"needs values in [0, 1]; the {split} split of "
                f"{source} spans [{v.min():g}, {v.max():g}]",
            )
    g = torch.Generator().manual_seed(seed)
    out = {s: torch.bernoulli(x[s], generator=g) for s in ("val", "test")}
    return {**out, "train": torch.bernoulli(x["train"], generator=g) if static else x["train"]}


def _dequantize(bundle: DataBundle, divisor: float, seed: int) -> None:
    """x' = (k + u)/d: noise drawn once (seeded) for val and test, per batch for train."""
    g = torch.Generator().manual_seed(seed)
    for split in ("val", "test"):
        x = getattr(bundle, split)
        x.add_(torch.rand(x.shape, generator=g).div_(divisor))
    bundle.dequantized = (divisor, not bundle.integer)
    bundle.integer = False
    bundle.collate = _Dequantize(divisor)
    bundle.log_jacobian = -bundle.dim * math.log(divisor)


def _standardize(bundle: DataBundle) -> None:
    """x' = (x − μ)/s with the training split's per-dimension mean and standard deviation (s = 1
    where a dimension is constant); log_jacobian = −Σ_i log s_i."""
    train = bundle.train.double()
    loc = train.mean(0)
    scale = train.std(0, correction=0) if len(train) > 1 else torch.ones_like(loc)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    for split in SPLITS:
        x = getattr(bundle, split)
        setattr(bundle, split, ((x.double() - loc) / scale).float())
    bundle.loc, bundle.scale = loc.float(), scale.float()
    bundle.log_jacobian = -float(scale.log().sum())
    bundle.integer = False


class _Indexed(torch.utils.data.Dataset):
    """Item i of ``rows`` paired with i; a batch is fetched as ``(rows[indices], indices)``
    through the rows' own batched ``__getitems__`` (one gather, no per-item tuples); labelled
    rows give ``((x, y), indices)``."""

    def __init__(self, rows: torch.utils.data.Dataset) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.rows[index], index

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rows.__getitems__(indices), torch.tensor(indices)  # type: ignore[attr-defined]


def with_indices(loader: torch.utils.data.DataLoader) -> torch.utils.data.DataLoader:
    """A bundle's ``loader`` (:meth:`pyro_vae.bundle.DataBundle.loader`) yielding ``(x, idx)``,
    or ``(x, idx, y)`` for a labelled one: its batches (same order, same collate, so the same
    random draws of a dynamic binarization) and their rows as a LongTensor."""
    collate = loader.collate_fn

    def pair(batch: tuple[Any, torch.Tensor]) -> tuple[Any, ...]:
        rows, idx = batch
        made = collate(rows)
        return (made[0], idx, made[1]) if isinstance(made, tuple) else (made, idx)

    return torch.utils.data.DataLoader(
        _Indexed(loader.dataset),
        batch_size=loader.batch_size,
        sampler=loader.sampler,
        collate_fn=pair,
    )
