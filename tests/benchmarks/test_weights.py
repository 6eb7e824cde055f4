"""``python -m benchmarks.weights`` (issue #31, item 4): the published table's weights exported
from a finished run into a weights-only torch file with its SHA-256 in a manifest, and scored
again by ``pyro-vae evaluate`` from a run directory made from the preset and the file. A toy
run (``benchmarks.published --toy``, one epoch on the embedded digits) stands in for the
published models; the shipped files themselves are checked against the committed manifest, and
one shipped row is reproduced on a subset of the test images. The command lines run in a
subprocess, as ``make reproduce-table`` runs them: tests never import ``benchmarks``."""

import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "benchmarks" / "results" / "published"
Z = 4.0  # benchmarks.weights.Z: |mean d_i| ≤ Z · s.e. (its docstring)


def command(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def weights(*args: str) -> subprocess.CompletedProcess:
    return command("-m", "benchmarks.weights", *args)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def paired(mine: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    """Mean of d_i = mine_i − theirs_i and its s.e. over images, std(d)/√n."""
    d = mine.astype(np.float64) - theirs.astype(np.float64)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    """A toy VAE trained and scored by the published job (one epoch), then exported."""
    root = tmp_path_factory.mktemp("toy")
    state, results = root / "state", root / "results"
    done = command(
        "-m",
        "benchmarks.published",
        "--toy",
        "--threads",
        "1",
        "--models",
        "vae",
        "--max-epochs",
        "1",
        "--state",
        str(state),
        "--results",
        str(results),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    done = weights("export", "--state", str(state), "--results", str(results))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "VAE (seed 0): wrote" in done.stdout, done.stdout
    return {
        "state": state,
        "results": results,
        "folder": results / "published",
        "file": results / "published" / "vae-seed0.weights.pt",
        "manifest": results / "published" / "weights.json",
    }


def copy_of(toy: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the toy's results folder, to tamper with."""
    shutil.copytree(toy["results"], tmp_path / "results")
    return tmp_path / "results"


def reproduce(results: Path, work: Path, *args: str) -> subprocess.CompletedProcess:
    return weights(
        "reproduce",
        "--toy",
        "--threads",
        "1",
        "--results",
        str(results),
        "--work",
        str(work),
        *args,
    )


def test_export_writes_the_vae_weights_in_float32_with_their_digest_once(toy):
    """The file holds the VAE's weights (``vae.*``, float32, as in the checkpoint scored) and
    what they were trained from; the manifest names its SHA-256, size, seed, epoch and source;
    a second export writes nothing new."""
    from pyro_vae.checkpoints import read_checkpoint

    manifest = json.loads(toy["manifest"].read_text())
    entry = manifest["files"]["vae-seed0.weights.pt"]
    assert entry["sha256"] == sha256(toy["file"]) and entry["bytes"] == toy["file"].stat().st_size
    record = json.loads((toy["folder"] / "vae-seed0.json").read_text())
    assert (entry["model"], entry["seed"], entry["checkpoint"], entry["result"]) == (
        "vae",
        0,
        record["checkpoint"],
        "vae-seed0.json",
    )
    assert entry["log_px"] == record["log_px"]
    shipped = torch.load(toy["file"], map_location="cpu", weights_only=True)
    source = read_checkpoint(toy["state"] / "vae-seed0" / "checkpoints" / "best.ckpt")
    assert shipped["epoch"] == entry["epoch"] == source["epoch"] + 1
    assert shipped["global_step"] == entry["global_step"] == source["global_step"]
    assert shipped["source"] == "best.ckpt" and (shipped["model"], shipped["seed"]) == ("vae", 0)
    assert shipped["data_sha256"] == source["pyro_vae"]["data_sha256"]
    assert shipped["spec"] == source["pyro_vae"]["spec"]
    expected = {k: v for k, v in source["state_dict"].items() if k.startswith("vae.")}
    assert set(shipped["state_dict"]) == set(expected)
    for name, tensor in shipped["state_dict"].items():
        assert tensor.dtype == torch.float32 and torch.equal(tensor, expected[name].float())
    before = (toy["file"].read_bytes(), toy["manifest"].read_text())
    again = weights("export", "--state", str(toy["state"]), "--results", str(toy["results"]))
    assert again.returncode == 0 and "VAE (seed 0): unchanged" in again.stdout, again.stdout
    assert (toy["file"].read_bytes(), toy["manifest"].read_text()) == before


def test_reproduce_scores_the_shipped_weights_within_their_monte_carlo_error(toy, tmp_path):
    """``pyro-vae evaluate`` on the run directory made from the preset and the file, on the
    first 200 test images: the per-image log p̂(x) against the committed ones, paired, differ
    by less than Z s.e. of the paired difference (different draws, so by Monte Carlo noise
    only); with the scoring job's seed the draws, and every figure, are the job's exactly. A
    file whose weights were changed (its digest updated with them) is found out."""
    from pyro_vae.prepared import load_run
    from pyro_vae.scoring import evaluate_run

    work = tmp_path / "work"
    done = reproduce(toy["results"], work, "--limit", "200")
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    row = done.stdout.strip().splitlines()[-1]
    assert row.startswith("VAE (seed 0): the table's row") and ": reproduced;" in row, row
    run = work / "vae-seed0"
    assert json.loads((run / ".pyro-vae-run").read_text())["state"] == "finished"
    with np.load(run / "eval-test.npz", allow_pickle=False) as arrays:
        mine = arrays["log_px"]
    theirs = np.load(toy["folder"] / "vae-seed0.log-px.npy", allow_pickle=False)[:200]
    assert mine.shape == theirs.shape == (200,)
    difference, stderr = paired(mine, theirs)
    assert abs(difference) <= Z * stderr, (difference, stderr)
    assert f"difference {difference:+.3f} ± {stderr:.3f}" in row, row
    assert not np.array_equal(mine, theirs)  # other draws: the check is not vacuous
    # the scoring job's draws (load_run, then the seed): the same numbers from both runs
    scored = []
    for folder in (toy["state"] / "vae-seed0", run):
        prepared = load_run(folder)
        torch.manual_seed(0)
        scored.append(evaluate_run(prepared, torch.device("cpu")).points.log_px.numpy())
    np.testing.assert_array_equal(scored[0], scored[1])
    np.testing.assert_allclose(
        scored[0], np.load(toy["folder"] / "vae-seed0.log-px.npy"), rtol=0, atol=1e-9
    )
    # other weights under a matching digest: scored, and judged not reproduced
    results = copy_of(toy, tmp_path)
    path = results / "published" / "vae-seed0.weights.pt"
    payload = torch.load(path, weights_only=True)
    bias = [k for k in payload["state_dict"] if k.startswith("vae.decoder") and k.endswith("bias")][
        -1
    ]  # the output layer's: each pixel's logit
    payload["state_dict"][bias] += 5.0  # every pixel nearly always on: far less likely images
    torch.save(payload, path)
    manifest = json.loads((results / "published" / "weights.json").read_text())
    manifest["files"][path.name].update(sha256=sha256(path), bytes=path.stat().st_size)
    (results / "published" / "weights.json").write_text(json.dumps(manifest))
    done = reproduce(results, tmp_path / "work2", "--limit", "200")
    assert done.returncode == 1, done.stdout[-3000:]
    assert ": NOT reproduced;" in done.stdout.strip().splitlines()[-1], done.stdout[-3000:]


def test_a_tampered_weights_file_is_refused_with_one_line(toy, tmp_path):
    """One byte changed: refused before it is read, in one line naming the file; no run
    directory is made."""
    results = copy_of(toy, tmp_path)
    path = results / "published" / "vae-seed0.weights.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    done = reproduce(results, tmp_path / "work")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{path}: refused: its SHA-256 ") and "manifest's" in lines[0]
    assert not (tmp_path / "work").exists()


def test_a_weights_file_holding_a_pickle_payload_is_refused_by_weights_only_loading(toy, tmp_path):
    """A file that would run code when unpickled, its digest in the manifest (a manifest changed
    along with it): weights-only loading refuses it, in one line, and the code never runs."""
    results = copy_of(toy, tmp_path)
    path = results / "published" / "vae-seed0.weights.pt"
    planted = tmp_path / "planted"

    class Payload:
        def __reduce__(self):
            import os

            return os.system, (f"touch {planted}",)

    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "extra": Payload()}, path)
    manifest = json.loads((results / "published" / "weights.json").read_text())
    manifest["files"][path.name].update(sha256=sha256(path), bytes=path.stat().st_size)
    (results / "published" / "weights.json").write_text(json.dumps(manifest))
    done = reproduce(results, tmp_path / "work")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{path}: refused: "), lines[0]
    assert re.search(r"weights[- ]only load", lines[0], re.IGNORECASE), lines[0]
    assert not planted.exists() and not (tmp_path / "work").exists()


def test_section_3_says_which_seed_each_shipped_file_is_and_how_to_reproduce(toy, tmp_path):
    """The published section (``--report``) names each shipped file's model and seed, whose
    row the table shows even when the report is asked for other seeds, and says how to score
    it again."""
    results, out = copy_of(toy, tmp_path), tmp_path / "BENCHMARKS.md"
    done = command(
        "-m",
        "benchmarks.published",
        "--toy",
        "--threads",
        "1",
        "--models",
        "vae",
        "--report",
        "--seeds",
        "1",
        "--state",
        str(toy["state"]),
        "--results",
        str(results),
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = out.read_text().splitlines()
    text = next(line for line in lines if line.startswith("**Shipped weights**"))
    record = json.loads((toy["folder"] / "vae-seed0.json").read_text())
    assert "`vae-seed0.weights.pt`: VAE, **seed 0**, epoch 1 (best.ckpt)" in text, text
    row = next(line for line in lines if line.startswith("| VAE | 0 |"))  # found, not asked for
    assert f"**{record['log_px']:.2f} ± {record['log_px_sem']:.2f}**" in row, row
    assert "`make reproduce-table`" in text and "`pyro-vae evaluate`" in text


def shipped() -> dict:
    manifest = SHIPPED / "weights.json"
    return json.loads(manifest.read_text())["files"] if manifest.is_file() else {}


@pytest.mark.skipif(not shipped(), reason="no weights shipped in benchmarks/results/published")
def test_the_committed_manifest_matches_the_shipped_files():
    """Each shipped file's SHA-256 and size are the manifest's; it is read weights-only and
    holds the VAE's float32 weights of the row the manifest names."""
    for name, entry in shipped().items():
        path = SHIPPED / name
        assert sha256(path) == entry["sha256"] and path.stat().st_size == entry["bytes"], name
        assert entry["bytes"] < 20e6, name  # a few MB
        payload = torch.load(path, map_location="cpu", weights_only=True)
        assert (payload["model"], payload["seed"], payload["epoch"]) == (
            entry["model"],
            entry["seed"],
            entry["epoch"],
        ), name
        assert all(
            k.startswith("vae.") and v.dtype == torch.float32
            for k, v in payload["state_dict"].items()
        ), name
        record = json.loads((SHIPPED / entry["result"]).read_text())
        assert (record["model"], record["seed"], record["log_px"]) == (
            entry["model"],
            entry["seed"],
            entry["log_px"],
        ), name
        assert (SHIPPED / entry["result"]).with_suffix(".log-px.npy").is_file(), name


def fashion_mnist_missing() -> str | None:
    from pyro_vae.data import DATASETS
    from pyro_vae.registry import SpecError

    try:
        DATASETS.instantiate(DATASETS.parse({"name": "fashion-mnist", "limit": 10})).load()
    except SpecError as exc:
        return str(exc)
    return None


@pytest.mark.skipif(not shipped(), reason="no weights shipped in benchmarks/results/published")
def test_a_shipped_row_is_reproduced_on_a_subset_of_the_test_images(tmp_path):
    """The first shipped row, scored again by ``pyro-vae evaluate`` on its first 100 test images
    with the row's K: within Z s.e. of the committed per-image scores (paired)."""
    missing = fashion_mnist_missing()
    if missing:
        pytest.skip(f"Fashion-MNIST is not installed: {missing}")
    entry = next(iter(shipped().values()))
    done = weights(
        "reproduce",
        "--threads",
        "1",
        "--work",
        str(tmp_path / "work"),
        "--limit",
        "100",
        "--models",
        entry["model"],
        "--seeds",
        str(entry["seed"]),
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    row = done.stdout.strip().splitlines()[-1]
    assert f"(seed {entry['seed']}): the table's row" in row and ": reproduced;" in row, row
    run = tmp_path / "work" / f"{entry['model']}-seed{entry['seed']}"
    with np.load(run / "eval-test.npz", allow_pickle=False) as arrays:
        mine = arrays["log_px"]
    theirs = np.load((SHIPPED / entry["result"]).with_suffix(".log-px.npy"))[:100]
    difference, stderr = paired(mine, theirs)
    assert mine.shape == (100,) and abs(difference) <= Z * stderr, (difference, stderr)
