"""What the commands print besides their results.

Results go to stdout. Progress bars, notices and warnings go to stderr, and only when stderr is a
terminal or the user asks for them (``--verbose``); errors always go to stderr. Lightning's
banners and its known-harmless warnings are never shown.
"""

from __future__ import annotations

import logging
import sys
import warnings

_asked = False  # --verbose


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
    for pattern in (".*exists and is not empty.*", ".*does not have many workers.*",
                    ".*LeafSpec.*", ".*litlogger.*", ".*Checkpoint directory.*"):
        warnings.filterwarnings("ignore", message=pattern)
    if not chatty():
        warnings.simplefilter("ignore")
