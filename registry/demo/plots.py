"""The continual-integration plot: recall, forgetting and cumulative training compute as corpora arrive."""

from __future__ import annotations

from pathlib import Path

from registry.demo.study import FROM_SCRATCH, LABELS, Arrival, cumulative


def plot_continual(arrivals: list[Arrival], path: Path, *, title: str = "") -> Path:
    """Three panels: mean recall per method (held-out dashed), general knowledge kept (the share of the
    base's probe answers each model still gives; the base itself at 1), cumulative examples."""
    import matplotlib  # only when a plot is drawn (start-up)

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt  # after the backend is chosen

    ks = [a.k for a in arrivals]
    methods = [m for m in LABELS if m in arrivals[-1].recall]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.4))
    colors = {}
    for method in methods:
        (line,) = left.plot(ks, [a.mean(method) for a in arrivals], marker="o", label=LABELS[method])
        colors[method] = line.get_color()
        left.plot(ks, [a.mean(method, "heldout") for a in arrivals], linestyle="--", color=colors[method], alpha=0.6)
        if method in arrivals[-1].general:
            middle.plot(
                ks, [a.general.get(method) for a in arrivals], marker="o", color=colors[method], label=LABELS[method]
            )
        if method != "own":
            right.plot(
                ks,
                [e for _, e in cumulative(arrivals, method)],
                marker="o",
                color=colors[method],
                label=LABELS[method] + ("" if method in FROM_SCRATCH else " (incl. training alone)"),
            )
    left.set(
        xlabel="corpora arrived (K)",
        ylabel="mean recall (exact match)",
        ylim=(-0.02, 1.05),
        title="recall on every corpus so far (dashed: held-out)",
    )
    middle.set(
        xlabel="corpora arrived (K)",
        ylabel="share of the base's probe answers kept",
        ylim=(-0.02, 1.05),
        title="general knowledge kept (forgetting)",
    )
    middle.axhline(1.0, color="black", linestyle=":", label="the base itself")  # what forgetting is measured from
    right.set(xlabel="corpora arrived (K)", ylabel="cumulative examples processed", title="training compute")
    for ax in (left, middle, right):
        ax.set_xticks(ks)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)  # never a half-written plot
    return path
