"""The demo worker in Python: the twin of `npm run worker:demo` (packages/client/src/demo-worker.ts).

    pip install ./sdk/python
    WORKER_TOKEN=... python3 sdk/python/examples/demo_worker.py

Environment:
  PROCESSES_URL  the server (default http://localhost:3000)
  WORKER_TOKEN   a worker token (`npm run cli -- create-worker-token --workspace ID`, or the one printed at first start)
  DEMO_TYPES     types to claim, comma-separated, or `*` for any (default csv_import,ai_location_import)

`csv_import` simulates importing `metadata.rows` rows (default 200) in ~10 s, failing at
`metadata.fail_at_row` when given (in every attempt, or in the first `metadata.fail_attempts` only);
`ai_location_import` matches `metadata.locations` locations (default 60) and asks for review (it runs in a
thread, as synchronous data code does); any other type runs ten generic steps. Every one honours cancel.
Prints one line per event.
"""
import asyncio
import datetime
import os
import signal
import sys
from typing import Any, Dict, Optional

try:
    import processes_worker  # noqa: F401
except ImportError:  # run from a checkout without `pip install ./sdk/python`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from processes_worker import JobContext, JobResult, SyncJobContext, WorkerAuthError, WorkerEvent, connect_worker, review

ROW_S = 0.05  # 200 rows ≈ 10 s: long enough to watch, cancel or restart the server
PROGRESS_EVERY_ROWS = 20


def say(line: str) -> None:
    print(f"{datetime.datetime.now(datetime.timezone.utc).strftime('%H:%M:%S.%f')[:12]} {line}", flush=True)


def positive_int(value: Any, fallback: float) -> Any:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else fallback


def report(process: Dict[str, Any], ctx: JobContext, percent: float, message: str) -> None:
    """Fire and forget: progress never raises, and the next one supersedes a dropped one."""
    say(f"#{process['id']} {round(percent)}% {message}")
    asyncio.ensure_future(ctx.progress(percent, message))


async def import_csv(process: Dict[str, Any], ctx: JobContext) -> Optional[Dict[str, Any]]:
    meta = process["metadata"]
    rows = positive_int(meta.get("rows"), 200)
    # `fail_attempts: 1` with `max_attempts: 3`: the first attempt fails, the retry completes.
    fail_attempts = positive_int(meta.get("fail_attempts"), float("inf"))
    fail_at_row = positive_int(meta.get("fail_at_row"), 0) if ctx.attempt <= fail_attempts else 0
    asyncio.ensure_future(ctx.log(f"Reading {rows} rows"))
    imported = skipped = 0
    for row in range(1, rows + 1):
        await asyncio.sleep(ROW_S)  # a cancel cancels this task here
        if row == fail_at_row:
            raise ValueError(f"Row {row}: unreadable postcode")
        # Every 23rd row is "invalid", so rows_skipped is not always 0.
        if row % 23 == 0:
            skipped += 1
        else:
            imported += 1
        if row % PROGRESS_EVERY_ROWS == 0 or row == rows:
            report(process, ctx, row / rows * 100, f"Imported {row}/{rows} rows")
    return {"rows_imported": imported, "rows_skipped": skipped}


def import_locations(process: Dict[str, Any], ctx: SyncJobContext) -> Optional[JobResult]:
    """Synchronous, as most data code is: runs in the worker's thread pool, reports with blocking calls."""
    locations = positive_int(process["metadata"].get("locations"), 60)
    matched = 0
    for location in range(1, locations + 1):
        if ctx.cancelled.wait(ROW_S * 2):  # sleeps, and wakes at once on cancel
            return None  # discarded: nothing is sent for a cancelled process
        if location % 7 != 0:
            matched += 1
        if location % 10 == 0 or location == locations:
            say(f"#{process['id']} {round(location / locations * 100)}% Matched {matched}/{locations} locations")
            ctx.progress(location / locations * 100, f"Matched {matched}/{locations} locations")
    # A draft for a human: the process waits in waiting_review for Approve / Discard.
    return review({"locations_matched": matched, "locations_unmatched": locations - matched})


async def run_steps(process: Dict[str, Any], ctx: JobContext) -> Dict[str, Any]:
    steps = 10
    for step in range(1, steps + 1):
        await asyncio.sleep(0.5)
        report(process, ctx, step / steps * 100, f"Step {step}/{steps}")
    return {"steps": steps}


async def handler(process: Dict[str, Any], ctx: JobContext) -> Any:
    if process["type"] == "csv_import":
        return await import_csv(process, ctx)
    if process["type"] == "ai_location_import":
        # Hand the blocking part to a thread, with a context whose calls block instead of awaiting.
        return await asyncio.get_running_loop().run_in_executor(None, import_locations, process, ctx.for_thread())
    return await run_steps(process, ctx)


def describe(event: WorkerEvent) -> str:
    p = event.process or {}
    if event.type == "connected":
        return f"connected as {event.worker_id}"
    if event.type == "disconnected":
        return f"disconnected ({event.close_code}), reconnecting in {round((event.reconnect_in_s or 0) * 1000)} ms"
    if event.type == "claimed":
        return f"#{p['id']} claimed {p['type']} (attempt {p['attempts']})"
    if event.type == "completed":
        return f"#{p['id']} {'waiting for review' if event.review else 'completed'}"
    if event.type == "failed":
        # With attempts left the server puts it back to pending (README: Queue): say so rather than "failed".
        attempts, most = p.get("attempts", 1), p.get("max_attempts", 1)
        if attempts < most:
            return f"#{p['id']} attempt {attempts} failed: {event.error}; will retry ({attempts + 1} of {most})"
        return f"#{p['id']} failed: {event.error}"
    if event.type == "cancelled":
        return f"#{p['id']} cancelled"
    if event.type == "lost":
        return f"#{p['id']} lost ({event.code}): another attempt owns it now"
    return f"stopped: {event.error}" if event.error else "stopped"


async def main() -> int:
    url = os.environ.get("PROCESSES_URL", "http://localhost:3000")
    token = os.environ.get("WORKER_TOKEN")
    if not token:
        print("WORKER_TOKEN is not set: create one with `npm run cli -- create-worker-token --workspace 1`", file=sys.stderr)
        return 1
    demo_types = os.environ.get("DEMO_TYPES", "csv_import,ai_location_import").strip()
    types = None if demo_types == "*" else [t.strip() for t in demo_types.split(",")]
    try:
        worker = await connect_worker(
            url, token, types=types, concurrency=2, handler=handler,
            on_event=lambda e: say(describe(e)), on_error=lambda e: say(f"error: {e}"),
        )
    except WorkerAuthError as error:
        say(f"stopped: {error}")  # a refused token (unknown, expired, revoked): retrying would not help
        return 1
    say(f"worker {worker.worker_id} → {url}, claiming {', '.join(types) if types else 'any type'}")

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: os._exit(1) if stopping.is_set() else stopping.set())  # twice: now
    waiting = asyncio.ensure_future(worker.wait())
    stop = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({waiting, stop}, return_when=asyncio.FIRST_COMPLETED)
    if stop.done():
        say("stopping: waiting up to 10 s for running jobs (Ctrl-C again to quit now)")
        await worker.close(timeout_s=10)
    try:
        await waiting
    except WorkerAuthError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
