"""What every benchmark shares: the machine's description, interleaved paired timing, the
log-log scaling fit, data loading that skips cleanly, and the section record written to JSON.

Timing protocol (the machine is shared and noisy): ``ours`` and ``floor`` run in alternating
blocks inside one process, the order flipping every block, and each block gives one paired ratio
r_b = t_ours,b / t_floor,b. We quote the median of the r_b with its quartiles; slow drifts of the
machine's speed cancel within a pair.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pyro_vae.registry import SpecError
from pyro_vae.spec import Spec, load_spec

if TYPE_CHECKING:  # pyro_vae.trainer pulls in Lightning: not needed by the memory probe
    from pyro_vae.prepared import Prepared

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "examples" / "configs"


class Skip(Exception):
    """A benchmark cannot run here (e.g. its data set is not installed); the message says why."""


@dataclass(frozen=True)
class Options:
    """Run-wide settings: the device, the CPU threads, toy sizes for smoke runs, and the folder
    the section records go to (set by ``finish``; a long benchmark keeps its finished runs
    there)."""

    device: torch.device = torch.device("cpu")
    threads: int = 2
    toy: bool = False
    results: Path | None = None


@dataclass
class Section:
    """One benchmark's record: its markdown body, targets and raw numbers, saved as JSON."""

    key: str
    title: str
    command: str
    body: str = ""
    targets: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0

    def target(
        self,
        name: str,
        measured: float,
        limit: float,
        unit: str = "×",
        at_most: bool = True,
        fmt: str = ".3g",
    ) -> None:
        """A target row; ``fmt`` formats the measured figure (``.2f`` for a log-likelihood in
        nats: "-228.62", where three significant digits would print "-229" against ≥ -229)."""
        met = measured <= limit if at_most else measured >= limit
        sign = "≤" if at_most else "≥"
        self.targets.append(
            {
                "name": name,
                "measured": f"{measured:{fmt}}{unit}",
                "target": f"{sign} {limit:g}{unit}",
                "met": bool(met),
            }
        )

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.key}.json"
        path.write_text(json.dumps(self.__dict__, indent=1, ensure_ascii=False) + "\n")
        return path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(options: Options) -> dict[str, Any]:
    """Where and when a figure was measured, including how busy the machine was."""
    import lightning
    import pyro

    info: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": options.threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "lightning": lightning.__version__,
        "device": str(options.device),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
    }
    if options.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(options.device)
    return info


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds all processes have been busy, CPU seconds this process and its children
    have used): their changes over a section give how much of the machine others took."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    ours = sum(os.times()[:4])
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK"), ours


def others_share(start: tuple[float, float], end: tuple[float, float], wall_s: float) -> float:
    """Fraction of the machine's CPU capacity used by other processes over ``wall_s``."""
    other = (end[0] - start[0]) - (end[1] - start[1])
    return min(max(other / (wall_s * (os.cpu_count() or 1)), 0.0), 1.0)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, queued device work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


@dataclass
class Spread:
    """Median and quartiles of a sample (the quartiles by linear interpolation)."""

    median: float
    q1: float
    q3: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        v = sorted(values)
        q = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0]] * 3
        return cls(statistics.median(v), q[0], q[2], v[0], v[-1], len(v))

    def text(self, digits: int = 3) -> str:
        return (
            f"{self.median:.{digits}f} (IQR {self.q1:.{digits}f}–{self.q3:.{digits}f}, "
            f"range {self.low:.{digits}f}–{self.high:.{digits}f}, n={self.n})"
        )


def interleaved(
    runs: dict[str, Callable[[int], object]], blocks: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per block of each run (``run(b)`` does block b's work), the runs alternating
    within every block and their order reversed on every other block; block 0 is run once
    untimed first, as a warm-up."""
    names = list(runs)
    for name in names:
        runs[name](0)
    times: dict[str, list[float]] = {name: [] for name in names}
    for b in range(blocks):
        for name in names if b % 2 == 0 else reversed(names):
            times[name].append(clock(lambda: runs[name](b), device))
    return times


def ratios(times: dict[str, list[float]], ours: str, floor: str) -> Spread:
    """The paired ratios t_ours,b / t_floor,b over the blocks."""
    return Spread.of([a / b for a, b in zip(times[ours], times[floor])])


def exponent(sizes: Sequence[float], seconds: Sequence[float]) -> float:
    """Least-squares slope of log t against log n: t ∝ n^slope (1 is linear)."""
    xs, ys = [math.log(s) for s in sizes], [math.log(t) for t in seconds]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def spec_from(config: str | dict[str, Any], overrides: Sequence[str] = ()) -> Spec:
    """A spec from an example config's file name (``examples/configs``) or a dict, plus
    ``key=value`` overrides, exactly as ``pyro-vae train CONFIG --set ...`` builds it."""
    source = CONFIGS / config if isinstance(config, str) else config
    return load_spec(source, overrides)


def scoring_setup(
    options: Options, config: str, overrides: Sequence[str]
) -> tuple[Prepared, Any, Any, float]:
    """(prepared run, its VAE on the device in eval mode, the test split on the device, the
    spec's memory budget in MiB) for a benchmark that scores test images; the seed set to 0."""
    prep = prepared(spec_from(config, overrides))
    torch.manual_seed(0)
    vae = prep.vae.to(options.device).eval()
    test = prep.bundle.split("test").to(options.device)
    return prep, vae, test, prep.spec.evaluate.memory_budget_mb


def prepared(spec: Spec) -> Prepared:
    """Data loaded, VAE built and checked, as ``pyro-vae train`` does. A data set that cannot be
    loaded (not installed, unreadable) raises Skip; any other spec error is a bug: it propagates."""
    from pyro_vae.prepared import prepare

    try:
        return prepare(spec)
    except SpecError as exc:
        if exc.key == "data":
            raise Skip(f"{spec.data.name}: {exc.message}") from None
        raise


def command_line() -> str:
    """How this process was started, as a user would type it."""
    module = sys.argv[0]
    name = Path(module).parent.name if Path(module).name == "__main__.py" else Path(module).stem
    package = "benchmarks" if name == "benchmarks" else f"benchmarks.{name}"
    return " ".join(["python -m", package, *sys.argv[1:]])


def plural(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless n = 1: "1 thread", "2 threads"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def describe(prep: Prepared, config: str, overrides: Sequence[str]) -> str:
    """One line: the config, its overrides, data size, networks, latent size, batch."""
    spec = prep.spec
    command = " ".join([f"`examples/configs/{config}`", *(f"`--set {o}`" for o in overrides)])
    enc = spec.encoder.params
    return (
        f"{command}: {spec.data.name}, {len(prep.bundle.train)} "
        f"training items of {prep.bundle.dim} values, {spec.encoder.name} hidden "
        f"{list(enc.get('hidden', []))} {enc.get('activation', '')}, latent {spec.latent_dim}, "
        f"{spec.likelihood.name} likelihood, batch {spec.train.batch_size}"
    )
