"""Per-consumer token buckets: a sustained rate and a burst; a refused request learns when to come back."""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    """``rate_per_minute`` sustained and ``burst`` at once, per consumer name (one process, in memory)."""

    def __init__(self, rate_per_minute: float, burst: int) -> None:
        self.rate, self.burst = rate_per_minute / 60.0, float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, name: str) -> int | None:
        """Spend one token of ``name``: None when granted, else the whole seconds until one is back (≥ 1)."""
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(name, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[name] = (tokens - 1.0, now)
                return None
            self._buckets[name] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / self.rate))
