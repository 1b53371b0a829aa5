"""The worker against a small local gateway stub (websockets' own server): frames, cancel, reconnect, close.

The stub is the SDK's own test double only; tests/sdk-python/*.test.ts run the worker against the real server.
"""
import asyncio
import json
import threading
import unittest
from typing import Any, Dict, List, Optional

import websockets

from processes_worker import JobResult, WorkerAuthError, connect_worker


class Stub:
    """Answers hello, claim (from `pending`), live frames, and terminal frames (with claim-next)."""

    def __init__(self) -> None:
        self.frames: List[Dict[str, Any]] = []
        self.pending: List[Dict[str, Any]] = []
        self.sockets: List[Any] = []
        self.drop_terminal = False  # swallow complete/fail once (no ack): the worker must re-send it
        self.refuse: Dict[str, List[str]] = {}  # op → error codes to answer its next frames with, in turn
        self.next_id = 1
        self.server: Any = None
        self.port = 0

    def add(self, type_: str = "job", **metadata: Any) -> Dict[str, Any]:
        process = {"id": self.next_id, "type": type_, "status": "pending", "attempts": 0, "metadata": metadata}
        self.next_id += 1
        self.pending.append(process)
        return process

    def take(self, count: int) -> List[Dict[str, Any]]:
        taken, self.pending = self.pending[:count], self.pending[count:]
        for process in taken:
            process["status"] = "running"
            process["attempts"] += 1
        return [dict(p) for p in taken]

    async def handle(self, ws: Any, *_: Any) -> None:
        self.sockets.append(ws)
        try:
            async for raw in ws:
                frame = json.loads(raw)
                self.frames.append(frame)
                reply: Optional[Dict[str, Any]] = {"op": "ack"}
                op = frame["op"]
                if self.refuse.get(op):
                    code = self.refuse[op].pop(0)
                    await ws.send(json.dumps({"op": "error", "code": code, "message": f"{op} refused", "ref": frame.get("ref")}))
                    continue
                if op == "claim":
                    deadline = asyncio.get_running_loop().time() + frame.get("wait_ms", 0) / 1000
                    while not self.pending and asyncio.get_running_loop().time() < deadline:
                        await asyncio.sleep(0.01)
                    taken = self.take(frame.get("max", 1))
                    reply = {"op": "claimed", "process": taken[0] if taken else None, "processes": taken}
                elif op in ("complete", "fail"):
                    if self.drop_terminal:
                        self.drop_terminal = False
                        await ws.close(1012, "restarting")
                        return
                    claim = frame.get("claim")
                    reply = {"op": "ack", **({"processes": self.take(claim["max"])} if claim else {})}
                elif op == "output":
                    reply = {"op": "error", "code": "invalid_message", "message": 'unknown op "output"'}
                await ws.send(json.dumps({**reply, "ref": frame.get("ref")}))
        except websockets.exceptions.ConnectionClosed:
            pass

    async def __aenter__(self) -> "Stub":
        self.server = await websockets.serve(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: Any) -> None:
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ops(self, *names: str) -> List[Dict[str, Any]]:
        return [f for f in self.frames if f["op"] in names]


async def until(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.01)


