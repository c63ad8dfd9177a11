"""Run many independent simulations in parallel: in this process, in local worker processes, or on Ray.

Every worker calls a picklable ``setup()`` once (building its env, loading its data) and keeps the
result, its *state*; work is a picklable ``task(state, item)`` mapped over items, and results come
back in item order whatever the backend. Used for adaptation likelihoods now and for EPOpt rollouts
and sweeps later::

    with open_executor(EnvSetup("s2r/DClawTurnFixed-v0"), ExecutorConfig(workers=2)) as ex:
        stats = ex.map(run_episode, [EpisodeRequest(seed=s) for s in range(100)])

Local workers are started with ``forkserver`` (``spawn`` where that is missing): forking a process
that has MuJoCo or torch threads running is unsafe. As with any non-fork start, a script that makes
local workers must keep its top-level code under ``if __name__ == "__main__":``. Ray is an optional
extra (``s2r[ray]``).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from s2r.core.errors import ParameterError, UserError
from s2r.core.extras import require

S = TypeVar("S")
S_co = TypeVar("S_co", covariant=True)
T = TypeVar("T")
R = TypeVar("R")

CHUNKS_PER_WORKER = 4
"""Items are sent in about this many chunks per worker: fewer round trips, still some load balancing."""
PRELOAD_MODULES = ("numpy", "gymnasium", "mujoco", "sim", "sim.env", "randomization.parallel")
"""Imported once in the forkserver so that each worker forks with them already loaded."""


@dataclass(frozen=True)
class ExecutorConfig:
    """Where parallel work runs."""

    workers: int = 1
    """Worker count: local processes (1 runs everything in this process), or Ray actors with ``ray``."""
    ray: str | None = None
    """``None`` for local workers; ``"auto"`` for the Ray cluster this machine belongs to, or a cluster address."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise UserError(f"workers must be at least 1, got {self.workers}")
        if self.ray is not None and not self.ray.strip():
            raise ParameterError("ray", "must be 'auto' or a cluster address")


class Executor(Protocol[S_co]):
    """Maps ``task(state, item)`` over items on workers that each hold their own ``state``."""

    @property
    def workers(self) -> int:
        """How many workers run tasks at once."""
        ...

    def map(self, task: Callable[[S_co, T], R], items: Sequence[T]) -> list[R]:
        """``[task(state, item) for item in items]``, in item order."""
        ...

    def close(self) -> None:
        """Stop the workers."""
        ...


def _chunks(items: Sequence[T], n_chunks: int) -> list[list[T]]:
    """Contiguous chunks of nearly equal size, in order."""
    n = max(1, min(n_chunks, len(items)))
    size = math.ceil(len(items) / n)
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


class SerialExecutor(Generic[S]):
    """Everything in this process, on one state: the reference the parallel backends must match."""

    def __init__(self, setup: Callable[[], S]) -> None:
        self.state = setup()

    @property
    def workers(self) -> int:
        return 1

    def map(self, task: Callable[[S, T], R], items: Sequence[T]) -> list[R]:
        return [task(self.state, item) for item in items]

    def close(self) -> None:
        close = getattr(self.state, "close", None)
        if callable(close):
            close()


# Per-process state of a local worker; set once by the pool initializer.
_WORKER_STATE: Any = None


def _init_worker(setup: Callable[[], Any]) -> None:
    global _WORKER_STATE
    _WORKER_STATE = setup()


def _run_chunk(task: Callable[[Any, Any], Any], chunk: list[Any]) -> list[Any]:
    return [task(_WORKER_STATE, item) for item in chunk]


def _mp_context() -> mp.context.BaseContext:
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(list(PRELOAD_MODULES))
        return ctx
    return mp.get_context("spawn")


class ProcessExecutor(Generic[S]):
    """``workers`` local processes, each with its own state built by ``setup``."""

    def __init__(self, setup: Callable[[], S], workers: int) -> None:
        self._n = workers
        self._pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=_mp_context(), initializer=_init_worker, initargs=(setup,)
        )

    @property
    def workers(self) -> int:
        return self._n

    def map(self, task: Callable[[S, T], R], items: Sequence[T]) -> list[R]:
        try:
            futures = [self._pool.submit(_run_chunk, task, c) for c in _chunks(items, CHUNKS_PER_WORKER * self._n)]
            return [r for f in futures for r in f.result()]
        except BrokenProcessPool:
            raise ParameterError(
                "workers", f"{self._n}: a local worker process stopped unexpectedly (its setup failed, it "
                "crashed or ran out of memory, or it was started from a script without an "
                "'if __name__ == \"__main__\":' guard or from stdin); run with one worker ({workers}=1) to see the "
                "error in this process"
            ) from None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class _RayWorker:
    """A Ray actor holding one state."""

    def __init__(self, setup: Callable[[], Any]) -> None:
        self.state = setup()

    def run_chunk(self, task: Callable[[Any, Any], Any], chunk: list[Any]) -> list[Any]:
        return [task(self.state, item) for item in chunk]


