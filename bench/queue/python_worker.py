"""bench queue's Python worker (bench/queue/python.ts): runs the SDK over JOBS already-enqueued processes.

argv: url token type jobs concurrency progress(0|1). Prints one JSON line: jobs_per_s, seconds, cpu_s.
The clock runs from just before connect_worker to the last `completed`, as the TypeScript run's does.
"""
import asyncio
import json
import resource
import sys
import time

from processes_worker import connect_worker


async def main() -> None:
    url, token, type_, jobs, concurrency, progress = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1"
    done = asyncio.Event()
    completed = 0

    async def handler(process, ctx):
        if progress:
            for p in range(1, 6):
                await ctx.progress(p * 20)

    def on_event(event):
        nonlocal completed
        if event.type == "completed":
            completed += 1
            if completed == jobs:
                done.set()

    started = time.perf_counter()
    worker = await connect_worker(url, token, types=[type_], concurrency=concurrency, handler=handler, on_event=on_event, claim_wait_ms=1000)
    await done.wait()
    seconds = time.perf_counter() - started
    await worker.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"jobs_per_s": jobs / seconds, "seconds": seconds, "cpu_s": usage.ru_utime + usage.ru_stime}), flush=True)


asyncio.run(main())
