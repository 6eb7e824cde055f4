"""``pyro-vae sweep``: the experiment file and every refusal of it, the runs it expands to and
their names, and tiny sweeps end to end: in this process, resumed, one SLURM task, the sbatch
script, two worker processes, a Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from pyro_vae.cli import EXIT_INTERRUPTED, EXIT_USER_ERROR, main
from pyro_vae.experiment import (
    MANIFEST,
    SLURM_SCRIPT,
    Experiment,
    SweepResult,
    cell_names,
    duration,
    load_experiment,
    override,
    sweep,
)
from pyro_vae.registry import SpecError
from pyro_vae.rundir import Run
from pyro_vae.spec import load_spec
from tests.processes import EXE, WAIT, held, wait_until
from tests.tiny_runs import DIGITS, NETS, TINY, logged_steps

try:  # the library of item 3, being renamed
    from pyro_vae.aggregation import find_runs
except ImportError:  # pragma: no cover
    from pyro_vae.aggregate import find_runs


def as_map(overrides: list[str]) -> dict[str, object]:
    return {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in overrides)}


def write(folder: Path, content: object, name: str = "exp.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def experiment(folder: Path, name: str = "exp.yaml", **content: object) -> Path:
    """An experiment of tiny digits runs: ``base`` digits.yaml, ``set`` the tiny overrides."""
    return write(folder, {"base": DIGITS, "set": as_map(TINY), **content}, name)


def manifest(out: Path) -> dict[str, dict]:
    return {r["path"]: r for r in json.loads((out / MANIFEST).read_text())["runs"]}


def checkpoint_times(out: Path) -> dict[str, int]:
    return {
        str(p.relative_to(out)): p.stat().st_mtime_ns
        for p in sorted(out.rglob("checkpoints/last.ckpt"))
    }


# ---- the file ------------------------------------------------------------------------------------
def test_a_file_parses_relative_base_counted_seeds_and_the_grid_product(tmp_path):
    configs = tmp_path / "configs"
    write(configs, Path(DIGITS).read_text(), "digits.yaml")
    path = write(
        tmp_path / "exps",
        {
            "base": "../configs/digits.yaml",
            "set": {"train.max_epochs": 2},
            "grid": {"beta": [1.0, 2.0], "latent_dim": [2, 4, 8]},
            "seeds": 3,
        },
    )
    exp = load_experiment(path)
    assert exp.base == (configs / "digits.yaml").absolute()
    assert exp.seeds == (0, 1, 2)  # a count n: seeds 0 … n−1
    runs = exp.runs()
    assert len(runs) == 2 * 3 * 3
    assert [r.path for r in runs[:3]] == [
        "beta=1,latent_dim=2/seed-0",
        "beta=1,latent_dim=4/seed-0",
        "beta=1,latent_dim=8/seed-0",
    ]
    assert [r.seed for r in runs] == [0] * 6 + [1] * 6 + [2] * 6  # a replicate of all first
    assert runs[7].overrides == (
        "evaluate.figures=false",
        "train.max_epochs=2",
        "beta=1.0",
        "latent_dim=4",
        "train.seed=1",
    )
    spec = exp.spec(runs[7])
    assert (spec.beta, spec.latent_dim, spec.train.seed, spec.train.max_epochs) == (1.0, 4, 1, 2)
    assert [r.path for r in load_experiment(path).runs()] == [r.path for r in runs]  # stable
    assert [r.index for r in runs] == list(range(len(runs)))


def test_cells_cross_the_grid_and_a_listed_seed_list_is_kept(tmp_path):
    path = experiment(
        tmp_path,
        cells=[{}, {"estimator.name": "iwae", "estimator.particles": 2}],
        grid={"beta": [1.0, 2.0]},
        seeds=[7, 3],
    )
    exp = load_experiment(path)
    assert exp.seeds == (7, 3)
    assert [c.name for c in exp.cells()] == [
        "beta=1",
        "beta=2",
        "beta=1,estimator=iwae,particles=2",
        "beta=2,estimator=iwae,particles=2",
    ]
    assert [r.path for r in exp.runs("DIR")][:2] == ["DIR/beta=1/seed-7", "DIR/beta=2/seed-7"]
    spec = exp.spec(exp.runs()[3])
    assert (spec.estimator.name, spec.estimator.params["particles"], spec.beta) == ("iwae", 2, 2.0)


def test_one_cell_runs_straight_under_the_folder(tmp_path):
    exp = load_experiment(experiment(tmp_path, seeds=2))
    assert [r.path for r in exp.runs()] == ["seed-0", "seed-1"]


def test_override_values_round_trip_through_the_spec_loader():
    assert override("train.lr", 1e-5) == "train.lr=1.0e-05"
    assert override("encoder.hidden", [8, 8]) == "encoder.hidden=[8, 8]"
    assert (
        override("prior", {"name": "vamp", "pseudo_inputs": 5})
        == "prior={name: vamp, pseudo_inputs: 5}"
    )
    spec = load_spec(
        DIGITS,
        [override("train.lr", 1e-5), override("prior", {"name": "vamp", "pseudo_inputs": 5})],
    )
    assert spec.train.lr == 1e-5 and spec.prior.name == "vamp"


BAD = {
    "unknown key": ({"grdi": {"beta": [1]}}, "grdi", "did you mean 'grid'"),
    "no base": ({"base": None}, "base", "missing"),
    "base not a path": ({"base": [1]}, "base", "expected the path"),
    "base not found": ({"base": "nowhere.yaml"}, "base", "spec file not found"),
    "set not a mapping": ({"set": ["beta=2"]}, "set", "mapping of dotted keys"),
    "set bad key": ({"set": {"trian.max_epochs": 2}}, "set.trian.max_epochs", "unknown key"),
    "set train.seed": ({"set": {"train.seed": 2}}, "set.train.seed", "seeds:"),
    "empty grid": ({"grid": {}}, "grid", "empty"),
    "grid not a list": ({"grid": {"beta": 2}}, "grid.beta", "a list"),
    "grid empty list": ({"grid": {"beta": []}}, "grid.beta", "empty list"),
    "grid repeats": ({"grid": {"beta": [1.0, 2.0, 1.0]}}, "grid.beta", "repeats 1.0"),
    "grid bad key": ({"grid": {"train.bta": [1.0]}}, "grid.train.bta", "bta"),
    "grid bad value": ({"grid": {"latent_dim": [2, 0]}}, "grid.latent_dim", ">= 1"),
    "grid bad name": (
        {"grid": {"prior.name": ["vamp", "gaussian"]}},
        "grid.prior.name",
        "gaussian",
    ),
    "grid seed": ({"grid": {"train.seed": [1, 2]}}, "grid.train.seed", "seeds:"),
    "grid key is not a key": ({"grid": {"a..b": [1]}}, "grid.a..b", "dotted"),
    "grid also in set": ({"grid": {"train.max_epochs": [1, 2]}}, "grid.train.max_epochs", "set:"),
    "cells not a list": ({"cells": {"beta": 2}}, "cells", "list of override maps"),
    "cells empty": ({"cells": []}, "cells", "empty"),
    "cell not a map": ({"cells": [{}, 3]}, "cells[1]", "mapping"),
    "cells repeat": ({"cells": [{"beta": 2}, {}, {"beta": 2}]}, "cells[2]", "repeats cells[0]"),
    "cell bad key": (
        {"cells": [{}, {"estimator.name": "iwae", "estimator.particels": 2}]},
        "cells[1].estimator.particels",
        "particels",
    ),
    "cell and grid": (
        {"cells": [{"beta": 2}], "grid": {"beta": [1.0]}},
        "cells[0].beta",
        "grid.beta",
    ),
    "combination": (
        {"cells": [{"estimator.name": "stl"}], "grid": {"latent_dim": [2, [4, 2]]}},
        "cells[0].estimator.name",
        "with stochastic layers use trace",
    ),
    "seeds zero": ({"seeds": 0}, "seeds", ">= 1"),
    "seeds negative": ({"seeds": [-1]}, "seeds[0]", ">= 0"),
    "seeds repeat": ({"seeds": [0, 1, 0]}, "seeds", "repeats seed 0"),
    "seeds text": ({"seeds": "three"}, "seeds", "a count"),
    "seeds bool": ({"seeds": True}, "seeds", "a count"),
    "seeds empty": ({"seeds": []}, "seeds", "a count"),
    "too many runs": ({"grid": {"beta": [1.0, 2.0]}, "seeds": 6000}, "exp.yaml", "at most"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_every_refusal_is_one_line_naming_the_key(name, tmp_path):
    extra, key, fragment = BAD[name]
    content = {"base": DIGITS, "set": {"train.max_epochs": 1}, **extra}
    path = write(tmp_path, {k: v for k, v in content.items() if v is not None})
    with pytest.raises(SpecError) as caught:
        load_experiment(path)
    text = str(caught.value)
    head = text.split(": ", 1)[0]
    assert "\n" not in text and fragment in text, text
    assert head == key or head.endswith(f"/{key}"), text


def test_a_refusal_of_the_base_with_a_cell_names_the_cell(tmp_path):
    text = Path(DIGITS).read_text().replace("estimator: {name: trace}", "estimator: {name: stl}")
    base = write(tmp_path, text, "stl.yaml")
    path = write(tmp_path, {"base": "stl.yaml", "grid": {"latent_dim": [2, [4, 2]]}})
    with pytest.raises(SpecError) as caught:
        load_experiment(path)
    assert str(caught.value).startswith("grid (latent_dim=[4, 2]): estimator.name: stl ")
    assert load_experiment(write(tmp_path, {"base": str(base)}, "plain.yaml")).seeds == (0,)


@pytest.mark.parametrize(
    "text, fragment", [("- base: x\n", "a mapping"), ("base: [\n", "YAML syntax error at line")]
)
def test_a_file_that_is_no_experiment_is_refused(tmp_path, text, fragment):
    with pytest.raises(SpecError, match="exp.yaml") as caught:
        load_experiment(write(tmp_path, text))
    assert fragment in str(caught.value)
    with pytest.raises(SpecError, match="not found"):
        load_experiment(tmp_path / "missing.yaml")


def test_the_command_refuses_a_bad_grid_in_one_line_before_anything_runs(tmp_path, capsys):
    path = experiment(tmp_path, grid={"trian.max_epochs": [1, 2]})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyro-vae: error: grid.trian.max_epochs: ") and "\n" not in err
    assert "did you mean 'train'" in err
    assert not out.exists()
    good = experiment(tmp_path, name="good.yaml", seeds=2)
    for extra, flag in (
        (["--task", "2"], "--task"),
        (["--jobs", "0"], "--jobs"),
        (["--jobs", "2", "--slurm"], "--jobs"),
    ):
        assert main(["sweep", str(good), "--out", str(out), *extra]) == EXIT_USER_ERROR
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and flag in err, err
    assert not out.exists()


def test_a_sweep_adds_its_runs_only_to_a_new_or_empty_folder_or_one_a_sweep_made(tmp_path, capsys):
    path = experiment(tmp_path, grid={"beta": [1.0, 2.0]})
    searched = experiment(tmp_path, "search.yaml", search={"beta": {"low": 1.0, "high": 2.0}})
    mine = tmp_path / "mine"
    write(mine, "my notes", "notes.md")
    for exp, extra in (
        (path, []),
        (path, ["--slurm"]),
        (path, ["--task", "0"]),
        (searched, ["--search", "optuna", "--trials", "1"]),
    ):
        assert main(["sweep", str(exp), "--out", str(mine), *extra]) == EXIT_USER_ERROR
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"pyro-vae: error: --out: {mine} is not empty") and "\n" not in err
        assert [p.name for p in mine.iterdir()] == ["notes.md"]
    # new, empty, or marked by a sweep killed before it wrote anything else: each is taken
    killed = tmp_path / "killed"
    (killed / ".sweep").mkdir(parents=True)
    for out in (tmp_path / "new", tmp_path / "empty", killed):
        if out.name == "empty":
            out.mkdir()
        assert main(["sweep", str(path), "--out", str(out), "--slurm"]) == 0
        assert (out / SLURM_SCRIPT).is_file() and (out / MANIFEST).is_file()
    capsys.readouterr()
    # the folder it made: the same command again, and the aggregate written into it
    write(killed, "x", "aggregate.csv")
    assert main(["sweep", str(path), "--out", str(killed), "--slurm"]) == 0


# ---- names ---------------------------------------------------------------------------------------
def test_names_show_the_differing_overrides_by_their_shortest_tail():
    cells = [
        (("encoder.hidden", [8]), ("decoder.hidden", [8]), ("prior.name", "vamp")),
        (("encoder.hidden", [8, 8]), ("decoder.hidden", [8]), ("prior.name", "flow")),
    ]
    assert cell_names(cells) == ["encoder.hidden=8,prior=vamp", "encoder.hidden=8-8,prior=flow"]
    assert cell_names([(("beta", 1.0),)]) == [""]  # a lone cell: runs straight under DIR
    assert cell_names([(), (("beta", 2.0),)]) == ["base", "beta=2"]
    assert cell_names([(("prior", {"name": "vamp", "pseudo_inputs": 5}),), (("prior", None),)]) == [
        "prior=vamp_pseudo_inputs-5",
        "prior=null",
    ]


def test_names_are_sanitized_shortened_and_never_collide():
    odd = [
        (("data.path", "a/b"),),
        (("data.path", "a_b"),),
        (("data.path", "A_B"),),
        (("data.path", "../.x y"),),
        (("data.path", "x" * 300),),
        (("data.path", "x" * 301),),
        (("beta", 2),),
        (("beta", 2.0),),
    ]
    names = cell_names(odd)
    assert len({n.lower() for n in names}) == len(names)  # distinct, even ignoring case
    for name in names:
        assert "/" not in name and " " not in name and not name.startswith(".")
        assert len(name) <= 80 and name not in ("", ".", "..")
    assert names[3].startswith("path=.._.x_y")
    assert names[4] != names[5] and names[4][-9] == "-"  # cut, with a hash of the overrides
    assert cell_names(odd) == names  # stable


# ---- sweeps --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A 2-cell × 2-seed sweep of tiny digits runs, in this process."""
    folder = tmp_path_factory.mktemp("sweep")
    path = experiment(folder, grid={"beta": [1.0, 2.0]}, seeds=2)
    out = folder / "out"
    result = sweep(path, out, progress=False)
    return path, out, result


