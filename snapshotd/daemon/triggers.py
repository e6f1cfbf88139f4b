"""An interval trigger whose jitter does not accumulate.

APScheduler 3's IntervalTrigger computes the next fire time from the previous
one *with its jitter*, so on average each interval lasts every + jitter/2 and a
tree registered at 5 s with 0.5 s of jitter gets one round in 21 too few. Here
fire times stay on the grid start + k * interval, each moved later by its own
random jitter: the rate is exactly one round per interval."""
from __future__ import annotations

import random
from datetime import datetime
from math import ceil, floor

from apscheduler.triggers.interval import IntervalTrigger


class SteadyIntervalTrigger(IntervalTrigger):
    def get_next_fire_time(self, previous_fire_time, now):
        start, step = self.start_date.timestamp(), self.interval_length
        if previous_fire_time:
            # grid point of the previous run (its jitter, < step, removed), then the next one
            k = floor((previous_fire_time.timestamp() - start) / step + 1e-9)
            nxt = start + (k + 1) * step
        elif self.start_date > now:
            nxt = start
        else:
            nxt = start + step * ceil((now.timestamp() - start) / step)
        if self.jitter:
            nxt += random.uniform(0, min(self.jitter, step * 0.9))
        if not self.end_date or nxt <= self.end_date.timestamp():
            return datetime.fromtimestamp(nxt, tz=self.timezone)
        return None

    def __str__(self):
        return "steady " + super().__str__()
