"""Where a job's parallel units run. A heavy job body (activation caching, dashboards, the influence
gradient cache, a steering sweep, the training Jacobian's tangent chunks) splits its work into units
and hands them to `ctx.map_units(factory, units)`; the results come back in unit order, so the body
(the driver) commits them exactly as it would have computed them itself: into one scratch directory,
renamed into place with its manifest.

`factory()` makes a worker: it loads what every unit needs once (a model, an SAE) and returns a
function of one unit. In-process (`LocalFanout`, the default) the units run one after another in the
job's own thread with one worker; on Ray (`loupe.jobs.ray_fanout.RayFanout`, LOUPE_EXECUTOR=ray) they
run on a pool of actors, each of which calls `factory()` once. A factory and its units must pickle
(module-level classes holding paths and configs, never a database handle or a loaded model)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

U = TypeVar("U")
R = TypeVar("R")

WorkerFactory = Callable[[], Callable[[Any], Any]]


class Fanout(Protocol):
    name: str
    distributed: bool  # False: the units run in the caller's thread, one after another

    @property
    def workers(self) -> int: ...

    def map(
        self,
        factory: Callable[[], Callable[[U], R]],
        units: Sequence[U],
        check: Callable[[], None] = ...,
    ) -> Iterator[R]:
        """Each unit's result, in unit order. `check` is called between results (a job's
        `check_cancelled`); what it raises stops the units still running and propagates."""
        ...

    def shutdown(self) -> None: ...


def _nothing() -> None:
    return None


class LocalFanout:
    """The units one after another in this thread, one worker made for all of them."""

    name = "thread"
    distributed = False
    workers = 1

    def map(
        self,
        factory: Callable[[], Callable[[U], R]],
        units: Sequence[U],
        check: Callable[[], None] = _nothing,
    ) -> Iterator[R]:
        if not units:
            return
        fn = factory()
        for u in units:
            check()
            yield fn(u)

    def shutdown(self) -> None:
        return None


@dataclass(frozen=True)
class Units:
    """What a job body hands its units to: `map(factory, units)` gives their results in order;
    `workers` is how many run at once (1 in-process), for sizing the units."""

    map: Callable[[Callable[[], Callable[[Any], Any]], Sequence[Any]], Iterator[Any]]
    workers: int = 1
    distributed: bool = False

    def size(self, n: int, align: int = 1, per_worker: int = 4) -> int:
        """Items per unit for `n` items: one aligned batch in-process (progress as fine as before);
        about `per_worker` units per worker on a cluster (each unit costs a round trip)."""
        if not self.distributed:
            return align
        return unit_size(n, self.workers, align, per_worker)


def local_map(factory: Callable[[], Callable[[U], R]], units: Sequence[U]) -> Iterator[R]:
    return LocalFanout().map(factory, units)


LOCAL = Units(local_map)  # callers outside a job (benches, tests of one function)


def make_fanout(executor: str, ray_address: str = "", ray_workers: int = 0, object_store_mb: int = 80) -> Fanout:
    """The fan-out LOUPE_EXECUTOR names: "thread" (in-process) or "ray" (LOUPE_RAY_ADDRESS: empty for a
    local Ray on this machine's cores, "auto" or "ray://host:10001" to join a cluster)."""
    if executor == "ray":
        from loupe.jobs.ray_fanout import RayFanout  # deferred: ray is imported only where it is asked for

        return RayFanout(ray_address, workers=ray_workers, object_store_mb=object_store_mb)
    if executor in ("thread", "inline", "local"):
        return LocalFanout()
    raise ValueError(f"unknown executor {executor!r}: use thread or ray")


def blocks(n: int, size: int, align: int = 1) -> list[tuple[int, int]]:
    """[start, stop) ranges covering range(n), `size` long (rounded up to a multiple of `align`, so a
    block holds whole batches and a worker batches exactly as one pass over everything would)."""
    size = max(align, -(-max(size, 1) // align) * align)
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def unit_size(n: int, workers: int, align: int = 1, per_worker: int = 4, minimum: int = 1) -> int:
    """A unit size that gives each worker about `per_worker` units (at least `minimum` items, a
    multiple of `align`): enough units to balance and to resume from, few enough that the per-unit
    overhead stays small."""
    target = -(-n // max(1, workers * per_worker))
    return max(minimum, -(-target // align) * align)


__all__ = [
    "LOCAL",
    "Fanout",
    "LocalFanout",
    "Units",
    "WorkerFactory",
    "blocks",
    "local_map",
    "make_fanout",
    "unit_size",
]
