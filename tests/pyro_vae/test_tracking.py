"""Tracking (``train.logger``): a tiny run logs to a temporary MLflow store and to TensorBoard,
and both are read back through their own readers (MLflow's client, TensorBoard's
``EventAccumulator``); a missing package and a bad logger name are one line each."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tiny_runs import DIGITS, TINY

from pyro_vae.cli import EXIT_USER_ERROR, main
from pyro_vae.pipeline import train
from pyro_vae.rundir import Run
from pyro_vae.spec import load_spec
from pyro_vae.tracking import CUT, RESUMED, _cut, params

mlflow = pytest.importorskip("mlflow")  # the test extra installs it (pyro-vae[mlflow])


@pytest.fixture(autouse=True)
def file_store(monkeypatch):
    """MLflow 3 opens a file store only with this variable, which a run sets where unset: set
    here, so that the test's process gets it back as it was."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def only_run(store, experiment: str):
    found = store.search_runs([store.get_experiment_by_name(experiment).experiment_id])
    assert len(found) == 1, [r.info.run_name for r in found]
    return found[0]


def artifacts(store, run_id: str, path: str = "") -> list[str]:
    out = []
    for item in store.list_artifacts(run_id, path or None):
        out += artifacts(store, run_id, item.path) if item.is_dir else [item.path]
    return out


def test_a_run_logs_params_metrics_and_artifacts_to_mlflow(tmp_path, capfd):
    uri = f"file:{tmp_path}/mlruns"
    before = mlflow.get_tracking_uri()
    trained = train(
        DIGITS,
        tmp_path / "sweep" / "r0",
        [*TINY, "train.max_epochs=2", "train.logger=[csv,mlflow]", f"train.mlflow_uri={uri}"],
    )
    assert capfd.readouterr().err == ""  # no banner, warning or log line of MLflow's
    assert mlflow.get_tracking_uri() == before  # Lightning's global setting put back
    store = client(uri)
    run = only_run(store, "sweep")  # the run directory's folder names the experiment
    assert run.info.run_name == "r0" and run.info.status == "FINISHED"
    assert run.data.params["prior.name"] == "standard_normal"
    assert run.data.params["train.seed"] == "0"
    assert run.data.params["encoder.hidden"] == "[8]"
    assert run.data.params["train.logger"] == "[csv, mlflow]"
    assert len(store.get_metric_history(run.info.run_id, "val_elbo")) == 2  # one per epoch
    assert run.data.metrics["test_log_px"] == pytest.approx(trained.evaluation.log_px)
    assert run.data.metrics["test_active_units"] == trained.evaluation.active_units
    files = artifacts(store, run.info.run_id)
    assert {
        "config.yaml",
        "eval-test.json",
        "eval-test.npz",
        "figures/test/reconstructions.png",
    } <= set(files), files
    assert Run(trained.run.root).foreign() == []  # nothing of MLflow's inside the run


def test_the_default_store_lies_beside_the_runs_and_a_resumed_run_goes_on_in_it(tmp_path):
    sweep = tmp_path / "sweep"
    train(DIGITS, sweep / "r0", [*TINY, "train.logger=mlflow"])
    assert (sweep / "mlruns").is_dir()
    train(None, None, ["train.max_epochs=2"], resume=sweep / "r0")
    store = client((sweep / "mlruns").as_uri())
    run = only_run(store, "sweep")  # one MLflow run per run directory, resumed or not
    assert run.info.status == "FINISHED"
    steps = [m.step for m in store.get_metric_history(run.info.run_id, "val_elbo")]
    assert len(steps) == 2 and steps == sorted(steps)
    assert run.data.params["train.max_epochs"] == "1"  # as first logged; the change a tag
    assert run.data.tags[RESUMED] == "train.max_epochs=2"


