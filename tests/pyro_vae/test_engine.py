"""The training engine: exact resume, crash safety, divergence guard, DDP, reproducibility.

Tiny nets on 200 digits, batch 32: 7 optimizer steps per epoch (the last batch holds 8 items).
"""

import csv
import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyro_vae.checkpoints import checkpoint_step
from pyro_vae.cli import EXIT_DIVERGED, EXIT_USER_ERROR, main
from pyro_vae.engine import AtomicCheckpointIO, BestCheckpoint, parameter_digest
from pyro_vae.pipeline import fit
from pyro_vae.prepared import prepare
from pyro_vae.rundir import Run
from pyro_vae.spec import load_spec
from pyro_vae.trainer import VAEModule, make_trainer

TINY = [
    "data.binarize=dynamic",
    "data.limit=200",
    "latent_dim=2",
    "encoder.hidden=[16]",
    "decoder.hidden=[16]",
    "train.batch_size=32",
    "train.lr=3e-3",
    "train.progress=false",
    "train.log_every_n_steps=2",
    "evaluate.num_samples=20",
]
STEPS_PER_EPOCH = 7  # ⌈200 / 32⌉
TIMING = ("images_per_s_step", "images_per_s_epoch")
EXE = str(Path(sys.executable).with_name("pyro-vae"))
DIGITS = "examples/configs/digits.yaml"


def rows(run: Path) -> list[dict[str, str]]:
    """metrics.csv without the wall-clock columns and blank cells."""
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if v and k not in TIMING} for r in csv.DictReader(f)]


def train(run: Path, *overrides: str, resume: bool = False):
    spec = Run(run).resume_spec(overrides) if resume else load_spec(None, [*TINY, *overrides])
    prepared = prepare(spec)
    fit(prepared, run, overwrite=not resume, resume=resume)
    return prepared.vae.state_dict()


def monitors(checkpoint: Path) -> dict[str, dict[str, object]]:
    """The early-stopping and best-checkpoint callbacks' states in ``checkpoint``, paths left out
    (they name the run's folder)."""
    state = torch.load(checkpoint, weights_only=True)["callbacks"]
    return {
        name: {
            k: v.item() if isinstance(v, torch.Tensor) else v
            for k, v in state[key].items()
            if "path" not in k and k not in ("dirpath", "best_k_models")
        }
        for key in state
        for name in ("EarlyStopping", "ModelCheckpoint")
        if key.startswith(name)
    }


class Crash(Exception):
    pass


def crash_at(monkeypatch, step: int) -> None:
    """Make training_step raise once the run reaches ``step`` optimizer steps."""
    original = VAEModule.training_step

    def training_step(self, x, batch_idx):
        if self.global_step == step:
            raise Crash
        return original(self, x, batch_idx)

    monkeypatch.setattr(VAEModule, "training_step", training_step)


