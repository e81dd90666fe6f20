"""What makes `sweep compare`'s figures read at a glance (docs/results.md, "sweep compare"): log axes with a
few round ticks, trial labels that do not pile up, Optuna's contour matrix as one row of the distinct
pairs, and colour-mapped lines that stay visible on the plot's background. Matplotlib only; no stores.
"""
from __future__ import annotations

import itertools
import math

MOST_TICKS = 4
ROUND_STEPS = ((1, 2, 5), (1,))      # tick values: 1, 2, 5 times a power of ten, or powers of ten alone
LIGHT_END_CUT = 0.35                 # the lightest part of a colour map, left out for lines on a light background
LABEL_FONT = 8
LABEL_OFFSET = (5, 3)                # points right of and above the labelled point
MARKER_PX = 3.5                      # a scatter marker's radius, in points
MOST_NAMED = 5                       # labels one shared label lists before it counts the rest


def log_ticks(low: float, high: float, most: int = MOST_TICKS) -> list[float]:
    """At most `most` round values between `low` and `high` (> 0) for a log axis: 1, 2 and 5 times powers of
    ten, else powers of ten (every k-th over many decades); the ends, rounded, for a range that holds
    fewer than two round values."""
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    for steps in ROUND_STEPS:
        ticks = [m * 10.0 ** e for e in decades for m in steps if low <= m * 10.0 ** e <= high]
        if len(ticks) <= most:
            break
    ticks = ticks[::max(1, math.ceil(len(ticks) / most))]
    if len(ticks) >= 2:
        return ticks
    return [float(f"{v:.2g}") for v in (low * 1.05, high * 0.95)]


def few_log_ticks(ax) -> None:
    """Every log axis of `ax` with `log_ticks` labelled plainly (0.002, not 2x10^-3) and unlabelled minor
    ticks: matplotlib labels minor ticks on a log axis spanning under a decade or two, and in a panel a
    few centimetres wide those labels run into each other."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() != "log":
            continue
        low, high = sorted(limits)
        axis.set_major_locator(FixedLocator(log_ticks(low, high)))
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(NullFormatter())


def without_light_end(cmap, cut: float = LIGHT_END_CUT):
    """`cmap` less its lightest `cut`: its light end (white for Blues) vanishes on a light background."""
    import numpy as np
    from matplotlib.colors import ListedColormap

    light_at_high = sum(cmap(1.0)[:3]) > sum(cmap(0.0)[:3])
    span = np.linspace(0.0, 1.0 - cut, 256) if light_at_high else np.linspace(cut, 1.0, 256)
    return ListedColormap(cmap(span), name=f"{cmap.name}_visible")


def visible_lines(ax) -> None:
    """Lines coloured by value (Optuna's parallel coordinates) in a colour map without its light end; the
    colour bar follows its lines."""
    from matplotlib.collections import LineCollection

    for lines in ax.collections:
        if isinstance(lines, LineCollection) and lines.get_array() is not None:
            lines.set_cmap(without_light_end(lines.get_cmap()))


def pairs_in_a_row(axes, value_label: str):
    """Optuna's contour matrix (each pair drawn twice, an empty panel on the diagonal) as one row of the pairs
    below its diagonal, with one colour bar; returns the figure."""
    from matplotlib.contour import ContourSet

    fig = axes.flat[0].figure
    n = axes.shape[0]
    pairs = [axes[row, col] for row in range(1, n) for col in range(row)]
    for ax in fig.axes:
        if not any(ax is kept for kept in pairs):
            ax.remove()   # the diagonal, the mirror images, and the colour bar of the old layout
    grid = fig.add_gridspec(1, len(pairs), wspace=0.4)   # room for each panel's own y-axis label
    for k, ax in enumerate(pairs):
        ax.set_subplotspec(grid[0, k])
        ax.tick_params(labelbottom=True, labelleft=True)
    fig.set_size_inches(4.0 * len(pairs) + 1.5, 4.2)
    filled = [c for ax in pairs for c in ax.collections if isinstance(c, ContourSet) and c.filled]
    if filled:
        fig.colorbar(filled[0], ax=pairs, label=value_label)
    return fig


def label_points(ax, points: list[tuple[float, float, str]]) -> None:
    """Write each point's label beside it, after the axes' layout and limits are final: right of the point,
    else left of it, above or below, whichever stays in the panel and covers no marker. Points whose labels
    would still overlap share one label, "2, 3, 7", placed from the rightmost of them: where points coincide
    (fractions of exactly 0, objectives a hair apart) or crowd, every label stays readable."""
    scale = ax.figure.dpi / 72   # pixels per point
    markers = [tuple(ax.transData.transform((x, y))) for x, y, _ in points]
    groups = [[(*marker, x, y, label)] for marker, (x, y, label) in zip(markers, points)]

    def box(group: list) -> tuple[float, float, float, float]:
        px, py, *_ = max(group)
        width = len(group_label([p[4] for p in group])) * LABEL_FONT * 0.6 * scale
        height = LABEL_FONT * 1.2 * scale
        dx, dy = LABEL_OFFSET[0] * scale, LABEL_OFFSET[1] * scale
        candidates = [(left, bottom, left + width, bottom + height) for bottom in (py + dy, py - dy - height)
                      for left in (px + dx, px - dx - width)]
        inside = [b for b in candidates if ax.bbox.x0 <= b[0] and b[2] <= ax.bbox.x1] or candidates
        clear = [b for b in inside if not any(_covers(b, m, MARKER_PX * scale) for m in markers)]
        return (clear or inside)[0]

    merged = True
    while merged:   # merging grows a label, which may then reach another: until no two labels overlap
        merged = False
        for i, j in itertools.combinations(range(len(groups)), 2):
            a, b = box(groups[i]), box(groups[j])
            if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                groups[i] += groups.pop(j)
                merged = True
                break
    for group in groups:
        px, py, x, y, _ = max(group)
        left, bottom, *_ = box(group)
        # Out of the layout: tight_layout would shrink the panels to fit a label, and move the points it belongs to.
        ax.annotate(group_label([p[4] for p in group]), (x, y), textcoords="offset points",
                    xytext=((left - px) / scale, (bottom - py) / scale), ha="left", va="bottom", fontsize=LABEL_FONT,
                    annotation_clip=False).set_in_layout(False)


def _covers(box: tuple[float, float, float, float], point: tuple[float, float], radius: float) -> bool:
    return box[0] - radius < point[0] < box[2] + radius and box[1] - radius < point[1] < box[3] + radius


def group_label(labels: list[str], most: int = MOST_NAMED) -> str:
    """One label for the points drawn on top of each other: their labels in order, the first `most` of
    them and how many more ("1, 2, 3, 4 +21") where a long list would run across the next panel."""
    ordered = sorted(labels, key=lambda text: (len(text), text))
    if len(ordered) <= most:
        return ", ".join(ordered)
    return ", ".join(ordered[:most - 1]) + f" +{len(ordered) - most + 1}"
