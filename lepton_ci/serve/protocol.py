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
        super().connection_made(transport)
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
