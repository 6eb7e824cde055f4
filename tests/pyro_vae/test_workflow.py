"""A user's everyday workflow: their own arrays and images as data, evaluation per split that never
overwrites another split, latents and samples exported, results alone on stdout, any cwd."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyro_vae.cli import main, parser
from pyro_vae.prepared import load_run

TINY = [
    "--set",
    "train.max_epochs=1",
    "--set",
    "train.batch_size=16",
    "--set",
    "evaluate.num_samples=5",
    "--set",
    "latent_dim=2",
    "--set",
    "encoder.hidden=[8]",
    "--set",
    "decoder.hidden=[8]",
]
DIGITS = str(Path("examples/configs/digits.yaml").absolute())


def run(capsys, *args: str) -> str:
    """The command's stdout; it must succeed and say nothing on stderr (not a terminal)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""
    return out


def grey_levels(n: int = 60, side: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, side, side), dtype=np.uint8)


def uint8_npz(folder: Path) -> list[str]:
    np.savez(folder / "u8.npz", x=grey_levels(), y=np.arange(60) % 3)
    return [
        "data.name=npz",
        f"data.path={folder / 'u8.npz'}",
        "data.labels_key=y",
        "data.binarize=dynamic",
    ]


def channels_last_npz(folder: Path) -> list[str]:
    x = np.random.default_rng(1).random((60, 8, 8, 3), dtype=np.float32)
    np.savez(folder / "rgb.npz", x=x)
    return [
        "data.name=npz",
        f"data.path={folder / 'rgb.npz'}",
        "likelihood.name=continuous_bernoulli",
        "data.binarize=none",
    ]


def vectors_npy(folder: Path) -> list[str]:
    rng = np.random.default_rng(2)
    np.save(folder / "v.npy", 50 + rng.normal(size=(60, 5)) * np.array([1, 5, 20, 76, 3]))
    return [
        "data.name=npz",
        f"data.path={folder / 'v.npy'}",
        "data.binarize=none",
        "data.transform=standardize",
        "likelihood.name=normal",
    ]


def png_folder(folder: Path) -> list[str]:
    for i, image in enumerate(grey_levels(40, 6)):
        (folder / "pngs" / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / "pngs" / f"class{i % 2}" / f"{i:03d}.png")
    return [
        "data.name=images",
        f"data.path={folder / 'pngs'}",
        "data.values=integer",
        "data.binarize=none",
        "likelihood.name=categorical",
    ]


DATA = {
    "uint8 npz": (uint8_npz, "1×8×8, 256 levels"),
    "channel-last npz": (channels_last_npz, "3×8×8, real values; layout channels_last"),
    ".npy": (vectors_npy, "items 5, real values, standardized"),
    "PNG folder": (png_folder, "1×6×6, 256 levels (integers)"),
}


@pytest.mark.parametrize("name", list(DATA))
def test_users_data_through_train_evaluate_and_report(name, tmp_path, capsys):
    make, described = DATA[name]
    sets = [a for s in make(tmp_path) for a in ("--set", s)]
    out_dir = tmp_path / "run"
    out = run(capsys, "train", DIGITS, *TINY, *sets, "--out", str(out_dir))
    assert described in out.splitlines()[0]
    assert (out_dir / "eval-test.json").is_file() and (out_dir / "figures/test").is_dir()
    figures = {p.stem for p in (out_dir / "figures/test").glob("*.png")}
    image = name != ".npy"  # the vectors get figures for vectors, the images image grids
    assert ("prior_samples" in figures) == image and ("samples_vs_data" in figures) != image
    out = run(capsys, "evaluate", str(out_dir), "--split", "val")
    assert out.startswith("val: log p(x)") and (out_dir / "eval-val.json").is_file()
    out = run(capsys, "report", str(out_dir))
    page = (out_dir / "report.html").read_text()
    assert "Evaluation: test split" in page and "Evaluation: val split" in page
    if name == ".npy":  # the fitted transform is saved: data that refit another one are refused
        assert (out_dir / "transform.json").is_file()
        np.save(tmp_path / "v.npy", np.load(tmp_path / "v.npy") * 2)
        assert main(["evaluate", str(out_dir)]) == 2
        assert "transform.json" in capsys.readouterr().err


def test_uint8_images_know_their_levels_for_a_categorical_likelihood(tmp_path, capsys):
    sets = [a for s in uint8_npz(tmp_path)[:3] for a in ("--set", s)]
    out = run(
        capsys,
        "train",
        DIGITS,
        *TINY,
        *sets,
        "--set",
        "data.values=integer",
        "--set",
        "likelihood.name=categorical",
        "--out",
        str(tmp_path / "run"),
    )
    bits = json.loads((tmp_path / "run/eval-test.json").read_text())["bits_per_dim"]
    assert "256 levels (integers)" in out and 0 < bits <= 8 + 0.5  # near log2(256) untrained


def test_channels_last_items_are_transposed_to_channels_first(tmp_path):
    from pyro_vae.data import DATASETS
    from pyro_vae.spec import load_spec

    x = np.arange(4 * 5 * 6 * 3, dtype=np.float32).reshape(4, 5, 6, 3)
    np.savez(tmp_path / "a.npz", x=x)
    for layout in ("auto", "channels_last"):
        spec = load_spec(
            None,
            [
                "data.name=npz",
                f"data.path={tmp_path / 'a.npz'}",
                f"data.layout={layout}",
                "data.val_fraction=0",
                "data.test_fraction=0",
                "data.binarize=none",
            ],
        )
        bundle = DATASETS.instantiate(spec.data, "data").load()
        assert bundle.shape == (3, 5, 6)
        rows = {tuple(r) for r in bundle.train.numpy()}
        assert rows == {tuple(item.transpose(2, 0, 1).ravel()) for item in x}


