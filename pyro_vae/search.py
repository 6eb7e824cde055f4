"""``pyro-vae sweep EXP --search optuna --trials N``: a search beyond a grid, with Optuna's TPE.

The experiment file names the space in a ``search:`` section, dotted spec keys to a
distribution::

    base: ../configs/digits.yaml
    set: {train.max_epochs: 30}                      # every trial
    search:
      train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}   # a float (log: a log-uniform prior)
      latent_dim: {low: 2, high: 16, int: true}           # an integer: int: true, integer bounds
      prior.name: {choices: [standard_normal, vamp]}      # one of a list of scalars
    seeds: 1                                         # one seed: each trial trains it

A distribution is ``{low, high}`` with optional ``log`` (then ``low > 0``) and ``int`` (then both
bounds are integers), or ``{choices: [...]}``: distinct scalars (str, number, bool, null); a
value that is a list or mapping is not a choice Optuna can store. A search does not combine with
``grid`` or ``cells`` (refused: search the values instead, e.g. ``{choices: [...]}``), and
``seeds`` names one seed (a count of 1 or a one-item list): every trial trains that seed, so
trials differ only by their parameters. A key of ``search`` may not also be in ``set``, and
``evaluate.split`` and ``train.seed`` are not searched. Every value's spec is built before
anything runs (both bounds, every choice); an error is one :class:`SpecError` naming the key
(``search.train.lr.low``).

**Objective.** Trial ``n`` is an ordinary run directory ``DIR/trial-<n>`` whose spec is the base
+ :data:`~pyro_vae.experiment.DEFAULTS` + ``set`` + the trial's parameters + the seed +
``evaluate.split=val``, forced: the value maximized is the run's validation importance-sampled
log p(x) (``eval-val.json``). A search never scores the test split, so choosing a model by it
never sees test data; score the chosen run on test afterwards (``pyro-vae evaluate RUN --split
test``).

**Storage.** The study (named by the experiment file's stem) lives in
``sqlite:///DIR/.sweep/optuna.db`` unless ``--storage URL`` names another Optuna storage (a
PostgreSQL or MySQL URL that several machines reach); the same command again adds to it
(``load_if_exists``). ``DIR/search.json`` summarizes it after every trial: each trial's number,
state, parameters, value and run directory, and the best trial. The TPE sampler's seed comes
from the experiment's seed, the number of trials already in the study and, in a worker process,
its pid: one process on a fresh study draws the same trials again; several workers are not
reproducible (which trial ends first decides what TPE sees).

**Counting.** ``--trials N`` is the size of the whole study, over every worker and every run of
the command: a trial counts when it is COMPLETE, FAIL (it diverged, or an error) or still
RUNNING or WAITING. A worker stops asking for trials when N count; after :meth:`Study.ask` it
looks at the trials numbered below its own (numbers come from the storage, in one transaction),
and if N of them count already it gives its trial back (told FAIL, user attribute
``superfluous``, no run directory): so workers sharing one storage end with exactly N counted
trials, none run twice. A failed trial is not retried; raise N to run more.

**Ctrl-C** (SIGTERM, SIGUSR1): the trial's run saves a checkpoint, the trial is told FAIL with
the user attribute ``stopped`` (it does not count), and its parameters are enqueued
(:meth:`Study.enqueue_trial`) with its run directory: the next worker to ask, of this command
run again or another, takes that trial and continues the same run directory from its
checkpoint. A worker killed outright (SIGKILL) leaves its trial RUNNING, and it counts: mark it
failed with Optuna (``study.tell(n, state=FAIL)``) and raise N.

**Workers.** ``jobs=N`` starts N processes ``pyro-vae sweep EXP --out DIR --search optuna
--trials T --storage URL --worker`` sharing the study; several machines run the same command
with one ``--storage`` URL (and each its own ``--out``, or a shared file system). Optuna's
logging is quiet unless :func:`pyro_vae.console.chatty`. Without Optuna installed a search is
one line naming the extra: ``pip install 'pyro-vae[search]'``.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pyro_vae.atomic import write_json_atomic
from pyro_vae.console import chatty, crash_log
from pyro_vae.registry import SpecError, choices_text, clip, did_you_mean, shown
from pyro_vae.rundir import RunInUse
from pyro_vae.stops import Diverged, Interrupted, signal_name

SUMMARY = "search.json"
DATABASE = "optuna.db"
SEARCHERS = ("optuna",)
SPLIT = "evaluate.split=val"
NOT_SEARCHED = ("evaluate.split", "train.seed")
RANGE_KEYS = ("low", "high", "log", "int")
CHOICE_KEYS = ("choices",)
#: Exit statuses, as pyro_vae.cli's.
EXIT_INTERNAL, EXIT_USER_ERROR = 1, 2


# ---- the search section --------------------------------------------------------------------------
def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(where, f"expected a finite number, got {shown(value)}")
    return value


def parse_space(raw: Any) -> dict[str, dict[str, Any]]:
    """The ``search:`` section checked (see the module docstring): dotted key → ``{low, high,
    log, int}`` or ``{choices}``, normalized. SpecError naming the key."""
    if not isinstance(raw, Mapping) or not raw:
        raise SpecError(
            "search",
            f"expected a mapping of dotted spec keys to distributions "
            f"({{low: 1.0e-4, high: 1.0e-2, log: true}} or {{choices: [2, 8]}}), "
            f"got {shown(raw)}",
        )
    space: dict[str, dict[str, Any]] = {}
    for key, dist in raw.items():
        if (
            not isinstance(key, str)
            or not key.strip()
            or "=" in key
            or key != key.strip()
            or not all(part.strip() for part in key.split("."))
        ):
            raise SpecError("search", f"a key is a dotted spec key (train.lr), got {shown(key)}")
        where = f"search.{key}"
        if key in NOT_SEARCHED:
            raise SpecError(
                where,
                "is not searched: a search scores the validation split and "
                "trains the experiment's one seed (seeds:)",
            )
        if not isinstance(dist, Mapping):
            raise SpecError(
                where, f"expected {{low: ..., high: ...}} or {{choices: [...]}}, got {shown(dist)}"
            )
        valid = CHOICE_KEYS if "choices" in dist else RANGE_KEYS
        for k in dist:
            if k not in valid:
                raise SpecError(
                    f"{where}.{k}",
                    f"unknown key of a distribution; valid keys: "
                    f"{choices_text(valid)}{did_you_mean(str(k), valid)}",
                )
        if "choices" in dist:
            space[key] = {"choices": _choices(dist["choices"], f"{where}.choices")}
            continue
        for k in ("low", "high"):
            if k not in dist:
                raise SpecError(
                    f"{where}.{k}", "missing: a range has low and high (or give choices: [...])"
                )
        for k in ("log", "int"):
            if not isinstance(dist.get(k, False), bool):
                raise SpecError(f"{where}.{k}", f"expected true or false, got {shown(dist[k])}")
        low, high = _number(dist["low"], f"{where}.low"), _number(dist["high"], f"{where}.high")
        integer, log = dist.get("int", False), dist.get("log", False)
        if integer:
            for k, v in (("low", low), ("high", high)):
                if not isinstance(v, int):
                    raise SpecError(
                        f"{where}.{k}", f"int: true takes integer bounds, got {shown(v)}"
                    )
        if low >= high:
            raise SpecError(f"{where}.high", f"must be above low ({shown(low)}), got {shown(high)}")
        if log and low <= 0:
            raise SpecError(f"{where}.low", f"log: true needs low > 0, got {shown(low)}")
        space[key] = {
            "low": low if integer else float(low),
            "high": high if integer else float(high),
            "log": log,
            "int": integer,
        }
    return space


def _choices(raw: Any, where: str) -> list[Any]:
    if not isinstance(raw, list) or not raw:
        raise SpecError(where, f"expected a non-empty list of values, got {shown(raw)}")
    seen = set()
    for i, value in enumerate(raw):
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise SpecError(
                f"{where}[{i}]",
                f"a choice is a scalar (str, number, bool, null), "
                f"got {shown(value)}; a list or mapping cannot be stored by Optuna",
            )
        marker = (type(value).__name__, value)
        if marker in seen:
            raise SpecError(where, f"repeats {shown(value)}")
        seen.add(marker)
    return list(raw)


def candidates(dist: Mapping[str, Any]) -> list[Any]:
    """The values whose specs are checked before a search runs: every choice, or both bounds."""
    return list(dist["choices"]) if "choices" in dist else [dist["low"], dist["high"]]


# ---- the search ----------------------------------------------------------------------------------
def import_optuna() -> ModuleType:
    """Optuna, quiet unless :func:`chatty`; a one-line SpecError naming the extra without it."""
    try:
        import optuna
    except ImportError:
        raise SpecError(
            "--search optuna", "Optuna is not installed: pip install 'pyro-vae[search]'"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.INFO if chatty() else optuna.logging.WARNING)
    return optuna


def default_storage(out: Path) -> str:
    from pyro_vae.experiment import STATE_DIR

    return f"sqlite:///{(out / STATE_DIR / DATABASE).absolute()}"


@dataclass
class SearchResult:
    """What :func:`search` did: the summary written to ``DIR/search.json`` (``trials``,
    ``best``), the signal that stopped it, notes of its workers."""

    out: Path
    summary: dict[str, Any]
    wanted: int
    signum: int | None = None
    worker: bool = False
    notes: list[str] = field(default_factory=list)

    def count(self, *states: str) -> int:
        return sum(t.get("state") in states for t in self.summary.get("trials", []))

    def lines(self) -> list[str]:
        if self.worker:
            return []
        best = self.summary.get("best")
        line = f"search: {self.count('COMPLETE')} of {self.wanted} trials complete in {self.out}"
        if best:
            line += (
                f"; best trial {best['number']}: val log p(x) {best['value']:.3f} with "
                f"{best['params']} ({self.out / best['run']})"
            )
        return [line, f"search: summary {self.out / SUMMARY}"]

    def problems(self) -> list[str]:
        out = list(self.notes)
        if self.signum is not None:
            out.append(
                f"search interrupted ({signal_name(self.signum)}): each trial in training "
                "kept at its last checkpoint; the same command continues it"
            )
        for t in self.summary.get("trials", []):
            if t.get("state") == "FAIL" and t.get("message") and not t.get("stopped"):
                out.append(f"error: trial {t['number']} ({self.out / t['run']}): {t['message']}")
        return out

    @property
    def exit_code(self) -> int:
        if self.signum is not None:
            return 128 + self.signum
        if self.worker:  # its failed trials are the parent's to report
            return 0
        failed = [
            t
            for t in self.summary.get("trials", [])
            if t.get("state") == "FAIL" and t.get("message") and not t.get("stopped")
        ]
        if any(t.get("internal") for t in failed):
            return EXIT_INTERNAL
        return EXIT_USER_ERROR if failed or self.notes else 0


def search(
    path: str | Path,
    out: str | Path | None = None,
    trials: int | None = None,
    storage: str | None = None,
    jobs: int = 1,
    threads: int | None = None,
    worker: bool = False,
) -> SearchResult:
    """Run the Optuna search of the experiment file ``path`` into ``out`` (default
    ``runs/<file stem>``) until ``trials`` trials count in the study (see the module docstring),
    in this process or in ``jobs`` worker processes. Checked before anything runs."""
    from pyro_vae.experiment import _check_out, _set_threads, load_experiment

    optuna = import_optuna()
    if trials is None or trials < 1:
        raise SpecError(
            "--trials",
            "a search needs --trials N (N >= 1)"
            if trials is None
            else f"must be >= 1, got {trials}",
        )
    if jobs < 1:
        raise SpecError("--jobs", f"must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise SpecError("--threads", f"must be >= 1, got {threads}")
    experiment = load_experiment(path)
    if not experiment.space:
        raise SpecError(
            "search",
            f"{experiment.path} has no search: section (dotted keys to "
            "{low, high} or {choices}); a grid runs without --search",
        )
    out = Path(out) if out is not None else Path("runs") / experiment.path.stem
    _check_out(out)
    storage = storage or default_storage(out)
    study = _study(optuna, experiment, storage, worker)
    if jobs > 1 and not worker:
        return _pool(optuna, experiment, out, trials, storage, jobs, threads)
    if threads is not None:
        _set_threads(threads)
    signum = _work(optuna, study, experiment, out, trials)
    return SearchResult(out, _summarize(optuna, study, out), trials, signum, worker)


def _study(optuna: ModuleType, experiment: Any, storage: str, worker: bool) -> Any:
    for attempt in range(5):  # workers starting at once may race to create the tables
        try:
            study = optuna.create_study(
                study_name=experiment.path.stem,
                storage=storage,
                direction="maximize",
                load_if_exists=True,
            )
            break
        except Exception as exc:  # a bad URL, an unreachable database: the user's to fix
            if attempt == 4:
                raise SpecError(
                    "--storage", clip(f"{storage}: {type(exc).__name__}: {exc}", 300)
                ) from None
            time.sleep(0.5 + attempt)
    key = f"{experiment.seeds[0]}:{len(study.trials)}:{os.getpid() if worker else 0}"
    seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    study.sampler = optuna.samplers.TPESampler(seed=seed)
    return study


def _counts(trial: Any) -> bool:
    """Whether ``trial`` takes one of the study's N places (see Counting)."""
    attrs = trial.user_attrs
    return not (attrs.get("stopped") or attrs.get("superfluous"))


