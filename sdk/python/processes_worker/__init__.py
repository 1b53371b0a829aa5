"""Python worker SDK for the Processes server.

    import asyncio
    from processes_worker import connect_worker

    async def handler(process, ctx):
        await ctx.progress(50, "Halfway")
        return {"rows_imported": 200}          # the result_summary; raise to fail

    async def main():
        worker = await connect_worker("http://localhost:3000", TOKEN, types=["csv_import"], handler=handler)
        await worker.wait()                    # until close(), or raises WorkerAuthError on a refused token

    asyncio.run(main())

Delivery rules (as the TypeScript SDK): `complete`/`fail` are kept until acked and re-sent after a reconnect
under the same worker id (the server acks a repeated terminal frame without applying it twice); progress,
heartbeats, logs, output and updates are best effort — dropped while the connection is down, since the next
progress supersedes the last and a re-sent log could be applied twice.
"""
from ._api import (
    ConnectionLostError,
    JobResult,
    Process,
    WorkerAuthError,
    WorkerEvent,
    WorkerProtocolError,
    review,
)
from ._connection import socket_url
from ._worker import JobContext, SyncJobContext, Worker, connect_worker

__all__ = [
    "ConnectionLostError",
    "JobContext",
    "JobResult",
    "Process",
    "SyncJobContext",
    "Worker",
    "WorkerAuthError",
    "WorkerEvent",
    "WorkerProtocolError",
    "connect_worker",
    "review",
    "socket_url",
]
__version__ = "0.1.0"
