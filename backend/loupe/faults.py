"""Crash points for fault-injection tests. With `LOUPE_TEST_CRASH_AT=<point>` in its environment, a
process kills itself with SIGKILL when it reaches that point, as `kill -9` or a power cut would:
nothing is flushed, no handler runs. Unset (always, outside those tests), a crash point is one
environment lookup. Points: `step.end:<step name>` (a build step's body returned, its job not yet
marked done), `dashboards.commit:<sae_id>` (the dashboard files are in place, the rows not yet
committed), `units.<i>` (a job on Ray has unit i's result, not yet handed to the job body)."""

from __future__ import annotations

import os
import signal

ENV = "LOUPE_TEST_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
