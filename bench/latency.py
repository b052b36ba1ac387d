"""A TCP proxy that delays every piece of data by a fixed time each way: a registry on loopback then
answers like one in another region (round trip = 2 x delay), for every tool alike.

It runs as a process of its own (`python latency.py UPSTREAM DELAY` prints the address it listens on):
the harness must stay small, because Linux counts a parent's resident set into the peak RSS of every
child it starts (exec records the old address space's high-water mark), and a proxy inside the harness
would buffer a push's worth of data.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from types import TracebackType

_PIECE = 1 << 16
_IN_FLIGHT = 64  # pieces queued per direction (4 MiB): then reading waits, and TCP pushes back


class LatencyProxy:
    """`with LatencyProxy("127.0.0.1:5000", 0.015) as proxy:` ... talk to `proxy.host` instead."""

    def __init__(self, upstream: str, delay: float) -> None:
        self._argv = [sys.executable, __file__, upstream, str(delay)]
        self._process: subprocess.Popen[str] | None = None
        self.host = ""

    def __enter__(self) -> LatencyProxy:
        self._process = subprocess.Popen(self._argv, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        self.host = self._process.stdout.readline().strip()
        if not self.host:
            raise RuntimeError(f"the latency proxy did not start: {self._argv}")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)


async def _serve(upstream: tuple[str, int], delay: float) -> None:
    async def connection(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*upstream)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pump(client_reader, upstream_writer, delay), _pump(upstream_reader, client_writer, delay))

    server = await asyncio.start_server(connection, "127.0.0.1", 0)
    print(f"127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Forward what arrives, each piece `delay` later than it came. Pieces overlap in flight like packets
    on a long link, so a bulk transfer is not slowed down per piece."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_IN_FLIGHT)

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while data := await reader.read(_PIECE):
            await queue.put((loop.time() + delay, data))
    except OSError:
        pass
    await queue.put((loop.time() + delay, b""))
    try:
        await sender
    except OSError:
        pass
    finally:
        writer.close()


if __name__ == "__main__":
    host, _, port = sys.argv[1].rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve((host, int(port)), float(sys.argv[2])))
