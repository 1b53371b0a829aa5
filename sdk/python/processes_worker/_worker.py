"""The worker: claims over free slots, one job per claimed process, terminal frames kept until acked, close."""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import math
import threading
import traceback
import uuid
from typing import Any, Dict, List, Optional, Sequence, Set, Union

from ._api import (
    ConnectionLostError,
    Handler,
    JobResult,
    Json,
    OnError,
    OnEvent,
    Process,
    StopReason,
    WorkerAuthError,
    WorkerEvent,
    WorkerProtocolError,
)
from ._connection import REPLY_TIMEOUT_S, Connection, Frame, socket_url

log = logging.getLogger("processes_worker")

#: The codes by which the server says a process is no longer this worker's to report on.
LOSING_CODES = frozenset({"cancelled", "not_owner", "not_found", "invalid_transition"})
#: Beyond the protocol's codes, the server answers these when its database is down: worth retrying.
TRANSIENT_CODES = frozenset({"unavailable", "internal", "rate_limited"})
#: A refused claim (bad `types`, say) is retried this much later rather than in a tight loop.
CLAIM_ERROR_DELAY_S = 5.0
#: Failing the leftover jobs at close: how long to wait for those acks.
ABANDON_ACK_S = 2.0
MAX_ERROR_CHARS = 4000


def clamp_percent(percent: float) -> int:
    """Rounded half up and clamped to 0–100; not a number → 0."""
    try:
        value = float(percent)
    except (TypeError, ValueError):
        return 0
    if not math.isfinite(value):
        return 0
    return int(min(100, max(0, math.floor(value + 0.5))))


