"""A TCP proxy in front of a test Kafka broker that can hold Produce requests back.

It reproduces a record that reaches the broker late: the producer gives up on
an in-flight Produce request (message.timeout.ms), other clients read the
partition and do not find the record, and only later does the broker append
it. Every other Kafka request (Metadata, Fetch, ListOffsets, OffsetCommit, ...)
flows through unchanged, so readers and admin clients keep working.

The broker advertises the proxy's port (`KafkaBroker.advertised_port`), so a
client that bootstraps through the proxy also makes every later connection
through it. `running_broker_behind_proxy` starts both.

The proxy reads just enough of the wire protocol to frame client->broker
requests (`int32 size`, then `int16 api_key`, ...). While holding, the first
Produce request on a connection and every frame after it on that connection
are queued, because a broker must see one connection's requests in the order
they were sent. Broker->client bytes always flow. It runs an asyncio loop in a
thread of its own, so pytest code and subprocesses can talk through it while
the test thread blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from flashgate.stack.kafka_broker import BrokerSpec, KafkaBroker, new_cluster_id
from flashgate.stack.ports import free_port

HOST = "127.0.0.1"
PRODUCE_API_KEY = 0
# InitProducerId bumps the idempotent producer's epoch, which makes the broker refuse
# the held, older Produce (INVALID_PRODUCER_EPOCH). librdkafka sends it on a fresh
# connection after a timed-out request; held too, and released after the Produce, so
# the late write happens as it would when a stalled broker resumes (its socket buffer
# holds the old request first).
INIT_PRODUCER_ID_API_KEY = 22
HELD_API_KEYS = frozenset({PRODUCE_API_KEY, INIT_PRODUCER_ID_API_KEY})
RELEASE_ANSWER_WAIT_S = 10.0
# How long a connection whose client already left is kept open after its held
# requests are forwarded, waiting for the broker's responses: closing at once
# could make the broker drop requests it has not read yet.
ORPHAN_LINGER_S = 30.0
LOOP_CALL_TIMEOUT_S = 10.0
TEST_BROKER_HEAP_MB = 384

_T = TypeVar("_T")
_SIZE = struct.Struct(">i")
_API_KEY = struct.Struct(">h")


@dataclass(eq=False)
class _Connection:
    """One client connection and its upstream; touched only on the proxy's loop."""

    upstream: asyncio.StreamWriter
    client: asyncio.StreamWriter
    held: list[bytes] = field(default_factory=list)
    holding: bool = False
    # When this connection started holding (release goes in that order).
    held_since: int = 0
    client_gone: bool = False
    # Requests forwarded minus responses seen, so a connection whose client left
    # can be closed once the broker has answered what was released.
    unanswered: int = 0
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    def forward(self, frame: bytes) -> None:
        self.unanswered += 1
        self.answered.clear()
        self.upstream.write(frame)


