"""The process memory readings that `loupe build` prints per step."""

from __future__ import annotations

import mmap

from loupe.jobs.memory import peak_mb, reset_peak, rss_mb


def test_the_peak_sees_a_freed_allocation_and_resets():
    assert reset_peak()
    base = rss_mb()
    assert base is not None and base > 0
    # fresh anonymous pages, written: resident for sure (freed malloc memory may be reused instead)
    m = mmap.mmap(-1, 40 << 20)
    m.write(b"\1" * (40 << 20))
    m.close()
    peak = peak_mb()
    assert peak is not None and peak >= base + 35
    assert reset_peak()
    after = peak_mb()
    assert after is not None and after < peak - 30