def _work(optuna: ModuleType, study: Any, experiment: Any, out: Path, wanted: int) -> int | None:
    """Ask, train, tell until ``wanted`` trials count; the signal that stopped it, if one did."""
    from pyro_vae.experiment import _stops_raise

    state = optuna.trial.TrialState
    with _stops_raise("a search"):
        try:
            while True:
                trials = study.get_trials(deepcopy=False)
                waiting = any(t.state == state.WAITING for t in trials)
                if not waiting and sum(map(_counts, trials)) >= wanted:
                    return None
                trial = study.ask()
                before = [
                    t
                    for t in study.get_trials(deepcopy=False)
                    if t.number < trial.number and _counts(t)
                ]
                if len(before) >= wanted:  # another worker took the last place meanwhile
                    _give_back(study, trial, state)
                    return None
                _trial(optuna, study, trial, experiment, out)
        except Interrupted as exc:
            return exc.signum


def _give_back(study: Any, trial: Any, state: Any) -> None:
    trial.set_user_attr("superfluous", True)
    if "run" in trial.user_attrs:  # a stopped trial's resumption: leave it for another
        study.enqueue_trial(trial.params, user_attrs={"run": trial.user_attrs["run"]})
    study.tell(trial, state=state.FAIL)


def _params(trial: Any, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    params = {}
    for key, d in space.items():
        if "choices" in d:
            params[key] = trial.suggest_categorical(key, d["choices"])
        elif d["int"]:
            params[key] = trial.suggest_int(key, d["low"], d["high"], log=d["log"])
        else:
            params[key] = trial.suggest_float(key, d["low"], d["high"], log=d["log"])
    return params


def overrides(experiment: Any, params: Mapping[str, Any]) -> list[str]:
    """A trial's ``--set`` list: defaults, ``set``, its parameters, the seed, the val split."""
    from pyro_vae.experiment import DEFAULTS, SEED, override

    return [
        *DEFAULTS,
        *experiment.set_strings(),
        *(override(k, v) for k, v in params.items()),
        f"{SEED}={experiment.seeds[0]}",
        SPLIT,
    ]


def _trial(optuna: ModuleType, study: Any, trial: Any, experiment: Any, out: Path) -> None:
    """Train trial ``trial`` into its run directory and tell the study its value (or FAIL); an
    :class:`Interrupted` is told FAIL ``stopped``, its parameters enqueued, and raised again."""
    from pyro_vae import pipeline
    from pyro_vae.experiment import _inspect

    state = optuna.trial.TrialState
    name = trial.user_attrs.get("run") or f"trial-{trial.number}"
    trial.set_user_attr("run", name)
    trial.set_user_attr("pid", os.getpid())
    params = _params(trial, experiment.space)
    sets = overrides(experiment, params)
    start = time.perf_counter()
    value, message, internal = None, None, False
    try:
        run, spec = pipeline.run_for(experiment.base, out / name, sets, None, False)
        what, why = _inspect(run, spec)
        if what == "skipped":  # trained and scored already (a resumed trial)
            value = run.evaluation("val").log_px
        elif what in ("train", "afresh"):
            trained = pipeline.train(experiment.base, run.root, sets, overwrite=what == "afresh")
            value = (
                trained.evaluation.log_px if trained.evaluation else run.evaluation("val").log_px
            )
        else:
            message = why
    except (Diverged, RunInUse, SpecError) as exc:
        message = str(exc)
    except Interrupted as exc:
        trial.set_user_attr("stopped", signal_name(exc.signum))
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 3))
        study.enqueue_trial(params, user_attrs={"run": name})
        study.tell(trial, state=state.FAIL)
        _summarize(optuna, study, out)
        raise
    except Exception as exc:  # a bug: its traceback to a crash log, the search goes on
        log = crash_log("pyro-vae sweep --search", [str(experiment.path), "--out", str(out)])
        where = f"traceback in {log}" if log else "no log could be written"
        message = (
            f"internal error: {clip(' '.join(f'{type(exc).__name__}: {exc}'.split()), 300)}"
            f"; {where}"
        )
        internal = True
    trial.set_user_attr("seconds", round(time.perf_counter() - start, 3))
    if value is not None and math.isfinite(value):
        study.tell(trial, value)
    else:
        trial.set_user_attr("message", message or f"its value is {value}")
        trial.set_user_attr("internal", internal)
        study.tell(trial, state=state.FAIL)
    _summarize(optuna, study, out)


