"""Training through Lightning on the embedded digits data."""

import csv
import math

import pytest
import torch

from inference.compiled import TracedLoss
from pyro_vae.pipeline import fit
from pyro_vae.prepared import load_run, prepare
from pyro_vae.registry import SpecError
from pyro_vae.rundir import CONFIG
from pyro_vae.spec import load_spec

QUICK = [
    "data.binarize=dynamic",
    "latent_dim=4",
    "encoder.hidden=[64]",
    "decoder.hidden=[64]",
    "train.batch_size=64",
    "train.lr=3e-3",
    "train.progress=false",
    "evaluate.num_samples=50",
]


def val_elbo(prepared) -> float:
    with torch.no_grad():
        return float(prepared.vae.elbo_terms(prepared.bundle.val).elbo.mean())


def test_a_few_epochs_on_digits_raise_the_validation_elbo(tmp_path):
    prepared = prepare(load_spec(None, [*QUICK, "train.max_epochs=4"]))
    torch.manual_seed(1)
    before = val_elbo(prepared)
    fit(prepared, tmp_path / "run")
    torch.manual_seed(1)
    after = val_elbo(prepared)
    # 64 binary pixels: an untrained decoder sits near −64 ln 2 ≈ −44 nats; four epochs gain > 8
    assert after > before + 8, (before, after)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    vals = [float(r["val_elbo"]) for r in rows if r.get("val_elbo")]
    assert len(vals) == 4 and vals[-1] > vals[0]
    assert (tmp_path / "run" / CONFIG).is_file()
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_a_run_reloads_with_identical_weights(tmp_path):
    prepared = prepare(load_spec(None, [*QUICK, "train.max_epochs=1"]))
    fit(prepared, tmp_path / "run")
    again = load_run(tmp_path / "run")
    for (k, a), (_, b) in zip(prepared.vae.state_dict().items(), again.vae.state_dict().items()):
        assert torch.equal(a, b), k
    assert again.spec == prepared.spec


def test_the_traced_loss_trains_as_the_eager_one(tmp_path, monkeypatch):
    """train.jit replays the loss from a trace: the same run with it off takes the same draws and
    steps, and the trace runs unoptimized, its ops differentiated by eager autograd: after an epoch
    (15 steps, 14 of them at batch 84, replayed from the 4th) the weights are bitwise equal."""
    accepted = []
    agrees = TracedLoss._agrees
    monkeypatch.setattr(
        TracedLoss, "_agrees", lambda self, *a: accepted.append(agrees(self, *a)) or accepted[-1]
    )
    weights = {}
    for jit in (True, False):
        prepared = prepare(
            load_spec(
                None, [*QUICK, "train.max_epochs=1", f"train.jit={jit}", "train.batch_size=84"]
            )
        )
        fit(prepared, tmp_path / f"run-{jit}")
        weights[jit] = prepared.vae.state_dict()
    for key, value in weights[True].items():
        assert torch.equal(value, weights[False][key]), key
    assert accepted == [True]  # the full-size batches ran from the trace


def test_a_first_kl_weight_below_float32s_smallest_normal_is_refused():
    """β·min(1, 1/T): 1e30 warm-up epochs of 2 steps (data.limit=100, batch 50) leave 5e-31,
    far above 1.2e-38; 1e37 leave 5e-38 (it holds), 1e38 leave 5e-39 (it does not); a β alone
    below 1.2e-38 is refused under its own name."""
    base = [*QUICK, "data.limit=100", "train.batch_size=50"]
    for epochs in ("1e30", "1e37"):
        prepare(load_spec(None, [*base, f"train.warmup_epochs={epochs}"]))
    for sets, key in (
        (["train.warmup_epochs=1e38"], "train.warmup_epochs"),
        (["train.warmup_epochs=1e308"], "train.warmup_epochs"),
        (["beta=1e-39"], "beta"),
    ):
        with pytest.raises(SpecError, match=f"^{key}: makes the first step's KL weight"):
            prepare(load_spec(None, [*base, *sets]))


def test_a_warm_up_trains_from_one_trace_as_the_eager_loop_does(tmp_path):
    """During a KL warm-up β changes every step; it enters the trace as an input, so one trace
    replays every step from the third on and the weights match an eager run's bitwise."""
    weights, modules = {}, {}
    for jit in (True, False):
        prepared = prepare(
            load_spec(
                None,
                [
                    *QUICK,
                    "train.max_epochs=2",
                    f"train.jit={jit}",
                    "train.warmup_epochs=4",
                    "train.batch_size=84",
                ],
            )
        )
        trainer = fit(prepared, tmp_path / f"run-{jit}")
        weights[jit], modules[jit] = prepared.vae.state_dict(), trainer.lightning_module
    traced = modules[True].traced_scaled
    assert len(traced.traces) == 1 and not traced.refused  # every β, one checked trace
    assert traced.calls and not modules[True].traced_loss.calls  # β < 1 throughout
    for key, value in weights[True].items():
        assert torch.equal(value, weights[False][key]), key


def test_a_resumed_gumbel_run_continues_its_temperature(tmp_path, monkeypatch):
    """gumbel's τ_t follows the global step t: a run resumed after its first epoch of k steps
    starts at t = k, τ_k = τ_0·exp(−rate·k), not at τ_0 again."""
    import pyro_vae
    from inference.estimators import Gumbel

    seen: list[tuple[int, float]] = []  # (t, τ_t) at each training step
    anneal = Gumbel.anneal

    def recorded(self: Gumbel, t: int) -> None:
        anneal(self, t)
        seen.append((t, self.temperature))

    monkeypatch.setattr(Gumbel, "anneal", recorded)
    gumbel = [*QUICK, "data.limit=192", "estimator.name=gumbel", "estimator.rate=0.1"]
    pyro_vae.train(load_spec(None, [*gumbel, "train.max_epochs=1"]), out=tmp_path / "run")
    k = len(seen)
    assert k > 1 and [t for t, _ in seen] == list(range(k)) and seen[0][1] == 1.0
    seen.clear()
    pyro_vae.train(None, resume=tmp_path / "run", overrides=["train.max_epochs=2"])
    assert [t for t, _ in seen] == list(range(k, 2 * k))
    assert seen[0][1] == pytest.approx(math.exp(-0.1 * k)) and seen[0][1] > 0.5