# Crash points: mid-epoch (checkpoints every 3 steps, the crash at step 11 loses steps 10-11),
# and a step checkpoint due on an epoch's last batch (step 7) with no epoch checkpoints, which
# must wait for that epoch's validation.
@pytest.mark.parametrize(
    "crash,extra",
    [
        (11, ["train.checkpoint_every_steps=3"]),
        (8, ["train.checkpoint_every_steps=7", "train.checkpoint_every_epochs=0"]),
    ],
)
def test_a_crashed_run_resumes_to_exactly_the_uninterrupted_result(
    tmp_path, monkeypatch, crash, extra
):
    # cosine schedule, KL warm-up, early stopping and clipping all carry state across the resume
    options = [
        "train.max_epochs=3",
        "train.lr_schedule=cosine",
        "train.warmup_epochs=1.5",
        "train.early_stopping_patience=5",
        "train.gradient_clip=50",
        *extra,
    ]
    whole = train(tmp_path / "whole", *options)

    crash_at(monkeypatch, crash)
    with pytest.raises(Crash):
        train(tmp_path / "run", *options)
    monkeypatch.undo()
    saved = checkpoint_step(Run(tmp_path / "run").last)
    every = int(extra[0].split("=")[1])
    assert saved == crash // every * every and crash - saved < every  # lost < one interval

    if saved % STEPS_PER_EPOCH == 0:  # an epoch's checkpoint holds that epoch's checks
        epoch_end = monitors(Run(tmp_path / "run").last)
        val = next(float(r["val_elbo"]) for r in rows(tmp_path / "run") if "val_elbo" in r)
        assert epoch_end["EarlyStopping"]["best_score"] == pytest.approx(val, abs=1e-6)
        assert epoch_end["ModelCheckpoint"]["current_score"] == pytest.approx(val, abs=1e-6)

    resumed = train(tmp_path / "run", resume=True)
    for key, value in whole.items():  # same batches, bits, latent draws and optimizer states
        assert torch.equal(value, resumed[key]), key
    # early stopping's count and the best checkpoint's score go on as if never stopped
    assert monitors(Run(tmp_path / "whole").last) == monitors(Run(tmp_path / "run").last)
    best = [
        torch.load(Run(d).checkpoint("best"), weights_only=True)["state_dict"]
        for d in (tmp_path / "whole", tmp_path / "run")
    ]
    assert best[0].keys() == best[1].keys()
    assert all(torch.equal(v, best[1][k]) for k, v in best[0].items())
    assert checkpoint_step(Run(tmp_path / "run").last) == 3 * STEPS_PER_EPOCH
    a, b = rows(tmp_path / "whole"), rows(tmp_path / "run")
    assert len(a) == len(b)
    crashed = str(saved // STEPS_PER_EPOCH) if saved % STEPS_PER_EPOCH else None
    for x, y in zip(a, b):
        # only a crashed epoch's epoch-mean training row differs: it averages the resumed part
        if not ("train_loss_epoch" in x and x["epoch"] == crashed):
            assert x == y


def test_a_moved_run_goes_on_judging_its_best_checkpoint(tmp_path):
    """Lightning's ModelCheckpoint forgets its best score when the saved folder is not the
    current one; a run moved (to another machine, say) must resume it, or its first validation
    would replace best.ckpt however worse."""
    patience = "train.early_stopping_patience=5"
    train(tmp_path / "whole", "train.max_epochs=3", patience)
    train(tmp_path / "run", "train.max_epochs=2", patience)
    (tmp_path / "run").rename(tmp_path / "moved")
    moved = Run(tmp_path / "moved")
    saved = torch.load(moved.last, weights_only=True)["callbacks"]
    state = next(v for k, v in saved.items() if k.startswith("ModelCheckpoint"))
    assert state["dirpath"] == str(tmp_path / "run" / "checkpoints")
    callback = BestCheckpoint(dirpath=moved.checkpoint("best").parent, monitor="val_elbo")
    callback.load_state_dict(state)
    assert callback.best_model_score == state["best_model_score"]
    assert callback.best_k_models == {str(moved.checkpoint("best")): state["best_model_score"]}

    train(tmp_path / "moved", "train.max_epochs=3", resume=True)
    assert monitors(Run(tmp_path / "whole").last) == monitors(moved.last)
    best = [
        torch.load(Run(d).checkpoint("best"), weights_only=True)["state_dict"]
        for d in (tmp_path / "whole", tmp_path / "moved")
    ]
    assert all(torch.equal(v, best[1][k]) for k, v in best[0].items())


def test_resume_with_more_epochs_extends_a_finished_run(tmp_path):
    longer = train(tmp_path / "long", "train.max_epochs=3")
    train(tmp_path / "run", "train.max_epochs=2")
    extended = train(tmp_path / "run", "train.max_epochs=3", resume=True)
    assert all(torch.equal(v, extended[k]) for k, v in longer.items())
    assert load_spec(tmp_path / "run" / "config.yaml").train.max_epochs == 3
    assert rows(tmp_path / "run") == rows(tmp_path / "long")


def test_resume_may_lower_the_learning_rate(tmp_path):
    train(tmp_path / "run", "train.max_epochs=1")
    train(tmp_path / "run", "train.max_epochs=2", "train.lr=1e-4", resume=True)
    lrs = {r["epoch"]: float(r["lr_step"]) for r in rows(tmp_path / "run") if "lr_step" in r}
    assert lrs["0"] == pytest.approx(3e-3) and lrs["1"] == pytest.approx(1e-4)


def test_the_same_spec_and_seed_give_identical_metrics(tmp_path):
    first = train(tmp_path / "a", "train.max_epochs=2")
    second = train(tmp_path / "b", "train.max_epochs=2")
    assert all(torch.equal(v, second[k]) for k, v in first.items())
    a = rows(tmp_path / "a")
    assert a == rows(tmp_path / "b")
    with open(tmp_path / "a" / "metrics.csv", newline="") as f:
        columns = set(next(csv.reader(f)))
    for name in (
        "train_loss",
        "train_elbo",
        "train_kl",
        "train_recon",
        "beta",
        "lr",
        "images_per_s",
    ):
        assert {f"{name}_step", f"{name}_epoch"} <= columns, name
    assert {"val_elbo", "val_kl", "val_recon"} <= columns


def test_epoch_means_weigh_each_step_by_its_batch_size(tmp_path):
    # Every step logged: each *_epoch value is Σ_t b_t v_t / Σ_t b_t over the epoch's 7 steps
    # (six batches of 32, one of 8). β_t = (t + 1)/14 ramps up over the warm-up: its weighted
    # mean is 0.26, the unweighted one 0.286.
    train(
        tmp_path / "run", "train.max_epochs=1", "train.log_every_n_steps=1", "train.warmup_epochs=2"
    )
    table = rows(tmp_path / "run")
    steps = [r for r in table if "train_loss_step" in r]
    (epoch,) = [r for r in table if "train_loss_epoch" in r]
    sizes = [32] * 6 + [8]
    assert len(steps) == len(sizes)
    for name in ("train_loss", "beta", "lr"):
        mean = sum(b * float(r[f"{name}_step"]) for b, r in zip(sizes, steps)) / sum(sizes)
        assert float(epoch[f"{name}_epoch"]) == pytest.approx(mean, rel=1e-6), name


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch, capsys
):
    original = VAEModule.training_step

    def training_step(self, x, batch_idx):  # the 11th step's loss is NaN
        loss = original(self, x, batch_idx)
        return loss * float("nan") if self.global_step == 10 else loss

    monkeypatch.setattr(VAEModule, "training_step", training_step)
    run = tmp_path / "run"
    args = [f"--set={s}" for s in [*TINY, "train.max_epochs=3", "train.checkpoint_every_steps=3"]]
    code = main(["train", DIGITS, *args, "--out", str(run)])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_DIVERGED
    assert "\n" not in err and "step 11" in err and f"{Run(run).last} (step 9)" in err
    state = torch.load(Run(run).last, weights_only=True)
    assert state["global_step"] == 9
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
    assert not list((run / "checkpoints").glob(".*.tmp"))
    assert not (run / "eval-test.json").exists()


