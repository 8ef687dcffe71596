"""The target of `http.request` in the benchmarks: a tiny asyncio HTTP/1.1 server on loopback that
answers every request with `200 ok`, keeping connections alive. It parses only what it must
(the end of the headers and a Content-Length), so that it is never the bottleneck: a few tens of
thousands of answers per second on one core, far above what the outbox sends it.

    python benchmarks/_target.py PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import cast

import uvloop

_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
_HEAD_END = b"\r\n\r\n"


class _Answer(asyncio.Protocol):
    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self._transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        while (end := self._buffer.find(_HEAD_END)) >= 0:
            head = self._buffer[:end].lower()
            size = _content_length(head)
            if len(self._buffer) < end + 4 + size:
                return  # the body is still on its way
            self._buffer = self._buffer[end + 4 + size :]
            self._transport.write(_ANSWER)
            if b"\r\nconnection: close" in head:
                self._transport.close()
                return


def _content_length(head: bytes) -> int:
    marker = b"\r\ncontent-length:"
    start = head.find(marker)
    if start < 0:
        return 0
    line_end = head.find(b"\r\n", start + len(marker))
    return int(head[start + len(marker) : line_end if line_end >= 0 else None].strip() or 0)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Answer, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    # uvloop: the event loop uvicorn picks (uvicorn[standard] installs it).
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
