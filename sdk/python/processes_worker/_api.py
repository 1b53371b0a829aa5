"""The SDK's public types: results, events, errors and the two handler contexts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, Literal, Optional, Union

Process = Dict[str, Any]
"""A process as the server sends it (`id`, `type`, `metadata`, `attempts`, ...): a plain dict."""


@dataclass
class JobResult:
    """What a handler may return. A plain dict is taken as `result_summary`; `None` completes with none."""

    result_summary: Optional[Dict[str, Any]] = None
    #: Hand the result to a human: the process goes to `waiting_review` instead of `completed`.
    review: bool = False


def review(result_summary: Optional[Dict[str, Any]] = None) -> JobResult:
    """`return review({...})`: complete into `waiting_review`, for a human to approve or discard."""
    return JobResult(result_summary=result_summary, review=True)


EventType = Literal["connected", "disconnected", "claimed", "completed", "failed", "cancelled", "lost", "stopped"]


@dataclass
class WorkerEvent:
    """One lifecycle event, for logging (`on_event`)."""

    type: EventType
    process: Optional[Process] = None
    #: `completed`: whether it went to review. `failed`: the error. `lost`: the server's code.
    review: bool = False
    error: Optional[str] = None
    code: Optional[str] = None
    #: `disconnected`: the close code and the delay before the next attempt.
    close_code: Optional[int] = None
    reconnect_in_s: Optional[float] = None
    worker_id: Optional[str] = None


class WorkerAuthError(Exception):
    """The server refused the worker token at the upgrade (HTTP 401 or 403): retrying cannot help."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class WorkerProtocolError(Exception):
    """The server answered a frame with `error {code, message}`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class ConnectionLostError(Exception):
    """The connection dropped before the reply came (or the worker was closed)."""


StopReason = Literal["cancelled", "lost", "closing"]


Handler = Callable[..., Any]
"""`async def handler(process, ctx: JobContext)` or `def handler(process, ctx: SyncJobContext)` (run in a thread)."""

OnEvent = Callable[[WorkerEvent], None]
OnError = Callable[[BaseException], None]
Json = Union[None, bool, int, float, str, List[Any], Dict[str, Any]]
Sender = Callable[[Dict[str, Any]], Awaitable[bool]]