def blow_up_weights(monkeypatch) -> None:
    """Step 10's update leaves weights 10⁶ times too large (as a bad step can)."""
    original = VAEModule.optimizer_step

    def optimizer_step(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.global_step == 9:  # counted once the hook returns
            with torch.no_grad():
                for p in self.vae.parameters():
                    p.mul_(1e6)

    monkeypatch.setattr(VAEModule, "optimizer_step", optimizer_step)


def blow_up_loss(monkeypatch) -> None:
    """Step 11's loss is 10⁵ times too large, its gradient finite."""
    original = VAEModule.training_step

    def training_step(self, x, batch_idx):
        loss = original(self, x, batch_idx)
        if self.global_step == 10:
            self.last_loss = self.last_loss * 1e5
        return loss

    monkeypatch.setattr(VAEModule, "training_step", training_step)


@pytest.mark.parametrize(
    "blow_up,why",
    [(blow_up_weights, "a parameter grew"), (blow_up_loss, "the loss per point jumped")],
)
def test_a_blow_up_stops_the_run_and_the_advice_resumes_from_a_checkpoint_that_passed(
    tmp_path, monkeypatch, capsys, blow_up, why
):
    blow_up(monkeypatch)
    run = tmp_path / "run"
    args = [f"--set={s}" for s in [*TINY, "train.max_epochs=3", "train.checkpoint_every_steps=5"]]
    code = main(["train", DIGITS, *args, "--out", str(run)])
    err = capsys.readouterr().err.strip()
    monkeypatch.undo()
    assert code == EXIT_DIVERGED and "\n" not in err, err
    assert "at step 11" in err and why in err and "train.blowup_factor" in err
    # saved at steps 5, 7 (epoch end) and 10; step 10's weights are suspect, so last.ckpt
    # falls back to step 7 and the kept step-10 file is gone
    assert f"{Run(run).last} (step 7)" in err
    assert checkpoint_step(Run(run).last) == 7
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "last.ckpt",
        "step-5.ckpt",
        "step-7.ckpt",
    ]
    state = torch.load(Run(run).last, weights_only=True)["state_dict"]
    assert max(float(v.abs().max()) for v in state.values()) < 100
    advice = err.split("continue with ")[1].split()
    assert advice[:4] == ["pyro-vae", "train", "--resume", str(run)]
    assert advice[4:] == ["--set", "train.lr=0.0003"]
    assert main([*advice[1:], "--set", "train.max_epochs=3"]) == 0  # the advice works
    assert checkpoint_step(Run(run).last) == 3 * STEPS_PER_EPOCH


