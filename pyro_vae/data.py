"""Registry of datasets: digits (embedded), mnist and fashion-mnist (IDX files), a user's arrays
(``npz``: an ``.npz`` archive or an ``.npy`` file) and a folder of PNG/JPEG ``images``.

Every entry is a frozen dataclass of parameters whose ``load()`` returns a
:class:`~pyro_vae.bundle.DataBundle` of flat float32 splits ``(N, P)``. This module reads and
splits with numpy; :func:`pyro_vae.bundle.make_bundle` makes the tensors (torch is imported
when a data set is loaded, not when a spec is validated). Shared behaviour:

* splits are a seeded permutation (``numpy.random.default_rng(seed)``): same seed, same splits;
  ``val_fraction`` (and ``test_fraction`` where a set has no official test split) count items of
  the pool they are carved from; ``limit`` then caps the training split alone;
* ``values="unit"`` maps pixel levels ``0..L-1`` to ``x / (L-1)`` in [0, 1]; ``"integer"`` keeps
  the raw levels (for a categorical likelihood); the bundle records ``levels = L``. Integer arrays
  of a user know their levels too: ``levels``, else 256 for uint8, 2 for bool, max + 1 otherwise;
  float arrays are used as they are;
* ``layout`` orders an item of three axes: ``channels_first`` (C, H, W) or ``channels_last``
  (H, W, C, transposed on loading); ``auto`` reads channels first when the first axis is 1 or 3,
  else channels last when the last one is, else channels first;
* binarization draws ``x_bin ~ Bernoulli(x)`` per pixel. ``"static"`` binarizes every split once
  with ``torch.Generator().manual_seed(seed)``; ``"dynamic"`` binarizes validation and test once
  the same way and keeps the training split grey, resampling it in every training batch from
  torch's global RNG, so Lightning's seed governs it (the protocol of Burda et al., 2015,
  "Importance Weighted Autoencoders", appendix). Validation and test bits do not depend on the mode.
* ``transform="standardize"`` fits per dimension the training split's mean μ and standard
  deviation s (s = 1 where it is 0) and feeds the model x' = (x − μ)/s; ``"dequantize"`` feeds
  integer levels k as x' = (k + u)/L (``values: unit``) or k + u (``integer``), u ~ U[0, 1)ᴾ,
  drawn afresh for every training batch and once (seeded) for validation and test. Either way
  the bundle's ``log_jacobian`` is log |∂x'/∂x| per item, so that on the original scale

      log p(x) = log p'(x') + log_jacobian,   log_jacobian = −Σ_i log s_i   (standardize)
      log P(k) ≥ E_u log p'(x') + log_jacobian,   log_jacobian = −P log L   (dequantize, unit)

  (the second is the dequantization bound of Theis et al. 2016, "A note on the evaluation of
  generative models"; log_jacobian = 0 for ``integer``).

* ``labeled: N`` keeps N labels of the training split (after ``limit``) and hides the rest as
  −1 (:data:`pyro_vae.models.HIDDEN`), for semi-supervised training (``model: m2``): stratified,
  class c keeping N·n_c/n of its n_c labels (rounded by largest remainder), the rows kept in
  each class drawn by ``numpy.random.default_rng([seed, 1])``. Validation and test labels stay.

Every failure the user can cause is a one-line :class:`~pyro_vae.registry.SpecError` that names
the key or the file. Sizes are bounded before anything is read, from headers: an image's width and
height (Pillow opens lazily) against :data:`MAX_IMAGE_PIXELS`, and the values of a whole folder of
images, or of an ``.npy`` file or ``.npz`` member (its ``.npy`` header), against the memory
available (:func:`_check_memory`); arrays of no items, or of items of no values, are refused.
"""

from __future__ import annotations

import gzip
import math
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, ClassVar, Literal

import numpy as np

from pyro_vae.cache import cache_dir
from pyro_vae.entries import DataSource
from pyro_vae.memory import available_memory
from pyro_vae.registry import Component, Registry, SpecError, frozen_params

if TYPE_CHECKING:  # pragma: no cover
    from pyro_vae.bundle import DataBundle