def test_a_sweep_makes_ordinary_runs_that_aggregate_finds_and_a_manifest(swept):
    path, out, result = swept
    assert result.exit_code == 0 and result.problems() == []
    assert result.count("finished") == 4
    expected = ["beta=1/seed-0", "beta=2/seed-0", "beta=1/seed-1", "beta=2/seed-1"]
    assert sorted(find_runs([out])) == sorted(out / p for p in expected)
    runs = manifest(out)
    assert list(runs) == expected
    for i, p in enumerate(expected):
        entry = runs[p]
        assert entry["state"] == "finished" and entry["index"] == i and entry["attempts"] == 1
        assert entry["seed"] == int(p[-1]) and entry["cell"] == {"beta": float(p[5])}
        assert entry["pid"] == os.getpid() and entry["seconds"] > 0
        run = Run(out / p)
        assert run.state() == "finished" and (out / p / "eval-test.json").is_file()
        spec = load_experiment(path).spec(load_experiment(path).runs()[i])
        assert (spec.train.seed, spec.beta) == (entry["seed"], entry["cell"]["beta"])
    whole = json.loads((out / MANIFEST).read_text())
    assert whole["grid"] == {"beta": [1.0, 2.0]} and whole["seeds"] == [0, 1]
    assert "sweep: 4 runs in" in result.lines()[0] and "4 finished" in result.lines()[0]
    # the split is data.seed's: every seed scored the same test points
    digests = {
        json.loads((out / p / "eval-test.json").read_text())["data_sha256"] for p in expected
    }
    assert len(digests) == 1


