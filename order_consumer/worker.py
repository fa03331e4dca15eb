"""The drain loop, top to bottom: poll, deliver each order at the group's rate, store offsets.

    run()
      control loop   (every config_poll_ms) settings file + override -> the group
                     limiter's rate (`rate_control.RateControl`); once the backend
                     takes orders after a refusal storm, its letters replayed
      progress loop  (every progress_interval_ms) offsets, rate, reason -> Redis
      limiter        takes tokens from Redis for waiting deliveries
      status writer  delivered / failed -> order status in Redis
      main loop      pause or resume partitions (flow control), poll, start one job
                     per record, store the offsets that are done

A job first settles its order in Redis (`fence.RecordFence`: a record whose
order was settled "not stored" is dead-lettered, never delivered), then
delivers it (`delivery.Deliverer`) or dead-letters it
(`dead_letters.DeadLetterSender`), then marks its offset
done. The offset stored for commit is the lowest one not done in its
partition (`offsets.py`): at-least-once, whatever order jobs finish in.

At most `max_in_flight` jobs run at once; with no room the loop waits for one
to finish. Partitions are paused while the backend is down (the gate is open),
while the rate is 0, or when no room came for a few seconds; the loop keeps
polling meanwhile, so the consumer stays in its group. On resume each partition seeks
to the offset after the last record it handed out (a pause drops what librdkafka
had prefetched). On revoke, and on SIGTERM, requests already on the wire finish
(bounded), jobs that sent nothing yet are dropped for the next owner, the done
offsets are committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import msgspec
from confluent_kafka import Message

from flashgate.admission.errors import AdmissionUnavailable
from flashgate.admission.keys import SaleKeys
from flashgate.dlq import Headers
from flashgate.kafka.producer import KafkaProducer
from flashgate.order import OrderRecord, decode_record
from flashgate.redis_client import RedisClient, RedisFailure, RedisFailureInLoop
from flashgate.settings import Settings
from flashgate.task_cancel import cancel_and_wait
from order_consumer.backend_gate import BackendGate, GateState
from order_consumer.config_watch import ConfigWatch
from order_consumer.dead_letters import DeadLetterSender
from order_consumer.delivery import Abandoned, Backend, Delivered, Deliverer, DeliveryState
from order_consumer.fence import FENCED_REASON, RecordFence
from order_consumer.group_limiter import GroupLimiter
from order_consumer.head_times import HeadTimes
from order_consumer.kafka_source import EndOffsets, KafkaSource, RebalanceHandler
from order_consumer.loss_watch import LossWatch
from order_consumer.offsets import OffsetTracker, PartitionOffsets
from order_consumer.progress_reporter import DeliveryMeter, ProgressReporter, Snapshot
from order_consumer.rate_control import RateControl
from order_consumer.refusals import RefusalBreaker, StormLetter
from order_consumer.status_writer import StatusWriter

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.1
ROOM_WAIT_S = 0.5
BACKPRESSURE_PAUSE_S = 5.0
PENDING_FACTOR = 4
FENCE_RETRY_S = 1.0
JOB_RESTART_S = 1.0
# The background loops end at once when cancelled; this only bounds a bug.
BACKGROUND_STOP_S = 5.0
BACKEND_STATES = {GateState.CLOSED: "up", GateState.OPEN: "down", GateState.HALF_OPEN: "probing"}


@dataclass
class DrainCounters:
    delivered: int = 0
    dead_lettered: int = 0
    # Records of orders settled "not stored" (written after the reaper's look).
    fenced: int = 0
    # Dead letters of a refusal storm produced to the orders topic again.
    storm_replayed: int = 0


@dataclass(eq=False)
class Job:
    """One record on its way to the backend (or the DLQ)."""

    message: Message
    offsets: PartitionOffsets
    state: DeliveryState = field(default_factory=DeliveryState)
    task: asyncio.Task[None] | None = None

    @property
    def partition(self) -> int:
        return self.offsets.partition

    @property
    def offset(self) -> int:
        return self.message.offset() or 0


@dataclass
class Parts:
    """What the worker is built from (created and closed by `main.py`)."""

    source_factory: Callable[[RebalanceHandler], KafkaSource]
    end_offsets: EndOffsets
    backend: Backend
    limiter: GroupLimiter
    dlq: KafkaProducer
    statuses: StatusWriter
    fence: RecordFence
    watch: ConfigWatch
    redis: RedisClient
    consumer_id: str
    # The buffer's watch (issue 15): oldest record times, losses to retention.
    head_times: HeadTimes | None = None
    losses: LossWatch | None = None


class DrainWorker:
    def __init__(
        self, settings: Settings, parts: Parts, *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self._drain = settings.drain
        self._watch = parts.watch
        self._limiter = parts.limiter
        self._statuses = parts.statuses
        self._fence = parts.fence
        self._redis = parts.redis
        self._wall_clock = wall_clock
        self._stopping = asyncio.Event()
        self._crashed: BaseException | None = None
        self._gate = BackendGate(probe_timeout_s=self._drain.backend_timeout_s + 1)
        self._rate = RateControl(parts.watch, parts.limiter, wall_clock)
        self._dead_letters = DeadLetterSender(
            parts.dlq,
            dlq_topic=settings.kafka.dlq_topic,
            orders_topic=settings.kafka.orders_topic,
            consumer_id=parts.consumer_id,
            stopping=self._stopping,
        )
        self._deliverer = Deliverer(
            parts.backend,
            self._limiter,
            self._gate,
            self._rate.adaptive,
            breaker=RefusalBreaker(
                self._drain.refusal_storm_orders, self._drain.refusal_storm_window_s
            ),
            max_attempts=lambda: self._watch.drain.max_attempts,
            stopping=self._stopping,
        )
        self._slots = asyncio.Semaphore(self._drain.concurrency)
        self._tracker = OffsetTracker()
        self._jobs: set[Job] = set()
        self._paused = ""
        """Why the partitions are paused ("" while they are not)."""
        self._full_since: float | None = None
        self._job_done = asyncio.Event()
        self._meter = DeliveryMeter()
        self.counters = DrainCounters()
        self._source = parts.source_factory(self)
        self._losses = parts.losses
        self._reporter = ProgressReporter(
            parts.redis, self._drain.group_id, parts.consumer_id, parts.end_offsets, self._tracker,
            parts.head_times, lambda: self._watch.drain,
        )  # fmt: skip

    def stop(self) -> None:
        """Finish the requests on the wire, commit, and return from run()."""
        self._stopping.set()

    # -- the loops ----------------------------------------------------------------------

    async def run(self) -> None:
        await self._watch.poll()
        self._rate.refresh()
        first = self._rate.decision
        schedule = f": {first.schedule}" if first.schedule else ""
        log.info("drain rate %g/s (%s%s), burst %d",
                 first.effective_rate, first.reason, schedule, self._watch.drain.burst)  # fmt: skip
        await self._source.subscribe()
        background = [
            self._spawn(self._control_loop(), "control"),
            self._spawn(self._progress_loop(), "progress"),
            self._spawn(self._limiter.run(), "limiter"),
            self._spawn(self._statuses.run(), "status writer"),
        ]
        if self._losses is not None:
            background.append(self._spawn(self._losses.run(), "loss watch"))
        try:
            while not self._stopping.is_set():
                await self._flow_control()
                room = self._room()
                if room <= 0 and not self._paused:
                    # Backpressure: wait for deliveries to make room. Pausing instead would
                    # drop what librdkafka prefetched and cost a refetch every cycle.
                    self._job_done.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(ROOM_WAIT_S):
                            await self._job_done.wait()
                    continue
                messages = await self._source.poll(
                    min(self._drain.poll_batch, max(1, room)), POLL_TIMEOUT_S
                )
                for message in messages:
                    self._start(message)
                await self._source.store(self._tracker.storable())
        finally:
            await self._settle(list(self._jobs), self._drain.backend_timeout_s + 1)
            await self._source.store(self._tracker.storable())
            await self._source.commit()
            await self._statuses.flush()
            await self._fence.aclose()
            stuck = await cancel_and_wait(background, BACKGROUND_STOP_S)
            if stuck:
                log.error("background loops still running at stop: %s",
                          sorted(task.get_name() for task in stuck))  # fmt: skip
            with contextlib.suppress(*RedisFailure):
                await self._reporter.withdraw()
            await self._source.close()
        if self._crashed is not None:
            raise self._crashed

    async def _control_loop(self) -> None:
        interval = self._drain.config_poll_ms / 1000
        while True:
            await asyncio.sleep(interval)
            await self._watch.poll()
            self._rate.refresh()
            if self._gate.closed:
                letters = self._deliverer.breaker.take_replay()
                if letters:
                    await self._dead_letters.replay(letters)
                    self.counters.storm_replayed += len(letters)
                    log.warning("replayed %d orders dead-lettered in the refusal storm",
                                len(letters))  # fmt: skip

    async def _progress_loop(self) -> None:
        interval = self._drain.progress_interval_ms / 1000
        while True:
            try:
                await self._reporter.publish(self._snapshot())
            except RedisFailureInLoop as exc:
                log.warning("progress not published: %s", exc)
            await asyncio.sleep(interval)

    # -- flow control ---------------------------------------------------------------------

    def _room(self) -> int:
        """How many more records may be read now.

        Bounded by the jobs still running (`max_in_flight`), and by the records read
        since the oldest one not done (4x that): one order stuck in retries must not
        let the redelivery after a crash grow without bound.
        """
        jobs = self._drain.max_in_flight - len(self._jobs)
        pending = PENDING_FACTOR * self._drain.max_in_flight - self._tracker.in_flight
        return min(jobs, pending)

    async def _flow_control(self) -> None:
        """Pause every partition while nothing may or can be delivered; resume after.

        Partitions pause while the backend is down, while the rate is 0, and when there
        has been no room for new records for `BACKPRESSURE_PAUSE_S` (a slow drain): the
        loop keeps polling meanwhile, so the consumer stays in its group.
        """
        now = time.monotonic()
        room = self._room()
        if room > 0:
            self._full_since = None
        elif self._full_since is None:
            self._full_since = now
        if not self._gate.closed:
            hold = "backend refuses every order" if self._gate.refusal else "backend down"
        elif self._rate.decision.effective_rate <= 0:
            hold = f"rate 0, {self._rate.decision.reason}"
        elif (self._full_since is not None and now - self._full_since > BACKPRESSURE_PAUSE_S) or (
            self._paused and room < self._drain.max_in_flight // 2
        ):
            hold = "in flight"  # a slow drain, until half the room is free: not worth a log
        else:
            hold = ""
        if hold:
            if hold != self._paused and hold != "in flight":
                log.info("pausing partitions (%s), %d orders in flight", hold, len(self._jobs))
            self._paused = hold
            # Also catches partitions assigned since the pause.
            await self._source.pause()
        elif self._paused:
            positions = {
                p: o.next_fetch
                for p, o in self._tracker.partitions.items()
                if o.next_fetch is not None
            }
            await self._source.resume(positions)
            if self._paused != "in flight":
                log.info("resuming partitions (%s is over)", self._paused)
            self._paused = ""

    # -- jobs ---------------------------------------------------------------------------------

    def _start(self, message: Message) -> None:
        partition = message.partition() or 0
        offsets = self._tracker.partitions.get(partition)
        if offsets is None:
            # Assigned without our callback seeing it (should not happen): track from here.
            offsets = self._tracker.assign(partition, None)
        if self._losses is not None:
            self._losses.observe(partition, offsets.next_fetch, message.offset() or 0)
        if not offsets.add(message.offset() or 0):
            return
        job = Job(message, offsets)
        self._jobs.add(job)
        self._launch(job)

    def _launch(self, job: Job) -> None:
        job.task = asyncio.create_task(self._process(job))
        job.task.add_done_callback(lambda task: self._finished(job, task))

    def _finished(self, job: Job, task: asyncio.Task[None]) -> None:
        self._job_done.set()
        if task.cancelled() or job.offsets.revoked or self._stopping.is_set():
            self._jobs.discard(job)
            return
        exc = task.exception()
        if exc is None:
            self._jobs.discard(job)
            return
        # A bug or an unexpected failure: never skip the record, try it again shortly.
        log.error("job for %s[%d]@%d failed, retrying: %r", job.message.topic(), job.partition,
                  job.offset, exc, exc_info=exc)  # fmt: skip
        asyncio.get_running_loop().call_later(JOB_RESTART_S, self._relaunch, job)

    def _relaunch(self, job: Job) -> None:
        if job.offsets.revoked or self._stopping.is_set():
            self._jobs.discard(job)
        else:
            self._launch(job)

    async def _process(self, job: Job) -> None:
        value = job.message.value() or b""
        try:
            record = decode_record(value)
        except msgspec.DecodeError as exc:
            await self._dead_letter(job, None, f"undecodable record: {exc}")
            job.offsets.done(job.offset)
            return
        try:
            if not await self._passes_fence(record):
                await self._fenced(job, record)
                return
            async with self._slots:
                result = await self._deliverer.deliver(record.order_id, value, job.state)
        except Abandoned:
            return
        if isinstance(result, Delivered):
            self.counters.delivered += 1
            self._meter.add()
            self._statuses.delivered(record.order_id, record.accepted_at, self._wall_clock())
        else:
            headers = await self._dead_letter(job, record, result.reason)
            letter = StormLetter(job.message.key(), value, headers)
            self._deliverer.breaker.dead_lettered(result.status, letter)
            self._statuses.failed(record.order_id, record.accepted_at, result.reason)
        job.offsets.done(job.offset)

    async def _passes_fence(self, record: OrderRecord) -> bool:
        """Settle the order before delivering it; while Redis is away, wait (never guess)."""
        while True:
            try:
                return await self._fence.passes(record)
            except AdmissionUnavailable as exc:
                if self._stopping.is_set():
                    raise Abandoned(record.order_id) from exc
                log.warning("order %s waits for Redis before delivery: %s", record.order_id, exc)
                await asyncio.sleep(FENCE_RETRY_S)

    async def _fenced(self, job: Job, record: OrderRecord) -> None:
        """A record of an order settled "not stored" (its units returned, its shopper told
        it failed), written by a broker after the reaper's look: never delivered."""
        await self._dead_letter(job, record, FENCED_REASON)
        self.counters.fenced += 1
        with contextlib.suppress(*RedisFailure):  # a sale report figure: best effort
            await self._redis.hincrby(SaleKeys.of(record.sale_id).counters, "fenced_orders", 1)
        job.offsets.done(job.offset)

    async def _dead_letter(self, job: Job, record: OrderRecord | None, reason: str) -> Headers:
        headers = await self._dead_letters.send(
            job.message, reason, job.state, lambda: job.offsets.revoked
        )
        self.counters.dead_lettered += 1
        order_id = record.order_id if record is not None else "?"
        log.error("dead-lettered order %s (%s[%d]@%d): %s", order_id, job.message.topic(),
                  job.partition, job.offset, reason)  # fmt: skip
        return headers

    async def _settle(self, jobs: list[Job], timeout_s: float) -> None:
        """Let requests on the wire finish (at most `timeout_s`); cancel every other job."""
        deadline = time.monotonic() + timeout_s
        while True:
            pending = [job for job in jobs if job.task is not None and not job.task.done()]
            if not pending:
                return
            remaining = deadline - time.monotonic()
            for job in pending:
                if job.task is not None and (remaining <= 0 or not job.state.sending):
                    job.task.cancel()
            await asyncio.wait(
                [job.task for job in pending if job.task is not None],
                timeout=max(0.05, min(0.1, remaining)),
            )
            if remaining <= 0:
                return

    # -- rebalance (called from the Kafka thread through the event loop) ---------------------

    async def partitions_assigned(self, starts: dict[int, int | None]) -> None:
        for partition, start in starts.items():
            self._tracker.assign(partition, start)

    async def partitions_revoked(self, partitions: list[int]) -> dict[int, int]:
        going = set(partitions)
        await self._settle([j for j in self._jobs if j.partition in going], self._revoke_wait_s)
        done = {}
        for partition in partitions:
            offsets = self._tracker.revoke(partition)
            watermark = offsets.watermark() if offsets is not None else None
            if watermark is not None:
                done[partition] = watermark
        self._jobs = {job for job in self._jobs if job.partition not in going}
        return done

    async def partitions_lost(self, partitions: list[int]) -> None:
        going = set(partitions)
        for job in [j for j in self._jobs if j.partition in going]:
            if job.task is not None:
                job.task.cancel()
        for partition in partitions:
            self._tracker.revoke(partition)
        self._jobs = {job for job in self._jobs if job.partition not in going}

    @property
    def _revoke_wait_s(self) -> float:
        return self._drain.backend_timeout_s + 1

    # -- reporting ------------------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        refusal = self._gate.refusal
        return Snapshot(
            decision=self._rate.decision,
            delivered_per_second=self._meter.rate(),
            backend=BACKEND_STATES[self._gate.state],
            in_flight=self._tracker.in_flight,
            delivered_total=self.counters.delivered,
            dead_lettered_total=self.counters.dead_lettered,
            fenced_total=self.counters.fenced,
            refusal_status=refusal.status if refusal is not None else None,
            refusal=refusal.message if refusal is not None else "",
        )

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[None]) -> None:
        # These loops run until cancelled; one that ends otherwise is a bug: stop cleanly.
        if task.cancelled():
            return
        exc = task.exception()
        log.critical("%s loop ended: %r; stopping", task.get_name(), exc, exc_info=exc)
        self._crashed = exc or RuntimeError(f"{task.get_name()} loop ended")
        self.stop()
