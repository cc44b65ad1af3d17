"""Reporting: the rich tables of medians and ratios, the JSON results file and the scaling chart."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.harness import Measurement
from benchmarks.stores.base import IMPLEMENTATIONS, PLANFLOW, RAW, SQLALCHEMY
from benchmarks.targets import (
    TINYDB_ONE_BY_ONE_VS_BATCH,
    TINYDB_ONE_BY_ONE_VS_RAW,
    Growth,
    Target,
    growths,
    ratio_checks,
    targets_of,
)
from benchmarks.tinydb_bench import BATCH, ONE_BY_ONE
from benchmarks.tinydb_bench import RAW as TINYDB_RAW


def seconds_text(seconds: float) -> str:
    """A duration with a unit that keeps three significant digits readable."""
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms"


def _mark(ok: bool) -> str:
    return "[green]PASS[/green]" if ok else "[bold red]MISS[/bold red]"


def _ratio_cell(m: Measurement, target: Target | None, numerator: str, denominator: str) -> str:
    if numerator not in m.samples or denominator not in m.samples:
        return "-"
    ratio = m.ratio(numerator, denominator)
    if target is None:
        return f"{ratio:.2f}"
    return f"{ratio:.2f} {_mark(target.met(ratio))}"


def _target_for(m: Measurement, numerator: str, denominator: str) -> Target | None:
    return next((t for t in targets_of(m) if t.numerator == numerator and t.denominator == denominator), None)


def _notes(m: Measurement) -> str:
    parts: list[str] = []
    for variant, counts in m.counts.items():
        for name, values in counts.items():
            if values:
                parts.append(f"{variant} {name} {sorted(values)[len(values) // 2]}")
    return ", ".join(parts)


def sql_table(measurements: Sequence[Measurement], title: str) -> Table:
    """Workloads 1-7 (or the scaling points): medians per implementation and the two ratios."""
    table = Table(title=title, show_lines=False)
    for column, justify in (
        ("driver", "left"),
        ("#", "right"),
        ("workload", "left"),
        ("planflow", "right"),
        ("raw", "right"),
        ("sqlalchemy", "right"),
        ("planflow/raw", "right"),
        ("target", "left"),
        ("sqlalchemy/planflow", "right"),
        ("target ", "left"),
        ("notes", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for m in measurements:
        pf_raw = _target_for(m, PLANFLOW, RAW)
        sa_pf = _target_for(m, SQLALCHEMY, PLANFLOW)
        table.add_row(
            m.driver,
            str(m.number),
            m.title,
            *(seconds_text(m.median(i)) if i in m.samples else "-" for i in IMPLEMENTATIONS),
            _ratio_cell(m, pf_raw, PLANFLOW, RAW),
            pf_raw.describe() if pf_raw else "",
            _ratio_cell(m, sa_pf, SQLALCHEMY, PLANFLOW),
            sa_pf.describe() if sa_pf else "",
            _notes(m),
        )
    return table


def tinydb_table(measurements: Sequence[Measurement]) -> Table:
    """Workload 9."""
    table = Table(title="Workload 9: TinyDB add_execution (medians)")
    for column in (
        "workload",
        "one-by-one (crash-safe)",
        "batch()",
        "raw TinyDB",
        "one-by-one/raw",
        "target",
    ):
        table.add_column(column)
    table.add_column("one-by-one/batch")
    table.add_column("target")
    for m in measurements:
        table.add_row(
            m.title,
            seconds_text(m.median(ONE_BY_ONE)),
            seconds_text(m.median(BATCH)),
            seconds_text(m.median(TINYDB_RAW)),
            _ratio_cell(m, TINYDB_ONE_BY_ONE_VS_RAW, ONE_BY_ONE, TINYDB_RAW),
            TINYDB_ONE_BY_ONE_VS_RAW.describe(),
            _ratio_cell(m, TINYDB_ONE_BY_ONE_VS_BATCH, ONE_BY_ONE, BATCH),
            TINYDB_ONE_BY_ONE_VS_BATCH.describe(),
        )
    return table


def growth_table(items: Sequence[Growth]) -> Table:
    """Workload 8: how each variant's median grew with ten times the rows (the target binds planflow)."""
    table = Table(title="Workload 8: growth with 10x the rows (target: planflow <= 12x)")
    for column in ("driver", "workload", "rows", "planflow", "raw", "sqlalchemy"):
        table.add_column(column)
    rows: dict[tuple[str, str, int, int], dict[str, Growth]] = {}
    for g in items:
        rows.setdefault((g.driver, g.workload, g.small, g.large), {})[g.variant] = g
    for (driver, workload, small, large), by_variant in rows.items():
        cells: list[str] = []
        for variant in IMPLEMENTATIONS:
            g = by_variant.get(variant)
            if g is None:
                cells.append("-")
            elif variant == PLANFLOW:
                cells.append(f"{g.factor:.1f}x {_mark(g.met)}")
            else:
                cells.append(f"{g.factor:.1f}x")
        table.add_row(driver, workload, f"{small:,} -> {large:,}", *cells)
    return table


