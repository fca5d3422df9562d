"""When a transfer run waits for the gateways' next flush to join it (pure: the clock is passed in).

Every run costs the stack about the same whatever it carries: a task message, a seq allocation and
commit round trip, a push task, a persist hand-off. At a steady rate the gateways flush every few
tens of milliseconds and each flush is one run; a busy run that waits for the next flush halves the
runs, and its first flush's messages reach their recipients up to a flush's gap later. A run waits
only when flushes come close together (the next is due within the wait) and it is busy enough that
its cost per message matters; a quiet stream, or senders waiting for their acks before sending
again (no flush comes until the run is long over), are never held back.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FlushPace:
    """The gap between the last two gateway flushes this worker saw (seconds; None: not yet known)."""

    last_seen: float | None = None
    gap: float | None = None

    def seen(self, now: float) -> None:
        """A gateway flush (one or more shard batches taken together) reached this worker at `now`."""
        if self.last_seen is not None:
            self.gap = now - self.last_seen
        self.last_seen = now

    def linger(self, messages: int, behind: bool, longest: float, min_messages: int) -> float:
        """How long a run of `messages` waits for the next flush: `longest` when flushes come at most
        that far apart and the run holds at least `min_messages`; 0 when it was behind (batches
        were waiting: the next flush is not late, this worker is) or the stream is quiet."""
        if behind or longest <= 0 or messages < min_messages or self.gap is None:
            return 0.0
        return longest if self.gap <= longest else 0.0

    def next_due(self) -> float | None:
        """When the next flush should arrive, at the last gap's pace."""
        if self.last_seen is None or self.gap is None:
            return None
        return self.last_seen + self.gap
