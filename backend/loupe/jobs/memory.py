"""This process's resident memory from /proc (Linux): now, and the peak since the last reset.

Writing 5 to /proc/self/clear_refs resets the peak (VmHWM), so a build run one step at a time can
report each step's own peak. Elsewhere (no /proc) the functions answer None."""

from __future__ import annotations

from pathlib import Path

_STATUS = Path("/proc/self/status")


def status_mb(field: str) -> float | None:
    """A memory line of /proc/self/status in MB: VmRSS (now) or VmHWM (the peak)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Start a new peak window; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_mb() -> float | None:
    return status_mb("VmRSS")


def peak_mb() -> float | None:
    return status_mb("VmHWM")