Binarize = Literal["none", "dynamic", "static"]
Values = Literal["unit", "integer"]
Layout = Literal["auto", "channels_first", "channels_last"]
Transform = Literal["none", "standardize", "dequantize"]
SPLITS = ("train", "val", "test")
SYSTEM_DIR = Path("/usr/share/datasets")  # Debian's dataset-* packages install here
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: The most pixels one image may have, 4096 × 4096, checked from its header before it is decoded:
#: far beyond what a network here takes (an mlp's first 128 units on such an item alone hold
#: 2·10⁹ weights, 34 GB to train), and below Pillow's own decompression-bomb limit
#: (``PIL.Image.MAX_IMAGE_PIXELS``, 8.9·10⁷), whose warning and error are refused too.
MAX_IMAGE_PIXELS = 4096 * 4096
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


DATASETS: Registry[DataSource] = Registry("data", DataSource)


def absolute_paths(data: Component) -> Component:
    """``data`` with its ``path`` and ``root`` made absolute (``~`` expanded, relative to the
    working directory), so that a run's config.yaml finds its data from any directory."""
    params = {
        k: str(Path(v).expanduser().absolute())
        if k in ("path", "root") and isinstance(v, str)
        else v
        for k, v in data.params.items()
    }
    return Component(data.name, params)


