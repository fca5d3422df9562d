"""Work a stage does off its messages' way: a thread of its own, woken by requests.

Requests made while the job runs are coalesced into one more run: the job looks at what is due
when it runs (a set of conversations running low, say), not at what each request asked for. A job
that raises is logged and waits for the next request; the thread lives as long as the process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class BackgroundJob:
    def __init__(self, name: str, job: Callable[[], object]) -> None:
        self.name = name
        self._job = job
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.runs = 0

    def request(self) -> None:
        """Run the job soon on its thread (started on the first request, in the process that asks)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._forever, name=self.name, daemon=True)
                self._thread.start()
            self._idle.clear()
            self._wake.set()

    def wait_idle(self, timeout: float) -> bool:
        """Whether every request made so far has been run within `timeout` seconds."""
        return self._idle.wait(timeout)

    def _forever(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                self._job()
            except Exception:
                log.warning("%s failed; it runs again at the next request", self.name, exc_info=True)
            self.runs += 1
            with self._lock:
                if not self._wake.is_set():
                    self._idle.set()