def _summarize(optuna: ModuleType, study: Any, out: Path) -> dict[str, Any]:
    """``DIR/search.json`` rewritten from the study (under the manifest's lock): the trials
    (superfluous ones left out) and the best."""
    from pyro_vae.experiment import _manifest_lock, _now

    complete = optuna.trial.TrialState.COMPLETE
    trials = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("superfluous"):
            continue
        trials.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": t.params,
                "value": t.value,
                "run": t.user_attrs.get("run", f"trial-{t.number}"),
                **{k: v for k, v in t.user_attrs.items() if k != "run"},
            }
        )
    done = [t for t in trials if t["state"] == complete.name]
    best = max(done, key=lambda t: t["value"]) if done else None
    summary = {
        "pyro_vae_search": 1,
        "study": study.study_name,
        "direction": "maximize",
        "objective": "validation IS log p(x) (eval-val.json log_px)",
        "updated": _now(),
        "best": best,
        "trials": trials,
    }
    with _manifest_lock(out):
        write_json_atomic(out / SUMMARY, summary)
    return summary


# ---- workers -------------------------------------------------------------------------------------
def _pool(
    optuna: ModuleType,
    experiment: Any,
    out: Path,
    trials: int,
    storage: str,
    jobs: int,
    threads: int | None,
) -> SearchResult:
    """``jobs`` worker processes on one storage (:func:`pyro_vae.experiment.run_workers`)."""
    from pyro_vae.experiment import cores, run_workers

    done = run_workers(
        [
            "sweep",
            str(experiment.path),
            "--out",
            str(out),
            "--search",
            "optuna",
            "--trials",
            str(trials),
            "--storage",
            storage,
        ],
        jobs,
        threads or max(1, cores() // jobs),
        "search",
    )
    study = optuna.load_study(study_name=experiment.path.stem, storage=storage)
    return SearchResult(out, _summarize(optuna, study, out), trials, done.signum, notes=done.notes)
