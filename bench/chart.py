"""The bench's chart: seconds vs tokens for `rotator rotate --all`, the same cycle in-process, the
naive loop and the latency-bound limit, drawn with matplotlib (the `bench` extra; `make bench`
installs it). A bare `Figure` on the Agg canvas: no pyplot, no display, no global state.

    draw(path, summary, workers=8, latency_ms=25)

`summary` is run.py's: N -> figures, with N as int or, read back from a saved run, as str.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
except ImportError as error:  # run.py imports this first: fail before a long run, not after it
    raise SystemExit(
        "bench: matplotlib is missing; `make bench` installs it (pip install -e '.[bench]')"
    ) from error

# (key in the summary, legend label, colour, line style)
SERIES = (
    ("naive_seconds", "naive loop, sequential (wall)", "#d62728", "-"),
    ("rotator_command_seconds", "rotator rotate --all (wall)", "#1f77b4", "-"),
    ("rotator_cycle_seconds", "rotator run_cycle, in-process", "#2ca02c", "-"),
    ("limit_seconds", "limit: ceil(N/W) x latency", "#555555", "--"),
)
WIDTH_INCHES, HEIGHT_INCHES, DPI = 9.6, 6.0, 100  # 960 x 600 pixels
LABEL_GAP = 0.035  # least distance between two end labels, as a share of the highest value
LABEL_SHIFT = 0.012  # end labels' distance right of their point, as a share of the largest N


def draw(
    path: Path, summary: Mapping[int | str, Mapping[str, Any]], workers: int, latency_ms: float
) -> None:
    """Write the chart as a PNG to `path`. Series without figures (None) are left out."""
    sizes = sorted(int(n) for n in summary)
    by_size = {int(n): figures for n, figures in summary.items()}
    figure = Figure(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    ends: list[tuple[float, float, str]] = []  # (x, y, colour) of each series' last point
    for key, label, colour, style in SERIES:
        points = [(n, by_size[n][key]) for n in sizes if by_size[n].get(key) is not None]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        axes.plot(xs, ys, style, color=colour, marker="o", linewidth=2, label=label)
        ends.append((points[-1][0], points[-1][1], colour))
    # Label each series' last point; labels of close values are pushed apart, upwards.
    gap = LABEL_GAP * max((y for _, y, _ in ends), default=1)
    placed = -gap
    for x, y, colour in sorted(ends, key=lambda end: end[1]):
        placed = max(y, placed + gap)
        axes.annotate(
            f"{y:.2f} s",
            (x, y),
            xytext=(x + LABEL_SHIFT * max(sizes), placed),
            va="center",
            color=colour,
        )
    axes.set_title(f"rotate --all: seconds vs tokens (W={workers}, IdP latency {latency_ms:g} ms)")
    axes.set_xlabel("tokens (N)")
    axes.set_ylabel("seconds")
    axes.set_xticks(sizes)
    axes.set_xlim(0, max(sizes) * 1.12 if sizes else 1)
    axes.set_ylim(bottom=0)
    axes.yaxis.set_major_locator(MaxNLocator(nbins=8))
    axes.grid(True, color="#dddddd")
    axes.legend(loc="upper left", frameon=False)
    figure.tight_layout()
    # No Software/date metadata: the committed PNG changes only when the figures do.
    figure.savefig(path, format="png", metadata={"Software": None})