class KafkaStallProxy:
    """Forwards 127.0.0.1:`port` to a broker's listener; can hold Produce requests.

    Use as a context manager or call `start()` and `close()`.
    """

    def __init__(self, upstream_port: int, upstream_host: str = HOST, port: int = 0) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self._requested_port = port
        self._port: int | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kafka-stall-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._holding = False
        self._held_produce_requests = 0
        self._hold_seq = 0
        self._closed = False

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> KafkaStallProxy:
        self._thread.start()
        try:
            self._port = self._call(self._listen())
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop listening, drop every connection (held bytes are lost) and stop the thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(LOOP_CALL_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> KafkaStallProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy is not started")
        return self._port

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    # -- control (from any thread) -----------------------------------------

    def hold_produce(self) -> None:
        """From now on, hold each connection from its first Produce (or InitProducerId,
        the epoch bump that would fence a held Produce) request on."""
        self._call(self._set_holding(True))

    def release(self) -> None:
        """Forward everything held, in each connection's order, and stop holding."""
        self._call(self._release(), LOOP_CALL_TIMEOUT_S + 4 * RELEASE_ANSWER_WAIT_S)

    @property
    def held_produce_requests(self) -> int:
        """Produce requests held since the last `release()` (over all connections)."""
        return self._held_produce_requests

    def wait_for_held_produce(self, count: int = 1, timeout_s: float = 10.0) -> bool:
        """True once `count` Produce requests are held; False at the deadline."""

        async def wait() -> bool:
            deadline = self._loop.time() + timeout_s
            while self._held_produce_requests < count:
                if self._loop.time() >= deadline:
                    return False
                await asyncio.sleep(0.02)
            return True

        return self._call(wait(), timeout_s + LOOP_CALL_TIMEOUT_S)

    # -- loop side ---------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, _T], timeout_s: float = LOOP_CALL_TIMEOUT_S) -> _T:
        # Streams and the hold state belong to the loop thread; running control
        # calls there orders them with the frames being pumped.
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._accept, HOST, self._requested_port)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _set_holding(self, holding: bool) -> None:
        self._holding = holding

    async def _release(self) -> None:
        """Connections in the order they started holding, each answered before the next:
        the oldest Produce reaches the broker before a newer connection's epoch bump."""
        self._holding = False
        for conn in sorted(self._connections, key=lambda c: (not c.held, c.held_since)):
            frames, conn.held, conn.holding = conn.held, [], False
            # No await between these writes and clearing `holding`: frames read
            # later on this connection are written after the released ones.
            for frame in frames:
                conn.forward(frame)
            if not frames:
                continue
            if conn.client_gone:
                self._spawn(self._close_when_answered(conn))
            with contextlib.suppress(ConnectionError):
                await conn.upstream.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.answered.wait(), RELEASE_ANSWER_WAIT_S)
        self._held_produce_requests = 0

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            # Broker not up (yet): the client sees a refused connection and retries.
            client_writer.close()
            return
        conn = _Connection(upstream=upstream_writer, client=client_writer)
        self._connections.add(conn)
        self._spawn(self._to_broker(conn, client_reader))
        self._spawn(self._to_client(conn, upstream_reader))

    async def _to_broker(self, conn: _Connection, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                size_bytes = await reader.readexactly(_SIZE.size)
                (size,) = _SIZE.unpack(size_bytes)
                body = await reader.readexactly(size)
                frame = size_bytes + body
                api_key = _API_KEY.unpack_from(body)[0] if size >= _API_KEY.size else -1
                is_produce = api_key == PRODUCE_API_KEY
                if conn.holding or (self._holding and api_key in HELD_API_KEYS):
                    if not conn.holding:
                        self._hold_seq += 1
                        conn.held_since = self._hold_seq
                    conn.holding = True
                    conn.held.append(frame)
                    if is_produce:
                        self._held_produce_requests += 1
                    continue
                conn.forward(frame)
                await conn.upstream.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        # The client left. Held requests must still reach the broker on release
        # (that is the late write this proxy exists for), so keep the upstream.
        conn.client_gone = True
        if not conn.held:
            self._drop(conn)

    async def _to_client(self, conn: _Connection, reader: asyncio.StreamReader) -> None:
        # Frame the responses only to count them; their bytes go on unchanged.
        try:
            while True:
                size_bytes = await reader.readexactly(_SIZE.size)
                (size,) = _SIZE.unpack(size_bytes)
                body = await reader.readexactly(size)
                conn.unanswered = max(0, conn.unanswered - 1)
                if conn.unanswered == 0:
                    conn.answered.set()
                if not conn.client_gone:
                    conn.client.write(size_bytes + body)
                    with contextlib.suppress(ConnectionError):
                        await conn.client.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        # The broker closed: the client must see it too, and nothing held can be sent.
        self._drop(conn)

    async def _close_when_answered(self, conn: _Connection) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.answered.wait(), ORPHAN_LINGER_S)
        self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        conn.upstream.close()
        conn.client.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            self._drop(conn)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


@contextmanager
def running_broker_behind_proxy(
    kafka_libs: Path, data_dir: Path
) -> Iterator[tuple[KafkaBroker, KafkaStallProxy]]:
    """A single-node KRaft broker whose client listener is reached only through a proxy.

    The broker binds a free port and advertises the proxy's; `broker.bootstrap`
    is the proxy's address. Both stop on exit, also after a failure.
    """
    with KafkaStallProxy(upstream_port=free_port()) as proxy:
        broker = KafkaBroker(
            BrokerSpec(1, proxy.upstream_port, free_port()),
            data_dir=data_dir,
            libs_dir=kafka_libs,
            heap_mb=TEST_BROKER_HEAP_MB,
            cluster_id=new_cluster_id(kafka_libs),
            advertised_port=proxy.port,
        )
        broker.format_storage()
        broker.start(data_dir / "broker.log")
        try:
            broker.wait_listening(90)
            yield broker, proxy
        finally:
            broker.stop()