def test_the_same_sweep_again_trains_nothing(swept):
    path, out, _ = swept
    before = checkpoint_times(out)
    assert len(before) == 4
    again = sweep(path, out, progress=False)
    assert again.exit_code == 0 and again.count("skipped") == 4
    assert checkpoint_times(out) == before


def test_a_stopped_run_is_continued_and_an_unscored_one_scored(swept):
    path, out, _ = swept
    stopped, unscored = out / "beta=1/seed-1", out / "beta=2/seed-0"
    Run(stopped).mark("stopped")  # as a signal leaves it
    (unscored / "eval-test.json").unlink()  # as a kill during the evaluation leaves it
    before = checkpoint_times(out)
    result = sweep(path, out, progress=False)
    assert result.exit_code == 0, result.problems()
    runs = manifest(out)
    assert runs["beta=1/seed-1"]["state"] == runs["beta=2/seed-0"]["state"] == "finished"
    assert runs["beta=1/seed-0"]["state"] == runs["beta=2/seed-1"]["state"] == "skipped"
    assert Run(stopped).state() == "finished" and (unscored / "eval-test.json").is_file()
    after = checkpoint_times(out)
    for p in (
        "beta=1/seed-0/checkpoints/last.ckpt",
        "beta=2/seed-1/checkpoints/last.ckpt",
        "beta=2/seed-0/checkpoints/last.ckpt",
    ):  # scoring reads the checkpoint only
        assert after[p] == before[p]


