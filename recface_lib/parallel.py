"""Process-parallel map with one expensive object per worker (a detector, an embedder).

``parallel_map(factory, kwargs, 'method', chunks, workers)`` builds ``factory(**kwargs)`` once in
each worker process and returns ``[getattr(obj, method)(chunk) for chunk in chunks]`` in order.
With ``workers <= 1`` it runs in this process (no pickling, no start-up cost). Workers use the
'spawn' start method (safe with torch/TF threads) and one compute thread each."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterator, Sequence

_OBJ: Any = None


def _init(factory: Callable, kwargs: dict, threads: int) -> None:
    global _OBJ
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["RECFACE_NO_PROGRESS"] = "1"
    try:
        import cv2
        cv2.setNumThreads(threads)
    except ImportError:  # pragma: no cover
        pass
    _OBJ = factory(**kwargs)
    # torch only where the object uses it (MTCNN): importing it costs a worker a second or two of
    # start-up that a fast detector (YuNet) or an onnxruntime embedder never earns back
    import sys
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _call(method: str, chunk):
    return getattr(_OBJ, method)(chunk)


def parallel_map(factory: Callable, kwargs: dict, method: str, chunks: Sequence, workers: int = 1,
                 threads_per_worker: int = 1, on_result: Callable[[Any], None] | None = None) -> Iterator:
    """Yield results in chunk order; ``chunks`` is read as results come back (at most four chunks
    per worker in flight), so a generator of chunks is never held whole in memory."""
    if workers <= 1:
        obj = factory(**kwargs)
        for c in chunks:
            r = getattr(obj, method)(c)
            if on_result:
                on_result(r)
            yield r
        return
    import multiprocessing as mp

    ex = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_init, initargs=(factory, kwargs, threads_per_worker))
    try:  # a bounded window of chunks in flight: ``chunks`` may be a generator made as it is consumed
        from collections import deque

        pending, it = deque(), iter(chunks)
        for c in it:
            pending.append(ex.submit(_call, method, c))
            if len(pending) >= 4 * workers:
                break
        while pending:
            r = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(ex.submit(_call, method, nxt))
            if on_result:
                on_result(r)
            yield r
    finally:  # an error (or a consumer that stops early) cancels what has not started
        ex.shutdown(wait=True, cancel_futures=True)


def usable_cores() -> int:
    """The cores recface may use: ``$RECFACE_CORES`` where set (a share of a machine: the test
    suite's workers, a shared server), else those this process may run on (its CPU affinity; a
    container's cpuset); at least 1."""
    env = os.environ.get("RECFACE_CORES", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover (not Linux)
        return max(1, os.cpu_count() or 1)


SMALL_JOB = 256  # items: below this, ``workers: 0`` runs in this process (a worker's start-up costs more)


def resolve_workers(workers: int, items: int | None = None) -> int:
    """``workers`` as given; 0 means the usable cores, or 1 for a job of fewer than SMALL_JOB items."""
    if int(workers) > 0:
        return int(workers)
    return 1 if items is not None and items < SMALL_JOB else usable_cores()


def chunked(items: Sequence, size: int) -> list:
    return [items[i:i + size] for i in range(0, len(items), max(1, size))]


def iter_chunks(items, size: int):
    """``chunked`` for an iterable, lazily: lists of ``size`` items as they come."""
    block = []
    for it in items:
        block.append(it)
        if len(block) >= max(1, size):
            yield block
            block = []
    if block:
        yield block
