"""A job's units on Ray (LOUPE_EXECUTOR=ray): a pool of actors, each a Ray worker process that makes a
unit's worker (`factory()`: loads the model, the SAE) once per job and keeps it for that job's units.

The job body stays the driver: it hands the units out (at most two in flight per actor, so an actor
never idles between units), takes the results back in unit order and commits them as a local run
would. Faults: an actor that dies is restarted (`max_restarts`) and the units it held are retried
on it (`max_task_retries`); each unit is a pure function of its inputs, so a retried unit gives the
same bytes. Cancellation: the job's `check_cancelled` runs between results (at most `POLL` s apart);
when it raises, the queued units are cancelled (`ray.cancel`) and the pool's actors killed, which
stops the units they are running (Ray cannot interrupt a running task of a synchronous actor), and a
new pool is made for the next job.

LOUPE_RAY_ADDRESS empty: a Ray started here for this process (num_cpus = the machine's cores, a small
object store, no dashboard); "auto" or "ray://host:10001": join that cluster (`ray start --head`)."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import ray

from loupe.faults import crash_point

log = logging.getLogger("loupe.jobs")

U = TypeVar("U")
R = TypeVar("R")

POLL = 0.2  # seconds between cancellation checks while units run
IN_FLIGHT = 2  # units queued per actor
MAX_RESTARTS = 3  # per actor, over the pool's life
MAX_TASK_RETRIES = 3  # per unit, when its actor dies under it
CONNECT_TRIES = 30  # 2 s apart: joining a cluster whose head is still starting


class _Worker:
    """The actor: a Ray worker process that keeps one job's worker (made by its factory) at a time."""

    def __init__(self) -> None:
        self._token: str | None = None
        self._fn: Callable[[Any], Any] | None = None

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        """The Ray node this actor lives on (which machine of a cluster)."""
        return str(ray.get_runtime_context().get_node_id())

    def run(self, token: str, factory: Callable[[], Callable[[Any], Any]], unit: Any) -> Any:
        if self._token != token or self._fn is None:
            self._fn = None  # the last job's model goes before this job's loads
            self._fn = factory()
            self._token = token
        return self._fn(unit)


def _init_options(address: str, object_store_mb: int, cpus: int = 0) -> dict[str, Any]:
    if address:
        return {"address": address, "ignore_reinit_error": True, "log_to_driver": False}
    return {
        # "local": a new Ray for this process, never one that `ray start` left running on this machine
        # (which ray.init() without an address would join)
        "address": "local",
        "num_cpus": cpus or os.cpu_count() or 1,
        "object_store_memory": object_store_mb * 1024 * 1024,
        "include_dashboard": False,
        "ignore_reinit_error": True,
        "log_to_driver": False,
        # the workers import loupe from where this process does (an editable install, or a checkout)
        "runtime_env": {"env_vars": {"PYTHONPATH": os.pathsep.join(_import_roots())}},
    }


def _import_roots() -> list[str]:
    import loupe  # where this package was imported from, for the workers' path

    # the package's root, and the working directory (where tests' modules import from)
    roots = [os.path.dirname(os.path.dirname(os.path.abspath(loupe.__file__))), os.getcwd()]
    extra = os.environ.get("PYTHONPATH", "")
    return roots + [p for p in extra.split(os.pathsep) if p]


class RayFanout:
    name = "ray"
    distributed = True

    def __init__(self, address: str = "", workers: int = 0, object_store_mb: int = 80, cpus: int = 0):
        """`cpus`: the CPUs a local Ray advertises (0: this machine's cores); each actor takes one."""
        self.address = address
        self.cpus = cpus
        self.object_store_mb = object_store_mb
        self.requested_workers = workers
        self._lock = threading.Lock()
        self._busy = threading.Lock()  # held by the job whose units are on the pool
        self._actors: list[Any] = []
        self._connected = False

    # -- the cluster and the pool ---------------------------------------------------------------
    def _connect(self) -> None:
        if ray.is_initialized():
            return
        opts = _init_options(self.address, self.object_store_mb, self.cpus)
        for attempt in range(CONNECT_TRIES):
            try:
                ray.init(**opts)
                break
            except ConnectionError:  # a head that is still starting (docker compose starts them together)
                if not self.address or attempt + 1 == CONNECT_TRIES:
                    raise
                log.warning("no Ray head at %s yet; retrying", self.address)
                time.sleep(2)
        self._connected = True

    @property
    def workers(self) -> int:
        """Actors in the pool: LOUPE_RAY_WORKERS, else one per CPU the cluster has."""
        if self.requested_workers > 0:
            return self.requested_workers
        self._connect()
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def actors(self) -> list[Any]:
        """The pool (made on first use; a cancel or a shutdown empties it)."""
        with self._lock:
            self._connect()
            if not self._actors:
                cls = ray.remote(_Worker).options(
                    num_cpus=1, max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES
                )
                self._actors = [cls.remote() for _ in range(self.workers)]
            return list(self._actors)

    def _kill_pool(self, actors: list[Any]) -> None:
        with self._lock:
            if self._actors == actors:
                self._actors = []
        for a in actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already dead
                log.debug("actor already gone", exc_info=True)

    # -- the units -------------------------------------------------------------------------------
    def map(
        self,
        factory: Callable[[], Callable[[U], R]],
        units: Sequence[U],
        check: Callable[[], None] = lambda: None,
    ) -> Iterator[R]:
        if not units:
            return
        # one job at a time on the pool: a cancel kills the pool's actors, which must not take another
        # job's units with them (and two jobs' workers would load in turns on the same actors)
        while not self._busy.acquire(timeout=POLL):
            check()
        try:
            yield from self._map(factory, units, check)
        finally:
            self._busy.release()

    def _map(
        self,
        factory: Callable[[], Callable[[U], R]],
        units: Sequence[U],
        check: Callable[[], None],
    ) -> Iterator[R]:
        actors = self.actors()
        token = uuid.uuid4().hex
        fref = ray.put(factory)
        todo = list(range(len(units)))[::-1]  # popped from the end: unit order
        owner: dict[Any, tuple[int, int]] = {}  # ref -> (unit, actor)
        load = [0] * len(actors)
        results: dict[int, Any] = {}
        nxt = 0
        finished = False
        try:
            while nxt < len(units):
                for a in range(len(actors)):
                    while todo and load[a] < IN_FLIGHT:
                        i = todo.pop()
                        owner[actors[a].run.remote(token, fref, units[i])] = (i, a)
                        load[a] += 1
                ready, _ = ray.wait(list(owner), num_returns=1, timeout=POLL)
                for ref in ready:
                    i, a = owner.pop(ref)
                    load[a] -= 1
                    results[i] = ray.get(ref)  # a unit's exception is raised here, as Ray's RayTaskError(cause)
                while nxt in results:
                    check()
                    # every unit is back once the last is: nothing left to stop if the caller stops here
                    finished = nxt == len(units) - 1
                    crash_point(f"units.{nxt}")  # a driver killed mid-job (tests/api/test_ray_executor.py)
                    yield results.pop(nxt)
                    nxt += 1
                if nxt < len(units):
                    check()
        finally:
            if not finished:  # cancelled, failed, or the caller stopped: nothing of this job runs on
                for ref in owner:
                    ray.cancel(ref)
                self._kill_pool(actors)

    def shutdown(self) -> None:
        with self._lock:
            actors, self._actors = self._actors, []
        for a in actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                log.debug("actor already gone", exc_info=True)
        if self._connected and ray.is_initialized():
            ray.shutdown()  # a local Ray stops; a joined cluster goes on, this driver leaves it
            self._connected = False