def test_a_task_runs_exactly_its_run(tmp_path, capsys):
    path = experiment(tmp_path, grid={"beta": [1.0, 2.0]}, seeds=2)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--task", "2"]) == 0
    assert capsys.readouterr().out.strip() == f"sweep: task 2: {out / 'beta=1/seed-1'}: finished"
    assert find_runs([out]) == [out / "beta=1/seed-1"]
    states = [r["state"] for r in manifest(out).values()]
    assert states == ["pending", "pending", "finished", "pending"]
    assert main(["sweep", str(path), "--out", str(out), "--task", "2"]) == 0  # requeued: done
    assert "skipped" in capsys.readouterr().out


def test_slurm_writes_an_array_script_and_runs_nothing(tmp_path, capsys):
    path = experiment(tmp_path, grid={"beta": [1.0, 2.0]}, seeds=3)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--slurm"]) == 0
    printed = capsys.readouterr().out
    script = out / SLURM_SCRIPT
    assert f"sbatch {script}" in printed and "6 runs" in printed
    text = script.read_text()
    assert "#SBATCH --array=0-5\n" in text and "#SBATCH --requeue\n" in text
    assert "#SBATCH --signal=USR1@120\n" in text  # train's SIGUSR1 path: checkpoint, exit 138
    assert (
        f'srun pyro-vae sweep {path} --out {out.absolute()} --task "$SLURM_ARRAY_TASK_ID"' in text
    )
    assert 'if [ $status -eq 138 ]; then scontrol requeue "$SLURM_JOB_ID"; fi' in text
    assert (out / ".sweep/slurm").is_dir()  # where --output points
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    with pytest.raises(SpecError, match="holds no pyro-vae run"):
        find_runs([out])
    assert {r["state"] for r in manifest(out).values()} == {"pending"}


