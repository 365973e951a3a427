"""A TCP proxy the tests put between workers and PostgreSQL, to cut connections the way networks do.

- sever: every connection is closed (RST) and new ones are refused, like a crashed middlebox;
- black hole: bytes stop moving but nothing is closed, like a partition or a silently dropped flow.
  TCP keepalives cannot notice (the proxy's kernel answers them); only an application-level
  timeout can. Stalled bytes stay in the kernel's buffers, so on restore the streams go on intact;
- restore: forwarding resumes, new connections are accepted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

CHUNK = 65536


@dataclass(eq=False)
class Link:
    """One client connection and its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    flowing: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def upstream_port(self) -> int | None:
        """The proxy's local port towards the server: pg_stat_activity.client_port of this link's backend."""
        if self.upstream is None:
            return None
        return int(self.upstream.get_extra_info("sockname")[1])

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.links: set[Link] = set()
        self.accepted = 0
        self._blackhole_new = False
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        self._call(self._listen())

    # -- faults (called from the test's thread) ----------------------------------------------------

    def sever(self) -> int:
        """Close every connection and refuse new ones; returns how many were cut."""
        return self._call(self._sever())

    def blackhole(self, select: Callable[[Link], bool] | None = None) -> int:
        """Stop moving bytes on the selected connections (default: all, and every new one too)."""
        return self._call(self._blackhole(select))

    def restore(self) -> None:
        self._call(self._restore())

    def upstream_ports(self) -> set[int]:
        return self._call(self._ports())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._sever())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- inside the proxy's loop -------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _sever(self) -> int:
        if self._server is not None:
            self._server.close()
            self._server = None
        cut = len(self.links)
        for link in list(self.links):
            link.abort()
        self.links.clear()
        return cut

    async def _blackhole(self, select: Callable[[Link], bool] | None) -> int:
        chosen = [link for link in self.links if select is None or select(link)]
        for link in chosen:
            link.flowing.clear()
        if select is None:
            self._blackhole_new = True
        return len(chosen)

    async def _restore(self) -> None:
        self._blackhole_new = False
        for link in self.links:
            link.flowing.set()
        if self._server is None:
            await self._listen()

    async def _ports(self) -> set[int]:
        return {port for link in self.links if (port := link.upstream_port) is not None}

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        link = Link(client=writer)
        if not self._blackhole_new:
            link.flowing.set()
        self.links.add(link)
        try:
            await link.flowing.wait()  # a connection attempt into a black hole hangs, as on a real network
            up_reader, link.upstream = await asyncio.open_connection(*self.target)
        except OSError:
            link.abort()
            self.links.discard(link)
            return
        await asyncio.gather(self._pump(reader, link.upstream, link), self._pump(up_reader, writer, link))
        link.abort()
        self.links.discard(link)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: Link) -> None:
        try:
            while True:
                await link.flowing.wait()  # stop reading: the sender's bytes wait in the kernel
                data = await reader.read(CHUNK)
                if not data:
                    break
                await link.flowing.wait()  # read just as the black hole began: held, not dropped
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            link.abort()