def print_report(console: Console, measurements: Sequence[Measurement]) -> None:
    """All tables, then one line per missed target."""
    main = [m for m in measurements if m.group == "main" and m.driver != "tinydb"]
    scaling = [m for m in measurements if m.group.startswith("scale:")]
    tinydb = [m for m in measurements if m.driver == "tinydb"]
    if main:
        console.print(sql_table(main, "Workloads 1-7: medians, interleaved repetitions"))
    if scaling:
        console.print(sql_table(scaling, "Workload 8: scaling runs (medians)"))
        console.print(growth_table(growths(scaling)))
    if tinydb:
        console.print(tinydb_table(tinydb))
    misses = [c for c in ratio_checks(measurements) if not c.met]
    misses_growth = [g for g in growths(scaling) if g.variant == PLANFLOW and not g.met]
    if not misses and not misses_growth:
        console.print("[green]Every target met.[/green]")
        return
    console.print("[bold]Targets missed:[/bold]")
    for c in misses:
        console.print(f"  {c.driver} {c.workload} ({c.size:,}): {c.target}, measured {c.ratio:.2f}")
    for g in misses_growth:
        console.print(
            f"  {g.driver} {g.workload} {g.small:,}->{g.large:,}: grew {g.factor:.1f}x (<= {g.limit:g})"
        )


def write_json(path: Path, measurements: Sequence[Measurement], meta: dict[str, object]) -> None:
    """Write the results, the checks and the run's metadata as JSON."""
    scaling = [m for m in measurements if m.group.startswith("scale:")]
    document = {
        "meta": meta,
        "measurements": [m.to_json() for m in measurements],
        "checks": [c.to_json() for c in ratio_checks(measurements)],
        "growth": [
            {
                "driver": g.driver,
                "workload": g.workload,
                "variant": g.variant,
                "from_rows": g.small,
                "to_rows": g.large,
                "factor": round(g.factor, 3),
                "limit": g.limit,
                "met": g.met,
                "binding": g.variant == PLANFLOW,
            }
            for g in growths(scaling)
        ],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def draw_scaling_chart(path: Path, measurements: Sequence[Measurement]) -> bool:
    """Draw median time against rows (log-log) per driver and scaled workload; ``False`` without data."""
    scaling = [m for m in measurements if m.group.startswith("scale:")]
    if not scaling:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drivers = sorted({m.driver for m in scaling})
    keys = sorted({m.key for m in scaling})
    figure, axes = plt.subplots(
        len(drivers), len(keys), figsize=(5 * len(keys), 4 * len(drivers)), squeeze=False
    )
    colours = {PLANFLOW: "tab:blue", RAW: "tab:green", SQLALCHEMY: "tab:red"}
    for row, driver in enumerate(drivers):
        for column, key in enumerate(keys):
            axis = axes[row][column]
            points = sorted((m for m in scaling if m.driver == driver and m.key == key), key=lambda m: m.size)
            if not points:
                axis.set_visible(False)
                continue
            sizes = [m.size for m in points]
            for variant in IMPLEMENTATIONS:
                if all(variant in m.samples for m in points):
                    medians = [m.median(variant) for m in points]
                    axis.plot(sizes, medians, marker="o", label=variant, color=colours[variant])
            if PLANFLOW in points[0].samples:
                base = points[0].median(PLANFLOW)
                linear = [base * size / sizes[0] for size in sizes]
                axis.plot(sizes, linear, linestyle="--", color="grey", label="linear (planflow)")
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_title(f"{driver}: {key.removeprefix('scale_')}")
            axis.set_xlabel("tasks")
            axis.set_ylabel("median seconds")
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(fontsize="small")
    figure.suptitle("planflow workload 8: scaling (medians, log-log)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
