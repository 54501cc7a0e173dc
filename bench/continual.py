"""Benchmark: the continual-integration study to K corpora (default 10), with sweeps.

Generates a fresh invented world of K corpora (``examples/generate.py``),
builds the tiny base, then lets the corpora arrive one at a time. After each
arrival it measures, on every corpus so far, the recall (exact match, and on
held-out paraphrases) of each corpus's own model, the TIES merge, task
arithmetic (lambda 0.5), plain averaging (lambda 1/K), and joint retraining
from the base on everything; and the cumulative training compute of "train
each new corpus alone + merge" vs "retrain on everything" (seconds and
examples processed). At the last K it sweeps the TIES density 0.1..1.0.
Prints the tables, writes ``continual.json`` and ``continual.png`` under --out.

    python bench/continual.py                         # K=10, about 15 minutes on 2 CPU cores
    python bench/continual.py --corpora 3 --pretrain-steps 200 --train-steps 20   # quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from registry import Registry  # noqa: E402
from registry.plots import plot_continual  # noqa: E402
from registry.study import METHODS, Study, cumulative  # noqa: E402
from training.sft import SFTSettings  # noqa: E402
from training.tiny import TinyConfig  # noqa: E402

DENSITIES = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
console = Console(width=170)


def table(title: str, columns: list[str], rows: list[list]) -> None:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*map(str, r))
    console.print(t)


def world(n: int, out: Path) -> dict[str, Path]:
    subprocess.run([sys.executable, str(ROOT / "examples" / "generate.py"), "--corpora", str(n), "--out", str(out)],
                   check=True, capture_output=True)
    return {d.name: d for d in sorted(out.iterdir()) if d.is_dir() and d.name != "pretrain"}


def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="memo-continual-"))
    corpora = world(args.corpora, work / "world")
    settings = SFTSettings(steps=args.train_steps)
    with Registry.init(work / "home") as reg:
        base = reg.create_tiny_base("tiny", TinyConfig(pretrain_steps=args.pretrain_steps), progress=False)
        console.print(f"base: {base.parameter_count / 1e6:.1f}M parameters; {len(corpora)} corpora")
        study = Study(reg, settings, device=args.device, progress=False)
        averaging: list[float] = []
        for name, directory in corpora.items():
            reg.add_corpus(name, sorted(directory.glob("*.md")), base="tiny")
            reg.import_reflections(name, directory / "qa.jsonl", heldout=directory / "heldout.jsonl")
            tv = reg.train(name, settings, device=args.device, progress=False)
            a = study.arrive(name, tv)
            names = list(a.recall["own"])
            mean = reg.merge(names, method="task_arithmetic", lam=1 / len(names), progress=False, evaluate=False)
            scores = study.scores(mean.ref, names)
            averaging.append(sum(s.exact for s in scores.values()) / len(scores))
            console.print(f"K={a.k} {name}: TIES {a.mean('ties'):.2f}, task arithmetic "
                          f"{a.mean('task_arithmetic'):.2f}, averaging {averaging[-1]:.2f}, "
                          f"joint {a.mean('joint'):.2f}")
        sweep = {}
        names = list(corpora)
        for density in DENSITIES:
            merged = reg.merge(names, density=density, progress=False, evaluate=False)
            s = study.scores(merged.ref, names)
            sweep[density] = (sum(x.exact for x in s.values()) / len(s),
                              sum(x.heldout for x in s.values()) / len(s))
    report(study, averaging, sweep, args.out)


def report(study: Study, averaging: list[float], sweep: dict, out: Path) -> None:
    arrivals = study.arrivals
    totals = cumulative(arrivals)
    examples_alone = examples_joint = 0
    rows = []
    for a, (alone, joint), avg in zip(arrivals, totals, averaging):
        examples_alone += a.examples["alone"]
        examples_joint += a.examples["joint"]
        rows.append([a.k, *(f"{a.mean(m):.2f} / {a.mean(m, 'heldout'):.2f}" for m in METHODS), f"{avg:.2f}",
                     f"{alone:.0f}", f"{joint:.0f}", f"{joint / alone:.1f}x",
                     f"{examples_alone}", f"{examples_joint}", f"{examples_joint / examples_alone:.1f}x"])
    table("mean recall (exact / held-out) and cumulative training compute as corpora arrive",
          ["K", "own", "TIES", "task arith.", "joint", "averaging", "alone+merge s", "retrain s", "ratio",
           "alone ex.", "retrain ex.", "ratio"], rows)
    table(f"TIES density sweep at K={arrivals[-1].k} (mean recall)", ["density", "exact", "held-out"],
          [[d, f"{e:.2f}", f"{h:.2f}"] for d, (e, h) in sweep.items()])
    last = arrivals[-1]
    table(f"recall per corpus at K={last.k} (exact match)", ["corpus", *METHODS],
          [[c, *(f"{last.recall[m][c].exact:.2f}" for m in METHODS)] for c in last.recall["own"]])
    out.mkdir(parents=True, exist_ok=True)
    (out / "continual.json").write_text(json.dumps(
        {"arrivals": [a.to_json() for a in arrivals], "averaging": averaging,
         "density_sweep": {str(d): v for d, v in sweep.items()}}, indent=1))
    plot = plot_continual(arrivals, out / "continual.png", title=f"memo continual study, K=1..{last.k}")
    console.print(f"wrote {out / 'continual.json'} and {plot}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", type=int, default=10)
    ap.add_argument("--pretrain-steps", type=int, default=TinyConfig.pretrain_steps)
    ap.add_argument("--train-steps", type=int, default=SFTSettings.steps)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "continual")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
