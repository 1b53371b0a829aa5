"""The Python worker the bun tests drive (tests/sdk-python/worker.test.ts): one scenario per argv[1].

Env: PROCESSES_URL, WORKER_TOKEN, TYPE. Prints one JSON object per line on stdout (events and findings), so
the test can wait for them; reads commands from stdin where a scenario needs the test's timing.
"""
import asyncio
import json
import os
import sys
from typing import Any, Dict

from processes_worker import WorkerAuthError, WorkerEvent, WorkerProtocolError, connect_worker, review

URL = os.environ["PROCESSES_URL"]
TOKEN = os.environ["WORKER_TOKEN"]
TYPE = os.environ.get("TYPE", "py_job")


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def on_event(event: WorkerEvent) -> None:
    process = event.process or {}
    say(event=event.type, id=process.get("id"), attempt=process.get("attempts"), code=event.code, error=event.error, review=event.review, close_code=event.close_code)


async def stdin_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def claims() -> None:
    """Three at once; `n` picks the outcome: complete with a result, fail, review; n=3 runs in a thread."""

    async def handler(process: Dict[str, Any], ctx: Any) -> Any:
        n = process["metadata"]["n"]
        await ctx.progress(50, f"job {n}")
        await asyncio.sleep(0.05)
        if n == 1:
            raise ValueError("row 3 is unreadable")
        if n == 2:
            return review({"drafts": 4})
        return {"n": n, "attempt": ctx.attempt}

    def sync_handler(process: Dict[str, Any], ctx: Any) -> Any:
        ctx.progress(40, "in a thread")
        return {"n": process["metadata"]["n"], "sync": True}

    async_worker = await connect_worker(URL, TOKEN, types=[TYPE], concurrency=3, handler=handler, on_event=on_event, heartbeat_interval_s=0.3)
    sync_worker = await connect_worker(URL, TOKEN, types=[TYPE + "_sync"], concurrency=2, handler=sync_handler, on_event=on_event, heartbeat_interval_s=0.3)
    say(ready=True)
    await stdin_line()
    await asyncio.gather(async_worker.close(), sync_worker.close())
    say(closed=True)


async def progress() -> None:
    async def handler(process: Dict[str, Any], ctx: Any) -> Any:
        for step in range(1, 6):
            await asyncio.sleep(0.15)
            accepted = await ctx.progress(step * 20 - 10, f"step {step}")
            say(progress=step * 20 - 10, accepted=accepted)
        return {"steps": 5}

    worker = await connect_worker(URL, TOKEN, types=[TYPE], handler=handler, on_event=on_event, heartbeat_interval_s=0.3)
    say(ready=True)
    await stdin_line()
    await worker.close()


async def cancel() -> None:
    async def handler(process: Dict[str, Any], ctx: Any) -> Any:
        await ctx.progress(10, "waiting to be cancelled")
        say(running=process["id"])
        try:
            await asyncio.sleep(20)
        except asyncio.CancelledError:
            say(handler_cancelled=True, event_set=ctx.cancelled.is_set(), reason=ctx.stop_reason)
            raise
        return {"not": "reached"}

    worker = await connect_worker(URL, TOKEN, types=[TYPE], handler=handler, on_event=on_event, heartbeat_interval_s=0.3)
    say(ready=True)
    await stdin_line()
    await worker.close()


async def fence() -> None:
    """Attempt 1 goes silent (no heartbeats) past JOB_TIMEOUT_MS; attempt 2 completes; then a late frame of
    attempt 1, sent as the SDK would have sent it, is refused."""
    finished = asyncio.Event()
    ids: Dict[str, int] = {}

    async def handler(process: Dict[str, Any], ctx: Any) -> Any:
        ids["id"] = process["id"]
        if ctx.attempt == 1:
            say(silent=True)
            await asyncio.sleep(20)  # cancelled by the server's `cancel` once the sweep takes the process away
        return {"attempt": ctx.attempt}

    def events(event: WorkerEvent) -> None:
        on_event(event)
        if event.type == "completed":
            finished.set()

    worker = await connect_worker(URL, TOKEN, types=[TYPE], handler=handler, on_event=events, heartbeat_interval_s=60)
    say(ready=True)
    await asyncio.wait_for(finished.wait(), 15)
    late = {"op": "complete", "process_id": ids["id"], "attempt": 1, "result_summary": {"late": True}}
    try:
        await worker._conn.request(late)  # the SDK's own send path, as attempt 1 would have used it
        say(late="ack")
    except WorkerProtocolError as error:
        say(late=error.code)
    await worker.close()


async def restart() -> None:
    """Progress, then wait (the test stops the server), finish while it is down, and complete after it is back."""

    async def handler(process: Dict[str, Any], ctx: Any) -> Any:
        await ctx.progress(30, "before the restart")
        say(waiting=process["id"])
        await stdin_line()
        accepted = await ctx.progress(60, "while the server is down")
        say(progress_while_down=accepted)
        return {"survived": True}

    finished = asyncio.Event()

    def events(event: WorkerEvent) -> None:
        on_event(event)
        if event.type == "completed":
            finished.set()

    worker = await connect_worker(
        URL, TOKEN, types=[TYPE], handler=handler, on_event=events, worker_id=os.environ["WORKER_ID"], reconnect_min_s=0.1, reconnect_max_s=0.5
    )
    say(ready=True)
    await finished.wait()  # the handler reads stdin first ("finish"); then the test says "close"
    await stdin_line()
    await worker.close()


async def refused() -> None:
    try:
        await connect_worker(URL, "not-a-worker-token", handler=lambda p, c: None, on_error=lambda e: None)
        say(refused=False)
    except WorkerAuthError as error:
        say(refused=True, status=error.status, code=error.code, message=str(error))


async def revoked() -> None:
    """Connected, then the token is revoked: the server closes the socket, the reconnect is refused, and
    worker.wait() raises WorkerAuthError."""
    worker = await connect_worker(URL, TOKEN, types=[TYPE], handler=lambda p, c: None, on_event=on_event, on_error=lambda e: None, reconnect_min_s=0.05)
    say(ready=True)
    try:
        await asyncio.wait_for(worker.wait(), 10)
        say(stopped="closed")
    except WorkerAuthError as error:
        say(stopped="refused", status=error.status, code=error.code)


async def output() -> None:
    """`ctx.output` / `ctx.update` against this server: accepted where it has the ops, refused (False) where not."""

    async def handler(process: Dict[str, Any], ctx: Any) -> Any:
        say(output=await ctx.output("a line"), update=await ctx.update({"rows": 1}))
        return None

    errors: list = []
    worker = await connect_worker(URL, TOKEN, types=[TYPE], handler=handler, on_event=on_event, on_error=errors.append, heartbeat_interval_s=0.3)
    say(ready=True)
    await stdin_line()
    say(errors=[getattr(e, "code", str(e)) for e in errors])
    await worker.close()


if __name__ == "__main__":
    asyncio.run(globals()[sys.argv[1]]())
