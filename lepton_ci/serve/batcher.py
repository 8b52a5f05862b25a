"""Runs the model for one worker process: adaptive batching, a bounded queue, and a thread for predict.

Why batch: a model call has a fixed cost (a RandomForest walks 50 trees whatever the row count), so 32
one-row requests answered by one predict of 32 rows cost little more than one of them. The batcher
takes the requests that are waiting (up to `max_batch_size` rows), waits at most `max_batch_wait_ms`
for more if the batch is not full, runs one predict, and hands each request its rows of the outputs.
While a batch runs, the next one forms: under load, batches fill without waiting at all.

Why a bounded queue: a server that queues without limit turns overload into unbounded latency and
memory. Beyond `max_queue` waiting requests a request is refused at once (503 and Retry-After), so the
accepted ones keep a bounded latency and the client can retry elsewhere.

Where predict runs: a batch whose model calls have been taking under INLINE_BELOW_S runs on the event
loop itself; a slower one in the model's thread. Handing a call to a thread costs a GIL hand-over each
way, and for a model whose predict is mostly Python (a scikit-learn forest walks its trees through
joblib) the two threads only take turns: measured on 2 cores, inline calls served 12% (RandomForest)
to 19% (LogisticRegression) more requests. A slow call would stall every connection if it ran on the
loop, so slow models (and the first calls, before their cost is known) use the thread, where the loop
keeps answering health checks while they work. Batched calls are made one at a time either way, so a
model need not be thread-safe to batch.

How long to wait for a batch to fill: while requests keep arriving, at most `max_batch_wait_ms`, and
never longer than one model call has been taking (a moving average), because waiting longer than a call
costs more than the call it would save. A fast model therefore hardly waits; an expensive one waits for
the clients that are on their way, and stops as soon as they stop coming.

Batching contract for a loader (`LoadedModel`): `supports_batching = True` means every input and output
has the batch on its first axis, predict on inputs concatenated along that axis returns outputs whose
first axis has one entry per input row, in order, and rows do not influence each other.
`thread_safe = True` allows unbatched calls from several threads at once.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from lepton_ci.serve.metrics import ServerMetrics
from lepton_ci.serve.options import ServeOptions

UNBATCHED_THREADS = 4  # concurrent predict calls for a thread-safe model that does not batch
INLINE_BELOW_S = 0.005  # batches whose calls take less than this run on the event loop (see above)


class Overloaded(Exception):
    """The queue is full: answer 503 with Retry-After."""


@dataclass
class _Pending:
    inputs: dict[str, Any]
    outputs: list[str] | None
    rows: int
    key: Any  # requests with equal keys can share a predict call
    future: asyncio.Future[dict[str, Any]]


def _batch_key(inputs: dict[str, Any], outputs: list[str] | None) -> tuple[Any, int] | None:
    """(key, rows) when the request can join a batch: every input at least 2-D with the same number of
    rows. 1-D inputs are left alone (scikit-learn reads a vector as one row, not as a batch)."""
    rows = -1
    parts = []
    for name in sorted(inputs):
        arr = inputs[name]
        if arr.ndim < 2 or arr.dtype.kind == "O":
            return None
        if rows < 0:
            rows = arr.shape[0]
        elif arr.shape[0] != rows:
            return None
        parts.append((name, arr.dtype.str, arr.shape[1:]))
    if rows <= 0:
        return None
    return (tuple(parts), tuple(outputs) if outputs else None), rows


class ModelRunner:
    """The model behind an async `infer`, batched or not, with a bounded queue."""

    def __init__(self, model: Any, options: ServeOptions, metrics: ServerMetrics) -> None:
        self.model = model
        self.metrics = metrics
        self.max_queue = options.max_queue
        self.max_rows = max(1, options.max_batch_size)
        self.wait_s = max(0.0, options.max_batch_wait_ms) / 1000.0
        supports = bool(getattr(model, "supports_batching", False))
        self.batching = supports if options.batching is None else (options.batching and supports)
        if self.batching and self.max_rows == 1:
            self.batching = False
        threads = 1 if self.batching or not getattr(model, "thread_safe", False) else UNBATCHED_THREADS
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="lepton-model")
        self._slots = asyncio.Semaphore(threads)
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._waiting = 0  # requests queued or running (the bound on memory and latency)
        self._wakeup = asyncio.Event()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cost: float | None = None  # moving average of a batch call's duration, in seconds

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self.batching and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._batch_loop(), name="lepton-batcher")

    async def stop(self) -> None:
        """After the server drained: every accepted request has its answer, so nothing is lost here."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(Overloaded("the server is stopping"))
        self._queue.clear()
        self._pool.shutdown(wait=True)

    @property
    def full(self) -> bool:
        return self._waiting >= self.max_queue

    def full_message(self) -> str:
        return f"{self._waiting} requests are waiting for the model (max_queue {self.max_queue}); retry later"

    # -- requests --------------------------------------------------------------------------------
    async def infer(self, inputs: dict[str, Any], outputs: list[str] | None) -> dict[str, Any]:
        if self.full:
            raise Overloaded(self.full_message())
        self._waiting += 1
        self.metrics.queued(self._waiting)
        try:
            keyed = _batch_key(inputs, outputs) if self.batching else None
            if keyed is None:
                return await self._call(inputs, outputs)
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._queue.append(_Pending(inputs, outputs, keyed[1], keyed[0], future))
            self._queued_rows += keyed[1]
            self._wakeup.set()
            self._arrived.set()
            return await future
        finally:
            self._waiting -= 1
            self.metrics.queued(self._waiting)

    async def _call(self, inputs: dict[str, Any], outputs: list[str] | None) -> dict[str, Any]:
        async with self._slots:
            self.metrics.batch(_rows(inputs))
            self.metrics.flush()
            loop = asyncio.get_running_loop()
            result: dict[str, Any] = await loop.run_in_executor(self._pool, self.model.predict, inputs, outputs)
            return result

    # -- the batcher -----------------------------------------------------------------------------
    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._gather(loop)
            batch = self._take()
            self.metrics.batch(sum(p.rows for p in batch))
            self.metrics.flush()
            started = time.perf_counter()
            try:
                if self._cost is not None and self._cost < INLINE_BELOW_S:
                    answers = self._run_batch(batch)
                else:
                    answers = await loop.run_in_executor(self._pool, self._run_batch, batch)
            except Exception as exc:  # noqa: BLE001 - _run_batch answers each request; this is a last resort
                answers = [exc] * len(batch)
            spent = time.perf_counter() - started
            self._cost = spent if self._cost is None else 0.8 * self._cost + 0.2 * spent
            for pending, answer in zip(batch, answers, strict=True):
                if pending.future.done():  # its client went away and the handler was cancelled
                    continue
                if isinstance(answer, BaseException):
                    pending.future.set_exception(answer)
                else:
                    pending.future.set_result(answer)

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for more rows while they keep coming: until the batch is full, `max_batch_wait_ms` or one
        call's cost has passed, or no request arrived for a quarter of a call's cost (the clients that
        were coming have come; waiting longer would only add latency)."""
        cost = self._cost if self._cost is not None else self.wait_s
        limit = min(self.wait_s, cost)
        if limit <= 0:
            return
        deadline = loop.time() + limit
        gap = max(cost / 4, 0.0001)
        while self._queued_rows < self.max_rows:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                async with asyncio.timeout(min(gap, left)):
                    await self._arrived.wait()
            except TimeoutError:
                return

    def _take(self) -> list[_Pending]:
        """The head of the queue and the requests after it that share its key, up to max_rows rows."""
        head = self._queue.popleft()
        batch, rows = [head], head.rows
        skipped: list[_Pending] = []
        while self._queue and rows < self.max_rows:
            nxt = self._queue[0]
            if nxt.key != head.key:
                if len(skipped) >= 8:  # do not scan a long queue of other shapes; they get their turn
                    break
                skipped.append(self._queue.popleft())
                continue
            if rows + nxt.rows > self.max_rows:
                break
            batch.append(self._queue.popleft())
            rows += nxt.rows
        self._queue.extendleft(reversed(skipped))
        self._queued_rows -= rows
        return batch

    def _run_batch(self, batch: list[_Pending]) -> list[dict[str, Any] | BaseException]:
        """In the model thread: one predict for the whole batch; if it fails, each request on its own, so
        one bad request cannot fail the others that happened to share its batch."""
        import numpy as np

        if len(batch) > 1:
            try:
                joined = {n: np.concatenate([p.inputs[n] for p in batch]) for n in batch[0].inputs}
                rows = sum(p.rows for p in batch)
                return list(_split(self.model.predict(joined, batch[0].outputs), [p.rows for p in batch], rows))
            except Exception:  # noqa: BLE001 - retried one by one below, where each gets its own error
                pass
        return [self._run_one(p) for p in batch]

    def _run_one(self, pending: _Pending) -> dict[str, Any] | BaseException:
        try:
            result: dict[str, Any] = self.model.predict(pending.inputs, pending.outputs)
            return result
        except Exception as exc:  # noqa: BLE001 - the request's handler turns it into 400 or 500
            return exc


def _rows(inputs: dict[str, Any]) -> int:
    for arr in inputs.values():
        return int(arr.shape[0]) if getattr(arr, "ndim", 0) >= 2 else 1
    return 1


def _split(result: dict[str, Any], counts: list[int], rows: int) -> list[dict[str, Any]]:
    """Each request's rows of every output; a model that breaks the batching contract is an error."""
    import numpy as np

    bounds = np.cumsum(counts)[:-1]
    per_output = {}
    for name, value in result.items():
        arr = np.asarray(value)
        if arr.ndim == 0 or arr.shape[0] != rows:
            raise ValueError(f"output {name!r} has shape {list(arr.shape)} for a batch of {rows} rows")
        per_output[name] = np.split(arr, bounds)
    return [{name: parts[i] for name, parts in per_output.items()} for i in range(len(counts))]
