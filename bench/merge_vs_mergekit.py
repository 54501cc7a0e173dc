"""Benchmark: memo's merge engine against mergekit on the same YAML, side by side.

Builds a synthetic Qwen2-shaped base (sharded) and K fine-tunes (base + small
noise), then in one run measures, each in its own child process and each
``--repeat`` times (interleaved): `mergekit-yaml`, `python -m merging` (memo),
and an I/O floor (read every byte of every input, write and fsync one model's
worth of output; no torch, no math). Prints the median and spread of wall time,
anonymous peak memory and ru_maxrss, the disk reads (a check that the page cache
was warm), the ratios of the medians and bit-identity against mergekit, for K=k
and then each K of a scaling list (see bench/measure.py for what each figure
counts).

    python bench/merge_vs_mergekit.py                    # ~376M parameters, K=3, then K=2,5,10
    python bench/merge_vs_mergekit.py --shape layer-heavy --dtype float32   # 12 layers, tied 32k vocabulary
    python bench/merge_vs_mergekit.py --layers 4 --ks 2 --repeat 1  # quick
    python bench/merge_vs_mergekit.py --busy 2 --ks ''   # K=3 idle, then beside two busy processes
    python bench/merge_vs_mergekit.py --device cuda      # adds memo on the GPU (mergekit where installed)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml
from measure import input_bytes, io_floor_cmd, measure, repeat, startup_cmd
from safetensors.torch import load_file, save_file

from merging.checkpoint import open_checkpoint

INT_VIEW = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}
# Two model shapes: one whose time goes to two huge embedding matrices (Qwen2's 152k vocabulary, untied),
# and one of many mid-size matrices with a tied 32k vocabulary, like the small Llama/Qwen models users merge.
SHAPES = {
    "wide-vocab": {"hidden": 896, "layers": 7, "intermediate": 4864, "vocab": 151936, "tied": False},
    "layer-heavy": {"hidden": 896, "layers": 12, "intermediate": 4864, "vocab": 32000, "tied": True},
}
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


# --- synthetic models -------------------------------------------------------------------


def qwen2_shapes(hidden: int, layers: int, intermediate: int, vocab: int, kv_heads: int, heads: int):
    head_dim = hidden // heads
    kv = kv_heads * head_dim
    shapes = {
        "model.embed_tokens.weight": (vocab, hidden),
        "lm_head.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (hidden, hidden),
            p + "self_attn.q_proj.bias": (hidden,),
            p + "self_attn.k_proj.weight": (kv, hidden),
            p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, hidden),
            p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (hidden, hidden),
            p + "mlp.gate_proj.weight": (intermediate, hidden),
            p + "mlp.up_proj.weight": (intermediate, hidden),
            p + "mlp.down_proj.weight": (hidden, intermediate),
        }
    return shapes


def write_model(directory: Path, tensors: dict[str, torch.Tensor], config: dict, shard_bytes: int) -> None:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    shards, current, size = [], {}, 0
    for name in sorted(tensors):
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if current and size + nbytes > shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = tensors[name]
        size += nbytes
    shards.append(current)
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / fname), metadata={"format": "pt"})
        weight_map |= {n: fname for n in shard}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def build_models(root: Path, args, k: int) -> tuple[Path, list[Path]]:
    shapes = qwen2_shapes(args.hidden, args.layers, args.intermediate, args.vocab, args.kv_heads, args.heads)
    if args.tied:
        del shapes["lm_head.weight"]
    dtype = DTYPES[args.dtype]
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "vocab_size": args.vocab,
        "tie_word_embeddings": args.tied,
        "torch_dtype": args.dtype,
    }
    base_dir = root / "base"
    g = torch.Generator().manual_seed(0)
    if not base_dir.exists():
        base = {n: (torch.randn(s, generator=g) * 0.02).to(dtype) for n, s in shapes.items()}
        write_model(base_dir, base, config, args.shard_bytes)
    base = None
    models = []
    for i in range(k):
        d = root / f"ft{i}"
        models.append(d)
        if d.exists():
            continue
        base = base or {n: t for f in sorted(base_dir.glob("*.safetensors")) for n, t in load_file(f).items()}
        g = torch.Generator().manual_seed(i + 1)
        ft = {n: (t.float() + torch.randn(t.shape, generator=g) * 0.002).to(dtype) for n, t in base.items()}
        write_model(d, ft, config, args.shard_bytes)
    return base_dir, models


def write_yaml(path: Path, base: Path, models: list[Path], density: float, dtype: str) -> Path:
    config = {
        "merge_method": "ties",
        "base_model": str(base),
        "dtype": dtype,
        "models": [{"model": str(m), "parameters": {"weight": 1.0, "density": density}} for m in models],
        "parameters": {"normalize": True},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --- measuring ---------------------------------------------------------------------------


def bit_identical(a: Path, b: Path) -> float:
    same = total = 0
    fa = {n: t for f in sorted(a.glob("*.safetensors")) for n, t in load_file(f).items()}
    for f in sorted(b.glob("*.safetensors")):
        for n, t in load_file(f).items():
            x = fa[n]
            eq = x.view(INT_VIEW[x.dtype]) == t.view(INT_VIEW[t.dtype])
            same += int(eq.sum())
            total += eq.numel()
    return same / total


def run_pair(root: Path, base: Path, models: list[Path], args, label: str, mergekit_runs: int | None = None) -> dict:
    """memo, the I/O floor and mergekit on one YAML, each ``--repeat`` times (mergekit ``mergekit_runs``,
    none when 0), interleaved."""
    config = write_yaml(root / f"{label}.yml", base, models, args.density, args.dtype)
    memo_out, mk_out, io_out = root / f"memo-{label}", root / f"mergekit-{label}", root / "io-out"
    memo_cmd = [sys.executable, "-m", "merging", str(config), str(memo_out), "--quiet", "--max-shard-size", "2G"]
    cmds = {"memo": [*memo_cmd, "--overwrite"], "floor": io_floor_cmd(base, models, io_out)}
    times = {"memo": args.repeat, "floor": args.repeat}
    if args.device != "cpu":  # the same merge on the accelerator
        cmds["dev"], times["dev"] = [*memo_cmd, "--overwrite", "--device", args.device], args.repeat
    mergekit_runs = args.repeat if mergekit_runs is None else mergekit_runs
    mergekit = mergekit_runs > 0 and shutil.which("mergekit-yaml") is not None
    if mergekit:
        cmds["mk"] = ["mergekit-yaml", str(config), str(mk_out), "--out-shard-size", "2B", "--no-copy-tokenizer"]
        times["mk"] = mergekit_runs
    # One unmeasured memo run first, so that the page cache holds the inputs for every contender, and
    # mergekit's imports once, so that its disk reads count the inputs only.
    if args.warm:
        measure(cmds["memo"])
        if mergekit:
            measure([sys.executable, "-c", "import mergekit.scripts.run_yaml"])
    identical: list[float] = []

    def between(name: str) -> None:
        if name == "mk":  # compare the first mergekit output with memo's, then clear it for the next run
            if not identical:
                identical.append(bit_identical(memo_out, mk_out))
            shutil.rmtree(mk_out, ignore_errors=True)
        if name == "floor":
            shutil.rmtree(io_out, ignore_errors=True)
            io_out.mkdir()

    shutil.rmtree(mk_out, ignore_errors=True)
    row: dict = {"k": len(models), "bytes": input_bytes([base, *models]), **repeat(cmds, times, between)}
    if identical:
        row["identical"] = identical[0]
    shutil.rmtree(memo_out, ignore_errors=True)
    shutil.rmtree(io_out, ignore_errors=True)
    return row


# Other work as a machine that trains or serves has it: torch matrix products with torch's default threads.
BUSY_WORK = "import torch\na = torch.randn(384, 384)\nwhile True:\n    a = torch.tanh(a @ a)"


@contextmanager
def busy(n: int) -> Iterator[None]:
    """``n`` processes of other work running throughout."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_WORK]) for _ in range(n)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def print_busy(root: Path, base: Path, models: list[Path], args, idle: dict) -> None:
    with busy(args.busy):
        loaded = run_pair(root, base, models, args, f"k{args.k}-busy")
    mk, memo = loaded["mk"].median("wall_s"), loaded["memo"].median("wall_s")
    idle_mk, idle_memo = idle["mk"].median("wall_s"), idle["memo"].median("wall_s")
    print(f"\nK={args.k} beside {args.busy} busy processes   wall s, median")
    print(f"mergekit-yaml  {mk:8.1f}   ({mk / idle_mk:.1f}x its idle time)")
    print(f"memo           {memo:8.1f}   ({memo / idle_memo:.1f}x its idle time)")
    idle_ratio, busy_ratio = idle_memo / idle_mk, memo / mk
    print(
        f"memo / mergekit time: idle {idle_ratio:.3f}, busy {busy_ratio:.3f}; "
        f"busy / idle ratio: {busy_ratio / idle_ratio:.2f}"
    )