def _one_line(exc: BaseException) -> str:
    """An exception as ``Type: message`` on one line, for embedding in a SpecError."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def _check_test_fraction(val_fraction: float, test_fraction: float) -> None:
    _check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}"
        )


@frozen_params
class _Common(DataSource):
    binarize: Binarize = "none"
    val_fraction: float = 0.1
    seed: int = 0
    limit: int | None = None
    values: Values = "unit"
    transform: Transform = "none"
    labeled: int | None = None

    def __post_init__(self) -> None:
        _check_fraction("val_fraction", self.val_fraction)
        for key in ("limit", "labeled"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        if self.binarize != "none" and self.values != "unit":
            raise ValueError(
                f"binarize={self.binarize!r} needs values='unit' (pixels in [0, 1]), "
                f"got values={self.values!r}"
            )
        if self.binarize != "none" and self.transform != "none":
            raise ValueError(
                f"transform={self.transform!r} needs binarize='none' (binary data "
                f"have nothing to {self.transform}), got binarize={self.binarize!r}"
            )

    def _bundle(
        self,
        name: str,
        pool: np.ndarray,
        pool_labels: np.ndarray | None,
        test: tuple[np.ndarray, np.ndarray | None] | None,
        *,
        shape: tuple[int, ...],
        levels: int | None,
        source: str,
        test_fraction: float = 0.0,
        notes: tuple[str, ...] = (),
    ) -> DataBundle:
        """Split ``pool`` (N, ...) into train/val (and test, when ``test`` is None), then scale
        to ``values``, check, binarize and transform. ``levels``: pixel levels ``0..levels-1``
        (integer items), or None (real values, used as they are)."""
        for a in (pool, None if test is None else test[0]):
            bad = 0 if a is None or a.dtype.kind != "f" else a.size - int(np.isfinite(a).sum())
            if bad:
                raise SpecError("data", f"{source}: {bad} non-finite values (NaN or inf)")
        n = len(pool)
        order = np.random.default_rng(self.seed).permutation(n)
        n_test = round(test_fraction * n) if test is None else 0
        n_val = round(self.val_fraction * n)
        index = {
            "test": order[:n_test],
            "val": order[n_test : n_test + n_val],
            "train": order[n_test + n_val :][: self.limit],
        }
        wanted = {"test": test_fraction > 0, "val": self.val_fraction > 0, "train": True}
        for split in SPLITS:
            if wanted[split] and len(index[split]) == 0:
                raise SpecError(
                    "data",
                    f"the {split} split of {name} is empty ({n} items, "
                    f"val_fraction={self.val_fraction}, test_fraction={test_fraction}, "
                    f"limit={self.limit})",
                )
        arrays = {
            s: (pool[i], None if pool_labels is None else pool_labels[i]) for s, i in index.items()
        }
        if self.labeled is not None:
            train, labels = arrays["train"]
            if labels is None:
                raise SpecError("data.labeled", f"{source} has no labels to keep")
            arrays["train"] = (train, kept_labels(labels, self.labeled, self.seed))
        if test is not None:
            arrays["test"] = test
        from pyro_vae.bundle import make_bundle

        return make_bundle(
            name,
            arrays,
            shape=shape,
            levels=levels,
            integer=levels is not None and self.values == "integer",
            divisor=self._divisor(levels, source),
            binarize=self.binarize,
            transform=self.transform,
            seed=self.seed,
            source=source,
            notes=notes,
        )

    def _divisor(self, levels: int | None, source: str) -> float:
        """What integer levels are divided by: L − 1 for ``unit`` (L when dequantized), else 1."""
        if levels is None:
            if self.values == "integer" or self.transform == "dequantize":
                key = "values" if self.values == "integer" else "transform"
                raise SpecError(
                    f"data.{key}",
                    f"{getattr(self, key)} needs integer data; "
                    f"{source} holds real values (save them as integers, or use "
                    "values: unit, transform: none or standardize)",
                )
            return 1.0
        if self.values == "integer":
            return 1.0
        return float(levels if self.transform == "dequantize" else levels - 1)


def kept_labels(labels: np.ndarray, keep: int, seed: int) -> np.ndarray:
    """``labels`` (n,) with all but ``keep`` of them set to −1, stratified over the classes
    (module docstring); a SpecError naming ``data.labeled`` when ``keep`` exceeds n."""
    n = len(labels)
    if keep > n:
        raise SpecError(
            "data.labeled", f"{keep} is more than the {n} training items (after data.limit)"
        )
    classes, counts = np.unique(labels, return_counts=True)
    share = keep * counts / n
    quota = np.floor(share).astype(int)
    quota[np.argsort(quota - share, kind="stable")[: keep - quota.sum()]] += 1
    rng = np.random.default_rng([seed, 1])
    out = np.full(n, -1, dtype=np.int64)
    for c, k in zip(classes, quota):
        rows = np.flatnonzero(labels == c)
        chosen = rng.permutation(rows)[:k]
        out[chosen] = c
    return out


@DATASETS.register("digits")
@frozen_params
class Digits(_Common):
    """scikit-learn's bundled 8x8 digits (1797 items, grey levels 0..16, labels 0..9; the test
    set of UCI optdigits). No official split: ``test_fraction`` of the items form the test set."""

    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_test_fraction(self.val_fraction, self.test_fraction)

    def load(self) -> DataBundle:
        from sklearn.datasets import load_digits

        digits = load_digits()
        return self._bundle(
            "digits",
            digits.images,
            digits.target,
            None,
            shape=(1, 8, 8),
            levels=17,
            source="scikit-learn digits",
            test_fraction=self.test_fraction,
        )


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (LeCun et al., 1998): a big-endian magic number
    ``0x00000800 + ndim``, ``ndim`` big-endian uint32 sizes, then the bytes in C order.
    Gzip-compressed when the name ends in ``.gz``."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise SpecError(
            "data",
            f"{path}: unreadable, truncated or corrupt ({_one_line(exc)}); "
            "delete it and fetch it again",
        ) from None
    magic, header = 0x800 + ndim, 4 * (ndim + 1)
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise SpecError(
            "data",
            f"{path}: bad magic number 0x{found:08x}, expected "
            f"0x{magic:08x} (IDX of unsigned bytes, {ndim} dimensions)",
        )
    if len(raw) < header:
        raise SpecError("data", f"{path}: header truncated ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    if len(raw) - header != math.prod(dims):
        raise SpecError(
            "data",
            f"{path}: header gives dimensions {list(dims)} = "
            f"{math.prod(dims)} bytes, the file holds {len(raw) - header}",
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def read_idx_pair(
    images: Path, labels: Path, item: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) of the expected ``item = (H, W)`` and their N labels."""
    x, y = read_idx(images, 3), read_idx(labels, 1)
    if x.shape[1:] != item:
        raise SpecError(
            "data",
            f"{images}: items of {x.shape[1]}x{x.shape[2]} pixels, expected {item[0]}x{item[1]}",
        )
    if len(y) != len(x):
        raise SpecError("data", f"{labels}: {len(y)} labels for the {len(x)} images of {images}")
    return x, y


