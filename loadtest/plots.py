"""PNG plots of the burst benchmarks: what was offered, accepted and received per second.

B2 (through flashgate) and B3 (straight to the backend) are drawn side by side on
the same axes, so the reader sees the burst absorbed on one side and the backend
overrun on the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt


def _xy(series: dict[str, int], start: int) -> tuple[list[int], list[int]]:
    if not series:
        return [], []
    seconds = sorted(int(k) for k in series)
    span = range(start, seconds[-1] + 1)
    return [s - start for s in span], [series.get(str(s), 0) for s in span]


def plot_bursts(b2: dict[str, Any] | None, b3: dict[str, Any] | None, out: Path) -> Path:
    """One figure, two panels: flashgate (B2) and the direct path (B3)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
    panels = [
        (axes[0], b2, "through flashgate (B2)"),
        (axes[1], b3, "storefront straight to the backend (B3)"),
    ]
    for ax, result, title in panels:
        ax.set_title(title)
        ax.set_xlabel("seconds since the burst began")
        ax.grid(alpha=0.3)
        if not result or "series" not in result:
            ax.text(0.5, 0.5, "not run", ha="center", transform=ax.transAxes)
            continue
        series = result["series"]
        start = int(series["start"])
        styles = [
            ("offered", "orders offered", "#9e9e9e", "-"),
            ("accepted", "accepted (202)", "#1565c0", "-"),
            ("succeeded", "succeeded (2xx)", "#1565c0", "-"),
            ("failed", "failed (5xx / no answer)", "#c62828", "-"),
            ("backend", "received by the backend", "#2e7d32", "-"),
        ]
        for key, label, color, line in styles:
            if series.get(key):
                x, y = _xy(series[key], start)
                ax.plot(x, y, line, color=color, label=label, linewidth=1.6)
        capacity = result.get("backend_capacity_per_s") or result.get("rate_per_s")
        if capacity:
            ax.axhline(
                float(capacity),
                color="#ef6c00",
                linestyle="--",
                linewidth=1,
                label=f"backend capacity {float(capacity):g}/s",
            )
        ax.legend(loc="upper right", fontsize=8)
    axes[0].set_ylabel("orders per second")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
