"""Registry of datasets: digits (embedded), mnist and fashion-mnist (IDX files), npz arrays.

Every entry is a frozen dataclass of parameters whose ``load()`` returns a :class:`DataBundle`
of flat float32 splits ``(N, P)``. Shared behaviour:

* splits are a seeded permutation (``numpy.random.default_rng(seed)``): same seed, same splits;
  ``val_fraction`` (and ``test_fraction`` where a set has no official test split) count items of
  the pool they are carved from; ``limit`` then caps the training split alone;
* ``values="unit"`` maps pixel levels ``0..L-1`` to ``x / (L-1)`` in [0, 1]; ``"integer"`` keeps
  the raw levels (for a categorical likelihood); the bundle records ``levels = L``;
* binarization draws ``x_bin ~ Bernoulli(x)`` per pixel. ``"static"`` binarizes every split once
  with ``torch.Generator().manual_seed(seed)``; ``"dynamic"`` binarizes validation and test once
  the same way and keeps the training split grey, resampling it in every training batch from
  torch's global RNG, so Lightning's seed governs it (the protocol of Burda et al., 2015,
  "Importance Weighted Autoencoders", appendix). Validation and test bits do not depend on the mode.

Every failure the user can cause is a one-line :class:`~pyro_vae.registry.SpecError` that names
the key or the file.
"""

from __future__ import annotations

import gzip
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from pyro_vae.registry import Registry, SpecError, choices_text, frozen_params