@frozen_params
class _Idx(_Common):
    """28x28 grey images, 256 levels, from the four IDX files (raw or ``.gz``) of an official
    60000/10000 train/test split; validation is carved from the training files."""

    root: str | None = None
    download: bool = False
    dataset: ClassVar[str]  # the registry name
    folder: ClassVar[str]  # torchvision's class, and its folder under a root
    hint: ClassVar[str] = ""

    def places(self) -> list[Path]:
        """Directories searched in order; torchvision keeps files in ``<root>/<folder>/raw``."""
        cache, local = cache_dir() / self.dataset, Path.cwd() / "data"
        roots = [Path(self.root).expanduser()] if self.root else []
        return [
            *(p for r in roots for p in (r, r / self.folder / "raw")),
            cache,
            cache / self.folder / "raw",
            local / self.dataset,
            local / self.folder / "raw",
            SYSTEM_DIR / self.dataset,
        ]

    def _find(self) -> list[Path] | None:
        for place in self.places():
            files = [
                next((f for f in (place / s, place / f"{s}.gz") if f.is_file()), None)
                for s in IDX_FILES
            ]
            if all(files):
                return files  # type: ignore[return-value]
        return None

    def _download(self) -> None:
        cache = cache_dir() / self.dataset
        try:
            import torchvision  # an optional extra; its import can fail in many ways
        except Exception as exc:
            raise SpecError(
                "data.download",
                f"needs torchvision, whose import failed ({_one_line(exc)}); {self._how()}",
            ) from None
        try:
            for train in (True, False):
                getattr(torchvision.datasets, self.folder)(str(cache), train=train, download=True)
        except Exception as exc:
            raise SpecError(
                "data.download",
                f"downloading {self.dataset} into {cache} failed ({_one_line(exc)}); {self._how()}",
            ) from None

    def _how(self) -> str:
        return (
            f"looked in: {', '.join(map(str, self.places()))}; put "
            f"{', '.join(f + '.gz' for f in IDX_FILES)} (or the same unzipped) in data.root "
            "or one of those directories, or set data.download=true (needs torchvision and "
            f"a network){self.hint}"
        )

    def load(self) -> DataBundle:
        files = self._find()
        if files is None and self.download:
            self._download()
            files = self._find()
        if files is None:
            raise SpecError("data", f"{self.dataset} IDX files not found; {self._how()}")
        train = read_idx_pair(files[0], files[1], (28, 28))
        test = read_idx_pair(files[2], files[3], (28, 28))
        return self._bundle(
            self.dataset, *train, test, shape=(1, 28, 28), levels=256, source=str(files[0].parent)
        )


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


