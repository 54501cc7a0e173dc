"""The continual-integration plot: recall and cumulative training compute as corpora arrive (matplotlib)."""

from __future__ import annotations

from pathlib import Path

from registry.study import Arrival, cumulative

LABELS = {"own": "each corpus's own model", "ties": "TIES merge", "task_arithmetic": "task arithmetic",
          "joint": "joint retraining"}


def plot_continual(arrivals: list[Arrival], path: Path, *, title: str = "") -> Path:
    """Two panels: mean exact-match recall per method (held-out dashed), and cumulative training seconds."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    ks = [a.k for a in arrivals]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, label in LABELS.items():
        line, = left.plot(ks, [a.mean(method) for a in arrivals], marker="o", label=label)
        left.plot(ks, [a.mean(method, "heldout") for a in arrivals], linestyle="--", color=line.get_color(),
                  alpha=0.6)
    left.set(xlabel="corpora merged (K)", ylabel="mean recall (exact match)", ylim=(-0.02, 1.05),
             title="recall on every corpus so far (dashed: held-out paraphrases)")
    left.set_xticks(ks)
    left.legend(fontsize=8)
    totals = cumulative(arrivals)
    right.plot(ks, [t[0] for t in totals], marker="o", label="train each new corpus alone + merge")
    right.plot(ks, [t[1] for t in totals], marker="o", label="retrain on everything")
    right.set(xlabel="corpora arrived (K)", ylabel="cumulative training seconds", title="training compute")
    right.set_xticks(ks)
    right.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)  # never a half-written plot
    return path
