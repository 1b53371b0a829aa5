"""The worker's connection: hello, request/reply by ref, reconnect with backoff, refused tokens.

One task owns the socket: it connects, says hello, re-sends the requests kept across reconnects (terminal
frames), reads replies and pushes, and reconnects with capped, jittered exponential backoff when the
socket drops. A request without `retry` fails with ConnectionLostError when the socket drops under it.
"""
from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Set
from urllib.parse import urlencode, urlsplit, urlunsplit, parse_qsl

import websockets
import websockets.exceptions

from ._api import ConnectionLostError, WorkerAuthError, WorkerProtocolError

#: No reply in this time means a half-open connection (a NAT dropped it, say): only a new socket will tell.
REPLY_TIMEOUT_S = 15.0
#: The server's frame limit (README: Worker protocol); bigger frames are refused with `invalid_message`.
MAX_FRAME_BYTES = 64 * 1024

Frame = Dict[str, Any]


@dataclass
class _Request:
    frame: Frame
    retry: bool
    timeout_s: float
    future: "asyncio.Future[Frame]"
    timer: Optional[asyncio.TimerHandle] = field(default=None)


def socket_url(url: str, token: str) -> str:
    """The `…/workers/ws?token=` URL for a server's base URL (http/https/ws/wss) or the full socket URL."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"url must be http(s) or ws(s), not {url!r}")
    path = parts.path if parts.path.endswith("/workers/ws") else parts.path.rstrip("/") + "/workers/ws"
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "token"] + [("token", token)]
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


def backoff_s(failures: int, min_s: float, max_s: float) -> float:
    """Doubles from min to max with jitter (half to full), so a fleet does not reconnect in step."""
    ceiling = min(max_s, min_s * (2 ** max(0, failures)))
    return float(ceiling * (0.5 + random.random() / 2))


def refusal_of(error: BaseException) -> Optional[WorkerAuthError]:
    """The WorkerAuthError for an upgrade refused with 401/403 (websockets 10–15 name it differently), else None."""
    status = getattr(error, "status_code", None)  # websockets ≤ 13: InvalidStatusCode
    response = getattr(error, "response", None)  # websockets ≥ 14: InvalidStatus
    if status is None and response is not None:
        status = getattr(response, "status_code", None)
    if status not in (401, 403):
        return None
    code = "unauthenticated" if status == 401 else "forbidden"
    message = f"worker token refused (HTTP {status})"
    body = getattr(response, "body", None)
    if body:
        try:
            parsed = json.loads(body)
            detail = parsed.get("error", {})
            code = str(detail.get("code", code))
            message = f"worker token refused: {detail.get('message', message)}"
        except (ValueError, AttributeError):
            pass
    return WorkerAuthError(int(status), code, message)


class Connection:
    def __init__(
        self,
        url: str,
        worker_id: str,
        *,
        reconnect_min_s: float,
        reconnect_max_s: float,
        on_ready: Callable[[], None],
        on_push: Callable[[Frame], None],
        on_error: Callable[[BaseException], None],
        on_disconnected: Callable[[int, float], None],
        on_refused: Callable[[WorkerAuthError], None],
        open_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.worker_id = worker_id
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.open_timeout_s = open_timeout_s
        self._on_ready = on_ready
        self._on_push = on_push
        self._on_error = on_error
        self._on_disconnected = on_disconnected
        self._on_refused = on_refused
        self._socket: Any = None
        self._ready = asyncio.Event()
        self._closed = False
        self._ref = 0
        self._pending: Dict[str, _Request] = {}
        self._task: Optional[asyncio.Task[None]] = None
        #: Settles on the first attempt's outcome: None (connected, or a failure worth retrying) or the refusal.
        self.first_attempt: "asyncio.Future[Optional[WorkerAuthError]]" = asyncio.get_running_loop().create_future()

    @property
    def is_ready(self) -> bool:
        return self._ready.is_set() and not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"processes-worker {self.worker_id}")

    async def when_ready(self) -> None:
        """Returns once requests can be sent, or when the connection is closed for good."""
        while not self._ready.is_set() and not self._closed:
            await self._ready.wait()

    async def request(self, frame: Frame, *, retry: bool = False, timeout_s: float = REPLY_TIMEOUT_S) -> Frame:
        """Send a frame and wait for its reply: WorkerProtocolError on `error`, ConnectionLostError when the
        socket drops first — unless `retry`, which keeps it for the next connection's hello."""
        if self._closed or (not self.is_ready and not retry):
            raise ConnectionLostError("not connected")
        self._ref += 1
        ref = str(self._ref)
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        request = _Request({**frame, "ref": ref}, retry, timeout_s, future)
        self._pending[ref] = request
        if self.is_ready:
            await self._transmit(request, self._socket)
        try:
            return await future
        finally:
            self._pending.pop(ref, None)
            if request.timer:
                request.timer.cancel()

    async def close(self) -> None:
        """Closed for good: no reconnect; every pending request fails with ConnectionLostError."""
        if self._closed:
            return
        self._closed = True
        self._ready.set()  # wakes when_ready()
        self._settle_pending(for_good=True)
        socket = self._socket
        if socket is not None:
            try:
                await asyncio.wait_for(socket.close(1000, "worker closing"), 2.0)
            except Exception:
                pass
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    # -- the socket's task ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._closed:
            code = 1006
            reached_ready = False
            try:
                # `websockets.connect`: the legacy client in 10–13, the new asyncio one in 14+; both fit this use.
                connect = websockets.connect(self.url, max_size=None, ping_interval=20, open_timeout=None)  # type: ignore[attr-defined]
                socket = await asyncio.wait_for(connect, self.open_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 — any failure to connect is retried, except a refusal
                refusal = refusal_of(error)
                if refusal is not None:
                    self._closed = True
                    self._ready.set()
                    self._settle_pending(for_good=True)
                    self._settle_first(refusal)
                    self._on_refused(refusal)
                    return
                self._on_error(ConnectionError(f"could not connect to the workers gateway: {error}"))
                self._settle_first(None)
            else:
                self._socket = socket
                try:
                    reached_ready = await self._serve(socket)
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # noqa: BLE001
                    self._on_error(error)
                finally:
                    code = getattr(socket, "close_code", None) or 1006
                    self._socket = None
                    self._ready.clear()
                    self._settle_pending(for_good=False)
                    try:
                        await socket.close()
                    except Exception:
                        pass
                self._settle_first(None)
            if self._closed:
                return
            # 1012 is the server restarting: expected, and the next attempt should come soon.
            failures = 0 if reached_ready or code == 1012 else failures + 1
            delay = backoff_s(failures, self.reconnect_min_s, self.reconnect_max_s)
            self._on_disconnected(code, delay)
            await asyncio.sleep(delay)

    async def _serve(self, socket: Any) -> bool:
        """Hello, then read until the socket closes. True when the hello was acked."""
        reader = asyncio.create_task(self._read(socket))
        hello_ref = "hello"
        loop = asyncio.get_running_loop()
        hello: asyncio.Future[Frame] = loop.create_future()
        self._pending[hello_ref] = _Request({"op": "hello", "worker_id": self.worker_id, "ref": hello_ref}, False, REPLY_TIMEOUT_S, hello)
        ready = False
        try:
            await self._transmit(self._pending[hello_ref], socket)
            waiting: Set["asyncio.Future[Any]"] = {hello, reader}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if hello in done and hello.exception() is None:
                ready = True
                self._ready.set()
                self._settle_first(None)
                # Kept requests (terminal frames) go out again, in the order they were made.
                for request in list(self._pending.values()):
                    await self._transmit(request, socket)
                self._on_ready()
            elif hello in done:
                self._on_error(hello.exception() or ConnectionLostError("hello refused"))
                await socket.close(4000, "hello refused")
            await reader
        finally:
            self._pending.pop(hello_ref, None)
            if not hello.done():
                hello.cancel()
            elif not hello.cancelled():
                hello.exception()  # retrieved: no "never retrieved" warning
            reader.cancel()
        return ready

    async def _read(self, socket: Any) -> None:
        try:
            async for raw in socket:
                self._receive(raw)
        except websockets.exceptions.ConnectionClosed:
            pass

    def _receive(self, raw: Any) -> None:
        if not isinstance(raw, str):
            return
        try:
            frame = json.loads(raw)
        except ValueError:
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("op"), str):
            return
        ref = frame.get("ref")
        request = self._pending.get(str(ref)) if ref is not None else None
        if request is None or request.future.done():
            self._on_push(frame)
            return
        if request.timer:
            request.timer.cancel()
        if frame["op"] == "error":
            request.future.set_exception(WorkerProtocolError(str(frame.get("code", "error")), str(frame.get("message", ""))))
        else:
            request.future.set_result(frame)

    async def _transmit(self, request: _Request, socket: Any) -> None:
        if socket is None or request.future.done():
            return
        if request.timer:
            request.timer.cancel()
        request.timer = asyncio.get_running_loop().call_later(request.timeout_s, self._abandon, socket)
        try:
            await socket.send(json.dumps(request.frame, separators=(",", ":")))
        except websockets.exceptions.ConnectionClosed:
            pass  # the reader sees the close: the request is kept or failed there

    def _abandon(self, socket: Any) -> None:
        """No reply in time: drop the socket (the run loop reconnects)."""
        if self._socket is socket:
            asyncio.ensure_future(socket.close(4000, "no reply in time"))

    def _settle_pending(self, *, for_good: bool) -> None:
        for ref, request in list(self._pending.items()):
            if request.timer:
                request.timer.cancel()
                request.timer = None
            if request.retry and not for_good:
                continue
            self._pending.pop(ref, None)
            if not request.future.done():
                request.future.set_exception(ConnectionLostError("worker closed" if for_good else "connection lost"))

    def _settle_first(self, value: Optional[WorkerAuthError]) -> None:
        if not self.first_attempt.done():
            self.first_attempt.set_result(value)