@frozen_params
class _Arrays(_Common):
    """Items along axis 0 of a user's array. ``shape``: the per-item shape, a C-order reshape
    (default: the array's trailing shape, a channel axis put in front of a 2-D (H, W));
    ``layout`` orders three axes (module docstring); ``levels`` of integer items."""

    path: str
    shape: tuple[int, ...] | None = None
    layout: Layout = "auto"
    levels: int | None = None
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_test_fraction(self.val_fraction, self.test_fraction)
        if self.shape is not None and (not self.shape or min(self.shape) < 1):
            raise ValueError(f"shape must be a list of sizes >= 1, got {list(self.shape)}")
        if self.levels is not None and self.levels < 2:
            raise ValueError(f"levels must be >= 2, got {self.levels}")

    def _items(
        self,
        name: str,
        x: np.ndarray,
        y: np.ndarray | None,
        source: str,
        layout: Layout | None = None,
        key: str = "data.path",
        notes: tuple[str, ...] = (),
    ) -> DataBundle:
        """Check ``x`` (N, ...) and its labels, order its axes (``layout``, by default the
        spec's) and find its levels. ``key``: the spec key that chose ``x``; ``notes``: what
        loading decided on its own."""
        if x.ndim < 2:
            raise SpecError(
                key, f"{source} has shape {list(x.shape)}; expected items along axis 0, (N, ...)"
            )
        item = x.shape[1:]
        shape = tuple(self.shape or item)
        if math.prod(shape) != math.prod(item):
            raise SpecError(
                "data.shape",
                f"{list(shape)} holds {math.prod(shape)} values; the "
                f"items of {source} have shape {list(item)}, {math.prod(item)} values",
            )
        if y is not None and y.shape != (len(x),):
            raise SpecError(
                "data.labels_key",
                f"labels of {source} have shape "
                f"{list(y.shape)}; expected one label per item, [{len(x)}]",
            )
        layout = layout or self.layout
        if len(shape) == 3 and layout == "auto":
            last = shape[0] not in (1, 3) and shape[2] in (1, 3)
            layout = "channels_last" if last else "channels_first"
            notes = (*notes, f"layout {layout} (detected; set data.layout to change)")
        if len(shape) == 2:  # (H, W): one grey channel
            shape = (1, *shape)
        elif len(shape) == 3 and layout == "channels_last":
            x = x.reshape(len(x), *shape).transpose(0, 3, 1, 2)
            shape = (shape[2], shape[0], shape[1])
        return self._bundle(
            name,
            x,
            y,
            None,
            shape=shape,
            levels=self._levels(x, source),
            source=source,
            test_fraction=self.test_fraction,
            notes=notes,
        )

    def _levels(self, x: np.ndarray, source: str) -> int | None:
        """L for integer items (``levels``, else 256 for uint8, 2 for bool, max + 1), checked
        against the values; None for real values."""
        if x.dtype.kind not in "biu":
            if self.levels is not None:
                raise SpecError(
                    "data.levels",
                    f"{source} holds real values ({x.dtype}); levels describe integer data",
                )
            return None
        default = {"b": 2}.get(x.dtype.kind, 256 if x.dtype == np.uint8 else int(x.max()) + 1)
        levels = self.levels or max(default, 2)
        low, high = int(x.min()), int(x.max())
        if low < 0 or high >= levels:
            raise SpecError(
                "data.levels",
                f"{source} holds integers in [{low}, {high}], outside the levels 0..{levels - 1}",
            )
        return levels


@DATASETS.register("npz")
@frozen_params
class Npz(_Arrays):
    """A user's ``.npz`` archive (array ``key``, labels in ``labels_key``) or ``.npy`` file."""

    key: str = "x"
    labels_key: str | None = None

    def load(self) -> DataBundle:
        path = Path(self.path).expanduser()
        magic = np.lib.format.MAGIC_PREFIX
        try:
            with open(path, "rb") as stream:
                single = stream.read(len(magic)) == magic
            archive = None if single else np.load(path, allow_pickle=False)  # lazy: a zip index
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise SpecError(
                "data.path", f"{path}: cannot read an .npz archive or .npy file ({_one_line(exc)})"
            ) from None
        if archive is None:
            if self.labels_key is not None:
                raise SpecError(
                    "data.labels_key",
                    f"{path} is a single array (.npy) and holds "
                    "no labels; save an .npz archive (numpy.savez) for labels",
                )
            x = _read_array(
                lambda: open(path, "rb"),  # noqa: SIM115 (the reader closes it)
                "data.path",
                str(path),
                "biuf",
            )
            return self._items(f"npy:{path.name}", x, None, str(path))
        with archive:
            x = _member(archive, path, "key", self.key, "biuf")
            y = (
                None
                if self.labels_key is None
                else _member(archive, path, "labels_key", self.labels_key, "biu")
            )
        return self._items(f"npz:{path.name}", x, y, f"{path}[{self.key!r}]", key="data.key")


