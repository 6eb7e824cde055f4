"""Model kinds with a latent class y (``m2``, ``gmvae``): spec checks, ``data.labeled``, the
enumerated objective against its closed-form parts, IS of log p(x) with y summed against a
brute-force sum of per-class estimates, training, scoring metrics and resuming."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from pyro.infer.importance import vectorized_importance_weights

import pyro_vae
from inference.estimators import make_estimator
from inference.marginal import estimate_from_log_weights
from pyro_vae.bundle import with_indices
from pyro_vae.data import DATASETS
from pyro_vae.registry import SpecError
from pyro_vae.scoring import Evaluation
from pyro_vae.spec import load_spec
from pyro_vae.vae import VAE

TINY = {
    "latent_dim": 2,
    "encoder": {"name": "mlp", "hidden": [16]},
    "decoder": {"name": "mlp", "hidden": [16]},
    "train": {"max_epochs": 3, "batch_size": 32, "lr": 0.01, "progress": False},
    "evaluate": {"num_samples": 8},
}
DIGITS = {"name": "digits", "binarize": "dynamic", "limit": 192}


def tiny(model: object, **classes: int) -> VAE:
    return VAE.from_spec(load_spec({**TINY, "model": model}), (1, 8, 8), **classes)


@pytest.mark.parametrize("name", ["m2", "gmvae"])
def test_latent_class_kinds_default_to_and_need_the_enum_estimator(name: str) -> None:
    assert load_spec({"model": name}).estimator.name == "enum"
    assert load_spec({"model": name, "estimator": {"particles": 2}}).estimator.params == {
        "particles": 2,
        "max_plate_nesting": 1,
    }
    assert load_spec({}).estimator.name == "trace"
    with pytest.raises(
        SpecError, match=rf"^estimator.name: trace: {name} sums .*use estimator enum"
    ):
        load_spec({"model": name, "estimator": "trace"})
    with pytest.raises(SpecError, match=r"^encoder.name: "):
        load_spec({"model": name, "encoder": "conv"})


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"model": "gmvae", "prior": "mixture"}, "prior.name"),
        ({"model": "m2", "prior": "vamp"}, "prior.name"),
        ({"model": "cvae", "data": {**DIGITS, "labeled": 10}}, "data.labeled"),
        ({"model": {"name": "gmvae", "components": 0}}, "model"),
        ({"data": {**DIGITS, "labeled": 0}}, "data"),
    ],
)
def test_what_latent_classes_cannot_combine_with_is_one_line(spec: dict, key: str) -> None:
    with pytest.raises(SpecError, match=rf"^{key}") as caught:
        load_spec(spec)
    assert "\n" not in str(caught.value)


def test_m2_on_data_without_labels_is_one_line_naming_the_key(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 2, (64, 6)).astype("f4"))
    spec = {**TINY, "model": "m2", "data": {"name": "npz", "path": str(tmp_path / "x.npy")}}
    spec["train"] = {**TINY["train"], "batch_size": 8}
    with pytest.raises(SpecError, match=r"^model.name: m2 conditions on labels"):
        pyro_vae.train(load_spec(spec), out=tmp_path / "run")
    with pytest.raises(SpecError, match=r"^data.labeled: .* has no labels"):
        DATASETS.instantiate(load_spec({"data": {**spec["data"], "labeled": 4}}).data).load()
    assert not (tmp_path / "run").exists()


def load(**data: object) -> pyro_vae.bundle.DataBundle:
    return DATASETS.instantiate(load_spec({"data": {**DIGITS, **data}}).data).load()


def test_labeled_keeps_n_stratified_seeded_labels_and_the_loader_hides_the_rest() -> None:
    full, bundle = load(), load(labeled=40)
    y, truth = bundle.labels["train"], full.labels["train"]
    kept = y >= 0
    assert int(kept.sum()) == 40 and bool((y[~kept] == -1).all())
    assert torch.equal(y[kept], truth[kept])  # the kept labels are the true ones
    share = 40 * torch.bincount(truth, minlength=10) / len(truth)
    assert bool(((torch.bincount(y[kept], minlength=10) - share).abs() < 1).all())  # stratified
    assert torch.equal(load(labeled=40).labels["train"], y)  # seeded: the same rows
    other = load(labeled=40, seed=1).labels["train"]
    assert int((other >= 0).sum()) == 40 and not torch.equal(other, y)  # another seed, others
    for split in ("val", "test"):
        assert torch.equal(bundle.labels[split], full.labels[split])
    seen = torch.cat([b[2] for b in with_indices(bundle.loader("train", 32, True, labels=True))])
    assert int((seen >= 0).sum()) == 40 and len(seen) == len(truth)
    with pytest.raises(SpecError, match=r"^data.labeled: 500 is more than the 192 training"):
        load(labeled=500)


def test_the_enumerated_elbo_is_the_sum_over_classes_and_the_classification_term() -> None:
    """The enum estimator's loss on unlabelled points equals −Σ U(x) of elbo_terms (y summed in
    closed form over q(y | x)) within Monte Carlo error; on labelled points, with the same
    draws, the classification weight w adds exactly −w Σ_l log q(y_l | x_l)."""
    torch.manual_seed(0)
    vae = tiny("m2", num_classes=10)
    x = torch.bernoulli(torch.full((6, 64), 0.4))
    y = torch.tensor([0, -1, 3, -1, 9, -1])
    estimator = make_estimator("enum", particles=2000, max_plate_nesting=1)
    with pyro.settings.context(module_local_params=True):
        loss = estimator(vae.model, vae.guide)
        unlabelled = float(loss(x, None, torch.full((6,), -1)).detach())
        with torch.no_grad():
            draws = torch.stack([vae.elbo_terms(x).elbo.sum() for _ in range(2000)])
        # both are means of 2000 draws of one estimator (one z per class and draw):
        # 5 standard errors of their difference
        se = math.sqrt(2) * float(draws.std()) / math.sqrt(len(draws))
        assert abs(-unlabelled - float(draws.mean())) < 5 * se
        losses = []
        for weight in (0.0, 2.5):
            vae.kind.classification_weight = weight
            torch.manual_seed(1)
            losses.append(float(loss(x, None, y).detach()))
    log_q = torch.distributions.Categorical(logits=vae.kind.classify(x)).log_prob(y.clamp(min=0))
    expected = -2.5 * float(log_q[y >= 0].sum().detach())
    assert losses[1] - losses[0] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    ("model", "y"),
    [
        ({"name": "gmvae", "components": 3}, None),
        # two points labelled: m2's classification term is a factor in the guide, which the
        # per-point estimators count in log q as Pyro's Trace_ELBO does (it was left out)
        ("m2", torch.tensor([0, -1, 3, -1, -1, -1])),
    ],
)
def test_latent_classes_train_by_reinforce_on_the_objective_enum_sums(
    model: object, y: torch.Tensor | None
) -> None:
    """m2 and gmvae also take ``reinforce`` (y drawn from q(y | x), score-function gradient):
    its loss is an unbiased estimate of the one ``enum`` computes by summing y, so at the same
    weights the means of R draws of each agree within 5 standard errors of their difference."""
    torch.manual_seed(0)
    vae = tiny(model, num_classes=10) if model == "m2" else tiny(model)
    assert load_spec({**TINY, "model": model, "estimator": "reinforce"}).estimator.name == (
        "reinforce"
    )
    x = torch.bernoulli(torch.full((6, 64), 0.4))
    draws = {}
    with pyro.settings.context(module_local_params=True):
        for name in ("enum", "reinforce"):
            loss = make_estimator(name, particles=50, max_plate_nesting=1)(vae.model, vae.guide)
            draws[name] = torch.tensor([float(loss(x, None, y).detach()) for _ in range(200)])
    se = math.sqrt(sum(float(d.var()) / len(d) for d in draws.values()))
    assert abs(float(draws["enum"].mean() - draws["reinforce"].mean())) < 5 * se


def test_gmvae_importance_sampling_sums_y_as_per_class_estimates_do() -> None:
    """log p̂(x) with y summed inside each weight (VAE.log_weights) against log Σ_c p̂(x, y=c),
    each p̂(x, y=c) Pyro's own vectorized importance weights of the model and guide given y=c;
    both estimate the same log p(x), so they agree within their Monte Carlo errors."""
    torch.manual_seed(0)
    vae = tiny({"name": "gmvae", "components": 3})
    with torch.no_grad():
        vae.kind.class_prior.loc.copy_(torch.tensor([[-0.6, 0.0], [0.0, 0.6], [0.6, -0.3]]))
    x, k = torch.bernoulli(torch.full((1, 64), 0.3)), 20000
    with torch.no_grad():
        summed = estimate_from_log_weights(vae.log_weights(x), k, 5000)
        per_class, variances = [], []
        for c in range(3):
            log_w, _, _ = vectorized_importance_weights(
                vae.model,
                vae.guide,
                x,
                None,
                torch.tensor([c]),
                num_samples=k,
                max_plate_nesting=1,
            )
            w = (log_w - log_w.max()).exp()
            per_class.append(log_w.max() + w.mean().log())
            variances.append(w.var() / k / w.mean() ** 2)  # delta method, as for log p̂
    brute = torch.logsumexp(torch.stack(per_class), 0)
    # Var(log Σ_c p̂_c) = Σ_c (p_c / p)² Var(log p̂_c) ≤ Σ_c Var(log p̂_c): a conservative s.e.
    se = math.sqrt(float(summed.stderr[0]) ** 2 + float(sum(variances)))
    assert abs(float(summed.log_px[0]) - float(brute)) < 4 * se + 1e-3
    assert float(summed.stderr[0]) < 0.05  # the check has teeth: both estimates are tight


def trained(tmp_path: Path, model: object, **data: object) -> pyro_vae.Run:
    spec = load_spec({**TINY, "data": {**DIGITS, **data}, "model": model})
    return pyro_vae.train(spec, out=tmp_path / "run")


def epoch_losses(run: pyro_vae.Run) -> list[float]:
    values = run.metrics["train_loss_epoch"]
    return [float(v) for v in values if np.isfinite(v)]


def test_m2_trains_on_partly_labelled_digits_reports_accuracy_and_resumes(
    tmp_path: Path,
) -> None:
    run = trained(tmp_path, "m2", labeled=50)
    losses = epoch_losses(run)
    assert len(losses) == 3 and losses[-1] < losses[0]
    evaluation = run.evaluation("test")
    assert np.isfinite(evaluation.log_px) and 0 <= evaluation.accuracy <= 1
    assert evaluation.cluster_accuracy is None
    assert any("q(y|x) accuracy" in line for line in evaluation.lines())
    resumed = pyro_vae.train(None, resume=tmp_path / "run", overrides=["train.max_epochs=4"])
    assert len(epoch_losses(resumed)) == 4
    assert 0 <= resumed.evaluation("test").accuracy <= 1
    # AIS sums y as IS does, log p(x), not log p(x, y) = log p(x) + log p(y | x) (about −log 10
    # below, q(y | x) being near uniform after 4 epochs): AIS − IS (K = 4) on the same points is
    # an IS bias ≥ 0 in AIS's favour plus Monte Carlo noise, so above −4 of its s.e.
    annealed = pyro_vae.evaluate(resumed, "test", method="ais", limit=20, chains=4, steps=50)
    assert annealed["gap"] > -4 * annealed["gap_sem"]


def test_gmvae_trains_reports_cluster_accuracy_and_nmi_and_resumes(tmp_path: Path) -> None:
    run = trained(tmp_path, {"name": "gmvae", "components": 4})
    losses = epoch_losses(run)
    assert len(losses) == 3 and losses[-1] < losses[0]
    evaluation = run.evaluation("test")
    assert np.isfinite(evaluation.log_px) and evaluation.accuracy is None
    assert 0 <= evaluation.cluster_accuracy <= 1 and 0 <= evaluation.nmi <= 1
    # 4 clusters matched one-to-one to 10 classes cover at most 4 classes' points
    assert evaluation.cluster_accuracy <= 0.5
    text = "\n".join(evaluation.lines())
    assert "clusters of q(y|x): accuracy" in text and "NMI" in text
    again = pyro_vae.evaluate(tmp_path / "run", num_samples=4)
    assert isinstance(again, Evaluation) and again.nmi is not None
    resumed = pyro_vae.train(None, resume=tmp_path / "run", overrides=["train.max_epochs=4"])
    assert len(epoch_losses(resumed)) == 4 and np.isfinite(resumed.evaluation("test").log_px)
