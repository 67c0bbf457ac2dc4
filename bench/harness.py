"""What the benches that drive a live server share: a Loupe server in its own process on a built workspace
(as `loupe serve` runs it, without background jobs, so the clients' threads do not share its interpreter
lock), a free loopback port, and latency percentiles."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

# argv: workspace, port, world, then whatever `args` the caller adds
SERVER = """
import sys, uvicorn
from loupe.app import create_app
from loupe.settings import Settings
uvicorn.run(create_app(Settings(workspace=sys.argv[1], world=sys.argv[3]), background=False), host="127.0.0.1",
            port=int(sys.argv[2]), log_level="warning")
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(
    ws: Path, world: str, code: str = SERVER, args: Sequence[str] = (), start_s: float = 180
) -> Iterator[tuple[str, subprocess.Popen]]:
    """(base URL, process) of `code` serving `ws` once /api/health answers; terminated on exit."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", code, str(ws), str(port), world, *args])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_s
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/health", timeout=10) as r:
                    r.read()
                break
            except OSError:
                assert proc.poll() is None, f"server exited with {proc.returncode}"
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(30)


def latency_stats(ms: Sequence[float]) -> dict:
    ms = sorted(ms)
    return {
        "requests": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1),
        "max_ms": round(ms[-1], 1),
    }
