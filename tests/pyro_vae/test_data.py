"""Datasets: splits, scaling, binarization, the IDX reader, npz arrays, and their errors."""

import gzip
import math
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from crafted_files import claim_size
from sklearn.datasets import load_digits

from pyro_vae import data
from pyro_vae.bundle import DataBundle
from pyro_vae.data import DATASETS, read_idx
from pyro_vae.registry import SpecError


def load(**spec) -> DataBundle:
    return DATASETS.instantiate(DATASETS.parse(spec)).load()


def sorted_rows(x: torch.Tensor) -> np.ndarray:
    a = np.asarray(x)
    return a[np.lexsort(a.T[::-1])]


# ---- digits -------------------------------------------------------------------------------------


def test_digits_shapes_values_and_labels():
    b = load(name="digits")
    assert (len(b.train), len(b.val), len(b.test)) == (1258, 180, 359)  # 1797 = 70/10/20 %
    assert b.shape == (1, 8, 8) and b.is_image and b.dim == 64 and b.levels == 17
    for split in ("train", "val", "test"):
        x, y = b.split(split), b.labels[split]
        assert x.dtype == torch.float32 and x.shape[1] == 64
        assert x.min() >= 0.0 and x.max() == 1.0
        assert torch.equal(x * 16, (x * 16).round())  # levels k/16
        assert y.dtype == torch.long and len(y) == len(x) and set(y.tolist()) == set(range(10))


def test_digits_splits_partition_the_data_and_follow_the_seed():
    b = load(name="digits", values="integer")
    whole = torch.cat([b.train, b.val, b.test])
    assert torch.equal(whole, whole.round()) and whole.min() == 0 and whole.max() == 16
    # the three splits together are the 1797 items, each exactly once (as a multiset of rows)
    assert np.array_equal(sorted_rows(whole), sorted_rows(torch.tensor(load_digits().data)))
    again = load(name="digits", values="integer")
    other = load(name="digits", values="integer", seed=1)
    assert all(torch.equal(getattr(b, s), getattr(again, s)) for s in ("train", "val", "test"))
    assert not torch.equal(b.test, other.test)
    assert torch.equal(load(name="digits").train * 16, b.train)  # unit = integer / (levels - 1)


def test_limit_caps_training_items_only():
    full, small = load(name="digits"), load(name="digits", limit=10)
    assert len(small.train) == 10 and len(small.labels["train"]) == 10
    assert torch.equal(small.train, full.train[:10])
    assert torch.equal(small.val, full.val) and torch.equal(small.test, full.test)


def test_static_binarization_draws_bernoulli_pixels_reproducibly():
    grey, b = load(name="digits"), load(name="digits", binarize="static")
    for split in ("train", "val", "test"):
        x, p = b.split(split), grey.split(split)
        assert set(x.unique().tolist()) <= {0.0, 1.0}
        assert torch.all(x[p == 0] == 0) and torch.all(x[p == 1] == 1)
    # pixels of grey level 4/16: a Bernoulli(1/4) draw, not a threshold. Thousands of such
    # pixels: tolerance 4 standard errors of a binomial proportion.
    p, x = torch.cat([grey.train, grey.val, grey.test]), torch.cat([b.train, b.val, b.test])
    ones = x[p == 0.25]
    assert len(ones) > 2000
    assert abs(ones.mean().item() - 0.25) < 4 * (0.25 * 0.75 / len(ones)) ** 0.5
    again = load(name="digits", binarize="static")
    assert all(torch.equal(b.split(s), again.split(s)) for s in ("train", "val", "test"))
    assert not torch.equal(b.train, load(name="digits", binarize="static", seed=1).train)
    batches = [torch.cat(list(b.loader("train", 100, shuffle=False))) for _ in range(2)]
    assert torch.equal(batches[0], b.train) and torch.equal(batches[1], b.train)