def test_a_failing_run_is_recorded_and_the_others_go_on(tmp_path):
    path = experiment(tmp_path, cells=[{"train.batch_size": 100000}, {}])  # refused on loading
    out = tmp_path / "out"
    result = sweep(path, out, progress=False)
    runs = manifest(out)
    assert runs["base/seed-0"]["state"] == "finished"
    bad = runs["batch_size=100000/seed-0"]
    assert bad["state"] == "failed" and "train.batch_size" in bad["message"]
    assert result.exit_code == EXIT_USER_ERROR
    problems = result.problems()
    assert (
        len(problems) == 1 and "batch_size=100000/seed-0: failed: train.batch_size" in problems[0]
    )


@pytest.mark.timing
def test_two_workers_share_the_runs_and_train_none_twice(tmp_path):
    path = experiment(tmp_path, grid={"beta": [1.0, 2.0]}, seeds=2)
    out = tmp_path / "out"
    result = sweep(path, out, jobs=2, progress=False)
    assert result.exit_code == 0, result.problems()
    runs = manifest(out)
    assert len(runs) == 4 and {r["state"] for r in runs.values()} == {"finished"}
    assert all(r["attempts"] == 1 for r in runs.values())  # each claimed and trained once
    pids = {r["pid"] for r in runs.values()}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # the workers', not this process's
    assert len(find_runs([out])) == 4