@DATASETS.register("images")
@frozen_params
class ImageFolder(_Arrays):
    """PNG/JPEG files of one size and one kind of pixel (:data:`PIXELS`) in folder ``path``, read
    with Pillow in name order; labels from class subfolders (sorted names → 0, 1, ...) when every
    file sits in one. Every header is checked (:func:`_image_header`) and the folder's total
    checked against the memory available before any image is decoded."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layout != "auto":
            raise ValueError(
                "layout does not apply to image files (Pillow gives height, width, "
                "channels), leave it out"
            )

    def load(self) -> DataBundle:
        from PIL import Image

        root = Path(self.path).expanduser()
        if not root.is_dir():
            raise SpecError("data.path", f"{root}: no such folder of images")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SpecError("data.path", f"{root}: no {'/'.join(IMAGE_SUFFIXES)} files in it")
        heads = [_image_header(f) for f in files]
        (w0, h0), mode0 = heads[0]
        pixels = PIXELS[mode0]
        for f, ((w, h), mode) in zip(files, heads):
            if (w, h) != (w0, h0):
                raise SpecError(
                    "data.path",
                    f"{f}: {w}x{h} pixels, but {files[0].name} has "
                    f"{w0}x{h0}; all images must have one size",
                )
            if PIXELS[mode] != pixels:
                raise SpecError(
                    "data.path",
                    f"{f}: {PIXELS[mode].name} (Pillow mode {mode}), "
                    f"but {files[0].name} is {pixels.name} ({mode0}); all images "
                    "must have one kind of pixel",
                )
        item = (h0, w0) if pixels.channels == 1 else (h0, w0, pixels.channels)
        _check_memory(
            "data.path",
            str(root),
            f"{len(files)} images of {w0}×{h0} {pixels.name}",
            len(files) * math.prod(item),
            np.dtype(pixels.dtype).itemsize,
        )
        x = np.empty((len(files), *item), pixels.dtype)
        for i, f in enumerate(files):
            try:
                with Image.open(f) as image:
                    x[i] = np.asarray(
                        image if pixels.convert is None else image.convert(pixels.convert)
                    )
            except OSError as exc:  # Pillow's UnidentifiedImageError is one
                raise _unreadable_image(f, exc) from None
        alpha = sum(mode in ALPHA_MODES for _, mode in heads)
        notes = (f"alpha channel of {alpha} of {len(files)} images dropped",) if alpha else ()
        folders = [f.relative_to(root).parent for f in files]
        labels = None
        if all(len(d.parts) == 1 for d in folders):
            classes = sorted({d.parts[0] for d in folders})
            labels = np.array([classes.index(d.parts[0]) for d in folders])
        return self._items(
            f"images:{root.name}", x, labels, str(root), "channels_last", notes=notes
        )


@dataclass(frozen=True)
class _Pixels:
    """How a folder's images load: the Pillow mode they are converted to (None: as they are),
    channels, the numpy dtype of a sample, and a name for messages."""

    convert: str | None
    channels: int
    dtype: type[np.generic]
    name: str


_GREY8 = _Pixels("L", 1, np.uint8, "8-bit grey")
_COLOUR8 = _Pixels("RGB", 3, np.uint8, "8-bit colour")
_GREY16 = _Pixels(None, 1, np.uint16, "16-bit grey")
_GREY32 = _Pixels(None, 1, np.int32, "32-bit integer grey")
#: The Pillow modes of PNG/JPEG files read, and how they load: grey stays one channel, 16-bit
#: grey keeps its levels (``levels``: max + 1, as for any integer array but uint8). An alpha
#: channel (:data:`ALPHA_MODES`) is dropped, as a note of the bundle says.
PIXELS: dict[str, _Pixels] = {
    "1": _GREY8,
    "L": _GREY8,
    "LA": _GREY8,
    "P": _COLOUR8,
    "PA": _COLOUR8,
    "RGB": _COLOUR8,
    "RGBA": _COLOUR8,
    "CMYK": _COLOUR8,
    "I;16": _GREY16,
    "I;16L": _GREY16,
    "I;16B": _GREY16,
    "I": _GREY32,
}
ALPHA_MODES = ("LA", "PA", "RGBA")


def _image_header(path: Path) -> tuple[tuple[int, int], str]:
    """(width, height) and Pillow mode of an image, from its header alone (``Image.open`` is
    lazy: nothing is decoded). Refused: a file Pillow cannot open, one over
    :data:`MAX_IMAGE_PIXELS` (Pillow's DecompressionBombWarning and DecompressionBombError
    included), a mode not in :data:`PIXELS`, and a 16-bit PNG in colour or with alpha, whose
    samples Pillow would cut to 8 bits."""
    from PIL import Image

    limit = (
        f"the limit is {MAX_IMAGE_PIXELS} pixels per image "
        "(pyro_vae.data.MAX_IMAGE_PIXELS); resize the images"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                size, mode = image.size, image.mode
                bits = _png_bit_depth(path) if image.format == "PNG" else 8
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SpecError(
            "data.path",
            f"{path}: refused by Pillow as a possible decompression "
            f"bomb ({_one_line(exc)}); {limit}",
        ) from None
    except OSError as exc:
        raise _unreadable_image(path, exc) from None
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise SpecError(
            "data.path", f"{path}: {width}×{height} = {width * height:.3g} pixels; {limit}"
        )
    if mode not in PIXELS:
        raise SpecError(
            "data.path",
            f"{path}: Pillow mode {mode}, which is not read; readable modes: {', '.join(PIXELS)}",
        )
    if bits == 16 and PIXELS[mode].dtype == np.uint8:
        raise SpecError(
            "data.path",
            f"{path}: a 16-bit PNG, which Pillow reads as {mode} of 8 "
            "bits per sample (the high byte); save it with 8 bits per sample, or as "
            "16-bit grey without alpha",
        )
    return size, mode


def _png_bit_depth(path: Path) -> int:
    """A PNG's bit depth: byte 24 of the file, in its IHDR chunk (after the 8-byte signature,
    the chunk's length and type, the width and the height)."""
    with open(path, "rb") as stream:
        return stream.read(25)[24]


