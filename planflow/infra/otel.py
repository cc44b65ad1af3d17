"""OpenTelemetry for planflow: a listener that turns the provider's events into spans and metrics.

Imported only when a provider is opened with telemetry (``open_provider(..., telemetry=True)`` or the config
setting ``telemetry``); it needs ``opentelemetry-api`` alone (the ``otel`` extra) and reports through the
global tracer and meter providers, which the application configures with the SDK and its exporters, as
OpenTelemetry asks of libraries.

Each repository call becomes one CLIENT span named ``{method} {collection}`` with the attributes of
OpenTelemetry's database semantic conventions: ``db.system.name`` (``sqlite``, ``postgresql``, ``tinydb``),
``db.operation.name`` (the method), ``db.collection.name`` (the table), ``db.namespace`` (the database,
``database|schema`` on PostgreSQL when the URL selects a schema, the file on SQLite and TinyDB) and, on
PostgreSQL, ``server.address`` and ``server.port``; a call that raised has status ERROR and ``error.type`` (the
exception's class name: never its message, which may quote ids). The span is made when the call has ended,
with the call's start and end times, as a child of the span current in the caller's context. Nothing is ever
made current, so nothing nests under planflow's spans.

The SDK's work (tens of microseconds a span on a busy machine: more than a SQLite point read) is not done on
the caller's thread: the caller captures its context and hands the event to one worker thread of the process,
which makes the spans and records the metrics, in order. A call therefore never waits for the SDK or an
exporter, and the SDK's work overlaps the calls' own waits for the database. The hand-over is an append to a
deque, with one wake-up of the worker per burst of calls rather than per call; it is bounded
(:data:`BACKLOG` events): beyond that, events are dropped and counted, with a WARNING, rather than letting
memory grow behind a stuck exporter. Closing the provider waits (up to a second) for its events to be
reported; :meth:`OpenTelemetryListener.flush` waits on demand; and at interpreter exit the events not yet
reported are handed to the SDK (for up to :data:`EXIT_FLUSH` seconds) before the SDK's own exit handler flushes
its processors, so that a program that never closes its provider still exports every span.

Metrics: ``db.client.operation.duration`` (histogram, seconds), ``planflow.db.client.retries`` and
``planflow.db.client.conflicts`` (counters), ``db.client.connection.wait_time`` (histogram, seconds) and, for
PostgreSQL pools, ``db.client.connection.count`` (``db.client.connection.state`` ``used`` / ``idle``) and
``db.client.connection.pending_requests``, observed from psycopg_pool's ``get_stats()``.

Exporting is the SDK's business: with ``BatchSpanProcessor`` (the usual choice) a slow or failing exporter
never delays a call; with ``SimpleSpanProcessor`` each span is exported as the call returns, so a blocking
exporter blocks the caller (the SDK logs a failing one; the call still succeeds).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from time import time_ns

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from planflow.config import PlanflowConfig, parse_postgres
from planflow.errors import ConfigError
from planflow.events import ConflictEvent, Event, OperationEvent, PoolWaitEvent, RetryEvent
from planflow.infra.registry import BY_NAME
from planflow.version import __version__

Attributes = dict[str, AttributeValue]
PoolStats = Callable[[], dict[str, int]]

logger = logging.getLogger("planflow.observe")
#: Events waiting for the worker at most; more are dropped (and counted).
BACKLOG = 100_000
#: Seconds the worker lets events gather after a wake-up before it reports them (see :class:`_Worker`).
GATHER = 0.01
#: Seconds ``close`` waits for the provider's events to be reported.
CLOSE_FLUSH = 1.0
#: Seconds the interpreter's exit waits for the events not yet reported.
EXIT_FLUSH = 5.0


class _Worker:
    """The one thread of the process that hands planflow's events to the OpenTelemetry SDK.

    A call only appends its event to a deque: no lock, no wake-up per call. The worker is woken by the first
    event after it went idle, then sleeps :data:`GATHER` seconds so that a burst of calls gathers behind that
    one wake-up, and reports everything waiting before it goes idle again. Waking a thread per call cost more
    than the SDK's own work for a span on a SQLite point read.
    """

    def __init__(self) -> None:
        self.pending: deque[Callable[[], None]] = deque()
        self.dropped = 0
        self._wake = threading.Event()
        self._started = False
        self._lock = threading.Lock()

    def submit(self, work: Callable[[], None]) -> None:
        if not self._started:
            self._start()
        if len(self.pending) >= BACKLOG:
            self.dropped += 1
            if self.dropped % 10_000 == 1:
                logger.warning(
                    "OpenTelemetry falls behind: %d planflow event(s) dropped so far (more than %d waiting)",
                    self.dropped,
                    BACKLOG,
                    extra={"planflow_dropped": self.dropped},
                )
            return
        self.pending.append(work)
        # The worker clears the flag before it drains: an event appended after that is drained, or sees the
        # flag clear and sets it.
        if not self._wake.is_set():
            self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if not self._started:
                threading.Thread(target=self._serve, name="planflow-otel", daemon=True).start()
                self._started = True

    def _serve(self) -> None:
        pending = self.pending
        while True:
            self._wake.wait()
            time.sleep(GATHER)
            self._wake.clear()
            while pending:
                work = pending.popleft()
                try:
                    work()
                except Exception as exc:
                    logger.warning(
                        "reporting a planflow event to OpenTelemetry failed (%s); ignored",
                        type(exc).__name__,
                        exc_info=True,
                    )

    def flush(self, timeout: float) -> bool:
        """Wait until what was submitted before has been reported; False after ``timeout`` seconds."""
        if not self._started:
            return True
        done = threading.Event()
        self.pending.append(done.set)
        self._wake.set()
        return done.wait(timeout)


_worker = _Worker()


def flush(timeout: float = 5.0) -> bool:
    """Wait until every event any provider of the process handed over so far has been reported.

    Returns:
        False when ``timeout`` seconds passed first (a stuck exporter, say).
    """
    return _worker.flush(timeout)


def _flush_at_exit() -> None:
    if not _worker.flush(EXIT_FLUSH):
        logger.warning("OpenTelemetry did not take planflow's last events within %gs of exit", EXIT_FLUSH)


def _flush_before_the_sdk_at_exit() -> None:
    """Run :func:`_flush_at_exit` at exit before every exit handler registered so far.

    Exit handlers run last registered first, and the SDK's ``TracerProvider`` registers the one that flushes its
    span processors when it is made: moved behind it, planflow's events reach the processors first.
    """
    atexit.unregister(_flush_at_exit)
    atexit.register(_flush_at_exit)


def _after_fork() -> None:
    global _worker
    _worker = _Worker()  # the thread did not survive the fork: the child starts its own on first use


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_after_fork)

SCOPE = "planflow"
#: planflow's driver -> OpenTelemetry's ``db.system.name``.
SYSTEMS = {"sqlite": "sqlite", "postgres": "postgresql", "tinydb": "tinydb"}


def collection(driver: str, repository: str, method: str) -> str | None:
    """The table (or TinyDB table) a repository method works on; ``None`` for a batch, which spans several."""
    return BY_NAME[repository].table_of(method, driver)


def _postgres_target(url: str) -> tuple[str | None, int | None, str | None]:
    """Host, port and ``database[|schema]`` of a PostgreSQL URL or key/value string (the first of several
    hosts and ports)."""
    try:
        params = parse_postgres(url).params
    except ConfigError:
        return None, None, None
    host = params.get("host", "").split(",")[0] or None
    port_text = params.get("port", "").split(",")[0]
    port = int(port_text) if port_text.isdigit() else None
    database = params.get("dbname")
    schema = None
    options = params.get("options", "")
    for part in options.replace("-c ", "-c").split():
        if part.startswith("-csearch_path="):
            schema = part[len("-csearch_path=") :].split(",")[0].strip()
    namespace = f"{database}|{schema}" if database and schema else database
    return host, port, namespace


def base_attributes(config: PlanflowConfig) -> Attributes:
    """The attributes every span and measurement of a provider carries."""
    attributes: Attributes = {"db.system.name": SYSTEMS.get(config.driver, config.driver)}
    if config.driver == "postgres":
        host, port, namespace = _postgres_target(config.url or "")
        if namespace:
            attributes["db.namespace"] = namespace
        if host:
            attributes["server.address"] = host
        if port:
            attributes["server.port"] = port
    else:
        attributes["db.namespace"] = config.location
    return attributes


@dataclass(slots=True)
class _Instruments:
    duration: Histogram
    retries: Counter
    conflicts: Counter
    pool_wait: Histogram


_instruments: dict[int, tuple[object, _Instruments]] = {}
_lock = threading.Lock()
#: Live pools by name, observed by the pool gauges (made once per meter provider).
_pools: dict[str, tuple[PoolStats, Attributes]] = {}
_pool_numbers = itertools.count(1)


def _observe_count(options: CallbackOptions) -> Iterable[Observation]:
    for stats, attributes in list(_pools.values()):
        numbers = stats()
        if not numbers:
            continue
        idle = numbers.get("pool_available", 0)
        used = max(numbers.get("pool_size", 0) - idle, 0)
        yield Observation(used, {**attributes, "db.client.connection.state": "used"})
        yield Observation(idle, {**attributes, "db.client.connection.state": "idle"})


def _observe_pending(options: CallbackOptions) -> Iterable[Observation]:
    for stats, attributes in list(_pools.values()):
        numbers = stats()
        if numbers:
            yield Observation(numbers.get("requests_waiting", 0), attributes)


def _instruments_of(meter_provider: object, meter: Meter) -> _Instruments:
    """The instruments of ``meter_provider``, made once (making them again would only warn)."""
    with _lock:
        known = _instruments.get(id(meter_provider))
        if known is not None and known[0] is meter_provider:
            return known[1]
        made = _Instruments(
            duration=meter.create_histogram(
                "db.client.operation.duration", unit="s", description="Duration of planflow repository calls."
            ),
            retries=meter.create_counter(
                "planflow.db.client.retries",
                unit="{retry}",
                description="Units of work run again after a transient failure.",
            ),
            conflicts=meter.create_counter(
                "planflow.db.client.conflicts",
                unit="{conflict}",
                description="Calls refused by an optimistic-lock check (ConflictError).",
            ),
            pool_wait=meter.create_histogram(
                "db.client.connection.wait_time",
                unit="s",
                description="Time a call waited for a pooled connection when none was idle.",
            ),
        )
        meter.create_observable_gauge(
            "db.client.connection.count",
            callbacks=[_observe_count],
            unit="{connection}",
            description="Pooled connections by state (used, idle).",
        )
        meter.create_observable_gauge(
            "db.client.connection.pending_requests",
            callbacks=[_observe_pending],
            unit="{request}",
            description="Calls waiting for a pooled connection.",
        )
        _instruments[id(meter_provider)] = (meter_provider, made)
        return made


class OpenTelemetryListener:
    """A listener reporting one provider's events to OpenTelemetry (see the module docstring)."""

    def __init__(self, config: PlanflowConfig, pool_stats: PoolStats | None = None) -> None:
        _flush_before_the_sdk_at_exit()
        self._driver = config.driver
        self._base = base_attributes(config)
        self._tracer = trace.get_tracer(SCOPE, __version__)
        meter_provider = metrics.get_meter_provider()
        self._instruments = _instruments_of(meter_provider, metrics.get_meter(SCOPE, __version__))
        #: (repository, method, error) -> (span name, span attributes, metric attributes)
        self._cache: dict[tuple[str, str, str | None], tuple[str, Attributes, Attributes]] = {}
        self._pool: str | None = None
        if pool_stats is not None:
            name = f"{self._base.get('db.namespace', config.driver)}#{next(_pool_numbers)}"
            attributes: Attributes = {
                "db.system.name": self._base["db.system.name"],
                "db.client.connection.pool.name": name,
            }
            with _lock:
                _pools[name] = (pool_stats, attributes)
            self._pool = name

    def _described(
        self, repository: str, method: str, error: str | None
    ) -> tuple[str, Attributes, Attributes]:
        key = (repository, method, error)
        found = self._cache.get(key)
        if found is None:
            table = collection(self._driver, repository, method)
            attributes: Attributes = {**self._base, "db.operation.name": method}
            if table is not None:
                attributes["db.collection.name"] = table
            if error is not None:
                attributes["error.type"] = error
            found = self._cache[key] = (f"{method} {table}" if table else method, attributes, attributes)
        return found

    def __call__(self, event: Event) -> None:
        """Hand ``event`` to the worker with the caller's context and the time (see the module docstring)."""
        end = time_ns()
        context = otel_context.get_current()
        _worker.submit(lambda: self.report(event, context, end))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the events handed over so far have been reported; False after ``timeout`` seconds."""
        return _worker.flush(timeout)

    def report(self, event: Event, context: otel_context.Context, end: int) -> None:
        """Report ``event`` now: a span and a duration for a call, a count for a retry, a conflict or a wait."""
        if isinstance(event, OperationEvent):
            name, attributes, measured = self._described(event.repository, event.method, event.error)
            span = self._tracer.start_span(
                name,
                context=context,
                kind=SpanKind.CLIENT,
                attributes=attributes,
                start_time=end - int(event.duration_s * 1e9),
            )
            if event.error is not None:
                span.set_status(Status(StatusCode.ERROR))
            span.end(end_time=end)
            self._instruments.duration.record(event.duration_s, measured)
        elif isinstance(event, RetryEvent):
            self._instruments.retries.add(1, {**self._base, "error.type": event.cause})
        elif isinstance(event, ConflictEvent):
            _, attributes, _ = self._described(event.repository, event.method, None)
            self._instruments.conflicts.add(1, attributes)
        elif isinstance(event, PoolWaitEvent):  # pyright: ignore[reportUnnecessaryIsInstance]
            self._instruments.pool_wait.record(event.duration, self._base)

    def close(self) -> None:
        """Wait (a second at most) for the provider's events to be reported; stop observing its pool."""
        if not self.flush(CLOSE_FLUSH):
            logger.warning("OpenTelemetry did not take planflow's last events within %gs", CLOSE_FLUSH)
        if self._pool is not None:
            with _lock:
                _pools.pop(self._pool, None)
            self._pool = None

    def __repr__(self) -> str:
        return f"<OpenTelemetryListener {self._driver}>"


__all__ = ["OpenTelemetryListener", "base_attributes", "collection", "flush"]