def test_dynamic_binarization_resamples_training_batches_only():
    grey, b = load(name="digits"), load(name="digits", binarize="dynamic")
    static = load(name="digits", binarize="static")
    assert torch.equal(b.train, grey.train)  # kept grey; the loader draws the bits
    assert torch.equal(b.val, static.val) and torch.equal(b.test, static.test)  # fixed once
    assert torch.equal(load(name="digits", binarize="dynamic").test, b.test)

    def epoch(seed: int | None = None) -> torch.Tensor:
        if seed is not None:
            torch.manual_seed(seed)
        batches = list(b.loader("train", 128, shuffle=False))
        assert all(x.shape[1] == 64 for x in batches) and len(batches) == 10
        return torch.cat(batches)

    first, second = epoch(), epoch()
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first, second)
    assert torch.all(first[b.train == 0] == 0) and torch.all(first[b.train == 1] == 1)
    assert torch.equal(epoch(seed=3), epoch(seed=3))  # torch's global seed governs the draws
    for _ in range(2):  # validation batches are the fixed bits, every time
        assert torch.equal(torch.cat(list(b.loader("val", 64, shuffle=False))), b.val)
    # each bit is Bernoulli(p): per grey level p (16 of them), the share of ones among the
    # n ≥ 20 000 draws of its pixels over 20 epochs is p within 5 s.e. √(p(1−p)/n) (CLT at this
    # n; 16 × 6·10⁻⁷ to fail by chance)
    torch.manual_seed(0)
    draws = torch.stack([epoch() for _ in range(20)])
    for level in b.train.unique()[1:-1]:
        ones = draws[:, b.train == level]
        n, share = ones.numel(), float(ones.mean())
        assert n >= 20_000 and abs(share - level) <= 5 * math.sqrt(level * (1 - level) / n)


def test_loader_shuffles_with_the_given_generator():
    b = load(name="digits")
    order = [
        torch.cat(
            list(b.loader("train", 50, shuffle=True, generator=torch.Generator().manual_seed(7)))
        )
        for _ in range(2)
    ]
    assert torch.equal(order[0], order[1]) and not torch.equal(order[0], b.train)
    assert np.array_equal(sorted_rows(order[0]), sorted_rows(b.train))


@pytest.mark.parametrize(
    "spec, named",
    [
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction + test_fraction"),
        ({"limit": 0}, "limit"),
        ({"binarize": "static", "values": "integer"}, "binarize"),
        ({"binarize": "sometimes"}, "data.binarize"),
        ({"binarize": "dynamic", "transform": "standardize"}, "transform"),
        ({"transform": "whiten"}, "data.transform"),
    ],
)
def test_bad_parameters_are_spec_errors_naming_them(spec, named):
    with pytest.raises(SpecError, match=named.replace("+", r"\+")):
        DATASETS.parse({"name": "digits", **spec})


def test_empty_splits():
    with pytest.raises(SpecError, match="val split of digits is empty"):
        load(name="digits", val_fraction=1e-4)
    b = load(name="digits", val_fraction=0.0)
    assert b.val.shape == (0, 64) and len(b.train) + len(b.test) == 1797
    with pytest.raises(SpecError, match="val split of digits is empty"):
        b.loader("val", 10, shuffle=False)
    with pytest.raises(SpecError, match="unknown split 'valid'"):
        b.split("valid")


# ---- IDX ----------------------------------------------------------------------------------------


def write_idx(
    path: Path, a: np.ndarray, magic: int | None = None, dims: tuple[int, ...] | None = None
) -> Path:
    header = (magic if magic is not None else 0x800 + a.ndim).to_bytes(4, "big")
    header += np.asarray(dims or a.shape, ">u4").tobytes()
    raw = header + a.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 3, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, 5, dtype=np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / f"i{suffix}", images), 3), images)
    assert np.array_equal(read_idx(write_idx(tmp_path / f"l{suffix}", labels), 1), labels)


def test_idx_errors_name_the_file(tmp_path):
    images = np.zeros((4, 28, 28), np.uint8)
    bad = write_idx(tmp_path / "bad-magic.gz", images, magic=0x801)
    with pytest.raises(
        SpecError,
        match=r"bad-magic.gz: bad magic number 0x00000801, "
        r"expected 0x00000803",
    ):
        read_idx(bad, 3)
    dims = write_idx(tmp_path / "dims", images, dims=(5, 28, 28))
    with pytest.raises(
        SpecError,
        match=r"dims: header gives dimensions \[5, 28, 28\] = 3920 "
        r"bytes, the file holds 3136",
    ):
        read_idx(dims, 3)
    cut = write_idx(tmp_path / "cut.gz", images)
    cut.write_bytes(cut.read_bytes()[:-12])
    with pytest.raises(SpecError, match="cut.gz: unreadable, truncated or corrupt"):
        read_idx(cut, 3)


