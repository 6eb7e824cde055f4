"""Signals that stop a training (``pyro_vae.engine``: ``stop_on_signals``, ``Interrupted``),
through the ``pyro-vae`` console script and its ``main``: SIGTERM saves at the step and exits
143, a second Ctrl-C exits 130 at once, both with one line (SIGUSR1, SLURM's warning, in-process:
138); a Ctrl-C saves at the step, exits 130, and ``--resume`` ends where an uninterrupted run
does; rerunning the same command continues a run that a signal stopped (a requeued cluster job);
two torchrun "nodes" on 127.0.0.1 train in step, and a SIGTERM mid-run followed by the same
command ends where an uninterrupted run does.

No test here races the scheduler: a signal meets a run held still at a known step
(tests/holder.py) or is sent by the run to itself, and every wait is for an event the process
makes (a file, its exit), guarded only against a hang (:data:`processes.WAIT`); the helpers that
start, hold and signal the processes are in tests/processes.py.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from processes import EXE, HELD_STEP, HOLDER, WAIT, held, wait_until

# LONG: 200 digits, batch 32, 7 steps per epoch, no periodic checkpoints, so a run's only
# checkpoint before its first epoch ends is the one a signal made
from tiny_runs import DIGITS, LONG, STEPS_PER_EPOCH, logged_steps

from pyro_vae.checkpoints import checkpoint_step
from pyro_vae.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, main
from pyro_vae.pipeline import fit
from pyro_vae.prepared import prepare
from pyro_vae.rundir import LOCK, Run
from pyro_vae.spec import load_spec
from pyro_vae.trainer import VAEModule

pytestmark = pytest.mark.timing  # signals, and waits on other processes

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))


def command(run: Path, *sets: str) -> list[str]:
    return [EXE, "train", DIGITS, *(f"--set={s}" for s in [*LONG, *sets]), "--out", str(run)]


def test_sigterm_saves_at_the_step_exits_143_and_the_same_command_continues(tmp_path):
    run, signals = tmp_path / "run", tmp_path / "signals"
    proc = held(signals, command(run), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until((signals / "training").exists, proc, "held in step 4")
    proc.send_signal(signal.SIGTERM)  # during step 4, which the end of stdin lets go on
    _, err = proc.communicate(input="", timeout=WAIT)
    assert proc.returncode == EXIT_TERMINATED, err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    step = checkpoint_step(Run(run).last)
    assert step == HELD_STEP + 1  # written on SIGTERM: no periodic checkpoint comes this early
    assert "interrupted (SIGTERM)" in lines[0] and f"(step {step})" in lines[0]
    assert not (run / "eval-test.json").exists() and not (run / LOCK).exists()
    assert Run(run).state() == "stopped"

    finish = step // STEPS_PER_EPOCH + 1  # the same command, with fewer epochs to finish
    done = subprocess.run(
        [*command(run, f"train.max_epochs={finish}"), "--verbose"],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )  # --verbose: notes too
    assert done.returncode == 0, done.stderr
    notes = done.stderr.splitlines()
    assert len(notes) == 1 and notes[0].startswith("pyro-vae: note: ") and "continuing" in notes[0]
    assert checkpoint_step(Run(run).last) == finish * STEPS_PER_EPOCH
    assert logged_steps(run) == list(range(finish * STEPS_PER_EPOCH))  # every step once
    assert Run(run).state() == "finished" and (run / "eval-test.json").is_file()


def signal_during_step_10(monkeypatch: pytest.MonkeyPatch, signum: int) -> None:
    """``signum`` arrives in this process while training step 10 (global_step 9) runs."""
    original = VAEModule.training_step

    def training_step(self, x, batch_idx):
        if self.global_step == 9:
            os.kill(os.getpid(), signum)
        return original(self, x, batch_idx)

    monkeypatch.setattr(VAEModule, "training_step", training_step)


def test_sigusr1_the_slurm_warning_saves_at_the_step_and_exits_138(tmp_path, capsys, monkeypatch):
    signal_during_step_10(monkeypatch, signal.SIGUSR1)  # SLURM's warning
    run = tmp_path / "run"
    handler = signal.getsignal(signal.SIGUSR1)
    code = main(command(run)[1:])
    err = capsys.readouterr().err.strip()
    assert signal.getsignal(signal.SIGUSR1) is handler  # restored
    assert code == 128 + signal.SIGUSR1 == 138
    assert "\n" not in err and "interrupted (SIGUSR1) after step 10" in err
    assert f"{Run(run).last} (step 10)" in err and checkpoint_step(Run(run).last) == 10


# Two Ctrl-C sent from outside may reach Python as one (a signal pending twice runs its handler
# once), so the process sends them to itself during step 6, the handler running after each kill.
TWICE = """
import os, signal, sys
from pyro_vae.cli import main
from pyro_vae.trainer import VAEModule
original = VAEModule.training_step
def training_step(self, x, batch_idx):
    if self.global_step == 5:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
    return original(self, x, batch_idx)
