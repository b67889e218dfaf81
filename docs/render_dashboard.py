"""Draw the layout of template.yaml's CloudWatch dashboard into docs/dashboard.png: each widget
a box at its place on the 24-column grid, with its title and the metrics it shows.

    make docs-dashboard        # or: PYTHONPATH=layers/common/python:local:tests \\
                               #     .venv/bin/python docs/render_dashboard.py [out.png]

The layout comes from the dashboard body exactly as CloudFormation renders it (tests/dashboard.py),
so the picture cannot drift from the template. Needs matplotlib (requirements-bench.txt).
"""

from __future__ import annotations

import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Patch, Rectangle

from dashboard import SCHEDULER_NAMESPACE, MetricLine, dashboard_body, metric_lines, template_stack

OUT = Path(__file__).resolve().parent / "dashboard.png"
COLUMNS = 24
COLUMN_INCHES = 0.8
ROW_INCHES = 0.42
TITLE_PT = 10
TEXT_PT = 9
PADDING = 0.3  # columns, each side
# Average character widths, in ems: bold sans titles, monospace text.
TITLE_EM = 0.66
TEXT_EM = 0.64

OURS = "#dbe9f6"  # namespace Scheduler: what the scheduler emits
AWS = "#f3e6d0"  # AWS/*: what AWS already measures


def describe(lines: list[MetricLine]) -> list[str]:
    """One text line per metric of the widget: its statistics, and the resources it covers."""
    stats: dict[tuple[str, str], list[str]] = defaultdict(list)
    covered: dict[tuple[str, str], list[str]] = defaultdict(list)
    for line in lines:
        key = (line.namespace, line.name)
        if "stat" in line.options:
            stats[key].append(str(line.options["stat"]))
        if line.namespace != SCHEDULER_NAMESPACE:
            covered[key].append(str(line.options.get("label", *line.dimensions.values())))
    described = []
    for namespace, name in dict.fromkeys((line.namespace, line.name) for line in lines):
        text = name if namespace == SCHEDULER_NAMESPACE else f"{namespace} {name}"
        if stats[namespace, name]:
            text += " " + "/".join(stats[namespace, name])
        if covered[namespace, name]:
            text += ": " + ", ".join(covered[namespace, name])
        described.append(text)
    return described


def footer(props: dict[str, Any]) -> str:
    """The widget-wide statistic and period."""
    parts = [f"stat {props['stat']}"] if "stat" in props else []
    if "period" in props:
        parts.append(f"period {props['period']} s")
    return ", ".join(parts)


def draw(body: dict[str, Any], out: Path) -> None:
    widgets = body["widgets"]
    rows = max(w["y"] + w["height"] for w in widgets)
    figure = plt.figure(figsize=(COLUMNS * COLUMN_INCHES, rows * ROW_INCHES + 0.9))
    axes = figure.add_axes((0.0, 0.0, 1.0, rows * ROW_INCHES / (rows * ROW_INCHES + 0.9)))
    axes.set_xlim(0, COLUMNS)
    axes.set_ylim(rows, 0)
    axes.axis("off")
    for widget in widgets:
        x, y, width, height = (widget[k] for k in ("x", "y", "width", "height"))
        props = widget["properties"]
        lines = metric_lines(widget)
        ours = any(line.namespace == SCHEDULER_NAMESPACE for line in lines)
        axes.add_patch(
            Rectangle(
                (x + 0.08, y + 0.08),
                width - 0.16,
                height - 0.16,
                facecolor=OURS if ours else AWS,
                edgecolor="#555555",
                linewidth=1.0,
            )
        )
        points = (width - 2 * PADDING) * COLUMN_INCHES * 72
        title = textwrap.fill(props["title"], int(points / (TITLE_PT * TITLE_EM)))
        chars = int(points / (TEXT_PT * TEXT_EM))
        body_lines = [f"• {text}" for text in describe(lines)]
        body_lines += [
            f"— line: {a['label']}" for a in props.get("annotations", {}).get("horizontal", [])
        ]
        body_lines.append(footer(props))
        text = "\n".join(textwrap.fill(t, chars, subsequent_indent="  ") for t in body_lines)
        axes.text(
            x + PADDING, y + 0.3, title, va="top", ha="left", fontsize=TITLE_PT, weight="bold"
        )
        title_rows = title.count("\n") + 1
        axes.text(
            x + PADDING,
            y + 0.45 + title_rows * TITLE_PT * 1.3 / 72 / ROW_INCHES,
            text,
            va="top",
            ha="left",
            fontsize=TEXT_PT,
            family="monospace",
        )
    figure.legend(
        handles=[
            Patch(facecolor=OURS, edgecolor="#555555", label="Scheduler namespace (we emit)"),
            Patch(facecolor=AWS, edgecolor="#555555", label="AWS namespaces (AWS measures)"),
        ],
        loc="upper right",
        ncols=2,
        frameon=False,
        fontsize=TITLE_PT,
    )
    figure.text(
        0.005,
        1 - 0.45 / (rows * ROW_INCHES + 0.9),
        "CloudWatch dashboard <stack>-scheduler (template.yaml): layout on the 24-column grid",
        fontsize=12,
        weight="bold",
        va="center",
    )
    figure.savefig(out, dpi=100, metadata={"Software": None})
    plt.close(figure)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    draw(dashboard_body(template_stack()), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