def write_mnist(root: Path, n_train: int = 30, n_test: int = 12, side: int = 28) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, side, 28)))
        write_idx(root / f"{stem}-labels-idx1-ubyte", np.arange(n) % 10)


@pytest.fixture
def no_standard_places(tmp_path, monkeypatch):
    """Empty home, cache, working directory and system directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "system")
    return tmp_path


def test_mnist_from_synthetic_files_in_root_and_torchvision_layout(no_standard_places):
    root = no_standard_places / "files"
    write_mnist(root / "MNIST" / "raw")  # torchvision's layout under data.root
    b = load(name="mnist", root=str(root), val_fraction=0.2)
    assert (len(b.train), len(b.val), len(b.test)) == (24, 6, 12)
    assert b.shape == (1, 28, 28) and b.levels == 256 and b.dim == 784
    assert b.test.max() == 1.0 and torch.equal(b.labels["test"], torch.arange(12) % 10)
    raw = load(name="mnist", root=str(root), val_fraction=0.2, values="integer")
    assert torch.equal(raw.test, b.test * 255)
    write_mnist(no_standard_places / "home" / ".cache" / "pyro-vae" / "mnist")  # default place
    assert len(load(name="mnist").test) == 12


def test_idx_images_of_the_wrong_size_or_count(no_standard_places):
    write_mnist(no_standard_places / "odd", side=27)
    with pytest.raises(
        SpecError, match="train-images-idx3-ubyte.gz: items of 27x28 pixels, expected 28x28"
    ):
        load(name="mnist", root=str(no_standard_places / "odd"))
    write_mnist(no_standard_places / "few")
    write_idx(no_standard_places / "few" / "t10k-labels-idx1-ubyte", np.arange(3))
    with pytest.raises(SpecError, match="t10k-labels-idx1-ubyte: 3 labels for the 12 images"):
        load(name="mnist", root=str(no_standard_places / "few"))


def test_mnist_missing_files_names_the_places(no_standard_places):
    with pytest.raises(SpecError) as info:
        load(name="mnist", root=str(no_standard_places / "mine"))
    message = str(info.value)
    assert message.startswith("data: mnist IDX files not found; looked in: ")
    for place in (
        no_standard_places / "mine",
        no_standard_places / "mine" / "MNIST" / "raw",
        no_standard_places / "home" / ".cache" / "pyro-vae" / "mnist",
        no_standard_places / "data" / "mnist",
        no_standard_places / "system" / "mnist",
    ):
        assert str(place) in message
    assert "train-images-idx3-ubyte.gz" in message and "data.download=true" in message


def test_mnist_download_without_a_working_torchvision(no_standard_places, monkeypatch):
    real_import = __import__

    def broken(name, *args, **kwargs):
        if name == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr("builtins.__import__", broken)
    with pytest.raises(
        SpecError,
        match=r"data.download: needs torchvision, whose import failed "
        r"\(RuntimeError: operator torchvision::nms",
    ):
        load(name="mnist", download=True)


def test_real_fashion_mnist():
    place = data.SYSTEM_DIR / "fashion-mnist"
    if not (place / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"no Fashion-MNIST IDX files in {place} (apt install dataset-fashion-mnist)")
    train_x, train_y = data.read_idx_pair(
        place / "train-images-idx3-ubyte.gz", place / "train-labels-idx1-ubyte.gz", (28, 28)
    )
    assert train_x.shape == (60000, 28, 28) and set(np.unique(train_y)) == set(range(10))
    b = load(name="fashion-mnist", limit=100)  # reads all four files; converts few training items
    assert (len(b.train), len(b.val), len(b.test)) == (100, 6000, 10000)
    assert b.shape == (1, 28, 28) and b.dim == 784 and b.levels == 256
    assert b.test.min() == 0.0 and b.test.max() == 1.0
    assert torch.equal(torch.bincount(b.labels["test"]), torch.full((10,), 1000))


# ---- npz ----------------------------------------------------------------------------------------


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "arrays.npz"
    np.savez(path, images=rng.random((40, 6, 5), dtype=np.float32), y=np.arange(40) % 4)
    return path


def test_npz_good_file(npz):
    b = load(name="npz", path=str(npz), key="images", labels_key="y")
    assert (len(b.train), len(b.val), len(b.test)) == (28, 4, 8)
    assert b.shape == (1, 6, 5) and b.is_image and b.dim == 30 and b.levels is None
    whole = torch.cat([b.train, b.val, b.test])
    images = torch.tensor(np.load(npz)["images"].reshape(40, 30))
    assert np.array_equal(sorted_rows(whole), sorted_rows(images))
    labels = torch.cat([b.labels[s] for s in ("train", "val", "test")])
    assert torch.equal(torch.bincount(labels), torch.full((4,), 10))
    flat = load(name="npz", path=str(npz), key="images", shape=[30], binarize="static")
    assert flat.shape == (30,) and not flat.is_image
    assert set(flat.train.unique().tolist()) == {0.0, 1.0}


def test_npz_errors(npz, tmp_path):
    with pytest.raises(
        SpecError,
        match=r"data.key: .*arrays.npz has no array 'x'; "
        r"arrays present: images, y",
    ):
        load(name="npz", path=str(npz))
    with pytest.raises(
        SpecError,
        match=r"data.shape: \[1, 28, 28\] holds 784 values; "
        r".* have shape \[6, 5\], 30 values",
    ):
        load(name="npz", path=str(npz), key="images", shape=[1, 28, 28])
    with pytest.raises(SpecError, match="data.labels_key: .*has no array 'labels'"):
        load(name="npz", path=str(npz), key="images", labels_key="labels")
    with pytest.raises(SpecError, match="data.path: .*missing.npz: cannot read"):
        load(name="npz", path=str(tmp_path / "missing.npz"))
    x = np.random.default_rng(0).random((20, 4))
    x[3, 1], x[7, 2], x[9, 0] = np.nan, np.inf, -np.inf
    np.savez(tmp_path / "nan.npz", x=x)
    with pytest.raises(SpecError, match=r"data: .*nan.npz\['x'\]: 3 non-finite values"):
        load(name="npz", path=str(tmp_path / "nan.npz"))
    np.savez(tmp_path / "wide.npz", x=np.linspace(-1.0, 2.0, 40).reshape(10, 4))
    with pytest.raises(SpecError, match=r"data.binarize: needs values in \[0, 1\]"):
        load(name="npz", path=str(tmp_path / "wide.npz"), binarize="dynamic")


# ---- a user's integer arrays, transforms, .npy files and image folders -------------------------


def test_integer_arrays_know_their_levels(tmp_path):
    u8 = np.random.default_rng(0).integers(0, 256, (30, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "u8.npz", x=u8)
    unit = load(name="npz", path=str(tmp_path / "u8.npz"))
    assert unit.levels == 256 and not unit.integer and unit.train.max() <= 1.0
    levels = load(name="npz", path=str(tmp_path / "u8.npz"), values="integer")
    assert levels.integer and torch.equal(levels.train, levels.train.round())
    assert torch.equal(unit.train * 255, levels.train)
    np.savez(tmp_path / "counts.npz", x=np.arange(60).reshape(20, 3) % 7)
    assert load(name="npz", path=str(tmp_path / "counts.npz")).levels == 7  # max + 1
    with pytest.raises(SpecError, match=r"data.levels: .* integers in \[0, 6\], outside .*0..4"):
        load(name="npz", path=str(tmp_path / "counts.npz"), levels=5)
    np.savez(tmp_path / "real.npz", x=np.ones((20, 3)))
    with pytest.raises(SpecError, match="data.values: integer needs integer data"):
        load(name="npz", path=str(tmp_path / "real.npz"), values="integer")
    with pytest.raises(SpecError, match="data.transform: dequantize needs integer data"):
        load(name="npz", path=str(tmp_path / "real.npz"), transform="dequantize")


def test_dequantize_adds_uniform_noise_within_each_level(tmp_path):
    k = np.random.default_rng(1).integers(0, 256, (200, 3), dtype=np.uint8)
    np.savez(tmp_path / "k.npz", x=k)
    b = load(name="npz", path=str(tmp_path / "k.npz"), transform="dequantize", seed=3)
    assert b.log_jacobian == pytest.approx(-3 * np.log(256))  # x' = (k + u)/256: −P log L
    rows = {tuple(r) for r in k}
    for x in (b.val, b.test):  # noise once: (k + u)/256 with u in [0, 1)
        levels = torch.floor(x * 256)
        assert all(tuple(r) in rows for r in levels.int().tolist())
        assert (x * 256 - levels).min() > 0 and not torch.equal(x * 256, levels)
    again = load(name="npz", path=str(tmp_path / "k.npz"), transform="dequantize", seed=3)
    assert torch.equal(again.test, b.test)  # seeded
    first, second = (next(iter(b.loader("train", 50, shuffle=False))) for _ in range(2))
    assert not torch.equal(first, second)  # fresh noise in every training batch
    assert torch.equal(torch.floor(first * 256), torch.floor(second * 256))
    scored = b.split("train")  # what evaluate scores: noise drawn once, seeded
    levels = torch.floor(scored * 256)  # b.train holds k/256: the noise stays within its level
    assert torch.equal(levels, b.train * 256) and (scored * 256 - levels).min() > 0
    assert torch.equal(scored, b.split("train"))


@pytest.mark.parametrize("binarize", ["dynamic", "static"])
def test_the_training_split_is_scored_as_the_model_sees_it(binarize):
    """``evaluate --split train`` scores binary pixels, drawn once with the data's seed like
    val and test (not the grey levels a dynamic loader starts from), the same at every call,
    and without touching the global RNG."""
    b, grey = load(name="digits", binarize=binarize), load(name="digits")
    torch.manual_seed(5)
    x = b.split("train")
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), after)  # the global RNG as it was
    assert set(x.unique().tolist()) == {0.0, 1.0} and torch.equal(x, b.split("train"))
    assert torch.all(x[grey.train == 0] == 0) and torch.all(x[grey.train == 1] == 1)
    assert not torch.equal(x, load(name="digits", binarize=binarize, seed=1).split("train"))


def test_standardize_fits_the_training_split_and_is_undone_exactly(tmp_path):
    x = np.random.default_rng(2).normal(50, [1, 5, 76], (100, 3)).astype(np.float32)
    x[:, 0] = 7.0  # a constant dimension keeps s = 1
    np.save(tmp_path / "x.npy", x)
    b = load(name="npz", path=str(tmp_path / "x.npy"), transform="standardize")
    assert torch.allclose(b.train.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(b.train[:, 1:].std(0, correction=0), torch.ones(2), atol=1e-5)
    assert b.scale[0] == 1 and b.log_jacobian == pytest.approx(-float(b.scale.log().sum()))
    whole = torch.cat([b.to_data(getattr(b, s)) for s in ("train", "val", "test")])
    assert np.allclose(sorted_rows(whole), sorted_rows(torch.from_numpy(x)), atol=1e-4)
    assert torch.allclose(b.to_model(b.to_data(b.test)), b.test, atol=1e-6)


def test_npy_files_and_absolute_paths(tmp_path, monkeypatch):
    np.save(tmp_path / "a.npy", np.zeros((10, 2, 3), np.float32))
    monkeypatch.chdir(tmp_path)
    component = data.absolute_paths(DATASETS.parse({"name": "npz", "path": "a.npy"}))
    assert component.params["path"] == str(tmp_path / "a.npy")
    b = DATASETS.instantiate(component).load()
    assert b.shape == (1, 2, 3) and b.name == "npy:a.npy"
    with pytest.raises(SpecError, match="data.labels_key: .*a single array"):
        load(name="npz", path="a.npy", labels_key="y")


def test_image_folders_grey_rgb_labels_and_errors(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(4)
    for i in range(6):
        folder = tmp_path / "grey" / ("cat" if i % 3 else "ant")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (5, 4), dtype=np.uint8)).save(folder / f"{i}.png")
        rgb = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
        (tmp_path / "rgb").mkdir(exist_ok=True)
        Image.fromarray(rgb).save(tmp_path / "rgb" / f"{i}.png")
    grey = load(name="images", path=str(tmp_path / "grey"), val_fraction=0, test_fraction=0)
    assert grey.shape == (1, 5, 4) and grey.levels == 256 and grey.is_image
    assert sorted(grey.labels["train"].tolist()) == [0, 0, 1, 1, 1, 1]  # ant = 0, cat = 1
    rgb = load(name="images", path=str(tmp_path / "rgb"), val_fraction=0, test_fraction=0)
    assert rgb.shape == (3, 5, 4) and rgb.labels["train"] is None
    first = np.asarray(Image.open(tmp_path / "rgb" / "0.png")).transpose(2, 0, 1).ravel() / 255
    assert any(np.allclose(first, row) for row in rgb.train.numpy())
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "rgb" / "odd.png")
    with pytest.raises(SpecError, match=r"data.path: .*odd.png: 3x3 pixels, but 0.png has 4x5"):
        load(name="images", path=str(tmp_path / "rgb"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match=r"data.path: .*empty: no .png/.jpg/.jpeg files"):
        load(name="images", path=str(tmp_path / "empty"))
    with pytest.raises(SpecError, match="data.path: .*missing: no such folder of images"):
        load(name="images", path=str(tmp_path / "missing"))


@pytest.mark.parametrize("values", ["unit", "integer"])
def test_dequantized_model_values_map_back_to_the_data_levels(tmp_path, values):
    """x' = (k + u)/d on the model's scale → the level k as the data hold it: k/(L − 1) for
    values: unit, k for integer (what ``pyro-vae sample`` writes); the test split, dequantized
    once, maps back to the split loaded without the transform."""
    k = np.random.default_rng(4).integers(0, 256, (120, 3), dtype=np.uint8)
    np.savez(tmp_path / "k.npz", x=k)
    common = {"name": "npz", "path": str(tmp_path / "k.npz"), "values": values}
    b, plain = load(**common, transform="dequantize"), load(**common)
    assert b.integer_values == (values == "integer")
    torch.testing.assert_close(b.to_values(b.test), plain.test, rtol=0, atol=0)
    edges = torch.tensor([-0.1, 0.0, 255.999, 300.0]) / b.dequantized[0]  # beyond: the end levels
    expected = torch.tensor([0.0, 0.0, 255.0, 255.0]) / (255 if values == "unit" else 1)
    torch.testing.assert_close(b.to_values(edges), expected, rtol=0, atol=0)


def test_samples_of_a_dequantized_model_are_data_values(tmp_path):
    """``export.sample`` on digits dequantized: every value is a level k/16 in [0, 1]."""
    from pyro_vae.export import sample
    from pyro_vae.spec import load_spec
    from pyro_vae.vae import VAE

    b = load(name="digits", transform="dequantize")
    spec = load_spec(
        None,
        [
            "latent_dim=2",
            "encoder.hidden=[8]",
            "decoder.hidden=[8]",
            "likelihood.name=continuous_bernoulli",
        ],
    )
    vae = VAE.from_spec(spec, b.shape, b.levels, b.train)
    x = torch.from_numpy(sample(vae, b, 50)["x"])
    assert x.shape == (50, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
    torch.testing.assert_close(x * 16, torch.round(x * 16), rtol=0, atol=1e-5)


# ---- bounds read from headers, empty arrays, pixel kinds (issue 28, items 3-5) -----------------

WHOLE = ("data.val_fraction=0", "data.test_fraction=0")  # every item in the training split


def spec_load(*sets: str) -> DataBundle:
    """The data of a spec of ``key=value`` overrides, as ``train`` loads it."""
    from pyro_vae.spec import load_spec

    return DATASETS.instantiate(load_spec(None, list(sets)).data, "data").load()


def write_png16(path: Path, samples: np.ndarray, colour: int) -> None:
    """A 16-bit PNG written chunk by chunk (Pillow writes none in colour): ``samples`` (H, W, C)
    as big-endian uint16 rows, each after filter byte 0; ``colour`` the PNG colour type (0 grey,
    2 RGB, 4 grey + alpha, 6 RGBA)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    height, width = samples.shape[:2]
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in samples)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def no_decoding(monkeypatch):
    """Any image decoded fails the test: what is checked must come from headers alone."""
    from PIL import ImageFile

    def decoded(self):
        raise AssertionError(f"{self.filename} was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decoded)


@pytest.mark.parametrize(
    "side, fragments",
    [
        (5000, ("big.png: 5000×5000 = 2.5e+07 pixels",)),
        # over Pillow's MAX_IMAGE_PIXELS (8.9·10⁷): its DecompressionBombWarning; over twice that
        # its DecompressionBombError, which escaped as a traceback (exit 1)
        (
            12000,
            (
                "big.png: refused by Pillow as a possible decompression bomb",
                "DecompressionBombWarning",
                "144000000 pixels",
            ),
        ),
        (
            20000,
            (
                "big.png: refused by Pillow as a possible decompression bomb",
                "DecompressionBombError",
                "400000000 pixels",
            ),
        ),
    ],
)
def test_an_image_over_the_pixel_limit_is_refused_from_its_header(
    tmp_path, no_decoding, side, fragments
):
    from PIL import Image

    (tmp_path / "pngs").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "pngs" / "big.png")
    claim_size(tmp_path / "pngs" / "big.png", side, side)
    with pytest.raises(SpecError) as info:
        spec_load("data.name=images", f"data.path={tmp_path / 'pngs'}")
    message = str(info.value)
    assert message.startswith(f"data.path: {tmp_path / 'pngs' / 'big.png'}: "), message
    for fragment in (*fragments, f"the limit is {data.MAX_IMAGE_PIXELS} pixels per image"):
        assert fragment in message, (fragment, message)


