"""uvicorn's httptools protocol with the limits uvicorn leaves out: header and body read deadlines and
a cap on header bytes.

Without them a client that opens a connection and sends nothing, or sends its headers one byte a
second (slowloris), holds the connection forever, and one that sends endless headers grows memory
without bound (llhttp itself does not limit header size). uvicorn's own keep-alive timeout covers only
the idle time between requests. The subclass keeps uvicorn's parsing and flow control and adds one
timer per connection: armed when a request starts (or the connection opens), moved to the body
deadline when the headers are in, cancelled while the application works on the request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from lepton_ci.serve.options import ServeOptions


def _raw_response(status: bytes, message: bytes) -> bytes:
    body = b'{"error":"' + message + b'"}'
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


class CoalescingTransport:
    """The connection's transport, with the writes of one loop iteration sent as one.

    uvicorn writes a response's headers and its body separately; on a TCP_NODELAY socket that is two
    send() calls and two packets per response, for the server and for the client to process. Buffering
    until the end of the current loop iteration joins them (one call_soon per response instead of one
    syscall), and never delays a write past that iteration. Large writes go out at once, after the buffer.
    """

    __slots__ = ("_transport", "_loop", "_buffer", "_scheduled")
    DIRECT = 64 * 1024

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes) -> None:
        if len(data) >= self.DIRECT:
            self.flush()
            self._transport.write(data)
            return
        self._buffer.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)


TOO_LARGE = _raw_response(b"431 Request Header Fields Too Large", b"request line and headers are too large")
TIMED_OUT = _raw_response(b"408 Request Timeout", b"the request was not received in time")


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with header/body deadlines and a header size cap (class attributes, set by
    `guarded_protocol` from the server's options)."""

    header_timeout = 10.0
    body_timeout = 30.0
    max_header_bytes = 64 * 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._in_headers = True
        self._header_bytes = 0
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._in_headers and self._header_bytes > self.max_header_bytes and not self.transport.is_closing():
            self._refuse(TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        self._arm(self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()  # the application has the request; its own time is not the client's fault
        super().on_message_complete()

    # -- deadline --------------------------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            if self._header_bytes:  # a request started and stalled: say so; a silent connection just closes
                self._refuse(TIMED_OUT)
                return
        elif not self.cycle.response_started:
            self.cycle.disconnected = True  # the application stops waiting for the rest of the body
            self.cycle.message_event.set()
        self.transport.close()

    def _refuse(self, response: bytes) -> None:
        self._disarm()
        self.transport.write(response)
        self.transport.close()


def guarded_protocol(options: ServeOptions) -> type[GuardedProtocol]:
    """A protocol class carrying these options' limits (uvicorn takes a class, not an instance)."""
    attrs: dict[str, Any] = {
        "header_timeout": options.header_timeout,
        "body_timeout": options.body_timeout,
        "max_header_bytes": options.max_header_bytes,
    }
    return type("LeptonHttpProtocol", (GuardedProtocol,), attrs)
