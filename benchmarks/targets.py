"""The targets of issue 6 and their evaluation against measured medians."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.harness import Measurement
from benchmarks.stores.base import PLANFLOW, RAW, SQLALCHEMY
from benchmarks.tinydb_bench import BATCH, ONE_BY_ONE
from benchmarks.tinydb_bench import RAW as TINYDB_RAW

#: Workload 8: growing the rows tenfold may cost at most this many times the time.
LINEAR_GROWTH_LIMIT = 12.0


@dataclass(frozen=True, slots=True)
class Target:
    """``numerator / denominator`` (medians) compared with ``bound``."""

    label: str
    numerator: str
    denominator: str
    at_most: bool
    bound: float

    def describe(self) -> str:
        """``<= 1.3`` or ``>= 2``."""
        return f"{'<=' if self.at_most else '>='} {self.bound:g}"

    def met(self, ratio: float) -> bool:
        """Whether ``ratio`` meets the target."""
        return ratio <= self.bound if self.at_most else ratio >= self.bound


@dataclass(frozen=True, slots=True)
class Check:
    """One target checked against one measurement."""

    driver: str
    workload: str
    size: int
    target: str
    ratio: float
    met: bool

    def to_json(self) -> dict[str, object]:
        """A JSON-ready record."""
        return {
            "driver": self.driver,
            "workload": self.workload,
            "size": self.size,
            "target": self.target,
            "ratio": round(self.ratio, 4),
            "met": self.met,
        }


def _planflow_vs_raw(bound: float) -> Target:
    return Target("planflow/raw", PLANFLOW, RAW, True, bound)


SQLALCHEMY_VS_PLANFLOW = Target("sqlalchemy/planflow", SQLALCHEMY, PLANFLOW, False, 2.0)
TINYDB_ONE_BY_ONE_VS_RAW = Target("one-by-one/raw", ONE_BY_ONE, TINYDB_RAW, True, 1.5)
TINYDB_ONE_BY_ONE_VS_BATCH = Target("one-by-one/batch", ONE_BY_ONE, BATCH, False, 20.0)

#: Workload number -> its targets (workload 8 reuses those of the workload it scales).
TARGETS: dict[int, tuple[Target, ...]] = {
    1: (_planflow_vs_raw(1.3), SQLALCHEMY_VS_PLANFLOW),
    2: (_planflow_vs_raw(1.5), SQLALCHEMY_VS_PLANFLOW),
    3: (_planflow_vs_raw(1.3), SQLALCHEMY_VS_PLANFLOW),
    4: (_planflow_vs_raw(1.3), SQLALCHEMY_VS_PLANFLOW),
    5: (_planflow_vs_raw(1.3), SQLALCHEMY_VS_PLANFLOW),
    6: (_planflow_vs_raw(1.5), SQLALCHEMY_VS_PLANFLOW),
    7: (SQLALCHEMY_VS_PLANFLOW,),
    9: (TINYDB_ONE_BY_ONE_VS_RAW, TINYDB_ONE_BY_ONE_VS_BATCH),
}


def scaled_number(measurement: Measurement) -> int:
    """The workload a measurement is an instance of (workload 8's points name the one they scale)."""
    if measurement.group.startswith("scale:"):
        return int(measurement.group.split(":", 1)[1])
    return measurement.number


def targets_of(measurement: Measurement) -> tuple[Target, ...]:
    """The ratio targets that apply to ``measurement`` (those whose variants it measured)."""
    return tuple(
        t
        for t in TARGETS.get(scaled_number(measurement), ())
        if t.numerator in measurement.samples and t.denominator in measurement.samples
    )


def ratio_checks(measurements: Sequence[Measurement]) -> list[Check]:
    """Every ratio target of every measurement."""
    checks: list[Check] = []
    for m in measurements:
        for target in targets_of(m):
            ratio = m.ratio(target.numerator, target.denominator)
            checks.append(
                Check(
                    m.driver,
                    f"w{m.number} {m.key}",
                    m.size,
                    f"{target.label} {target.describe()}",
                    ratio,
                    target.met(ratio),
                )
            )
    return checks


@dataclass(frozen=True, slots=True)
class Growth:
    """How a variant's median grew between two sizes of a scaling run."""

    driver: str
    workload: str
    variant: str
    small: int
    large: int
    factor: float

    @property
    def limit(self) -> float:
        """The allowed growth: 12x for 10x the rows, proportionally for other steps."""
        return LINEAR_GROWTH_LIMIT / 10 * (self.large / self.small)

    @property
    def met(self) -> bool:
        """Whether the growth stays within :attr:`limit`."""
        return self.factor <= self.limit


def growths(measurements: Sequence[Measurement]) -> list[Growth]:
    """Growth between consecutive sizes of each scaled workload, per driver and variant."""
    series: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        if m.group.startswith("scale:"):
            series.setdefault((m.driver, m.key), []).append(m)
    result: list[Growth] = []
    for (driver, key), points in series.items():
        points.sort(key=lambda m: m.size)
        for small, large in itertools.pairwise(points):
            for variant in small.samples:
                factor = large.median(variant) / small.median(variant)
                result.append(Growth(driver, key, variant, small.size, large.size, factor))
    return result
