"""ACE v1 / ACE v2 of every zoo model, and how long one full ACE v2 report takes.

Run: ``.venv/bin/python benchmarks/ace_zoo.py`` (add ``--float-bits 16`` for bf16 elementwise
operations, ``--cost-table FILE`` for another table, ``--markdown`` for a README table).

Prints, for every zoo model (ImageNet models at 224x224, tiny models at their default 8x8):
MACs, ACE v1 (PokeBNN: MACs x weight bits x activation bits), ACE v2 (every operation charged
by its operand widths, DESIGN.md), the elementwise share of ACE v2 and the elementwise
elements; then the median wall time of the full ACE v2 report of mobilenet_v1-1.0-w8a8 at 224
(build on the meta device, one meta forward with hooks, declarations, pricing, breakdown).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from pikenas.evaluators.cost import CostTable, count_ace
from pikenas.space.zoo.catalog import get_zoo_arch, zoo_names

TIMED_MODEL = "mobilenet_v1-1.0-w8a8"


def _giga(value: float) -> str:
    """Billions (G) with three decimals; millions (M) below 0.1 G so tiny models stay legible."""
    if value < 1e8:
        return f"{value / 1e6:,.3f} M"
    return f"{value / 1e9:,.3f} G"


def _row(name: str, table: CostTable) -> tuple[str, ...]:
    resolution = None if name.startswith("tiny-") else 224
    arch = get_zoo_arch(name, resolution=resolution)
    report = count_ace(arch, cost_table=table)
    return (
        name,
        str(arch.resolution),
        f"{report.macs / 1e6:,.1f} M",
        _giga(report.ace_v1),
        _giga(report.ace_v2),
        _giga(report.elementwise_cost),
        f"{100 * report.elementwise_share:.1f} %",
        f"{report.ace_v2 / report.ace_v1:.2f}" if report.ace_v1 else "-",
    )


def _time_report(table: CostTable, repeats: int) -> list[float]:
    arch = get_zoo_arch(TIMED_MODEL, resolution=224)
    count_ace(arch, cost_table=table)  # warm-up: torch's lazy meta-kernel imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        report = count_ace(arch, cost_table=table)
        report.to_dict()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--float-bits", type=int, choices=(16, 32), default=None)
    parser.add_argument("--cost-table", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    torch.set_num_threads(1)

    table = CostTable.load(args.cost_table) if args.cost_table else CostTable.default()
    if args.float_bits is not None:
        table = table.with_float_bits(args.float_bits)

    header = (
        "model",
        "res",
        "MACs",
        "ACE v1",
        "ACE v2",
        "ACE v2 elementwise",
        "elementwise share",
        "v2 / v1",
    )
    rows = [_row(name, table) for name in zoo_names()]
    print(
        f"cost table: {table.name} ({table.unit}, float operands at {table.float_bits} bits); "
        "G = 1e9, M = 1e6"
    )
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        for row in (header, *rows):
            cells = [row[0].ljust(widths[0])] + [
                cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
            ]
            print("  ".join(cells))

    times = _time_report(table, args.repeats)
    print(
        f"\nfull ACE v2 report of {TIMED_MODEL} at 224x224 (build on meta + count + breakdown): "
        f"median {1000 * statistics.median(times):.1f} ms, min {1000 * min(times):.1f} ms "
        f"over {len(times)} runs (1 torch thread)"
    )


if __name__ == "__main__":
    main()