class WorkerAgainstStub(unittest.IsolatedAsyncioTestCase):
    async def test_batch_claim_progress_with_attempt_complete_with_claim_next(self):
        async with Stub() as stub:
            for n in range(3):
                stub.add(n=n)
            done: List[int] = []

            async def handler(process: Dict[str, Any], ctx: Any) -> Any:
                self.assertTrue(await ctx.progress(49.6, "half"))
                if process["metadata"]["n"] == 1:
                    raise ValueError("row 3 is unreadable")
                if process["metadata"]["n"] == 2:
                    return JobResult({"drafts": 1}, review=True)
                return {"rows": 3}

            worker = await connect_worker(
                stub.url, "wt", types=["job"], concurrency=2, handler=handler, worker_id="w-1", claim_wait_ms=200,
                on_event=lambda e: e.type in ("completed", "failed") and done.append(e.process["id"]),  # type: ignore[index]
            )
            await until(lambda: len(done) == 3)
            await worker.close()
            self.assertEqual(stub.frames[0], {"op": "hello", "worker_id": "w-1", "ref": "hello"})
            first_claim = stub.ops("claim")[0]
            self.assertEqual((first_claim["max"], first_claim["types"]), (2, ["job"]))
            progress = stub.ops("progress")
            self.assertEqual({(p["progress"], p["message"], p["attempt"]) for p in progress}, {(50, "half", 1)})
            finals = {f["process_id"]: f for f in stub.ops("complete", "fail")}
            self.assertEqual(finals[1]["result_summary"], {"rows": 3})
            self.assertEqual((finals[2]["op"], finals[2]["error"]), ("fail", "row 3 is unreadable"))
            self.assertEqual((finals[3]["result_summary"], finals[3]["review"]), ({"drafts": 1}, True))
            # The third came with a terminal frame's ack (claim-next), not with a claim of its own.
            self.assertTrue(any(f.get("claim") == {"max": 1, "wait_ms": 0, "types": ["job"]} for f in finals.values()))

    async def test_cancel_sets_the_event_cancels_the_task_and_sends_nothing_for_it(self):
        async with Stub() as stub:
            stub.add()
            seen: Dict[str, Any] = {}
            started = asyncio.Event()

            async def handler(process: Dict[str, Any], ctx: Any) -> Any:
                seen["event"] = ctx.cancelled
                started.set()
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    seen["task_cancelled"] = True
                    raise
                return {"never": True}

            events: List[str] = []
            worker = await connect_worker(stub.url, "wt", handler=handler, on_event=lambda e: events.append(e.type), claim_wait_ms=100)
            await asyncio.wait_for(started.wait(), 5)
            await stub.sockets[0].send(json.dumps({"op": "cancel", "process_id": 1}))
            await until(lambda: "cancelled" in events)
            await worker.close()
            self.assertTrue(seen["event"].is_set())
            self.assertTrue(seen.get("task_cancelled"))
            self.assertEqual(stub.ops("complete", "fail"), [])

    async def test_reconnects_with_the_same_id_and_resends_the_unacked_complete(self):
        async with Stub() as stub:
            stub.add()
            stub.drop_terminal = True
            events: List[str] = []
            worker = await connect_worker(
                stub.url, "wt", handler=lambda p, ctx: {"ok": True}, worker_id="w-again", reconnect_min_s=0.05,
                on_event=lambda e: events.append(e.type), claim_wait_ms=100,
            )
            await until(lambda: "completed" in events)
            await worker.close()
            self.assertEqual([f["worker_id"] for f in stub.ops("hello")], ["w-again", "w-again"])
            completes = stub.ops("complete")
            self.assertEqual(len(completes), 2)
            self.assertEqual(completes[0]["process_id"], completes[1]["process_id"])
            self.assertIn("disconnected", events)

    async def test_sync_handlers_run_in_threads_and_report_through_the_blocking_context(self):
        async with Stub() as stub:
            stub.add()
            stub.add()
            threads: List[str] = []
            events: List[str] = []

            def handler(process: Dict[str, Any], ctx: Any) -> Any:
                threads.append(threading.current_thread().name)
                assert ctx.progress(30, "reading") is True
                assert ctx.output("a line") is False  # this stub, like a server without live output, refuses it
                return {"thread": True}

            errors: List[BaseException] = []
            worker = await connect_worker(stub.url, "wt", handler=handler, concurrency=2, on_event=lambda e: events.append(e.type),
                                          on_error=errors.append, claim_wait_ms=100)
            await until(lambda: events.count("completed") == 2)
            await worker.close()
            self.assertTrue(all(name.startswith("processes-worker") for name in threads))
            self.assertEqual(len(stub.ops("progress")), 2)
            self.assertTrue(any("output" in str(e) for e in errors))

    async def test_close_with_a_timeout_fails_the_jobs_still_running(self):
        async with Stub() as stub:
            stub.add()

            async def handler(process: Dict[str, Any], ctx: Any) -> Any:
                await asyncio.sleep(30)

            worker = await connect_worker(stub.url, "wt", handler=handler, claim_wait_ms=100)
            await until(lambda: worker.running == 1)
            await worker.close(timeout_s=0.1)
            fails = stub.ops("fail")
            self.assertEqual(len(fails), 1)
            self.assertEqual(fails[0]["error"], "worker shut down before the job finished")
            await worker.wait()  # closed: returns, no error

    async def test_heartbeats_go_out_with_the_attempt_while_the_handler_runs(self):
        async with Stub() as stub:
            stub.add()

            async def handler(process: Dict[str, Any], ctx: Any) -> Any:
                await asyncio.sleep(0.35)

            events: List[str] = []
            worker = await connect_worker(stub.url, "wt", handler=handler, heartbeat_interval_s=0.1, on_event=lambda e: events.append(e.type), claim_wait_ms=100)
            await until(lambda: "completed" in events)
            await worker.close()
            beats = stub.ops("heartbeat")
            self.assertGreaterEqual(len(beats), 2)
            self.assertTrue(all((b["process_id"], b["attempt"]) == (1, 1) for b in beats))

    async def test_not_owner_on_progress_stops_the_job_as_lost(self):
        async with Stub() as stub:
            stub.add()
            stub.refuse["progress"] = ["not_owner"]
            seen: Dict[str, Any] = {}

            async def handler(process: Dict[str, Any], ctx: Any) -> Any:
                seen["accepted"] = await ctx.progress(10)
                seen["reason"] = ctx.stop_reason
                await asyncio.sleep(5)  # cancelled: the server says another attempt owns it

            events: List[Any] = []
            worker = await connect_worker(stub.url, "wt", handler=handler, on_event=events.append, claim_wait_ms=100)
            await until(lambda: any(e.type == "lost" for e in events))
            await worker.close()
            self.assertEqual(seen, {"accepted": False, "reason": "lost"})
            self.assertEqual([e.code for e in events if e.type == "lost"], ["not_owner"])
            self.assertEqual(stub.ops("complete", "fail"), [])

    async def test_unavailable_is_retried_and_a_refused_result_fails_the_process(self):
        async with Stub() as stub:
            stub.add()
            stub.refuse["complete"] = ["unavailable", "invalid_message"]
            errors: List[BaseException] = []
            events: List[Any] = []
            worker = await connect_worker(stub.url, "wt", handler=lambda p, c: {"huge": "x"}, on_error=errors.append, on_event=events.append, claim_wait_ms=100)
            await until(lambda: any(e.type == "failed" for e in events), timeout_s=5)
            await worker.close()
            self.assertEqual(len(stub.ops("complete")), 2)  # the first refusal (database down) retried after 1 s
            fails = stub.ops("fail")
            self.assertEqual(len(fails), 1)
            self.assertTrue(fails[0]["error"].startswith("result refused: "))
            self.assertTrue(any(getattr(e, "code", None) == "unavailable" for e in errors))

    async def test_a_refused_token_raises_worker_auth_error(self):
        async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            body = b'{"error":{"code":"unauthenticated","message":"unknown worker token"}}'
            writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(refuse, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with self.assertRaises(WorkerAuthError) as caught:
                await connect_worker(f"http://127.0.0.1:{port}", "bad", handler=lambda p, c: None, on_error=lambda e: None)
            self.assertEqual(caught.exception.status, 401)
        finally:
            server.close()
            await server.wait_closed()


if __name__ == "__main__":
    unittest.main()
