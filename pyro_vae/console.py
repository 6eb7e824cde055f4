"""What the commands print besides their results.

Results go to stdout. Progress bars, notices and warnings go to stderr, and only when stderr is a
terminal or the user asks for them (``--verbose``); errors always go to stderr. Lightning's
banners and its known-harmless warnings are never shown.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_asked = False  # --verbose
_noted: set[str] = set()  # each note once per process (a resume reads its checkpoint twice)


def chatty() -> bool:
    """Whether progress bars, notices and warnings are shown."""
    return _asked or sys.stderr.isatty()


def configure(verbose: bool) -> None:
    """Set ``--verbose`` and filter what stderr gets (call inside ``warnings.catch_warnings``)."""
    global _asked
    _asked = verbose
    quiet()


def quiet() -> None:
    """Keep Lightning's banners and known-harmless warnings off stderr (after Lightning's import,
    which sets its own log level), and every warning when :func:`chatty` is false."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for pattern in (
        ".*exists and is not empty.*",
        ".*does not have many workers.*",
        ".*LeafSpec.*",
        ".*litlogger.*",
        ".*Checkpoint directory.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)
    if not chatty():
        warnings.simplefilter("ignore")


@contextmanager
def quieted() -> Iterator[None]:
    """:func:`quiet` inside the block only: the warning filters and Lightning's log levels are
    restored after it, so the Python API is as quiet as the command line and changes nothing
    global."""
    names = ("lightning.pytorch", "lightning.fabric", "lightning")
    levels = {name: logging.getLogger(name).level for name in names}
    with warnings.catch_warnings():
        quiet()
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def progress_bar(*args: Any, **kwargs: Any) -> Any:
    """A tqdm bar (arguments as tqdm's): the notebook widget of ``tqdm.auto`` where ipywidgets is
    installed, else the text bar. Imported in a Jupyter kernel without ipywidgets, ``tqdm.auto``
    warns "IProgress not found" into the cell, shown or not; Lightning chooses the same way."""
    from importlib.util import find_spec

    if find_spec("ipywidgets") is None:
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm(*args, **kwargs)


def release() -> str:
    """pyro-vae's version: the installed distribution's, else (a source tree that is not
    installed) the one pyproject.toml beside the package states."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyro-vae")
    except PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        text = pyproject.read_text(encoding="utf-8") if pyproject.is_file() else ""
        found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
        return found.group(1) if found else "(version unknown)"


class ShowVersion(argparse.Action):
    """``--version``: prints ``pyro-vae X.Y.Z`` (:func:`release`, looked up only then, so that
    building the parser costs nothing) and exits 0."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str = argparse.SUPPRESS,
        default: str = argparse.SUPPRESS,
        help: str = "print the version and exit",
    ):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(f"pyro-vae {release()}")
        parser.exit()


def notice(text: str) -> None:
    """One ``pyro-vae: note:`` line on stderr where notices are shown (:func:`chatty`), by rank 0
    of a multi-process run only, once per process."""
    if text in _noted:
        return
    _noted.add(text)
    if chatty() and os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0":
        print(f"pyro-vae: note: {text}", file=sys.stderr)


def crash_log(command: str, argv: Sequence[str]) -> Path | None:
    """Write the traceback being handled, with the command line and versions, to a new file in
    ``$XDG_CACHE_HOME/pyro-vae/logs`` (default ``~/.cache``), else in the temp directory; its
    path, or None when neither can be written."""
    import platform
    import tempfile
    import time
    import traceback

    from pyro_vae.atomic import write_text_atomic
    from pyro_vae.cache import cache_dir

    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = (
        f"pyro-vae {release()}, Python {platform.python_version()}, "
        f"{platform.platform()}\ncommand: {command}; argv: {list(argv)!r}\n\n"
        f"{traceback.format_exc()}"
    )
    for folder in (cache_dir() / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(folder / name, text)
            return folder / name
        except OSError:
            continue
    return None