def test_tensorboard_gets_the_spec_as_hparams_with_the_final_scores_and_the_figures(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    trained = train(DIGITS, tmp_path / "r", [*TINY, "train.logger=tensorboard"])
    logs = tmp_path / "r" / "tensorboard"
    events = EventAccumulator(str(logs), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    hparams = {}
    for _tag, meta in events.summary_metadata.items():
        if meta.plugin_data.plugin_name == "hparams":
            data = plugin_data_pb2.HParamsPluginData.FromString(meta.plugin_data.content)
            hparams[data.WhichOneof("data")] = data
    start = hparams["session_start_info"].session_start_info.hparams
    assert start["prior.name"].string_value == "standard_normal"
    assert start["train.seed"].number_value == 0
    assert start["decoder.hidden"].string_value == "[8]"
    shown = [m.name.tag for m in hparams["experiment"].experiment.metric_infos]
    assert shown == ["hp/val_elbo", "hp/test_log_px"]
    log_px = events.Scalars("hp/test_log_px")
    assert [e.value for e in log_px] == [pytest.approx(trained.evaluation.log_px, abs=1e-4)]
    val = [e.value for e in events.Scalars("val_elbo")]
    assert [e.value for e in events.Scalars("hp/val_elbo")] == [pytest.approx(val[-1])]
    assert "figures/test/reconstructions" in events.Tags()["images"]
    saved = (logs / "hparams.yaml").read_text()
    assert "prior.name: standard_normal" in saved and "train.seed: 0" in saved


@pytest.mark.parametrize("logger", ["mlflow", "tensorboard"])
def test_a_missing_extra_is_one_line_naming_it(tmp_path, capsys, monkeypatch, logger):
    monkeypatch.setitem(sys.modules, logger, None)  # import mlflow: ImportError
    code = main(
        ["train", DIGITS, "--set", f"train.logger=[csv,{logger}]", "--out", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR and err.count("\n") == 1, err
    assert f"pip install 'pyro-vae[{logger}]'" in err
    assert not (tmp_path / "r").exists()


PROBE = """
import json, sys
from pyro_vae.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "torch": "torch" in sys.modules}, f)
"""


@pytest.mark.parametrize(
    "value, message",
    [
        (
            "[csv,tensorbord]",
            (
                "train.logger: 'tensorbord' is not one of: csv, tensorboard, mlflow "
                "(or a list of them; metrics.csv is written either way) (did you mean 'tensorboard'?)"
            ),
        ),
        ("[mlflow,mlflow]", "train.logger: 'mlflow' is named twice"),
    ],
)
def test_a_bad_logger_is_one_line_before_torch_is_imported(tmp_path, value, message):
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            str(report),
            "train",
            DIGITS,
            "--set",
            f"train.logger={value}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert json.loads(report.read_text()) == {"code": EXIT_USER_ERROR, "torch": False}
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"pyro-vae: error: {message}")


def test_params_are_scalars_and_strings_and_long_values_are_cut():
    spec = load_spec(None, ["latent_dim=[4,2]", "train.logger=[csv,mlflow]"])
    flat = params(spec)
    assert flat["latent_dim"] == "[4, 2]" and flat["train.mlflow_uri"] == "null"
    assert all(isinstance(v, (str, int, float, bool)) for v in flat.values())
    assert _cut("x" * 10, 10) == "x" * 10
    cut = _cut("x" * 7000, 6000)
    assert len(cut) == 6000 and cut.endswith(CUT)


def test_a_spec_without_the_tracking_keys_takes_their_defaults():
    train_spec = load_spec(None, ["train.logger=tensorboard"]).train
    assert train_spec.loggers == ("tensorboard",)
    assert (train_spec.mlflow_uri, train_spec.mlflow_experiment) == (None, None)
    assert load_spec(None, ["train.logger=[]"]).train.loggers == ()


def test_a_run_scored_after_its_training_stopped_logs_its_final_scores_to_both(
    tmp_path, monkeypatch
):
    """A run whose evaluation a kill cut short is scored by the next ``train``, with no Trainer:
    its final scores reach the MLflow run it trained in and its TensorBoard log all the same."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import pyro_vae.pipeline

    class Killed(Exception):
        pass

    def killed(*args, **kwargs):
        raise Killed

    uri = f"file:{tmp_path}/mlruns"
    overrides = [*TINY, "train.logger=[csv,tensorboard,mlflow]", f"train.mlflow_uri={uri}"]
    monkeypatch.setattr(pyro_vae.pipeline, "score", killed)
    with pytest.raises(Killed):
        train(DIGITS, tmp_path / "sweep" / "r", overrides)
    monkeypatch.undo()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = client(uri)
    assert "test_log_px" not in only_run(store, "sweep").data.metrics  # trained, not scored
    trained = train(DIGITS, tmp_path / "sweep" / "r", overrides)  # scores it, trains nothing
    run = only_run(store, "sweep")  # the same MLflow run, finished again
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_log_px"] == pytest.approx(trained.evaluation.log_px)
    assert len(store.get_metric_history(run.info.run_id, "val_elbo")) == 1  # not trained again
    assert "eval-test.json" in artifacts(store, run.info.run_id)
    events = EventAccumulator(str(tmp_path / "sweep" / "r" / "tensorboard"), {"scalars": 0})
    events.Reload()
    log_px = [e.value for e in events.Scalars("hp/test_log_px")]
    assert log_px == [pytest.approx(trained.evaluation.log_px, abs=1e-4)]
    val = [e.value for e in events.Scalars("val_elbo")]
    assert [e.value for e in events.Scalars("hp/val_elbo")] == [pytest.approx(val[-1])]