Binarize = Literal["none", "dynamic", "static"]
Values = Literal["unit", "integer"]
SPLITS = ("train", "val", "test")
SYSTEM_DIR = Path("/usr/share/datasets")  # Debian's dataset-* packages install here
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class _Rows(Dataset):
    """Row ``i`` of a (N, P) tensor; the default collate stacks rows into a (B, P) batch."""

    def __init__(self, x: Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> Tensor:
        return self.x[index]


def _resample(rows: list[Tensor]) -> Tensor:
    """Collate grey rows into a fresh Bernoulli draw (dynamic binarization; global torch RNG)."""
    return torch.bernoulli(torch.stack(rows))


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

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    @property
    def dim(self) -> int:
        return self.train.shape[1]

    def split(self, name: str) -> Tensor:
        if name not in SPLITS:
            raise SpecError("split", f"unknown split {name!r}; choices: {choices_text(SPLITS)}")
        x = getattr(self, name)
        if len(x) == 0:
            raise SpecError("split", f"the {name} split of {self.name} is empty")
        return x

    def loader(self, split: str, batch_size: int, shuffle: bool,
               generator: torch.Generator | None = None) -> DataLoader:
        """A standard DataLoader yielding plain ``x`` batches of shape (B, P), not tuples."""
        dynamic = split == "train" and self.binarize == "dynamic"
        return DataLoader(_Rows(self.split(split)), batch_size=batch_size, shuffle=shuffle,
                          generator=generator, collate_fn=_resample if dynamic else None)


class DataSource(Protocol):
    """What a ``DATASETS`` entry builds: validated parameters that can load their data."""

    def load(self) -> DataBundle: ...


DATASETS: Registry[DataSource] = Registry("data")


def _one_line(exc: BaseException) -> str:
    """An exception as ``Type: message`` on one line, for embedding in a SpecError."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def _check_test_fraction(val_fraction: float, test_fraction: float) -> None:
    _check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got "
                         f"{val_fraction} + {test_fraction}")


@frozen_params
class _Common:
    binarize: Binarize = "none"
    val_fraction: float = 0.1
    seed: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        _check_fraction("val_fraction", self.val_fraction)
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")

    def _bundle(self, name: str, pool: np.ndarray, pool_labels: np.ndarray | None,
                test: tuple[np.ndarray, np.ndarray | None] | None, *, shape: tuple[int, ...],
                levels: int | None, source: str, divisor: float = 1.0,
                test_fraction: float = 0.0) -> DataBundle:
        """Split ``pool`` (N, ...) into train/val (and test, when ``test`` is None), then
        ``x / divisor``, check and binarize. ``levels``: pixel levels ``0..levels-1``, or None."""
        for a in (pool, None if test is None else test[0]):
            bad = 0 if a is None or a.dtype.kind != "f" else a.size - int(np.isfinite(a).sum())
            if bad:
                raise SpecError("data", f"{source}: {bad} non-finite values (NaN or inf)")
        n = len(pool)
        order = np.random.default_rng(self.seed).permutation(n)
        n_test = round(test_fraction * n) if test is None else 0
        n_val = round(self.val_fraction * n)
        index = {"test": order[:n_test], "val": order[n_test:n_test + n_val],
                 "train": order[n_test + n_val:][:self.limit]}
        wanted = {"test": test_fraction > 0, "val": self.val_fraction > 0, "train": True}
        for split in SPLITS:
            if wanted[split] and len(index[split]) == 0:
                raise SpecError("data", f"the {split} split of {name} is empty ({n} items, "
                                f"val_fraction={self.val_fraction}, test_fraction={test_fraction}, "
                                f"limit={self.limit})")
        arrays = {s: (pool[i], None if pool_labels is None else pool_labels[i])
                  for s, i in index.items()}
        if test is not None:
            arrays["test"] = test
        x = {s: torch.from_numpy(np.array(a, np.float32).reshape(len(a), math.prod(shape)))
             .div_(divisor) for s, (a, _) in arrays.items()}
        labels = {s: None if y is None else torch.from_numpy(np.asarray(y, np.int64))
                  for s, (_, y) in arrays.items()}
        if self.binarize != "none":
            x = self._binarized(x, source)
        return DataBundle(name=name, shape=shape, labels=labels, levels=levels,
                          binarize=self.binarize, integer=levels is not None and divisor == 1, **x)

    def _binarized(self, x: dict[str, Tensor], source: str) -> dict[str, Tensor]:
        for split, v in x.items():
            if len(v) and (v.min() < 0 or v.max() > 1):
                raise SpecError("data.binarize", f"needs values in [0, 1]; the {split} split of "
                                f"{source} spans [{v.min():g}, {v.max():g}]")
        g = torch.Generator().manual_seed(self.seed)
        out = {s: torch.bernoulli(x[s], generator=g) for s in ("val", "test")}
        static = self.binarize == "static"
        return {**out, "train": torch.bernoulli(x["train"], generator=g) if static else x["train"]}


@frozen_params
class _Images(_Common):
    values: Values = "unit"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.binarize != "none" and self.values != "unit":
            raise ValueError(f"binarize={self.binarize!r} needs values='unit' (pixels in [0, 1]), "
                             f"got values={self.values!r}")

    def _divisor(self, levels: int) -> int:
        return levels - 1 if self.values == "unit" else 1


@DATASETS.register("digits")
@frozen_params
class Digits(_Images):
    """scikit-learn's bundled 8x8 digits (1797 items, grey levels 0..16, labels 0..9; the test
    set of UCI optdigits). No official split: ``test_fraction`` of the items form the test set."""

    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_test_fraction(self.val_fraction, self.test_fraction)

    def load(self) -> DataBundle:
        from sklearn.datasets import load_digits

        digits = load_digits()
        return self._bundle("digits", digits.images, digits.target, None, shape=(1, 8, 8),
                            levels=17, source="scikit-learn digits", divisor=self._divisor(17),
                            test_fraction=self.test_fraction)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (LeCun et al., 1998): a big-endian magic number
    ``0x00000800 + ndim``, ``ndim`` big-endian uint32 sizes, then the bytes in C order.
    Gzip-compressed when the name ends in ``.gz``."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise SpecError("data", f"{path}: unreadable, truncated or corrupt ({_one_line(exc)}); "
                        "delete it and fetch it again") from None
    magic, header = 0x800 + ndim, 4 * (ndim + 1)
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise SpecError("data", f"{path}: bad magic number 0x{found:08x}, expected "
                        f"0x{magic:08x} (IDX of unsigned bytes, {ndim} dimensions)")
    if len(raw) < header:
        raise SpecError("data", f"{path}: header truncated ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    if len(raw) - header != math.prod(dims):
        raise SpecError("data", f"{path}: header gives dimensions {list(dims)} = "
                        f"{math.prod(dims)} bytes, the file holds {len(raw) - header}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def read_idx_pair(images: Path, labels: Path,
                  item: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) of the expected ``item = (H, W)`` and their N labels."""
    x, y = read_idx(images, 3), read_idx(labels, 1)
    if x.shape[1:] != item:
        raise SpecError("data", f"{images}: items of {x.shape[1]}x{x.shape[2]} pixels, "
                        f"expected {item[0]}x{item[1]}")
    if len(y) != len(x):
        raise SpecError("data", f"{labels}: {len(y)} labels for the {len(x)} images of {images}")
    return x, y


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pyro-vae"


