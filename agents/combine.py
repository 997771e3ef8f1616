"""combine: metrics.partials -> metrics.rollups (final windows) and the metric gauges.

Spread over the partitions of metrics.partials (``TRACKFLOW_COMBINE_PARTITIONS``): each
metric's series go to one of them (``pipeline.metrics.routing``), and every partition sees
every source partition's watermark. A window is finalised when all source partitions'
watermarks have passed its end plus the allowed lateness, or, after
``TRACKFLOW_IDLE_CLOSE_SECONDS`` without input, every open window is (the last windows of
a replay). A silent source partition stops holding windows, and the pipeline counts as
idle, only once the consumer group has read its input to the end, as the broker says
(``pipeline.runtime.group_offsets``): silence alone may be a worker SIGKILLed with a
backlog, and its events would all come late. Finals are written to the state's changelog
(its outbox) together with the state change that drops their windows, then sent; a worker
that recovers the state re-sends the last outbox at the same position, which the lake
writer and the detectors skip if it arrived before. So a crash anywhere is stored once.
Windows of persons (uv, funnels) close, by watermark or idle, only once this worker's
identity map holds every link their events made (``CombineState.needs``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust

from pipeline.contract.plan import TrackingPlan
from pipeline.metrics.combine import CombineState
from pipeline.names import AGENT_COMBINE
from pipeline.runtime import wire
from pipeline.runtime.context import Context
from pipeline.runtime.group_offsets import GroupOffsets, TopicPartitionId, pending
from pipeline.runtime.kafka_security import KafkaCluster
from pipeline.runtime.ordered_input import OrderedInput, admit
from pipeline.runtime.streams import Take, consumer_lag, take_batches

log = logging.getLogger(__name__)

IDLE_INDEX_BASE = 1 << 19  # positions of idle-closed rows, after those of the same offset
GAUGE_SECONDS = 5.0  # provisional metric values refresh at least this often
SEED_RETRY_SECONDS = 60.0  # after a failed read of the stored finals
QUIET_RECHECK_MS = 5_000  # ask the broker about a combine partition's sources at most this often

SeriesId = tuple[str, str, str]  # metric, window label, dimensions


class Drained:
    """What the broker said of one combine partition's silent source partitions.

    ``ends[p]`` for a source partition whose events.raw, events.valid and events.stitched
    the group had read to the end when asked (``at_ms``): the partition's last heard time
    then, and the metrics.partials end then. It is drained for the state while it stayed
    silent since and the state has read metrics.partials that far (its last partials may
    still wait there); an answer older than the idle time is asked again, so a partition
    that got a backlog since is not taken as quiet for long.
    """

    def __init__(self, at_ms: int, ends: dict[int, tuple[int | None, int]]) -> None:
        self.at_ms = at_ms
        self.ends = ends

    def known(self, state: CombineState, p: int, now_ms: int) -> bool:
        """Whether the answer still covers ``p`` (asked lately, silent since)."""
        got = self.ends.get(p)
        fresh = now_ms - self.at_ms < (state.idle_ms or 0)
        return fresh and got is not None and got[0] == state.heard.get(p)

    def predicate(self, state: CombineState, now_ms: int) -> Callable[[int], bool]:
        def drained(p: int) -> bool:
            return self.known(state, p, now_ms) and state.offset >= self.ends[p][1] - 1

        return drained


def register(app: faust.App, ctx: Context) -> Any:
    stage = Combine(app, ctx)

    @app.agent(ctx.topics.partials, name=AGENT_COMBINE)
    async def combine(stream: faust.StreamT) -> None:
        settings = ctx.settings
        async for events in take_batches(stream, settings.take_max, settings.take_within):
            await stage.process(events)

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def restart_idle_clock(sender: Any, **kwargs: Any) -> None:
        # Idle means "no input while able to read it": time spent joining the group and
        # recovering tables after a restart must not close windows that input will fill.
        stage.ready = True
        stage.last_input = time.monotonic()

    @app.timer(interval=1.0)
    async def close_idle() -> None:
        await stage.close_if_idle()

    @app.timer(interval=GAUGE_SECONDS)
    async def update_gauges() -> None:
        # Its own timer: provisional values must move while input flows too, and resolving
        # uv's identifiers every second would be work nobody reads.
        await stage.seed_finals()
        async with stage.lock:
            stage.show_values()

    return combine


class Combine:
    """The combine stage of this worker: merging, closing, publishing, and its gauges.

    One ``CombineState`` per combine partition it holds (``states``); a take may hold
    messages of several, each merged, closed and logged on its own.
    """

    def __init__(self, app: faust.App, ctx: Context) -> None:
        self.app = app
        self.ctx = ctx
        self.metrics = ctx.metrics
        self.states = ctx.domain.combine
        self.table = ctx.tables.combine_windows
        self.lock = asyncio.Lock()
        self.input = OrderedInput(app, AGENT_COMBINE, ctx.metrics, ctx.start_offsets)
        self.ready = False
        self.last_input = time.monotonic()
        # Per combine partition, the newest final (window start, value) of each series it
        # closed: only the partition's holder shows them.
        self.finals: dict[int, dict[SeriesId, tuple[int, float | None]]] = {}
        self.shown: dict[str, set[SeriesId]] = {"final": set(), "provisional": set()}
        self.seeded: set[int] = set()  # held partitions whose stored finals were read
        self.seed_retry_at = 0.0  # monotonic time before which a failed read is not retried
        topics = ctx.topics
        self.links_topics = set(topics.links.topics)
        self.upstream = {
            name
            for topic in (topics.raw, topics.valid, topics.stitched, topics.partials)
            for name in topic.topics
        }
        # The group-wide view of what is unread, asked of the broker (rarely, off the loop).
        self.source_names = sorted(
            name for topic in (topics.raw, topics.valid, topics.stitched) for name in topic.topics
        )
        self.partials_names = sorted(topics.partials.topics)
        self.group = GroupOffsets(KafkaCluster.from_settings(ctx.settings), ctx.settings.app_id)
        self.drained: dict[int, Drained] = {}  # combine partition -> the broker's last answer

    async def process(self, events: Take) -> None:
        async with self.lock:
            await self.send_unsent()
            by_partition: dict[int, list[Any]] = {}
            for event in await admit(self.input, events):
                by_partition.setdefault(event.message.partition, []).append(event.message)
            self.last_input = time.monotonic()
            for c, messages in sorted(by_partition.items()):
                state = self.states.get(c)
                if state is None:
                    continue  # revoked while this take was read: its new owner reads it
                late_before = state.late
                fresh = [m for m in messages if m.offset > state.offset]
                for m in fresh:
                    state.apply(wire.decode_partials(m.value), now_ms=_monotonic_ms())
                    state.offset = m.offset
                if state.late > late_before:
                    late = state.late - late_before
                    self.metrics.late_events.labels("any", AGENT_COMBINE).inc(late)
                # Closes are positioned at the offset just read: a take of re-read messages
                # only (all skipped) would reuse a position that may already be stored.
                rows = []
                if fresh:
                    now = _monotonic_ms()
                    drained = await self.drained_sources(c, state, now)
                    rows = state.close_ready(now_ms=now, drained=drained, known=self.known())
                await self.publish(c, rows, state.offset, 0, "watermark")
            self.show_identity_wait(idle=False)

    async def close_if_idle(self) -> None:
        if self.app.rebalancing or not self.ready or self.upstream_pending():
            self.last_input = time.monotonic()
            return
        async with self.lock:
            await self.send_unsent()
            idle = time.monotonic() - self.last_input >= self.ctx.settings.idle_close_seconds
            closing = any(state.open and state.offset >= 0 for _, state in self.states.items())
            if not (idle and closing):
                return
            if self.show_identity_wait(idle=True):
                return  # windows of persons wait for links; asked again in a second
            if not await self.group_drained():
                self.last_input = time.monotonic()  # ask again after another idle time
                return
            for c, state in self.states.items():
                if state.open and state.offset >= 0:
                    await self.publish(c, state.close_all(), state.offset, IDLE_INDEX_BASE, "idle")

    async def publish(
        self, c: int, rows: list[dict[str, Any]], offset: int, base: int, reason: str
    ) -> None:
        """Log partition ``c``'s state change with ``rows`` as its outbox, then deliver."""
        outbox = (offset, base, rows) if rows else None
        state = self.states[c]
        snapshot = state.wants_snapshot(self.ctx.settings.combine_snapshot_bytes)
        records = state.take_records(outbox=outbox, snapshot=snapshot)
        first = None
        for i, record in enumerate(records):
            delivery = await self.table.append(c, f"combine:{offset}:{base}:{i}", record)
            first = first or delivery
        if snapshot and first is not None:
            # Logged with the next group's progress: a takeover starts reading there.
            state.snap_at = (await first).offset
        if rows:
            await self.send(c, offset, base, rows)
            finals = self.finals.setdefault(c, {})
            for row in rows:
                key = (row["metric"], row["window"], row["dimensions"])
                if row["window_start"] >= finals.get(key, (-1, None))[0]:
                    finals[key] = (row["window_start"], row["value"])
            for window in {(r["window"], r["window_start"]) for r in rows}:
                self.metrics.windows_closed.labels(window[0], reason).inc()

    async def send(self, c: int, offset: int, base: int, rows: list[dict[str, Any]]) -> None:
        """Finals of every combine partition go to the one rollups partition, positioned
        by (combine partition, offset, base)."""
        for value in wire.PositionedRows(c, offset, base, rows).encode_all():
            await (await self.ctx.topics.rollups.send(value=value, partition=0))

    async def send_unsent(self) -> None:
        """After a recovery: the last outbox may never have been sent (a crash between
        logging and sending); sending it again is harmless, it keeps its position."""
        for c, state in self.states.items():
            unsent, state.unsent = state.unsent, None
            if unsent is not None and unsent[2]:
                log.info("combine: re-sending %s final rows of partition %s", len(unsent[2]), c)
                await self.send(c, *unsent)

    async def drained_sources(
        self, c: int, state: CombineState, now_ms: int
    ) -> Callable[[int], bool]:
        """The ``drained`` predicate of partition ``c``'s silent source partitions.

        The broker is asked only when a silent partition is not covered by its last
        answer, at most every ``QUIET_RECHECK_MS``; if it cannot answer, no silent
        partition counts as drained (windows wait).
        """
        silent = state.silent(now_ms)
        last = self.drained.get(c)
        unknown = [p for p in silent if last is None or not last.known(state, p, now_ms)]
        if unknown and (last is None or now_ms - last.at_ms >= QUIET_RECHECK_MS):
            last = self.drained[c] = Drained(now_ms, await self.ask_drained(c, state, silent))
        if last is None:
            return lambda p: False  # no partition is silent: nothing to ask
        return last.predicate(state, now_ms)

    async def ask_drained(
        self, c: int, state: CombineState, silent: list[int]
    ) -> dict[int, tuple[int | None, int]]:
        """Of the ``silent`` source partitions, those the group has read to the end,
        with their heard time and the end of metrics.partials ``c``; {} if unknown."""
        sources = [(name, p) for p in silent for name in self.source_names]
        partials = [(name, c) for name in self.partials_names]
        try:
            positions = await asyncio.to_thread(self.group.positions, sources + partials)
        except Exception as exc:  # unknown is not drained: the windows wait
            log.warning(
                "combine: cannot ask the broker whether source partitions %s are drained "
                "(%s: %s); their windows wait",
                silent,
                type(exc).__name__,
                exc,
            )
            return {}
        end = max(positions[tp].high for tp in partials)
        return {
            p: (state.heard.get(p), end)
            for p in silent
            if all(positions[(name, p)].unread == 0 for name in self.source_names)
        }

    async def group_drained(self) -> bool:
        """Whether the whole consumer group has read every upstream partition to its end.

        This worker's own lag cannot see partitions another worker owns, or nobody does
        during a rebalance or after a SIGKILL. False when the broker cannot answer.
        """
        settings = self.ctx.settings
        wanted: list[TopicPartitionId] = [
            (name, p) for name in self.source_names for p in range(self.ctx.partitions)
        ]
        wanted += [(name, 0) for name in sorted(self.links_topics)]
        wanted += [
            (name, c) for name in self.partials_names for c in range(settings.combine_partitions)
        ]
        try:
            positions = await asyncio.to_thread(self.group.positions, wanted)
        except Exception as exc:
            log.warning(
                "combine: no idle close: cannot ask the broker what the group has read (%s: %s)",
                type(exc).__name__,
                exc,
            )
            return False
        left = pending(positions)
        if left:
            log.info("combine: no idle close, input unread in the group: %s", ", ".join(left))
        return not left

    def known(self) -> int:
        """How far into identity.links this worker's map is."""
        return self.ctx.tables.identity.known

    def show_identity_wait(self, idle: bool) -> bool:
        """Whether windows due to close wait for links this worker's map does not hold yet
        (the gauge says by how many identity.links offsets): at an idle close every open
        window is due, otherwise those the watermark passed. Open windows still filling
        need links too, but nobody waits for them yet."""
        known = self.known()
        needs = [s.waiting_for() if idle else s.blocked for _, s in self.states.items()]
        behind = max((n - known for n in needs), default=0)
        self.metrics.identity_wait.set(max(0, behind))
        return behind > 0

    def upstream_pending(self) -> bool:
        """Input this worker has not yet consumed: the pipeline is catching up, not idle."""
        return self.pending_in(self.upstream | self.links_topics)

    def pending_in(self, topics: set[str]) -> bool:
        lag = consumer_lag(self.app)
        return lag is None or any(n for tp, n in lag.items() if tp.topic in topics)

    async def seed_finals(self) -> None:
        """Partitions newly held (a start, a takeover) begin with the newest finals the
        lake has for their series, so the final gauges do not wait for each series' next
        window to close (an hour for hourly ones). A final this worker closes later has a
        newer window start and wins."""
        held = {c for c, _ in self.states.items()}
        self.seeded &= held
        new = held - self.seeded
        if not new or time.monotonic() < self.seed_retry_at:
            return
        settings, domain = self.ctx.settings, self.ctx.domain
        try:
            rows = await asyncio.to_thread(stored_finals, settings.data_dir, domain.plan)
        except Exception as exc:  # unreadable files (a file being replaced): try again later
            log.warning("combine: stored finals not read (%s: %s)", type(exc).__name__, exc)
            self.seed_retry_at = time.monotonic() + SEED_RETRY_SECONDS
            return
        self.seeded |= new
        for metric, window, dims, start, value in rows:
            c = domain.combine_place.get(metric)
            if c in new and value is not None:
                finals = self.finals.setdefault(c, {})
                key = (metric, window, dims)
                if start > finals.get(key, (-1, None))[0]:
                    finals[key] = (start, float(value))

    def show_values(self) -> None:
        """The metric gauges of the combine partitions this worker holds.

        ``trackflow_metric_final``: each series' newest final; ``trackflow_metric_value``:
        the running value of its newest open window. Kept apart, so a final is never
        overwritten by the next window's partial count. The series of a partition that
        moved to another worker are removed (its new holder shows them), as are those
        with no open window or no value.
        """
        held = dict(self.states.items())
        for c in set(self.finals) - set(held):
            del self.finals[c]
        final: dict[SeriesId, float] = {}
        for finals in self.finals.values():
            final.update({key: v for key, (_, v) in finals.items() if v is not None})
        newest: dict[SeriesId, tuple[int, float | None]] = {}
        windows = set()
        for state in held.values():
            windows |= {(k[1], k[2]) for k in state.open}
            for row in state.provisional():
                key = (row["metric"], row["window"], row["dimensions"])
                if row["window_start"] >= newest.get(key, (-1, None))[0]:
                    newest[key] = (row["window_start"], row["value"])
        provisional = {key: v for key, (_, v) in newest.items() if v is not None}
        self._show(self.metrics.metric_final, "final", final)
        self._show(self.metrics.metric_value, "provisional", provisional)
        self.metrics.open_windows.set(len(windows))

    def _show(self, gauge: Any, kind: str, values: dict[SeriesId, float]) -> None:
        for key in self.shown[kind] - set(values):
            gauge.remove(*key)
        for key, value in values.items():
            gauge.labels(*key).set(value)
        self.shown[kind] = set(values)


# The newest final of each series in the lake (two days back: older is no latest value).
_LATEST_FINALS = (
    'SELECT metric, "window", dimensions, epoch_ms(window_start), value FROM rollups '
    "WHERE window_start >= now() - INTERVAL 2 DAY "
    'QUALIFY row_number() OVER (PARTITION BY metric, "window", dimensions '
    "ORDER BY window_start DESC) = 1"
)


def stored_finals(data_dir: Path, plan: TrackingPlan) -> list[tuple[str, str, str, int, Any]]:
    """(metric, window, dimensions, window start ms, value) of each series' newest final
    in the lake's rollups table."""
    from pipeline.lake.views import connect

    con = connect(data_dir, plan, only=("rollups",))  # not the events view: see connect
    try:
        return [tuple(row) for row in con.execute(_LATEST_FINALS).fetchall()]
    finally:
        con.close()


def _monotonic_ms() -> int:
    """Processing time for partition idleness: immune to wall-clock jumps."""
    return int(time.monotonic() * 1000)