def test_a_folder_over_the_memory_available_is_refused_before_decoding(
    tmp_path, no_decoding, monkeypatch
):
    """Three 4×5 grey images: 60 bytes as read, 60 more split, 240 as float32 = 360 > 300."""
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / f"{i}.png")
    monkeypatch.setattr(data, "available_memory", lambda: 300)
    with pytest.raises(
        SpecError,
        match=r"data.path: .*: 3 images of 4×5 8-bit grey = 60 values "
        r"of 1 byte need 3.35e-07 GiB to load .* more than the "
        r"2.79e-07 GiB of memory available",
    ):
        spec_load("data.name=images", f"data.path={tmp_path}")
    monkeypatch.undo()  # decoding allowed again: exactly the memory needed is enough
    monkeypatch.setattr(data, "available_memory", lambda: 360)
    assert spec_load("data.name=images", f"data.path={tmp_path}", *WHOLE).shape == (1, 5, 4)


def write_claimed_npy(stream, shape: tuple[int, ...], dtype: str = "<f8") -> None:
    """An .npy header claiming ``shape``, then 16 bytes: far less than the shape needs."""
    np.lib.format.write_array_header_1_0(
        stream, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    stream.write(bytes(16))


def test_array_headers_are_bounded_before_loading(tmp_path):
    """A header claiming 10¹³ values (an 80 TB allocation, a MemoryError before) is refused
    from the header, in an .npy file and in an .npz archive's member."""
    with open(tmp_path / "huge.npy", "wb") as f:
        write_claimed_npy(f, (10**13,))
    with pytest.raises(
        SpecError,
        match=r"data.path: .*huge.npy: shape \[10000000000000\] of "
        r"float64 = 1e\+13 values of 8 bytes need 1.86e\+05 GiB "
        r"to load .*GiB of memory available",
    ):
        spec_load("data.name=npz", f"data.path={tmp_path / 'huge.npy'}")
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        with archive.open("x.npy", "w") as member:
            write_claimed_npy(member, (10**7, 10**6), "|u1")
        with archive.open("y.npy", "w") as member:
            write_claimed_npy(member, (10**13,), "<i8")
    with pytest.raises(
        SpecError,
        match=r"data.key: .*huge.npz\['x'\]: shape \[10000000, "
        r"1000000\] of uint8 = 1e\+13 values of 1 byte need",
    ):
        spec_load("data.name=npz", f"data.path={tmp_path / 'huge.npz'}")
    np.savez(tmp_path / "labels.npz", x=np.zeros((4, 2)))
    with zipfile.ZipFile(tmp_path / "labels.npz", "a") as archive:
        with archive.open("y.npy", "w") as member:
            write_claimed_npy(member, (10**13,), "<i8")
    with pytest.raises(
        SpecError,
        match=r"data.labels_key: .*labels.npz\['y'\]: shape "
        r"\[10000000000000\] of int64 = 1e\+13 values",
    ):
        spec_load("data.name=npz", f"data.path={tmp_path / 'labels.npz'}", "data.labels_key=y")


@pytest.mark.parametrize("suffix", [".npz", ".npy"])
@pytest.mark.parametrize(
    "array, fragment",
    [
        (np.zeros((0, 4), np.float32), r" holds no items \(shape \[0, 4\]\)"),
        (np.zeros((0, 4), np.uint8), r" holds no items \(shape \[0, 4\]\)"),
        (np.zeros((10, 0)), r": its items of shape \[0\] hold no values \(shape \[10, 0\]\)"),
        (np.zeros((10, 3, 0), np.int64), r": its items of shape \[3, 0\] hold no values"),
    ],
    ids=["0 float items", "0 uint8 items", "float items of size 0", "integer items of size 0"],
)
def test_empty_arrays_are_one_line_errors(tmp_path, suffix, array, fragment):
    path = tmp_path / f"a{suffix}"
    if suffix == ".npz":
        np.savez(path, x=array)
    else:
        np.save(path, array)
    key = "data.key" if suffix == ".npz" else "data.path"
    with pytest.raises(SpecError, match=rf"{key}: .*a{suffix}(\['x'\])?{fragment}"):
        spec_load("data.name=npz", f"data.path={path}")


def test_16_bit_grey_pngs_keep_one_channel_and_their_levels(tmp_path):
    """Pillow's ``I;16`` PNGs: one channel, every level kept (before: RGB clipped at 255); levels
    max + 1 as for any integer array other than uint8, or ``data.levels``."""
    from PIL import Image

    rng = np.random.default_rng(5)
    images = rng.integers(0, 60001, (6, 5, 4), dtype=np.uint16)
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    assert Image.open(tmp_path / "0.png").mode == "I;16"
    common = ("data.name=images", f"data.path={tmp_path}", *WHOLE)
    b = spec_load(*common, "data.values=integer")
    assert b.shape == (1, 5, 4) and b.levels == int(images.max()) + 1 and b.integer
    assert np.array_equal(sorted_rows(b.train), sorted_rows(torch.tensor(images.reshape(6, 20))))
    unit = spec_load(*common, "data.levels=65536")
    assert unit.levels == 65536 and torch.equal(torch.round(unit.train * 65535), b.train)
    assert "items 1×5×4, 65536 levels" in unit.describe()


@pytest.mark.parametrize(
    "colour, channels, mode",
    [(2, 3, "RGB"), (4, 2, "RGBA"), (6, 4, "RGBA")],
    ids=["RGB", "grey and alpha", "RGBA"],
)
def test_16_bit_colour_or_alpha_pngs_are_refused_not_cut_to_8_bits(
    tmp_path, colour, channels, mode
):
    write_png16(tmp_path / "a.png", np.full((3, 4, channels), 1000), colour)
    with pytest.raises(
        SpecError,
        match=rf"data.path: .*a.png: a 16-bit PNG, which Pillow reads "
        rf"as {mode} of 8 bits per sample",
    ):
        spec_load("data.name=images", f"data.path={tmp_path}", *WHOLE)


def test_one_kind_of_pixel_per_folder_and_grey_stays_one_channel(tmp_path):
    """Grey with colour, or 8 with 16 bits, is refused naming two files (before: converted to
    RGB); grey with alpha is grey, the alpha dropped with a note."""
    from PIL import Image

    grey = np.arange(20, dtype=np.uint8).reshape(5, 4)
    (tmp_path / "mixed").mkdir()
    Image.fromarray(grey).save(tmp_path / "mixed" / "a.png")
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "mixed" / "b.png")
    with pytest.raises(
        SpecError,
        match=r"data.path: .*mixed/b.png: 8-bit colour \(Pillow mode "
        r"RGB\), but a.png is 8-bit grey \(L\); all images must "
        r"have one kind of pixel",
    ):
        spec_load("data.name=images", f"data.path={tmp_path / 'mixed'}", *WHOLE)
    Image.fromarray(grey.astype(np.uint16) * 1000).save(tmp_path / "mixed" / "b.png")
    with pytest.raises(
        SpecError,
        match=r"mixed/b.png: 16-bit grey \(Pillow mode I;16\), but "
        r"a.png is 8-bit grey",
    ):
        spec_load("data.name=images", f"data.path={tmp_path / 'mixed'}", *WHOLE)
    (tmp_path / "alpha").mkdir()
    for i in range(4):
        Image.fromarray(np.stack([grey + i, np.full_like(grey, 200)], -1)).save(
            tmp_path / "alpha" / f"{i}.png"
        )
    b = spec_load(
        "data.name=images", f"data.path={tmp_path / 'alpha'}", *WHOLE, "data.values=integer"
    )
    assert b.shape == (1, 5, 4) and b.levels == 256
    assert sorted(b.train[:, 0].tolist()) == [0, 1, 2, 3]
    assert "alpha channel of 4 of 4 images dropped" in b.describe()