def _unreadable_image(path: Path, exc: OSError) -> SpecError:
    """The error for an image Pillow cannot open or decode."""
    return SpecError("data.path", f"{path}: unreadable image ({_one_line(exc)})")


def _check_memory(key: str, source: str, what: str, values: int, itemsize: int) -> None:
    """SpecError when loading ``values`` numbers of ``itemsize`` bytes cannot fit in memory,
    checked before they are read: loading holds them as read, their copy in the splits and the
    float32 splits, ``values · (2 · itemsize + 4)`` bytes, against :func:`available_memory`
    (the kernel's MemAvailable, or a container's limit; no check where neither is known)."""
    need, memory = values * (2 * itemsize + 4), available_memory()
    if memory is not None and need > memory:
        raise SpecError(
            key,
            f"{source}: {what} = {values:.3g} values of {itemsize} "
            f"byte{'s' * (itemsize > 1)} need "
            f"{need / 2**30:.3g} GiB to load (as read, split and as float32), more "
            f"than the {memory / 2**30:.3g} GiB of memory available",
        )


def _member(
    archive: np.lib.npyio.NpzFile, path: Path, param: str, key: str, kinds: str
) -> np.ndarray:
    """Array ``key`` of the archive, read and checked by :func:`_read_array`."""
    if key not in archive.files:
        raise SpecError(
            f"data.{param}",
            f"{path} has no array {key!r}; arrays present: {', '.join(archive.files) or 'none'}",
        )
    name = key if key in archive.zip.namelist() else f"{key}.npy"  # as NpzFile finds it
    return _read_array(lambda: archive.zip.open(name), f"data.{param}", f"{path}[{key!r}]", kinds)


def _read_array(
    open_stream: Callable[[], IO[bytes]], key: str, source: str, kinds: str
) -> np.ndarray:
    """The array of an ``.npy`` stream (a file or an archive's member), its header read and
    checked before its data: format 1.0 or 2.0, a numpy dtype kind in ``kinds``, at least one
    item (axis 0), items of at least one value, and a size that fits in memory
    (:func:`_check_memory`)."""
    try:
        with open_stream() as stream:
            version = np.lib.format.read_magic(stream)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(
                    f".npy format version {version[0]}.{version[1]}; expected 1.0 or 2.0"
                )
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(stream)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SpecError(key, f"{source}: unreadable ({_one_line(exc)})") from None
    if dtype.kind not in kinds:
        raise SpecError(
            key,
            f"{source} has dtype {dtype}; expected "
            + ("integers" if kinds == "biu" else "numbers"),
        )
    if shape and shape[0] == 0:
        raise SpecError(key, f"{source} holds no items (shape {list(shape)})")
    if 0 in shape[1:]:
        raise SpecError(
            key,
            f"{source}: its items of shape {list(shape[1:])} hold no values (shape {list(shape)})",
        )
    _check_memory(key, source, f"shape {list(shape)} of {dtype}", math.prod(shape), dtype.itemsize)
    try:
        with open_stream() as stream:
            return np.lib.format.read_array(stream, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, MemoryError) as exc:
        raise SpecError(key, f"{source}: unreadable ({_one_line(exc)})") from None