@pytest.mark.timing
def test_ctrl_c_stops_the_sweep_at_a_checkpoint_and_the_same_command_continues(tmp_path):
    steps = 14  # 200 digits, batch 32: 7 steps an epoch, 2 epochs; no periodic checkpoint
    content = {
        **as_map(NETS),
        "data.limit": 200,
        "train.max_epochs": 2,
        "train.log_every_n_steps": 1,
        "train.checkpoint_every_epochs": 0,
        "evaluate.num_samples": 4,
    }
    path = write(tmp_path, {"base": DIGITS, "set": content, "seeds": [5]})
    out = tmp_path / "out"
    command = [EXE, "sweep", str(path), "--out", str(out)]
    proc = held(tmp_path / "signals", command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until((tmp_path / "signals/training").exists, proc, "held in step 4")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(input="", timeout=WAIT)  # the end of stdin lets step 4 go on
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "sweep interrupted (Ctrl-C): 1 run stopped" in err and "Traceback" not in err
    run = out / "seed-5"
    assert Run(run).state() == "stopped" and Run(run).last.is_file()
    assert manifest(out)["seed-5"]["state"] == "stopped"

    done = subprocess.run(command, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert logged_steps(run) == list(range(steps))  # continued: every step once
    assert manifest(out)["seed-5"]["state"] == "finished"


# ---- small pieces --------------------------------------------------------------------------------
def test_the_time_left_reads_as_a_person_would_say_it():
    assert [duration(s) for s in (0.2, 40, 250, 9000)] == ["1 s", "40 s", "4 min", "2.5 h"]


@pytest.mark.parametrize(
    "states, code",
    [
        (["finished", "skipped"], 0),
        (["finished", "diverged"], 3),
        (["failed", "diverged"], 2),
        (["in use"], 2),
        (["stopped"], 2),
    ],
)
def test_the_exit_status_says_the_worst_outcome(states, code):
    result = SweepResult(
        Path("out"), [{"path": f"r{i}", "state": s, "message": "m"} for i, s in enumerate(states)]
    )
    assert result.exit_code == code
    assert len(result.problems()) == sum(s not in ("finished", "skipped") for s in states)
    assert SweepResult(Path("out"), [], signum=signal.SIGUSR1).exit_code == 138


def test_the_experiment_dataclass_alone_needs_no_file(tmp_path):
    exp = Experiment(tmp_path / "e.yaml", Path(DIGITS), grid={"beta": [1.0, 2.0]}, seeds=(4,))
    assert [r.path for r in exp.runs()] == ["beta=1/seed-4", "beta=2/seed-4"]


def test_a_sweeps_runs_draw_no_figures_unless_the_experiment_says_so(tmp_path):
    """Figures cost a sweep most of its fixed seconds per run (benchmarks/sweep_overhead.py):
    its runs are scored without them, unless ``set`` asks; ``Run.figures`` draws them later."""
    from pyro_vae.experiment import load_experiment

    path = tmp_path / "exp.yaml"
    path.write_text(f"base: {DIGITS}\nseeds: 1\n")
    [run] = load_experiment(path).runs(tmp_path / "out")
    assert load_experiment(path).spec(run).evaluate.figures is False
    path.write_text(f"base: {DIGITS}\nset: {{evaluate.figures: true}}\nseeds: 1\n")
    [run] = load_experiment(path).runs(tmp_path / "out")
    assert load_experiment(path).spec(run).evaluate.figures is True
