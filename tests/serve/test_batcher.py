"""The micro-batcher on its own: batch limits, waiting, errors, draining on shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from vistune.serve.batcher import BatcherClosedError, MicroBatcher


class Recorder:
    """A run_batch that records the batches it saw and doubles its inputs."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay_s = delay_s
        self.threads: set[int] = set()

    def __call__(self, values: list[int]) -> list[int]:
        self.threads.add(threading.get_ident())
        self.batches.append(list(values))
        time.sleep(self.delay_s)
        return [2 * v for v in values]


def test_concurrent_requests_form_batches_up_to_the_limit() -> None:
    recorder = Recorder(delay_s=0.02)

    async def main() -> list[int]:
        batcher = MicroBatcher(recorder, max_batch_size=4, max_wait_ms=100)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        await batcher.close()
        assert batcher.stats.requests == 10
        assert batcher.stats.batches == len(recorder.batches)
        return list(results)

    assert asyncio.run(main()) == [2 * i for i in range(10)]
    assert [len(b) for b in recorder.batches] == [4, 4, 2]
    assert sorted(v for b in recorder.batches for v in b) == list(range(10))
    assert threading.get_ident() not in recorder.threads  # the model runs off the event loop


def test_a_lone_request_waits_at_most_max_wait() -> None:
    recorder = Recorder()

    async def main() -> float:
        batcher = MicroBatcher(recorder, max_batch_size=8, max_wait_ms=30)
        batcher.start()
        started = time.perf_counter()
        assert await batcher.submit(5) == 10
        elapsed = time.perf_counter() - started
        await batcher.close()
        return elapsed

    elapsed = asyncio.run(main())
    assert 0.025 <= elapsed < 1.0
    assert recorder.batches == [[5]]


def test_batch_size_one_never_batches() -> None:
    recorder = Recorder()

    async def main() -> None:
        batcher = MicroBatcher(recorder, max_batch_size=1, max_wait_ms=50)
        batcher.start()
        await asyncio.gather(*(batcher.submit(i) for i in range(5)))
        await batcher.close()

    asyncio.run(main())
    assert [len(b) for b in recorder.batches] == [1] * 5


def test_errors_reach_every_request_of_the_batch_and_the_worker_survives() -> None:
    def flaky(values: list[int]) -> list[int]:
        if 13 in values:
            raise ValueError("unlucky batch")
        return values

    async def main() -> None:
        batcher = MicroBatcher(flaky, max_batch_size=4, max_wait_ms=50)
        batcher.start()
        results = await asyncio.gather(
            *(batcher.submit(v) for v in (1, 13, 2)), return_exceptions=True
        )
        assert all(isinstance(r, ValueError) for r in results)
        assert await batcher.submit(7) == 7  # next batch works
        await batcher.close()

    asyncio.run(main())


def test_wrong_number_of_outputs_is_an_error_not_a_hang() -> None:
    async def main() -> None:
        batcher = MicroBatcher(lambda values: values[:1], max_batch_size=4, max_wait_ms=50)
        batcher.start()
        results = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        await batcher.close()

    asyncio.run(main())


def test_close_drains_queued_requests_then_refuses_new_ones() -> None:
    recorder = Recorder(delay_s=0.05)

    async def main() -> None:
        batcher = MicroBatcher(recorder, max_batch_size=2, max_wait_ms=0)
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(7)]
        await asyncio.sleep(0)  # all seven are queued
        await batcher.close()
        assert [p.result() for p in pending] == [2 * i for i in range(7)]
        with pytest.raises(BatcherClosedError):
            await batcher.submit(1)

    asyncio.run(main())
    assert sum(len(b) for b in recorder.batches) == 7


def test_cancelled_requests_are_skipped() -> None:
    recorder = Recorder(delay_s=0.05)

    async def main() -> None:
        batcher = MicroBatcher(recorder, max_batch_size=1, max_wait_ms=0)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(1))
        gone = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0.01)  # the first batch is running, the second waits in the queue
        gone.cancel()
        assert await first == 2
        await batcher.close()

    asyncio.run(main())
    assert recorder.batches == [[1]]


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(lambda v: v, max_batch_size=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        MicroBatcher(lambda v: v, max_wait_ms=-1)
