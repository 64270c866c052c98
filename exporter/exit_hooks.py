"""Finishing a run when the process ends: SIGTERM, interpreter exit, and an uncaught exception (FAILED)."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType

log = logging.getLogger("trainmon.exporter")

_unhandled_exception = threading.Event()
_excepthook_installed = False


class FinishOnExit:
    """Calls ``finish(status)`` once when the process is terminated (FAILED, then the previous SIGTERM handler or
    the default action) or exits (COMPLETED, or FAILED after an uncaught exception)."""

    def __init__(self, finish: Callable[[str], None], handle_signals: bool = True):
        self._finish = finish
        self._previous_sigterm: object = None
        self._sigterm_installed = False
        if handle_signals:
            self._install_sigterm()
        atexit.register(self._at_exit)
        _install_excepthook()

    def remove(self) -> None:
        """Undo every hook (the run finished by itself)."""
        self._uninstall_sigterm()
        atexit.unregister(self._at_exit)

    def _at_exit(self) -> None:
        self._finish("FAILED" if _unhandled_exception.is_set() else "COMPLETED")

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            self._previous_sigterm = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._on_sigterm)
            self._sigterm_installed = True
        except (ValueError, OSError) as error:
            log.debug("trainmon: no SIGTERM handler: %s", error)

    def _uninstall_sigterm(self) -> None:
        if not self._sigterm_installed or threading.current_thread() is not threading.main_thread():
            return
        self._sigterm_installed = False
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._previous_sigterm or signal.SIG_DFL)  # type: ignore[arg-type]

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous_sigterm
        self._finish("FAILED")
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:  # SIG_DFL or unknown: terminate as if we had never been there
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)


def _install_excepthook() -> None:
    """Remember an uncaught exception so that the exit-time finish marks the run FAILED."""
    global _excepthook_installed
    if _excepthook_installed:
        return
    _excepthook_installed = True
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
        _unhandled_exception.set()
        previous(kind, value, traceback)

    sys.excepthook = hook