class RayExecutor(Generic[S]):
    """``workers`` Ray actors (one CPU each) on the cluster at ``address`` (``"auto"``: this machine's)."""

    def __init__(self, setup: Callable[[], S], workers: int, address: str) -> None:
        require("ray", extra="ray", purpose="running simulations on a Ray cluster (--ray)")
        import ray

        self._ray = ray
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UserError(f"cannot connect to a Ray cluster at {address!r}: {exc}; start one with "
                                "'ray start --head' or give its address") from None
        actor: Any = ray.remote(num_cpus=1)(_RayWorker)
        self._actors: list[Any] = [actor.remote(setup) for _ in range(workers)]

    @property
    def workers(self) -> int:
        return len(self._actors)

    def map(self, task: Callable[[S, T], R], items: Sequence[T]) -> list[R]:
        chunks = _chunks(items, CHUNKS_PER_WORKER * len(self._actors))
        refs = [self._actors[i % len(self._actors)].run_chunk.remote(task, c) for i, c in enumerate(chunks)]
        return [r for chunk in self._ray.get(refs) for r in chunk]

    def close(self) -> None:
        for a in self._actors:
            self._ray.kill(a)
        self._actors = []
        if self._owns_connection:
            self._ray.shutdown()


def make_executor(setup: Callable[[], S], config: ExecutorConfig) -> Executor[S]:
    """The backend ``config`` asks for; ``setup`` must be picklable unless everything runs in this process."""
    if config.ray is not None:
        return RayExecutor(setup, config.workers, config.ray)
    if config.workers == 1:
        return SerialExecutor(setup)
    return ProcessExecutor(setup, config.workers)


@contextmanager
def open_executor(setup: Callable[[], S], config: ExecutorConfig) -> Iterator[Executor[S]]:
    """:func:`make_executor` as a context manager that stops the workers on exit."""
    ex = make_executor(setup, config)
    try:
        yield ex
    finally:
        ex.close()


# --- episode rollouts: the unit of work of EPOpt, sweeps and the scaling benchmark ---------------
@dataclass(frozen=True)
class EnvSetup:
    """Builds one simulated env per worker."""

    env_id: str
    """Gymnasium id (or short task name)."""
    engine: str = "mujoco"
    """Physics engine."""

    def __call__(self) -> Any:
        from randomization.simlogs import make_env

        return make_env(self.env_id, self.engine)


@dataclass(frozen=True)
class EpisodeRequest:
    """One episode to roll out with seeded uniform random actions."""

    seed: int
    """Seed of the reset and of the actions."""
    params: Mapping[str, float] = field(default_factory=dict)
    """Parameter values for this episode (others nominal)."""


@dataclass(frozen=True)
class EpisodeStats:
    """What one rolled-out episode gave."""

    steps: int
    """Control steps taken."""
    episode_return: float
    """Sum of rewards."""
    success: bool
    """The task's success at the end."""
    cpu_seconds: float
    """CPU time the worker spent on the episode (s); against wall time it shows how much CPU a worker got."""


def run_random_episode(env: Any, request: EpisodeRequest) -> EpisodeStats:
    """Roll one episode out in a worker's env with seeded random actions, parameters applied from nominal."""
    cpu_start = time.process_time()
    env.params.reset()
    env.params.set_many(request.params)
    rng = np.random.default_rng(request.seed)
    _, info = env.reset(seed=request.seed)
    total, steps, success = 0.0, 0, bool(info["success"])
    while True:
        _, reward, terminated, truncated, info = env.step(rng.uniform(-1.0, 1.0, env.action_space.shape))
        total += float(reward)
        steps += 1
        success = bool(info["success"])
        if terminated or truncated:
            return EpisodeStats(steps, total, success, time.process_time() - cpu_start)
