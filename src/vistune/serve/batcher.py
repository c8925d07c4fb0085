"""Micro-batching: concurrent requests share one forward pass.

Requests arrive one image at a time on the event loop. A single worker task takes the first
waiting request, then collects more until `max_batch_size` are gathered or `max_wait_ms` has
passed since the first, and runs the whole batch in one call on a worker thread (the model
call blocks; the event loop keeps accepting uploads meanwhile). While a batch runs, new
requests queue up and form the next batch, so under load batches fill without waiting.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class BatcherClosedError(RuntimeError):
    """Raised to a request submitted after shutdown began, or still queued when the
    shutdown grace period ran out (the server answers 503 with Retry-After)."""


class BatcherFullError(RuntimeError):
    """Raised to a request that finds `max_queue` requests already waiting (503)."""


@dataclass
class BatchStats:
    """Counters exposed on /healthz so a client (and the tests) can see batching happen."""

    batches: int = 0
    requests: int = 0
    max_batch_size_seen: int = 0
    sizes: collections.Counter[int] = field(default_factory=collections.Counter)

    def record(self, size: int) -> None:
        self.batches += 1
        self.requests += size
        self.max_batch_size_seen = max(self.max_batch_size_seen, size)
        self.sizes[size] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "requests": self.requests,
            "max_batch_size_seen": self.max_batch_size_seen,
            "mean_batch_size": self.requests / self.batches if self.batches else 0.0,
            "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())},
        }


@dataclass
class _Item(Generic[In, Out]):
    value: In
    future: asyncio.Future[Out]


_STOP = object()


class MicroBatcher(Generic[In, Out]):
    """Collect single requests into batches for `run_batch(list_of_inputs) -> list_of_outputs`.

    `run_batch` runs in a worker thread and must return one output per input, in order.
    If it raises, every request of that batch receives the exception.
    """

    def __init__(
        self,
        run_batch: Callable[[list[In]], Sequence[Out]],
        *,
        max_batch_size: int = 8,
        max_wait_ms: float = 10.0,
        max_queue: int | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_queue is not None and max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.run_batch = run_batch
        self.max_queue = max_queue
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._queue: asyncio.Queue[Any] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._draining = False
        self._cut_off = False  # the grace period is over: nothing more runs
        self._cutoff: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def draining(self) -> bool:
        return self._draining or self._closed

    def start(self) -> None:
        """Start the worker task on the running event loop."""
        if self._worker is not None:
            raise RuntimeError("MicroBatcher already started")
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._work(), name="vistune-micro-batcher")

    async def submit(self, value: In) -> Out:
        """Queue one input and wait for its output."""
        if self._closed or self._cut_off or self._queue is None:
            raise BatcherClosedError("the server is shutting down")
        if self.max_queue is not None and self._queue.qsize() >= self.max_queue:
            raise BatcherFullError(f"{self._queue.qsize()} requests are already waiting")
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(value, future))
        return await future

    def begin_drain(self, grace_s: float) -> None:
        """Shutdown step 1: `draining` turns true (the app refuses requests that arrive from
        now on), requests already being received or decoded may still join the queue, and
        the queue keeps running for `grace_s` seconds; then whatever is still queued fails
        with `BatcherClosedError` (503 with Retry-After), so every accepted request gets an
        answer before the server stops. The batch running at that moment finishes normally."""
        if self.draining:
            return
        self._draining = True
        loop = asyncio.get_running_loop()
        self._cutoff = loop.call_later(max(grace_s, 0.0), self._reject_queued)

    def _reject_queued(self) -> None:
        self._cut_off = True
        if self._queue is None:
            return
        kept = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is _STOP:
                kept.append(item)
            elif not item.future.done():
                item.future.set_exception(
                    BatcherClosedError(
                        "the server is shutting down and this request could not "
                        "run before the grace period ended"
                    )
                )
        for item in kept:
            self._queue.put_nowait(item)

    async def close(self) -> None:
        """Stop accepting requests, finish every queued one, then stop the worker."""
        if self._closed:
            return
        self._closed = True
        if self._cutoff is not None:
            self._cutoff.cancel()
        if self._queue is not None and self._worker is not None:
            self._queue.put_nowait(_STOP)
            await self._worker

    async def _work(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await queue.get()
            if first is _STOP:
                break
            batch: list[_Item[In, Out]] = [first]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch_size:
                item = await self._next(queue, deadline - loop.time())
                if item is None:
                    break
                if item is _STOP:
                    stopping = True  # run what we have, then leave: the queue is drained
                    break
                batch.append(item)
            await self._run(batch)

    @staticmethod
    async def _next(queue: asyncio.Queue[Any], timeout: float) -> Any:
        """The next queued item, waiting at most `timeout` seconds; None when none came."""
        try:
            if timeout <= 0:
                return queue.get_nowait()
            return await asyncio.wait_for(queue.get(), timeout)
        except (asyncio.QueueEmpty, asyncio.TimeoutError):
            return None

    async def _run(self, batch: list[_Item[In, Out]]) -> None:
        live = [item for item in batch if not item.future.done()]  # drop cancelled requests
        if not live:
            return
        self.stats.record(len(live))
        try:
            outputs = await asyncio.to_thread(self.run_batch, [item.value for item in live])
            if len(outputs) != len(live):
                raise RuntimeError(
                    f"run_batch returned {len(outputs)} outputs for {len(live)} inputs"
                )
        except Exception as exc:  # delivered to every waiting request, never swallowed
            for item in live:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        for item, output in zip(live, outputs, strict=True):
            if not item.future.done():
                item.future.set_result(output)
