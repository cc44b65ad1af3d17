"""OpenTelemetry's SDK for the observability tests: set once per process (the global providers can be set
only once), with an in-memory span exporter and metric reader, and two exporters whose faults a test switches on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class FaultyExporter(SpanExporter):
    """Raises on export while ``failing`` is set; blocks (up to 10 s) while ``stuck`` is set."""

    def __init__(self) -> None:
        self.failing = False
        self.stuck = False
        self.unstuck = threading.Event()
        #: Blocked exports that have ended (released, or after their 10 s): a call that waited for the exporter
        #: could only have returned after one.
        self.waits_ended = 0
        self.waiting = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.stuck:
            self.waiting += 1
            self.unstuck.wait(10)
            self.waiting -= 1
            self.waits_ended += 1
        if self.failing:
            raise RuntimeError("the collector is down")
        return SpanExportResult.SUCCESS


class BlockingExporter(SpanExporter):
    """Blocks on export while ``blocked`` is set (up to 10 s), as an exporter stuck on a dead collector."""

    def __init__(self) -> None:
        self.blocked = False
        self.released = threading.Event()
        #: Blocked exports that have ended (released, or after their 10 s): a call that waited for the exporter
        #: could only have returned after one.
        self.waits_ended = 0
        self.waiting = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.blocked:
            self.waiting += 1
            self.released.wait(10)
            self.waiting -= 1
            self.waits_ended += 1
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.released.set()


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    faulty: FaultyExporter
    blocking: BlockingExporter


_telemetry: Telemetry | None = None


def _install() -> Telemetry:
    global _telemetry
    if _telemetry is None:
        spans, faulty, blocking = InMemorySpanExporter(), FaultyExporter(), BlockingExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        provider.add_span_processor(SimpleSpanProcessor(faulty))
        provider.add_span_processor(BatchSpanProcessor(blocking, schedule_delay_millis=10))
        trace.set_tracer_provider(provider)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _telemetry = Telemetry(spans, reader, faulty, blocking)
    return _telemetry


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """The process's SDK, its spans cleared and its exporters healthy."""
    found = _install()
    found.spans.clear()
    found.metrics.get_metrics_data()  # the reader is cumulative: tests compare before and after
    yield found
    found.faulty.failing = False
    found.faulty.stuck = False
    found.faulty.unstuck.set()
    found.faulty.unstuck = threading.Event()
    found.blocking.blocked = False
    found.blocking.released.set()
    # The exporters' threads leave the exports the test blocked before the next test counts anew.
    deadline = time.monotonic() + 15
    while (found.faulty.waiting or found.blocking.waiting) and time.monotonic() < deadline:
        time.sleep(0.01)
    found.faulty.waits_ended = found.blocking.waits_ended = 0
    found.blocking.released = threading.Event()
