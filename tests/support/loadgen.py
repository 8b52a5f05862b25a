"""A small HTTP/1.1 load generator for the model server's reliability tests (asyncio, raw sockets).

wrk reports only totals; these tests need each request's status and latency (p99 of the accepted
ones, only 200s and 503s, which requests failed and how), so the generator keeps every sample.
Each connection sends one request, reads the whole response, and sends the next (keep-alive), as wrk
does; a connection the server closes is reopened.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Sample:
    status: int  # 0: no response (see error)
    seconds: float
    started: float
    error: str = ""
    sent: bool = False  # the whole request was written before the failure


@dataclass
class Result:
    samples: list[Sample] = field(default_factory=list)

    def statuses(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for s in self.samples:
            out[s.status] = out.get(s.status, 0) + 1
        return out

    def percentile(self, q: float, status: int = 200) -> float:
        values = sorted(s.seconds for s in self.samples if s.status == status)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(q * len(values)))]


def request_bytes(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader, is_head: bool = False) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one response (`head`: a HEAD's, which has no body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = b"" if is_head else await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def _connection(
    host: str, port: int, payload: bytes, stop_at: float, result: Result, stop: asyncio.Event | None
) -> None:
    reader = writer = None
    while time.monotonic() < stop_at and not (stop and stop.is_set()):
        started = time.monotonic()
        sent = False
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            writer.write(payload)
            await writer.drain()
            sent = True
            status, headers, _ = await read_response(reader)
            result.samples.append(Sample(status, time.monotonic() - started, started, sent=True))
            if headers.get("connection", "").lower() == "close":
                writer.close()
                reader = writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            result.samples.append(Sample(0, time.monotonic() - started, started, f"{type(exc).__name__}: {exc}", sent))
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def load(
    host: str,
    port: int,
    payload: bytes,
    connections: int,
    seconds: float,
    stop: asyncio.Event | None = None,
) -> Result:
    """`connections` keep-alive connections sending `payload` for `seconds` (or until `stop` is set)."""
    result = Result()
    stop_at = time.monotonic() + seconds
    await asyncio.gather(*(_connection(host, port, payload, stop_at, result, stop) for _ in range(connections)))
    return result