@frozen_params
class _Idx(_Images):
    """28x28 grey images, 256 levels, from the four IDX files (raw or ``.gz``) of an official
    60000/10000 train/test split; validation is carved from the training files."""

    root: str | None = None
    download: bool = False
    dataset: ClassVar[str]  # the registry name
    folder: ClassVar[str]  # torchvision's class, and its folder under a root
    hint: ClassVar[str] = ""

    def places(self) -> list[Path]:
        """Directories searched in order; torchvision keeps files in ``<root>/<folder>/raw``."""
        cache, local = _cache_dir() / self.dataset, Path.cwd() / "data"
        roots = [Path(self.root).expanduser()] if self.root else []
        return [*(p for r in roots for p in (r, r / self.folder / "raw")),
                cache, cache / self.folder / "raw",
                local / self.dataset, local / self.folder / "raw", SYSTEM_DIR / self.dataset]

    def _find(self) -> list[Path] | None:
        for place in self.places():
            files = [next((f for f in (place / s, place / f"{s}.gz") if f.is_file()), None)
                     for s in IDX_FILES]
            if all(files):
                return files  # type: ignore[return-value]
        return None

    def _download(self) -> None:
        cache = _cache_dir() / self.dataset
        try:
            import torchvision  # an optional extra; its import can fail in many ways
        except Exception as exc:
            raise SpecError("data.download", f"needs torchvision, whose import failed "
                            f"({_one_line(exc)}); {self._how()}") from None
        try:
            for train in (True, False):
                getattr(torchvision.datasets, self.folder)(str(cache), train=train, download=True)
        except Exception as exc:
            raise SpecError("data.download", f"downloading {self.dataset} into {cache} failed "
                            f"({_one_line(exc)}); {self._how()}") from None

    def _how(self) -> str:
        return (f"looked in: {', '.join(map(str, self.places()))}; put "
                f"{', '.join(f + '.gz' for f in IDX_FILES)} (or the same unzipped) in data.root "
                "or one of those directories, or set data.download=true (needs torchvision and "
                f"a network){self.hint}")

    def load(self) -> DataBundle:
        files = self._find()
        if files is None and self.download:
            self._download()
            files = self._find()
        if files is None:
            raise SpecError("data", f"{self.dataset} IDX files not found; {self._how()}")
        train = read_idx_pair(files[0], files[1], (28, 28))
        test = read_idx_pair(files[2], files[3], (28, 28))
        return self._bundle(self.dataset, *train, test, shape=(1, 28, 28), levels=256,
                            source=str(files[0].parent), divisor=self._divisor(256))


@DATASETS.register("mnist")
@frozen_params
class Mnist(_Idx):
    """MNIST handwritten digits (LeCun et al., 1998)."""

    dataset: ClassVar[str] = "mnist"
    folder: ClassVar[str] = "MNIST"


@DATASETS.register("fashion-mnist")
@frozen_params
class FashionMnist(_Idx):
    """Fashion-MNIST clothing images (Xiao et al., 2017, arXiv:1708.07747)."""

    dataset: ClassVar[str] = "fashion-mnist"
    folder: ClassVar[str] = "FashionMNIST"
    hint: ClassVar[str] = "; on Debian/Ubuntu: apt install dataset-fashion-mnist"


@DATASETS.register("npz")
@frozen_params
class Npz(_Common):
    """A user's ``.npz`` archive: items along axis 0 of array ``key``, used as they are (float32,
    no levels). ``shape`` is the per-item shape, a C-order reshape (default: the array's trailing
    shape, with a channel axis put in front of a 2-D (H, W)); ``labels_key`` an integer array."""

    path: str
    key: str = "x"
    shape: tuple[int, ...] | None = None
    labels_key: str | None = None
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_test_fraction(self.val_fraction, self.test_fraction)
        if self.shape is not None and (not self.shape or min(self.shape) < 1):
            raise ValueError(f"shape must be a list of sizes >= 1, got {list(self.shape)}")

    def load(self) -> DataBundle:
        path = Path(self.path).expanduser()
        try:
            archive = np.load(path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise SpecError("data.path",
                            f"{path}: cannot read an .npz archive ({_one_line(exc)})") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise SpecError("data.path", f"{path}: a single array; expected an .npz archive "
                            "(numpy.savez)")
        with archive:
            x = _member(archive, path, "key", self.key, "biuf")
            y = None if self.labels_key is None else _member(archive, path, "labels_key",
                                                              self.labels_key, "biu")
        source = f"{path}[{self.key!r}]"
        if x.ndim < 2:
            raise SpecError("data.key", f"{source} has shape {list(x.shape)}; expected items "
                            "along axis 0, (N, ...)")
        item = x.shape[1:]
        shape = self.shape or ((1, *item) if len(item) == 2 else item)
        if math.prod(shape) != math.prod(item):
            raise SpecError("data.shape", f"{list(shape)} holds {math.prod(shape)} values; the "
                            f"items of {source} have shape {list(item)}, {math.prod(item)} values")
        if y is not None and y.shape != (len(x),):
            raise SpecError("data.labels_key", f"{path}[{self.labels_key!r}] has shape "
                            f"{list(y.shape)}; expected one label per item, [{len(x)}]")
        return self._bundle(f"npz:{path.name}", x, y, None, shape=tuple(shape), levels=None,
                            source=source, test_fraction=self.test_fraction)


def _member(archive: np.lib.npyio.NpzFile, path: Path, param: str, key: str,
            kinds: str) -> np.ndarray:
    """Array ``key`` of the archive, of a numpy dtype kind in ``kinds``."""
    if key not in archive.files:
        raise SpecError(f"data.{param}", f"{path} has no array {key!r}; arrays present: "
                        f"{', '.join(archive.files) or 'none'}")
    try:
        a = archive[key]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SpecError(f"data.{param}",
                        f"{path}[{key!r}]: unreadable ({_one_line(exc)})") from None
    if a.dtype.kind not in kinds:
        raise SpecError(f"data.{param}", f"{path}[{key!r}] has dtype {a.dtype}; expected "
                        + ("integers" if kinds == "biu" else "numbers"))
    return a
