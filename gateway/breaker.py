"""A circuit breaker per upstream, per worker process.

Closed: requests flow, consecutive failures are counted. After `failures` of them in
a row the breaker opens: for `open_seconds` requests are answered 503 at once,
without touching the upstream (a struggling service gets room to recover, and
clients a fast answer). Then it is half-open: one probe request goes through; its
success closes the breaker, its failure opens it again. State lives in each gunicorn
worker, so each worker learns of an outage from its own traffic.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class BreakerOpen(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"circuit open; retry after {retry_after} s")
        self.retry_after = retry_after


class CircuitBreaker:
    def __init__(
        self,
        failures: int,
        open_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State], None] | None = None,
    ) -> None:
        self.threshold = failures
        self.open_seconds = open_seconds
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> State:
        with self._lock:
            if self._state == "open" and self._clock() - self._opened_at >= self.open_seconds:
                return "half_open"
            return self._state

    def refusing(self) -> BreakerOpen | None:
        """BreakerOpen while the breaker refuses every call (open, no probe due yet),
        without taking the probe: a caller can answer at once, before it does work of
        its own (reading a request body) that would be wasted."""
        if self.threshold <= 0:
            return None
        with self._lock:
            waited = self._clock() - self._opened_at
            if self._state == "open" and waited < self.open_seconds:
                return BreakerOpen(max(1, math.ceil(self.open_seconds - waited)))
            return None

    def before_call(self) -> None:
        """Raise BreakerOpen unless this call may go to the upstream."""
        if self.threshold <= 0:
            return
        with self._lock:
            if self._state == "closed":
                return
            waited = self._clock() - self._opened_at
            if self._state == "open" and waited >= self.open_seconds:
                self._set("half_open")
            if self._state == "half_open" and not self._probing:
                self._probing = True  # this call is the one probe
                return
            raise BreakerOpen(max(1, math.ceil(self.open_seconds - waited)))

    def succeeded(self) -> None:
        if self.threshold <= 0:
            return
        with self._lock:
            self._failures = 0
            self._probing = False
            if self._state != "closed":
                self._set("closed")

    def abandoned(self) -> None:
        """The call ended without telling anything about the upstream (the client's
        fault, our own pool): a probe slot is freed, no count changes."""
        if self.threshold <= 0:
            return
        with self._lock:
            self._probing = False

    def failed(self) -> None:
        if self.threshold <= 0:
            return
        with self._lock:
            self._failures += 1
            reopen = self._state == "half_open"
            self._probing = False
            if reopen or (self._state == "closed" and self._failures >= self.threshold):
                self._opened_at = self._clock()
                self._set("open")

    def _set(self, state: State) -> None:
        previous, self._state = self._state, state
        if self._on_change is not None and (previous == "closed") != (state == "closed"):
            self._on_change(state)