VAEModule.training_step = training_step
sys.exit(main(sys.argv[1:]))
"""


def test_a_second_ctrl_c_stops_at_once_with_exit_130_and_one_line(tmp_path):
    run = tmp_path / "run"
    argv = command(run, "train.checkpoint_every_steps=2")
    done = subprocess.run(
        [sys.executable, "-c", TWICE, *argv[1:]], capture_output=True, text=True, timeout=WAIT
    )
    assert done.returncode == EXIT_INTERRUPTED, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "stopped at once by a second Ctrl-C" in lines[0]
    # the step under way was not finished or saved: the last checkpoint is step 4's
    assert checkpoint_step(Run(run).last) == 4 and "(step 4)" in lines[0]
    assert Run(run).state() == "stopped" and not (run / LOCK).exists()


def test_ctrl_c_saves_at_the_step_and_resumes_to_the_uninterrupted_result(
    tmp_path, capsys, monkeypatch
):
    signal_during_step_10(monkeypatch, signal.SIGINT)  # Ctrl-C
    run = tmp_path / "run"
    handler = signal.getsignal(signal.SIGINT)
    code = main(["train", DIGITS, *(f"--set={s}" for s in LONG), "--out", str(run)])
    err = capsys.readouterr().err.strip()
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    assert code == EXIT_INTERRUPTED
    assert "\n" not in err and "Traceback" not in err
    assert f"{Run(run).last} (step 10)" in err and f"pyro-vae train --resume {run}" in err
    assert checkpoint_step(Run(run).last) == 10  # the step under way finished, then the save
    assert not (run / "eval-test.json").exists() and not list(run.rglob("*.tmp"))

    finish = ["train.max_epochs=3"]
    fit(prepare(Run(run).resume_spec(finish)), run, resume=True)
    resumed = torch.load(Run(run).last, weights_only=True)["state_dict"]
    whole = prepare(load_spec(DIGITS, [*LONG, *finish]))
    fit(whole, tmp_path / "whole")
    for key, value in whole.vae.state_dict().items():  # same batches, draws and Adam states
        assert torch.equal(value, resumed[f"vae.{key}"]), key
    assert logged_steps(run) == list(range(3 * STEPS_PER_EPOCH))


def test_ctrl_c_to_the_console_script_then_resume_to_completion(tmp_path):
    """The console script's ``main`` in its own process (tests/holder.py), held still inside
    step 4 while a Ctrl-C arrives, then let go: it saves at step 4 and exits 130. Holding it
    leaves nothing to the scheduler (a waiting test could otherwise see the run end first)."""
    run, signals = tmp_path / "run", tmp_path / "signals"
    proc = held(
        signals,
        [EXE, "train", DIGITS, *(f"--set={s}" for s in LONG), "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_until((signals / "training").exists, proc, "held in step 4")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(input="", timeout=WAIT)  # the end of stdin lets step 4 go on
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    saved = torch.load(Run(run).last, weights_only=True)
    step = saved["global_step"]
    assert step == HELD_STEP + 1  # no periodic checkpoint: this one was written on Ctrl-C
    assert f"(step {step})" in err and f"pyro-vae train --resume {run}" in err
    assert not (run / "eval-test.json").exists() and not list(run.rglob("*.tmp"))

    finish = saved["epoch"] + 1
    done = subprocess.run(
        [EXE, "train", "--resume", str(run), f"--set=train.max_epochs={finish}"],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr
    assert checkpoint_step(Run(run).last) == finish * STEPS_PER_EPOCH
    assert logged_steps(run) == list(range(finish * STEPS_PER_EPOCH))  # every step once
    assert (run / "eval-test.json").is_file()


def free_port() -> int:
    """A port free now, below Linux's ephemeral range (32768 and up): a port the kernel handed out
    could meanwhile become an outgoing connection's own, even that of the node retrying to reach
    it (a TCP self-connect), and the rendezvous would wait for a store that never answers."""
    for port in random.Random().sample(range(20000, 32000), 100):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-31999")


def two_nodes(run: Path, *sets: str, held: Path | None = None) -> list[subprocess.Popen]:
    """``torchrun --nnodes 2 --node-rank r`` for r = 0, 1 on 127.0.0.1, one gloo process each;
    each node's output is appended to ``<run>-node<r>.log`` beside ``run``: a pipe nobody reads
    while the nodes wait for each other would fill and block them. With ``held``, each node's
    process is tests/holder.py's, held still inside step 4 (it creates ``held/node<r>/training``
    there) until the end of the node's stdin."""
    port = free_port()
    argv = [
        "train",
        DIGITS,
        *(f"--set={s}" for s in [*LONG, *sets]),
        "--accelerator",
        "cpu",
        "--devices",
        "1",
        "--num-nodes",
        "2",
        "--strategy",
        "ddp",
        "--out",
        str(run),
    ]
    scratch = run.with_name(f"{run.name}-tmp")  # torchrun's torchelastic_* folders, not /tmp's
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)}
    nodes = []
    for rank in (0, 1):
        log = run.with_name(f"{run.name}-node{rank}.log")
        script = [EXE]
        if held:
            (held / f"node{rank}").mkdir(parents=True)
            script = [str(HOLDER), str(held / f"node{rank}"), "training"]
        with log.open("a") as out:  # the child holds its own descriptor; a rerun appends
            node = subprocess.Popen(
                [
                    TORCHRUN,
                    "--nnodes",
                    "2",
                    "--node-rank",
                    str(rank),
                    "--nproc-per-node",
                    "1",
                    "--master-addr",
                    "127.0.0.1",
                    "--master-port",
                    str(port),
                    *script,
                    *argv,
                ],
                stdin=subprocess.PIPE if held else None,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        node.log = log  # type: ignore[attr-defined]
        nodes.append(node)
    return nodes


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:  # ended meanwhile
            continue
        if stat and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def finish_nodes(nodes: list[subprocess.Popen], timeout: float = WAIT) -> list[tuple[int, str]]:
    """Each node's exit status and output. Once one node has failed the other gets 5 min more
    (its torchrun would wait for its peer far longer); past ``timeout`` both are killed with
    their workers and the test fails showing each node's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(n.poll() is None for n in nodes):
        if any(n.returncode not in (None, 0) for n in nodes):
            deadline = min(deadline, time.monotonic() + 300)
        time.sleep(0.05)
    hung = [n for n in nodes if n.poll() is None]
    for node in hung:
        os.killpg(node.pid, signal.SIGKILL)
    results = [(n.wait(), n.log.read_text()) for n in nodes]  # type: ignore[attr-defined]
    assert not hung, "\n".join(
        f"node {r} ({'hung' if n in hung else n.returncode}):\n{out[-3000:]}"
        for r, (n, (_, out)) in enumerate(zip(nodes, results))
    )
    return results


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(Run(run).last, weights_only=True)["state_dict"]


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the workers in /proc")
def test_two_torchrun_nodes_train_in_step_and_a_sigterm_then_rerun_ends_as_one_run(tmp_path):
    epochs = "train.max_epochs=3"  # 200 items over 2 ranks: 4 steps of 32 per epoch
    whole = tmp_path / "whole"
    for code, err in finish_nodes(two_nodes(whole, epochs)):
        assert code == 0, err
    report = json.loads((whole / "ddp.json").read_text())
    assert report["world_size"] == 2 and len(set(report["parameter_sha256"])) == 1
    assert checkpoint_step(Run(whole).last) == 12

    run, signals = tmp_path / "run", tmp_path / "signals"
    procs = two_nodes(run, epochs, held=signals)
    for rank, node in enumerate(procs):
        wait_until((signals / f"node{rank}" / "training").exists, node, f"node {rank} in step 4")
    # the scheduler signals every training process (SLURM: each process of the job step); a
    # SIGTERM to torchrun alone would reach them through its agent, which kills them 30 s later
    for node in procs:
        for worker in children(node.pid):
            os.kill(worker, signal.SIGTERM)
        node.stdin.close()  # the end of stdin lets step 4 go on
    finish_nodes(procs)
    stopped = checkpoint_step(Run(run).last)
    assert stopped == HELD_STEP + 1 and Run(run).state() == "stopped"

    for code, err in finish_nodes(two_nodes(run, epochs)):  # the same command resumes
        assert code == 0, err
    assert checkpoint_step(Run(run).last) == 12
    resumed, uninterrupted = weights(run), weights(whole)
    for key, value in uninterrupted.items():
        assert torch.equal(resumed[key], value), key


def test_a_ctrl_c_during_the_last_step_stops_before_scoring_and_resume_scores(
    tmp_path, capsys, monkeypatch
):
    """Ctrl-C during the last step of the last epoch: the checkpoint holds every epoch but the run
    was never scored, so it is stopped, not finished, and ``--resume`` scores it; with a lower
    train.max_epochs it has nothing to do and changes nothing."""
    original = VAEModule.training_step
    last = 2 * STEPS_PER_EPOCH - 1

    def training_step(self, x, batch_idx):
        if self.global_step == last:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, x, batch_idx)

    monkeypatch.setattr(VAEModule, "training_step", training_step)
    run = tmp_path / "run"
    assert main(command(run, "train.max_epochs=2")[1:]) == EXIT_INTERRUPTED
    assert f"interrupted (Ctrl-C) after step {last + 1}" in capsys.readouterr().err
    assert checkpoint_step(Run(run).last) == last + 1 and Run(run).state() == "stopped"
    assert not (run / "eval-test.json").exists()

    monkeypatch.setattr(VAEModule, "training_step", original)
    config = (run / "config.yaml").read_bytes()
    assert main(["train", "--resume", str(run), "--set", "train.max_epochs=1"]) == 0
    assert "finished (2 epochs trained, train.max_epochs is 1)" in capsys.readouterr().out
    assert (run / "config.yaml").read_bytes() == config and Run(run).state() == "stopped"
    assert main(["train", "--resume", str(run)]) == 0
    assert Run(run).state() == "finished" and (run / "eval-test.json").is_file()
    assert checkpoint_step(Run(run).last) == last + 1
    assert logged_steps(run) == list(range(last + 1))


def test_a_stop_signal_during_the_final_evaluation_keeps_the_run_and_the_same_command_scores_it(
    tmp_path, capsys, monkeypatch
):
    """Training finished, then Ctrl-C (or SIGTERM, SIGUSR1: the same handler) lands in the
    evaluation that ends ``train``: one line, exit 130, the trained run kept and unscored. The
    same command then scores it without training again, with the command's evaluate settings."""
    from pyro_vae import scoring as evaluate

    original = evaluate.evaluate_run

    def evaluate_run(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_run", evaluate_run)
    run = tmp_path / "run"
    handler = signal.getsignal(signal.SIGINT)
    assert main(command(run, "train.max_epochs=1")[1:]) == EXIT_INTERRUPTED
    err = capsys.readouterr().err.strip()
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    assert "\n" not in err and "interrupted (Ctrl-C) during the evaluation" in err, err
    assert f"the same command or pyro-vae train --resume {run} scores it" in err
    assert Run(run).state() == "finished" and not (run / "eval-test.json").exists()
    trained = (Run(run).last.read_bytes(), logged_steps(run))

    monkeypatch.setattr(evaluate, "evaluate_run", original)
    assert main(command(run, "train.max_epochs=1", "evaluate.num_samples=7")[1:]) == 0
    assert "run directory" in capsys.readouterr().out
    assert json.loads((run / "eval-test.json").read_text())["num_samples"] == 7
    assert (Run(run).last.read_bytes(), logged_steps(run)) == trained
    assert main(command(run, "train.max_epochs=1")[1:]) != 0  # scored: no longer this case
    assert "exists" in capsys.readouterr().err