def test_evaluate_another_split_leaves_the_test_results_byte_identical(tmp_path, capsys):
    out_dir = tmp_path / "run"
    run(capsys, "train", DIGITS, *TINY, "--out", str(out_dir))
    test_files = sorted([out_dir / "eval-test.json", *(out_dir / "figures/test").glob("*")])
    before = {p: p.read_bytes() for p in test_files}
    run(capsys, "evaluate", str(out_dir), "--split", "val", "--num-samples", "7")
    run(capsys, "evaluate", str(out_dir), "--split", "train", "--limit", "10")
    assert {p: p.read_bytes() for p in test_files} == before
    assert json.loads((out_dir / "eval-val.json").read_text())["num_samples"] == 7
    assert json.loads((out_dir / "eval-train.json").read_text())["num_points"] == 10
    # --resume on the finished run says so and exits 0, writing nothing
    out = run(capsys, "train", "--resume", str(out_dir))
    assert "finished (1 of 1 epochs trained)" in out
    assert {p: p.read_bytes() for p in test_files} == before


def test_encode_and_sample_export_arrays_of_the_documented_shapes(tmp_path, capsys):
    out_dir = tmp_path / "run"
    run(capsys, "train", DIGITS, *TINY, "--out", str(out_dir))
    run(capsys, "encode", str(out_dir), "--out", str(tmp_path / "z.npz"))
    latents = np.load(tmp_path / "z.npz")
    prepared = load_run(out_dir)
    test = prepared.bundle.test
    assert latents["mean"].shape == latents["scale"].shape == (len(test), 2)
    mean, scale = prepared.vae.encode(test)
    assert np.array_equal(latents["mean"], mean.detach().numpy())
    assert np.array_equal(latents["scale"], scale.detach().numpy())
    assert np.array_equal(latents["labels"], prepared.bundle.labels["test"].numpy())
    run(
        capsys,
        "sample",
        str(out_dir),
        "-n",
        "30",
        "--out",
        str(tmp_path / "s.npz"),
        "--png",
        str(tmp_path / "grid.png"),
    )
    samples = np.load(tmp_path / "s.npz")
    assert samples["x"].shape == (30, 1, 8, 8) and samples["z"].shape == (30, 2)
    assert set(np.unique(samples["x"])) <= {0.0, 1.0}  # draws from the Bernoulli likelihood
    assert (tmp_path / "grid.png").stat().st_size > 0
    run(capsys, "sample", str(out_dir), "-n", "30", "--means", "--out", str(tmp_path / "m.npz"))
    means = np.load(tmp_path / "m.npz")
    assert np.array_equal(means["z"], samples["z"])  # the same seed: the same z, their means
    expected = prepared.vae.decode(torch.from_numpy(means["z"])).detach().numpy()
    assert np.allclose(means["x"].reshape(30, -1), expected)


RESULT_LINES = {
    "train": r"(data: .*|(train|val|test): .*|evaluated in .*|run directory: .*)",
    "evaluate": r"((train|val|test): .*|evaluated in .*)",
    "encode": r"encode: .*",
    "sample": r"sample: .*",
    "report": r"report: .*",
    "compare": r"(\|.*\||comparison: .*)",
    "datasets": r"([a-z /]+:|  [\w-]+\(.*\))",
}


def test_stdout_holds_only_result_lines_from_any_working_directory(tmp_path, capsys, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # a relative data path, then commands from elsewhere
    rows = np.random.default_rng(3).random((60, 6), dtype=np.float32)
    np.save("rows.npy", rows)
    data = [
        "--set",
        "data.name=npz",
        "--set",
        "data.path=rows.npy",
        "--set",
        "data.binarize=none",
        "--set",
        "likelihood.name=continuous_bernoulli",
    ]
    outputs = {"train": run(capsys, "train", DIGITS, *TINY, *data, "--out", "run")}
    run_dir = str(tmp_path / "work/run")
    monkeypatch.chdir(tmp_path)
    outputs |= {
        "evaluate": run(capsys, "evaluate", run_dir, "--split", "val"),
        "encode": run(capsys, "encode", run_dir, "--out", "z.npz"),
        "sample": run(capsys, "sample", run_dir, "-n", "5", "--out", "s.npz"),
        "report": run(capsys, "report", run_dir),
        "compare": run(
            capsys,
            "compare",
            "--checkpoint",
            run_dir,
            "--estimators",
            "trace",
            "--repeats",
            "2",
            "--out",
            "cmp",
        ),
        "datasets": run(capsys, "datasets"),
    }
    for command, out in outputs.items():
        lines = out.splitlines()
        assert lines, command
        for line in lines:
            assert re.fullmatch(RESULT_LINES[command], line), (command, line)
    assert "rows.npy: " in outputs["train"].splitlines()[0]


def test_help_is_plain_text():
    p = parser()
    texts = [
        p.format_help(),
        *(c.format_help() for c in p._subparsers._group_actions[0].choices.values()),
    ]
    for text in texts:
        assert "``" not in text and ":func:" not in text and ":mod:" not in text
