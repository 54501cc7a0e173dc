"""Benchmark: memo processes sharing one machine's cores.

A user trains one corpus while merging or serving another, so several memo
processes share the cores. This measures a training step (memo's training
loop on a model the size of the demo's base) and a merge (`python -m merging`,
K=3, bf16) alone and with one and two other memo trainings running, under
two thread policies, in one run:

- torch defaults: every process starts one thread per core, and OpenMP
  threads spin after each parallel region (what memo did before);
- memo: brief spinning, and each process takes its share of the cores
  (:func:`osutil.tuning.share_cores`).

    python bench/shared_cpu.py                  # ~4 minutes on 2 cores
    python bench/shared_cpu.py --others 0,1     # quicker

Run it on an otherwise idle machine: its own processes are the load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ("torch defaults", "memo")


# --- the workloads, each run in a child process --------------------------------------------


def _train(seconds: float, forever: bool, policy: str) -> None:
    """Time steps of memo's training loop on a demo-sized model (4 layers, hidden 256)."""
    if policy == "memo":
        from osutil.tuning import share_cores

        share_cores()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.chat import Example
    from training.loop import LoopSettings, train

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=1536,
            hidden_size=256,
            intermediate_size=688,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
        )
    )
    g = torch.Generator().manual_seed(0)
    examples = [Example(ids, ids) for ids in (torch.randint(3, 1536, (64,), generator=g).tolist() for _ in range(256))]
    train(model, examples, LoopSettings(steps=2), pad_id=0, device="cpu", progress=False)  # warm up
    steps = 2
    while True:
        result = train(model, examples, LoopSettings(steps=steps), pad_id=0, device="cpu", progress=False)
        if forever:
            continue
        if result.seconds >= seconds or steps >= 256:
            print(json.dumps({"seconds_per_step": result.seconds / steps}))
            return
        steps = min(256, max(steps * 2, int(steps * seconds / max(result.seconds, 1e-3)) + 1))


def _merge_models(root: Path) -> Path:
    """A bf16 Qwen2-shaped base and three fine-tunes (about 60M parameters), and the YAML."""
    sys.path.insert(0, str(ROOT / "bench"))
    from merge_vs_mergekit import build_models, write_yaml

    args = argparse.Namespace(
        hidden=512, layers=8, intermediate=2048, vocab=32000, heads=8, kv_heads=2, shard_bytes=200_000_000
    )
    base, models = build_models(root, args, 3)
    return write_yaml(root / "ties.yml", base, models, 0.3)


# --- measuring --------------------------------------------------------------------------------


def _env(policy: str) -> dict[str, str]:
    """The environment without thread settings: each policy makes its own (torch defaults: none)."""
    unset = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MEMO_THREADS", "MEMO_BENCH_TORCH_DEFAULTS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    if policy != "memo":
        env["MEMO_BENCH_TORCH_DEFAULTS"] = "1"
    return env


def _others(n: int, policy: str) -> list[subprocess.Popen]:
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", "train-forever", "--policy", policy], env=_env(policy), cwd=ROOT
        )
        for _ in range(n)
    ]
    time.sleep(8 if n else 0)  # loaded and training
    return procs


def _measure_train(policy: str, seconds: float) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", "train", "--policy", policy, "--seconds", str(seconds)],
        env=_env(policy),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds_per_step"]


def _measure_merge(policy: str, config: Path, out: Path) -> float:
    env = _env(policy)
    started = time.perf_counter()
    cmd = [sys.executable, "-c", _MERGE_CHILD, str(config), str(out)]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return time.perf_counter() - started


# `python -m merging` calls share_cores(); for the torch-defaults row the same engine runs without it.
_MERGE_CHILD = r"""
import os, sys
if not os.environ.get("MEMO_BENCH_TORCH_DEFAULTS"):
    from osutil.tuning import share_cores
    share_cores()
from merging.engine import MergeOptions, merge
from osutil.tuning import keep_freed_memory
from merging.yaml_config import load_config
keep_freed_memory()
merge(load_config(sys.argv[1]), __import__("pathlib").Path(sys.argv[2]), MergeOptions(progress=False, overwrite=True))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--others", default="0,1,2", help="other memo trainings running alongside")
    ap.add_argument("--seconds", type=float, default=6.0, help="time each training measurement for this long")
    ap.add_argument("--worker", choices=["train", "train-forever"], help=argparse.SUPPRESS)
    ap.add_argument("--policy", choices=["memo", "torch"], default="memo", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _train(args.seconds, args.worker == "train-forever", args.policy)
        return
    others = [int(n) for n in args.others.split(",")]
    results: dict[tuple[str, str, int], float] = {}
    with tempfile.TemporaryDirectory(prefix="memo-shared-cpu-") as tmp:
        config = _merge_models(Path(tmp) / "models")
        for policy in POLICIES:
            key = "memo" if policy == "memo" else "torch"
            for n in others:
                load = _others(n, key)
                try:
                    results[("training step", policy, n)] = _measure_train(key, args.seconds)
                    results[("merge", policy, n)] = _measure_merge(key, config, Path(tmp) / "out")
                finally:
                    for p in load:
                        p.kill()
                        p.wait()
                print(f"  measured {policy} with {n} other(s)", file=sys.stderr, flush=True)
    print(
        f"\nseconds (and x its time alone), with 0..{max(others)} other memo trainings running, {os.cpu_count()} cores"
    )
    print(f"  {'workload':<15}{'policy':<16}" + "".join(f"{f'+{n} others':>16}" for n in others))
    for workload in ("training step", "merge"):
        for policy in POLICIES:
            alone = results[(workload, policy, others[0])]
            cells = [
                f"{results[(workload, policy, n)]:.2f} ({results[(workload, policy, n)] / alone:.1f}x)" for n in others
            ]
            print(f"  {workload:<15}{policy:<16}" + "".join(f"{c:>16}" for c in cells))


if __name__ == "__main__":
    main()
