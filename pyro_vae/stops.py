"""How training stops short of its end, as exceptions the commands map to exit statuses:
:class:`Diverged` (3) and :class:`Interrupted` (128 + the signal). Torch-free, so that a caller
can catch them without importing the training stack.
"""

from __future__ import annotations

import signal


class Diverged(RuntimeError):
    """Optimizer step ``step`` was refused (``reason``: a non-finite loss or gradient, or a
    blow-up); ``where``: the checkpoint to continue from and how."""

    def __init__(self, step: int, reason: str, where: str = "") -> None:
        self.step, self.reason = step, reason
        super().__init__(
            f"training diverged at step {step}: {reason}" + (f"; {where}" if where else "")
        )


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class Interrupted(BaseException):
    """Training stopped on signal ``signum`` after writing a checkpoint at optimizer step
    ``step`` (``None``: a second Ctrl-C stopped it at once, at its previous checkpoint);
    ``where``: what the run directory holds now. Exit status 128 + signum, as shells report a
    process the signal ended. A BaseException, like KeyboardInterrupt: no ``except Exception``
    swallows it."""

    def __init__(
        self, signum: int, step: int | None, where: str = "", during: str | None = None
    ) -> None:
        self.signum, self.step = signum, step
        name = signal_name(signum)
        what = (
            f"interrupted ({name}) during {during}"
            if during
            else f"stopped at once by a second {name}"
            if step is None
            else f"interrupted ({name}) after step {step}"
        )
        super().__init__(what + (f"; {where}" if where else ""))

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
