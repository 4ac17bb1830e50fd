"""The time cap of a ``rnnlab-bench`` model row (the models mode, :mod:`rnnlab.bench.models`, says how a row
uses it): SIGALRM interrupts Python code when the cap passes, a step that would end past it is not started, and a
row stops repeating once it has used ``REPEAT_SHARE`` of it.
"""

from __future__ import annotations

import signal
import threading
import time

REPEAT_SHARE = 0.5  # a row starts no more repeats once it has used this share of its time cap


class RowTimeout(BaseException):
    """A row ran past its time cap. A BaseException, so that no ``except Exception`` on the way (Hydra's
    instantiate, a model's own handlers) turns it into an error."""


class TimeCap:
    """A row's limit of ``seconds`` of wall time (None: none), entered as a context manager.

    While entered, SIGALRM raises :class:`RowTimeout` when the cap passes (main thread only; elsewhere only the
    checks below apply); the handler and timer in place before are restored on exit. ``check(seconds)`` raises it
    at once when work expected to take ``seconds`` would end past the cap. ``repeats_done`` says that the row has
    used ``repeat_seconds`` (default: ``REPEAT_SHARE`` of the cap), after which it starts no more repeats.
    """

    def __init__(self, seconds: float | None, repeat_seconds: float | None = None):
        self.seconds = seconds
        self.repeat_seconds = REPEAT_SHARE * seconds if repeat_seconds is None and seconds else repeat_seconds
        self.start = time.perf_counter()

    def used(self) -> float:
        return time.perf_counter() - self.start

    def repeats_done(self) -> bool:
        return self.repeat_seconds is not None and self.used() > self.repeat_seconds

    def check(self, seconds: float) -> None:
        if self.seconds is not None and self.used() + seconds > self.seconds:
            raise RowTimeout(self.message(f"the next step would end past it at about {self.used() + seconds:.1f} s"))

    def message(self, detail: str) -> str:
        return f"ran past the {self.seconds:g} s time cap ({detail})"

    def _expire(self, signum, frame) -> None:
        raise RowTimeout(self.message(f"stopped at {self.used():.1f} s"))

    def __enter__(self) -> TimeCap:
        self.start = time.perf_counter()
        self._armed = (
            self.seconds is not None
            and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
        )
        if self._armed:
            self._previous_handler = signal.signal(signal.SIGALRM, self._expire)
            self._previous_timer = signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc_info) -> None:
        if not self._armed:
            return
        try:  # nested, so that an alarm arriving right here still restores the previous handler
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, self._previous_handler)
            delay, interval = self._previous_timer
            if delay:  # an outer timer, less the time this row took
                signal.setitimer(signal.ITIMER_REAL, max(delay - self.used(), 1e-3), interval)