CONTENDERS = {"mk": "mergekit-yaml", "memo": "memo", "dev": "memo on the device", "floor": "I/O floor"}


def print_row(row: dict) -> None:
    """One K: each contender's median (min-max) figures, then the ratios of the medians."""
    print(f"\nK={row['k']}: inputs {row['bytes'] / 1e9:.2f} GB; median (min-max) of {len(row['memo'].runs)} runs")
    print(f"{'':20} {'wall s':>20} {'anon peak GiB':>20} {'ru_maxrss GiB':>20} {'disk reads MB':>14}")
    for key, name in CONTENDERS.items():
        if key in row:
            f = row[key]
            print(
                f"{name:20} {f.cell('wall_s'):>20} {f.cell('anon_gib', 2):>20} {f.cell('maxrss_gib', 2):>20} "
                f"{f.median('disk_read_mb'):14.0f}"
            )
    memo, floor = row["memo"], row["floor"]
    line = f"memo / I/O floor: {memo.median('wall_s') / floor.median('wall_s'):.2f}x"
    if "mk" in row:
        mk = row["mk"]
        line += (
            f"   speed-up vs mergekit: {mk.median('wall_s') / memo.median('wall_s'):.1f}x"
            f"   anon peak vs mergekit: {memo.median('anon_gib') / mk.median('anon_gib'):.2f}x"
            f"   ru_maxrss vs mergekit: {memo.median('maxrss_gib') / mk.median('maxrss_gib'):.2f}x"
            f"   bit-identical to mergekit: {row['identical']:.2%}"
        )
    print(line)
    cold = [CONTENDERS[k] for k in CONTENDERS if k in row and row[k].median("disk_read_mb") > 0.05 * row["bytes"] / 1e6]
    if cold:
        print(f"warning: {', '.join(cold)} read more than 5% of the inputs from disk: the page cache was not warm")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=list(SHAPES), default="wide-vocab", help="the model's shape (~376M / ~207M)")
    ap.add_argument("--dtype", choices=list(DTYPES), default="bfloat16", help="the models' and the merge's dtype")
    ap.add_argument("--hidden", type=int, default=None, help="override the shape's hidden size")
    ap.add_argument("--layers", type=int, default=None, help="override the shape's layer count")
    ap.add_argument("--intermediate", type=int, default=None, help="override the shape's MLP size")
    ap.add_argument("--vocab", type=int, default=None, help="override the shape's vocabulary")
    ap.add_argument("--heads", type=int, default=14)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--shard-bytes", type=int, default=300_000_000)
    ap.add_argument("--k", type=int, default=3, help="models in the head-to-head run")
    ap.add_argument("--ks", default="2,5,10", help="K values for the scaling table ('' to skip)")
    ap.add_argument("--density", type=float, default=0.3)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each contender (median and spread)")
    ap.add_argument(
        "--scaling-mergekit-repeat",
        type=int,
        default=None,
        help="runs of mergekit in the scaling table (default: --repeat; 0: memo and the floor only)",
    )
    ap.add_argument("--no-warm", dest="warm", action="store_false", help="skip the unmeasured warm-up run")
    ap.add_argument("--workdir", type=Path, default=None, help="keep models here (default: a temp dir)")
    ap.add_argument("--busy", type=int, default=0, help="also run K=k beside this many busy processes")
    ap.add_argument("--device", default="cpu", help="also run memo's merge on this device (e.g. cuda)")
    args = ap.parse_args()
    for key, value in SHAPES[args.shape].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def main() -> None:
    args = parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="memo-bench-"))
    ks = [int(k) for k in args.ks.split(",") if k]
    base, models = build_models(root, args, max([args.k, *ks]))
    os.sync()  # the models just written go to disk now, not during the first measurements
    params = open_checkpoint(base).parameter_count
    print(
        f"model: Qwen2-shaped ({args.shape}{', tied' if args.tied else ''}), {params / 1e6:.0f}M parameters, "
        f"{args.dtype}, {len(list(base.glob('*.safetensors')))} "
        f"shards; TIES density {args.density}; {os.cpu_count()} CPU cores; torch {torch.__version__}"
    )
    print("after one unmeasured warm-up run (page cache warm for all)" if args.warm else "no warm-up run")
    startup = repeat({"startup": startup_cmd()}, {"startup": args.repeat})["startup"]
    print(f"Python + torch + memo's merge engine importing: {startup.cell('wall_s', 2)} s")
    head = run_pair(root, base, models[: args.k], args, f"k{args.k}")
    print_row(head)
    if args.busy and "mk" in head:
        print_busy(root, base, models[: args.k], args, head)
    for k in ks:
        print_row(run_pair(root, base, models[:k], args, f"k{k}", args.scaling_mergekit_repeat))
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
