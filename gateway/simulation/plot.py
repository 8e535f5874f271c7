"""Admitted tokens per day by population, as a PNG (matplotlib's Agg backend: no display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from gateway.simulation.run import SimTally


def plot_days(tally: SimTally, path: str | Path, title: str) -> None:
    days = range(1, tally.days + 1)
    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=110)
    axes.plot(days, tally.per_day["legit_admitted"], label="legitimate, admitted", color="tab:blue")
    axes.plot(
        days,
        tally.per_day["campaign_offered"],
        label="campaign, offered",
        color="tab:red",
        linestyle="--",
    )
    axes.plot(days, tally.per_day["campaign_admitted"], label="campaign, admitted", color="tab:red")
    axes.set_yscale("symlog", linthresh=1e4)
    axes.set_xlabel("day of the campaign (22 April 2026 = 1)")
    axes.set_ylabel("tokens per day (input + output)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
