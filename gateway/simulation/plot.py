"""Tokens per day by population, one panel per scenario, as a PNG (matplotlib's Agg backend:
no display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from gateway.simulation.tally import SimTally

_LINES = (
    ("legit_admitted", "background, admitted", "tab:blue", "-"),
    ("customer_offered", "customers, offered", "tab:green", "--"),
    ("customer_admitted", "customers, admitted", "tab:green", "-"),
    ("campaign_offered", "campaign, offered", "tab:red", "--"),
    ("campaign_admitted", "campaign, admitted", "tab:red", "-"),
)


def plot_days(panels: list[tuple[str, SimTally]], path: str | Path, title: str) -> None:
    """One panel per (scenario name, tally); a population with no traffic is left out."""
    columns = min(2, len(panels))
    rows = (len(panels) + columns - 1) // columns
    figure, grid = plt.subplots(
        rows, columns, figsize=(9 * columns, 4.5 * rows), dpi=110, squeeze=False
    )
    for axes, (name, tally) in zip(grid.flat, panels, strict=False):
        days = range(1, tally.days + 1)
        for key, label, color, style in _LINES:
            group = key.rsplit("_", 1)[0]
            if tally.groups[group].requests:
                axes.plot(days, tally.per_day[key], label=label, color=color, linestyle=style)
        axes.set_yscale("symlog", linthresh=1e4)
        axes.set_xlabel("day of the campaign (22 April 2026 = 1)")
        axes.set_ylabel("tokens per day (input + output)")
        axes.set_title(name, fontsize=10)
        axes.grid(True, which="major", alpha=0.3)
        axes.legend(loc="lower right", fontsize=8)
    for axes in list(grid.flat)[len(panels) :]:
        axes.set_visible(False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