def error_text(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text[:MAX_ERROR_CHARS]


# The server keeps a fail's stack up to this many characters; cut here, the frame stays under 64 KiB.
MAX_STACK_CHARS = 8000


def failure_of(error: BaseException) -> Frame:
    """A handler's exception as the fail frame's fields: its message and its traceback."""
    frame: Frame = {"op": "fail", "error": error_text(error)}
    stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    if stack:
        frame["stack"] = stack[-MAX_STACK_CHARS:]
    return frame


def outcome_of(result: Any) -> Frame:
    """A handler's return value as the terminal frame's fields."""
    if result is None:
        return {"op": "complete"}
    if isinstance(result, JobResult):
        frame: Frame = {"op": "complete"}
        if result.result_summary is not None:
            frame["result_summary"] = result.result_summary
        if result.review:
            frame["review"] = True
        return frame
    if isinstance(result, dict):
        return {"op": "complete", "result_summary": result}
    return {"op": "fail", "error": f"handler returned {type(result).__name__}; expected a dict, a JobResult or None"}


class _Job:
    def __init__(self, worker: "Worker", process: Process) -> None:
        self.worker = worker
        self.process = process
        self.id = int(process["id"])
        self.attempt = int(process.get("attempts") or 0)
        self.stop_reason: Optional[StopReason] = None
        self.stop_code: Optional[str] = None
        self.task: Optional[asyncio.Future[Any]] = None
        self.async_cancelled = asyncio.Event()
        self.thread_cancelled = threading.Event()

    async def send(self, frame: Frame) -> bool:
        return await self.worker._send_for_job(self, frame)


class JobContext:
    """What an async handler gets. Every method returns True once the server accepted the frame, False when it
    was dropped (connection down) or refused; none raises, so a handler need not guard its reporting."""

    def __init__(self, job: _Job) -> None:
        self._job = job
        self.process: Process = job.process
        #: The fencing token sent with every frame: the process's `attempts` when claimed.
        self.attempt: int = job.attempt
        #: Set when the process is cancelled, when the server says this worker no longer holds it, or when
        #: close() gives up waiting. The handler's task is cancelled at the same moment (CancelledError).
        self.cancelled: asyncio.Event = job.async_cancelled

    @property
    def stop_reason(self) -> Optional[StopReason]:
        """Why the job was stopped: `cancelled`, `lost` (another attempt owns it) or `closing`; None while running."""
        return self._job.stop_reason

    def for_thread(self) -> "SyncJobContext":
        """This job's context for blocking code the handler runs in a thread itself
        (`await loop.run_in_executor(None, fn, process, ctx.for_thread())`)."""
        return SyncJobContext(self._job, asyncio.get_running_loop())

    async def progress(self, percent: float, message: Optional[str] = None) -> bool:
        """Live progress (rounded, clamped to 0–100): acked once accepted, shown to streams at once."""
        frame: Frame = {"op": "progress", "progress": clamp_percent(percent)}
        if message is not None:
            frame["message"] = message
        return await self._job.send(frame)

    async def log(self, message: str) -> bool:
        """Append an event to the process's log; True once committed."""
        return await self._job.send({"op": "log", "message": message})

    async def heartbeat(self) -> bool:
        """The worker sends these by itself while a handler runs; call it to say so sooner."""
        return await self._job.send({"op": "heartbeat"})

    async def output(self, chunk: Union[str, Json]) -> bool:
        """Append a chunk (text or JSON) of live output. Needs a server with the `output` op (live output):
        an older one refuses it with `invalid_message` (reported to on_error) and this returns False."""
        return await self._job.send({"op": "output", "chunk": chunk})

    async def update(self, result_summary: Optional[Dict[str, Any]] = None, message: Optional[str] = None) -> bool:
        """A JSON merge patch into `result_summary` while running (live state, like progress). Needs a server
        with the `update` op; an older one refuses it with `invalid_message` and this returns False."""
        frame: Frame = {"op": "update"}
        if result_summary is not None:
            frame["result_summary"] = result_summary
        if message is not None:
            frame["message"] = message
        return await self._job.send(frame)


class SyncJobContext:
    """What a synchronous handler (run in a thread) gets: the same methods as JobContext, blocking until the
    server answers. `cancelled` is a `threading.Event`: check `ctx.cancelled.is_set()` between steps."""

    def __init__(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        self._async = JobContext(job)
        self._loop = loop
        self.process: Process = job.process
        self.attempt: int = job.attempt
        self.cancelled: threading.Event = job.thread_cancelled

    @property
    def stop_reason(self) -> Optional[StopReason]:
        return self._async.stop_reason

    def _call(self, coroutine: Any) -> bool:
        try:
            return bool(asyncio.run_coroutine_threadsafe(coroutine, self._loop).result())
        except (RuntimeError, concurrent.futures.CancelledError):
            return False  # the loop is gone (closing)

    def progress(self, percent: float, message: Optional[str] = None) -> bool:
        return self._call(self._async.progress(percent, message))

    def log(self, message: str) -> bool:
        return self._call(self._async.log(message))

    def heartbeat(self) -> bool:
        return self._call(self._async.heartbeat())

    def output(self, chunk: Union[str, Json]) -> bool:
        return self._call(self._async.output(chunk))

    def update(self, result_summary: Optional[Dict[str, Any]] = None, message: Optional[str] = None) -> bool:
        return self._call(self._async.update(result_summary, message))


def is_async_handler(handler: Handler) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(getattr(handler, "__call__", None))


class Worker:
    """Made by connect_worker(). `close()` to stop; `wait()` to run until stopped."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        handler: Handler,
        types: Optional[Sequence[str]] = None,
        concurrency: int = 1,
        worker_id: Optional[str] = None,
        on_event: Optional[OnEvent] = None,
        on_error: Optional[OnError] = None,
        heartbeat_interval_s: float = 10.0,
        claim_wait_ms: int = 25_000,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
    ) -> None:
        if not callable(handler):
            raise TypeError("handler must be callable")
        self.worker_id = worker_id or f"worker-{uuid.uuid4()}"
        self.types: Optional[List[str]] = list(types) if types else None
        self.concurrency = max(1, int(concurrency))
        self._handler = handler
        self._async_handler = is_async_handler(handler)
        self._on_event = on_event
        self._on_error = on_error
        self._heartbeat_interval_s = heartbeat_interval_s
        self._claim_wait_ms = min(30_000, max(0, int(claim_wait_ms)))
        self._loop = asyncio.get_running_loop()
        self._jobs: Dict[int, _Job] = {}
        self._running: Set[asyncio.Task[None]] = set()
        self._busy = 0
        self._claiming = 0
        self._slot_changed = asyncio.Event()
        self._closing = False
        self._close_task: Optional[asyncio.Task[None]] = None
        self._stopped: asyncio.Future[Optional[WorkerAuthError]] = self._loop.create_future()
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._background: List[asyncio.Task[None]] = []
        self._conn = Connection(
            socket_url(url, token),
            self.worker_id,
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
            on_ready=self._ready,
            on_push=self._push,
            on_error=self._report,
            on_disconnected=lambda code, delay: self._emit(WorkerEvent("disconnected", close_code=code, reconnect_in_s=delay)),
            on_refused=self._refused,
        )

    # -- public ---------------------------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Jobs holding a slot now."""
        return self._busy

    async def close(self, timeout_s: Optional[float] = None) -> None:
        """Stop claiming, let running handlers finish (up to `timeout_s`; default no limit), then close the
        socket. Handlers still running after `timeout_s` are stopped (reason `closing`) and their processes
        failed with "worker shut down before the job finished", so another worker can retry them. A thread
        cannot be stopped from outside: a synchronous handler sees `ctx.cancelled` set, and the interpreter
        exits once it returns."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._shut_down(timeout_s))
        await asyncio.shield(self._close_task)

    async def wait(self) -> None:
        """Returns when the worker has stopped (after close()); raises WorkerAuthError when the server refused
        its token (unknown, expired or revoked): the worker then stops retrying."""
        error = await asyncio.shield(self._stopped)
        if error is not None:
            raise error

    async def __aenter__(self) -> "Worker":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- lifecycle ------------------------------------------------------------------------------------------

    def _start(self) -> None:
        self._conn.start()
        self._background.append(asyncio.create_task(self._claim_loop()))
        self._background.append(asyncio.create_task(self._heartbeat_loop()))

    async def _first_attempt(self) -> Optional[WorkerAuthError]:
        return await asyncio.shield(self._conn.first_attempt)

    def _refused(self, error: WorkerAuthError) -> None:
        self._report(error)
        self._settle_stopped(error)
        asyncio.ensure_future(self.close(timeout_s=0))

    def _settle_stopped(self, error: Optional[WorkerAuthError]) -> None:
        if self._stopped.done():
            return
        self._emit(WorkerEvent("stopped", error=str(error) if error else None, code=error.code if error else None))
        self._stopped.set_result(error)

    async def _shut_down(self, timeout_s: Optional[float]) -> None:
        self._closing = True
        self._slot_changed.set()
        drained = True
        if timeout_s is None:
            await self._drain()
        else:
            try:
                await asyncio.wait_for(self._drain(), max(0.0, timeout_s))
            except asyncio.TimeoutError:
                drained = False
        if not drained:
            await self._abandon_jobs()
        await self._conn.close()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        self._settle_stopped(None)

    async def _drain(self) -> None:
        # A loop: a claim answered during close starts one more job.
        while self._running:
            await asyncio.wait(set(self._running))

    async def _abandon_jobs(self) -> None:
        error = "worker shut down before the job finished"

        async def fail(job: _Job) -> None:
            self._stop_job(job, "closing", "closing")
            frame = {"op": "fail", "process_id": job.id, "attempt": job.attempt, "error": error}
            try:
                await self._conn.request(frame)
                self._emit(WorkerEvent("failed", process=job.process, error=error))
            except Exception:
                pass  # not connected: the server's lease timeout will fail it

        failures = [asyncio.ensure_future(fail(job)) for job in list(self._jobs.values())]
        if failures:
            await asyncio.wait(failures, timeout=ABANDON_ACK_S)

    # -- claims ---------------------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        """Keeps every free slot covered by a claim in flight: one claim for all the slots free at once."""
        while not self._closing:
            await self._conn.when_ready()
            if self._closing or self._conn.closed:
                return
            self._slot_changed.clear()
            free = self.concurrency - self._busy - self._claiming
            if free > 0:
                self._track(self._claim_into(free), counted=False)
            await self._slot_changed.wait()

    def _notify_slots(self) -> None:
        self._slot_changed.set()

    async def _claim_into(self, slots: int) -> None:
        self._claiming += slots
        try:
            # A process claimed while closing is still ours: run it rather than leave it leased.
            for process in await self._claim(slots):
                self._launch(process)
        finally:
            self._claiming -= slots
            self._notify_slots()

    async def _claim(self, slots: int) -> List[Process]:
        frame: Frame = {"op": "claim", "wait_ms": self._claim_wait_ms}
        if self.types:
            frame["types"] = self.types
        if slots > 1:
            frame["max"] = slots
        try:
            reply = await self._conn.request(frame, timeout_s=self._claim_wait_ms / 1000 + REPLY_TIMEOUT_S)
        except WorkerProtocolError as error:
            self._report(error)
            await self._sleep_unless_closing(CLAIM_ERROR_DELAY_S)
            return []
        except ConnectionLostError:
            return []  # the loop waits for the next connection
        if reply.get("op") != "claimed":
            return []
        # `processes` from a server with batch claims; `process` alone from an older one.
        if isinstance(reply.get("processes"), list):
            return list(reply["processes"])
        return [reply["process"]] if reply.get("process") else []

    async def _sleep_unless_closing(self, seconds: float) -> None:
        deadline = self._loop.time() + seconds
        while not self._closing and self._loop.time() < deadline:
            await asyncio.sleep(min(0.2, deadline - self._loop.time()))

    # -- jobs -----------------------------------------------------------------------------------------------

    def _track(self, coroutine: Any, counted: bool = True) -> None:
        task = asyncio.ensure_future(coroutine)
        if counted:
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        else:
            self._background.append(task)
            task.add_done_callback(self._forget_background)

    def _forget_background(self, task: "asyncio.Future[Any]") -> None:
        if task in self._background:
            self._background.remove(task)  # type: ignore[arg-type]

    def _launch(self, process: Process) -> None:
        """Runs a claimed process in a slot; the processes its final frame claimed take the slot next."""
        self._busy += 1

        async def slot() -> None:
            try:
                following = await self._run_job(process)
            finally:
                self._busy -= 1
            for next_process in following:
                self._launch(next_process)
            self._notify_slots()

        self._track(slot())

    async def _run_job(self, process: Process) -> List[Process]:
        job = _Job(self, process)
        self._jobs[job.id] = job
        self._emit(WorkerEvent("claimed", process=process))
        try:
            outcome = await self._invoke(job)
        finally:
            self._jobs.pop(job.id, None)
        if job.stop_reason is not None:
            if job.stop_reason == "cancelled":
                self._emit(WorkerEvent("cancelled", process=process))
            elif job.stop_reason == "lost":
                self._emit(WorkerEvent("lost", process=process, code=job.stop_code or "not_owner"))
            return []  # 'closing': _abandon_jobs failed it
        return await self._finish(job, outcome)

    async def _invoke(self, job: _Job) -> Frame:
        if self._async_handler:
            task: asyncio.Future[Any] = asyncio.ensure_future(self._handler(job.process, JobContext(job)))
        else:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(self.concurrency, thread_name_prefix="processes-worker")
            task = self._loop.run_in_executor(self._executor, self._handler, job.process, SyncJobContext(job, self._loop))
        job.task = task
        # Waited on, not awaited: cancelling the handler's task must not cancel this one.
        await asyncio.wait({task})
        if task.cancelled():
            return {"op": "fail", "error": "cancelled"}
        error = task.exception()
        if error is not None:
            return failure_of(error)
        result = task.result()
        if inspect.isawaitable(result):
            # A sync-looking callable that returned a coroutine (a lambda around an async function, say).
            inner = asyncio.ensure_future(result)
            job.task = inner
            await asyncio.wait({inner})
            if inner.cancelled():
                return {"op": "fail", "error": "cancelled"}
            if inner.exception() is not None:
                return failure_of(inner.exception())  # type: ignore[arg-type]
            result = inner.result()
        return outcome_of(result)

    async def _finish(self, job: _Job, outcome: Frame) -> List[Process]:
        """The terminal frame, kept across reconnects until the server answers, and re-sent while the server
        says its database is unavailable. Its ack carries the slot's next process (claim-next)."""
        frame: Frame = {**outcome, "process_id": job.id, "attempt": job.attempt}
        if not self._closing:
            frame["claim"] = {"max": 1, "wait_ms": 0, **({"types": self.types} if self.types else {})}
        refusals = 0
        while True:
            try:
                ack = await self._conn.request(frame, retry=True)
            except ConnectionLostError:
                return []  # closed for good meanwhile
            except WorkerProtocolError as error:
                if error.code in TRANSIENT_CODES:
                    self._report(error)
                    await asyncio.sleep(min(30.0, 2**refusals))
                    refusals += 1
                    continue
                # A result the server will not take (over 64 KiB, say) must not leave the process running.
                if frame["op"] == "complete" and error.code == "invalid_message":
                    return await self._finish(job, {"op": "fail", "error": f"result refused: {error.message}"[:MAX_ERROR_CHARS]})
                if error.code == "cancelled":
                    self._emit(WorkerEvent("cancelled", process=job.process))
                else:
                    self._emit(WorkerEvent("lost", process=job.process, code=error.code))
                return []
            if frame["op"] == "complete":
                self._emit(WorkerEvent("completed", process=job.process, review=bool(frame.get("review"))))
            else:
                self._emit(WorkerEvent("failed", process=job.process, error=frame["error"]))
            following = ack.get("processes")
            return list(following) if isinstance(following, list) else []

    async def _send_for_job(self, job: _Job, frame: Frame) -> bool:
        """progress/heartbeat/log/output/update: best effort; an answer that we lost the job stops it."""
        if job.stop_reason is not None or job.id not in self._jobs:
            return False
        try:
            await self._conn.request({**frame, "process_id": job.id, "attempt": job.attempt})
            return True
        except WorkerProtocolError as error:
            if error.code in LOSING_CODES:
                self._stop_job(job, "cancelled" if error.code == "cancelled" else "lost", error.code)
            else:
                self._report(error)
            return False
        except ConnectionLostError:
            return False

    def _stop_job(self, job: _Job, reason: StopReason, code: str) -> None:
        if job.stop_reason is not None:
            return
        job.stop_reason = reason
        job.stop_code = code
        job.async_cancelled.set()
        job.thread_cancelled.set()
        if job.task is not None and self._async_handler:
            job.task.cancel()

    def _push(self, frame: Frame) -> None:
        if frame.get("op") == "cancel":
            try:
                job = self._jobs.get(int(frame.get("process_id")))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return
            # The server also says `cancel` when the lease sweep failed the process (`status: failed`).
            status = frame.get("status")
            cancelled = status is None or status == "cancelled"
            if job is not None:
                self._stop_job(job, "cancelled" if cancelled else "lost", "cancelled" if cancelled else str(status))
        elif frame.get("op") == "error":
            self._report(WorkerProtocolError(str(frame.get("code", "error")), str(frame.get("message", ""))))

    # -- heartbeats -----------------------------------------------------------------------------------------

    def _ready(self) -> None:
        self._emit(WorkerEvent("connected", worker_id=self.worker_id))
        # After a reconnect: tell the server at once we are alive, and learn of cancels we missed.
        self._heartbeat_all()
        self._notify_slots()

    def _heartbeat_all(self) -> None:
        for job in list(self._jobs.values()):
            asyncio.ensure_future(job.send({"op": "heartbeat"}))

    async def _heartbeat_loop(self) -> None:
        while not self._conn.closed:
            await asyncio.sleep(self._heartbeat_interval_s)
            if self._conn.is_ready:
                self._heartbeat_all()

    # -- reporting ------------------------------------------------------------------------------------------

    def _emit(self, event: WorkerEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:  # noqa: BLE001
            log.exception("processes_worker: on_event raised")

    def _report(self, error: BaseException) -> None:
        if self._on_error is None:
            log.warning("processes_worker: %s", error)
            return
        try:
            self._on_error(error)
        except Exception:  # noqa: BLE001
            log.exception("processes_worker: on_error raised")


async def connect_worker(
    url: str,
    token: str,
    *,
    handler: Handler,
    types: Optional[Sequence[str]] = None,
    concurrency: int = 1,
    worker_id: Optional[str] = None,
    on_event: Optional[OnEvent] = None,
    on_error: Optional[OnError] = None,
    heartbeat_interval_s: float = 10.0,
    claim_wait_ms: int = 25_000,
    reconnect_min_s: float = 0.5,
    reconnect_max_s: float = 30.0,
) -> Worker:
    """Start a worker and return it once its first connection attempt has settled.

    `url`: the server's base URL (http/https/ws/wss) or the full `…/workers/ws` URL. Raises WorkerAuthError
    at once when the server refuses the token; a server that is down is retried in the background (with
    backoff, reported to `on_error`). `handler(process, ctx)`: an `async def` gets a JobContext; a plain
    function runs in a thread pool of `concurrency` threads and gets a SyncJobContext. Return a dict
    (the `result_summary`), a JobResult (`review=True` for a human's review), or None to complete; raise
    to fail the process with the exception's message.
    """
    worker = Worker(
        url,
        token,
        handler=handler,
        types=types,
        concurrency=concurrency,
        worker_id=worker_id,
        on_event=on_event,
        on_error=on_error,
        heartbeat_interval_s=heartbeat_interval_s,
        claim_wait_ms=claim_wait_ms,
        reconnect_min_s=reconnect_min_s,
        reconnect_max_s=reconnect_max_s,
    )
    worker._start()
    refusal = await worker._first_attempt()
    if refusal is not None:
        await worker.close(timeout_s=0)
        raise refusal
    return worker