def test_a_real_blow_up_through_the_console_script_keeps_no_checkpoint_it_made(tmp_path):
    # lr 10⁴: Adam's first step moves every weight by about 10⁴ (its step is lr·m/√v ≈ lr),
    # past 1000× the largest initial weight; step 1's checkpoint holds those weights
    run = tmp_path / "run"
    sets = [*TINY, "train.lr=1e4", "train.checkpoint_every_steps=1"]
    done = subprocess.run(
        [EXE, "train", DIGITS, *[f"--set={s}" for s in sets], "--out", str(run)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == EXIT_DIVERGED, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "at step 2: a parameter grew" in lines[0] and "no checkpoint passed" in lines[0]
    assert not Run(run).last.exists() and not list((run / "checkpoints").glob("step-*"))
    assert (run / "checkpoints" / "diverged-step-1.ckpt").is_file()  # kept for a post-mortem


def test_an_interrupted_write_leaves_the_previous_checkpoint(tmp_path):
    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    io, path = AtomicCheckpointIO(Run(tmp_path)), tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 3, "w": torch.ones(2)}, path)
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"global_step": 4, "w": Unsaveable()}, path)
    assert io.load_checkpoint(path)["global_step"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_early_stopping_and_clipping_reach_the_trainer(tmp_path):
    # lr 1e-7 barely moves the weights: val ELBO stalls within noise, patience 1 stops the run
    train(
        tmp_path / "run", "train.max_epochs=30", "train.lr=1e-7", "train.early_stopping_patience=1"
    )
    epochs = {r["epoch"] for r in rows(tmp_path / "run") if "val_elbo" in r}
    assert 2 <= len(epochs) < 30
    spec = load_spec(None, [*TINY, "train.gradient_clip=0.5"])
    assert make_trainer(spec, tmp_path / "other", 200).gradient_clip_val == 0.5


def cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err.strip()


def test_resume_refuses_what_would_change_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    train(run, "train.max_epochs=1", "train.lr_schedule=cosine")
    cases = [
        (["train", "--resume", str(tmp_path)], "not a run directory"),
        (["train", "--resume", str(run), "--set", "latent_dim=3"], "latent_dim"),
        (["train", "--resume", str(run), "--devices", "2"], "train.devices"),
        (["train", "--resume", str(run), "--set", "train.max_epochs=2"], "cosine"),
        (["train", DIGITS, "--resume", str(run)], "--resume"),
        (["train"], "--resume RUN_DIR"),
    ]
    before = Run(run).last.read_bytes()
    for args, fragment in cases:
        code, err = cli(args, capsys)
        assert code == EXIT_USER_ERROR and "\n" not in err and fragment in err, (args, err)
    assert Run(run).last.read_bytes() == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_gpu_without_a_gpu_is_a_user_error(tmp_path, capsys):
    code, err = cli(["train", DIGITS, "--accelerator", "gpu", "--out", str(tmp_path / "r")], capsys)
    assert code == EXIT_USER_ERROR and "CUDA" in err and not (tmp_path / "r").exists()


@pytest.mark.timing
def test_sigkill_mid_epoch_then_resume_loses_only_the_steps_since_the_checkpoint(tmp_path):
    """SIGKILL (a session's end) while the run is held still inside step 4 (tests/holder.py),
    its step-2 checkpoint on disk: the resumed run loses only the steps since. Holding it leaves
    nothing to the scheduler (a waiting test could otherwise see it reach an epoch's end)."""
    from processes import HELD_STEP, WAIT, held, wait_until

    run, signals = tmp_path / "run", tmp_path / "signals"
    sets = [
        *TINY,
        "train.max_epochs=200",
        "train.checkpoint_every_steps=2",
        "train.checkpoint_every_epochs=0",
    ]
    proc = held(
        signals,
        [EXE, "train", DIGITS, *[f"--set={s}" for s in sets], "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_until((signals / "training").exists, proc, "held in step 4")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(Run(run).last, weights_only=True)
    saved, epoch = state["global_step"], state["epoch"]
    assert saved == HELD_STEP - 1 and saved % STEPS_PER_EPOCH  # a step checkpoint inside an epoch
    logged = [int(r["step"]) for r in rows(run) if "train_loss_step" in r]

    finish = epoch + 2
    done = subprocess.run(
        [EXE, "train", "--resume", str(run), f"--set=train.max_epochs={finish}"],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr
    assert checkpoint_step(Run(run).last) == finish * STEPS_PER_EPOCH  # every step, once
    steps = [int(r["step"]) for r in rows(run) if "train_loss_step" in r]
    assert steps == sorted(set(steps)) == list(range(1, finish * STEPS_PER_EPOCH, 2))
    assert [s for s in steps if s < saved] == [s for s in logged if s < saved]
    assert (run / "eval-test.json").is_file()
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_two_ddp_processes_hold_identical_parameters_and_shard_the_evaluation(tmp_path, capsys):
    run = tmp_path / "run"
    sets = [*TINY, "train.max_epochs=3", "train.log_every_n_steps=1", "evaluate.num_samples=200"]
    done = subprocess.run(
        [
            EXE,
            "train",
            DIGITS,
            *[f"--set={s}" for s in sets],
            "--accelerator",
            "cpu",
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--out",
            str(run),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((run / "ddp.json").read_text())
    assert report["world_size"] == 2 and len(set(report["parameter_sha256"])) == 1
    state = torch.load(Run(run).last, weights_only=True)["state_dict"]
    vae = prepare(load_spec(run / "config.yaml")).vae
    vae.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("vae.")})
    assert parameter_digest(vae) == report["parameter_sha256"][0]

    table = rows(run)
    # each rank takes 4 steps of 32 per epoch (100 items each): 3 epochs = 12 global steps
    assert checkpoint_step(Run(run).last) == 12
    losses = [float(r["train_loss_epoch"]) for r in table if "train_loss_epoch" in r]
    assert len(losses) == 3 and losses[-1] < losses[0]
    # the plate scales to the global N = 200: loss/N is minus the batch's mean ELBO (β = 1,
    # one sample each; a per-rank N = 100 would halve it)
    for r in (r for r in table if "train_elbo_step" in r):
        assert abs(float(r["train_loss_step"]) + float(r["train_elbo_step"])) < 3.0

    sharded = json.loads((run / "eval-test.json").read_text())
    assert sharded["num_points"] == 359  # every test point once: no padding duplicates
    assert cli(["evaluate", str(run), "--num-samples", "200"], capsys)[0] == 0
    single = json.loads((run / "eval-test.json").read_text())
    # two independent IS estimates of the same mean: difference within 5 standard errors,
    # SE ≈ √2 · (mean per-point Monte Carlo stderr) / √n
    se = math.sqrt(2) * single["log_px_stderr"] / math.sqrt(single["num_points"])
    assert abs(sharded["log_px"] - single["log_px"]) < 5 * se + 1e-3
    assert sharded["elbo"] == pytest.approx(single["elbo"], abs=0.5)
