"""Benchmark: memo's merge engine against mergekit on the same YAML, side by side.

Builds a synthetic Qwen2-shaped base (bf16, sharded) and K fine-tunes (base +
small noise), then in one run measures, each in its own child process:
`mergekit-yaml`, `python -m merging` (memo), and an I/O floor (read every
input and write one output with safetensors, no math). Prints wall time, peak
RSS, the ratios, bit-identity against mergekit, and a K scaling table.

    python bench/merge_vs_mergekit.py                    # ~376M parameters, K=3, then K=2,5,10
    python bench/merge_vs_mergekit.py --shape layer-heavy --dtype float32   # 12 layers, tied 32k vocabulary
    python bench/merge_vs_mergekit.py --layers 4 --ks 2  # quick
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


# --- measuring ----------------------------------------------------------------------------

# A forked child starts with its parent's resident pages counted in its peak RSS
# (Linux keeps the high-water mark across exec), so every command runs under
# this small wrapper, which imports nothing heavy and reports its child's figures.
RSS_WRAPPER = r"""
import os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss, status)
"""


def measure(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one command."""
    done = subprocess.run([sys.executable, "-c", RSS_WRAPPER, *cmd], capture_output=True, text=True)
    wall, maxrss_kib, status = done.stdout.split()
    if int(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return float(wall), int(maxrss_kib) / 2**20


IO_FLOOR = r"""
import sys, glob
from safetensors import safe_open
from safetensors.torch import save_file
dirs, out = sys.argv[1:-1], sys.argv[-1]
first = None
for d in dirs:
    for f in sorted(glob.glob(d + "/*.safetensors")):
        with safe_open(f, "pt") as st:
            tensors = {n: st.get_tensor(n) for n in st.keys()}
        if d == dirs[0]:
            save_file(tensors, out + "/" + f.rsplit("/", 1)[1])
        del tensors
"""


def io_floor(base: Path, models: list[Path], out: Path) -> tuple[float, float]:
    out.mkdir(parents=True, exist_ok=True)
    try:
        return measure([sys.executable, "-c", IO_FLOOR, str(base), *map(str, models), str(out)])
    finally:
        shutil.rmtree(out, ignore_errors=True)


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


def run_pair(root: Path, base: Path, models: list[Path], args, label: str, mergekit: bool = True) -> dict:
    config = write_yaml(root / f"{label}.yml", base, models, args.density, args.dtype)
    memo_cmd = [
        sys.executable,
        "-m",
        "merging",
        str(config),
        str(root / f"memo-{label}"),
        "--quiet",
        "--max-shard-size",
        "2G",
        "--overwrite",
    ]
    # One unmeasured run first, so that the page cache is warm for every contender.
    if args.warm:
        measure(memo_cmd)
    row = {"label": label, "k": len(models)}
    row["memo_s"], row["memo_gib"] = measure(memo_cmd)
    if args.device != "cpu":  # the same merge on the accelerator (after its own warm-up run)
        measure([*memo_cmd, "--device", args.device])
        row["dev_s"], row["dev_gib"] = measure([*memo_cmd, "--device", args.device])
    row["io_s"], row["io_gib"] = io_floor(base, models, root / "io-out")
    mergekit = mergekit and shutil.which("mergekit-yaml") is not None
    if mergekit:
        mk_out = root / f"mergekit-{label}"
        shutil.rmtree(mk_out, ignore_errors=True)
        row["mk_s"], row["mk_gib"] = measure(
            ["mergekit-yaml", str(config), str(mk_out), "--out-shard-size", "2B", "--no-copy-tokenizer"]
        )
        row["identical"] = bit_identical(root / f"memo-{label}", mk_out)
        shutil.rmtree(mk_out, ignore_errors=True)
    shutil.rmtree(root / f"memo-{label}", ignore_errors=True)
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
    idle_ratio, busy_ratio = idle["memo_s"] / idle["mk_s"], loaded["memo_s"] / loaded["mk_s"]
    print(f"\nK={args.k} beside {args.busy} busy processes   wall s")
    print(f"mergekit-yaml  {loaded['mk_s']:8.1f}   ({loaded['mk_s'] / idle['mk_s']:.1f}x its idle time)")
    print(f"memo           {loaded['memo_s']:8.1f}   ({loaded['memo_s'] / idle['memo_s']:.1f}x its idle time)")
    print(
        f"memo / mergekit time: idle {idle_ratio:.3f}, busy {busy_ratio:.3f}; "
        f"busy / idle ratio: {busy_ratio / idle_ratio:.2f}"
    )


def main() -> None:
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
    ap.add_argument("--no-mergekit-scaling", action="store_true", help="memo only in the scaling table")
    ap.add_argument("--no-warm", dest="warm", action="store_false", help="skip the unmeasured warm-up run")
    ap.add_argument("--workdir", type=Path, default=None, help="keep models here (default: a temp dir)")
    ap.add_argument("--busy", type=int, default=0, help="also run K=k beside this many busy processes")
    ap.add_argument("--device", default="cpu", help="also run memo's merge on this device (e.g. cuda)")
    args = ap.parse_args()
    for key, value in SHAPES[args.shape].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)

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

    head = run_pair(root, base, models[: args.k], args, f"k{args.k}")
    print(f"\nK={args.k}            wall s   peak RSS GiB")
    if "mk_s" in head:
        print(f"mergekit-yaml  {head['mk_s']:8.1f}   {head['mk_gib']:8.2f}")
    print(f"memo           {head['memo_s']:8.1f}   {head['memo_gib']:8.2f}")
    if "dev_s" in head:
        print(f"memo on {args.device:<6} {head['dev_s']:8.1f}   {head['dev_gib']:8.2f}   (process RSS; not GPU memory)")
    print(f"I/O floor      {head['io_s']:8.1f}   {head['io_gib']:8.2f}")
    print(f"memo / I/O floor: {head['memo_s'] / head['io_s']:.2f}x", end="   ")
    if "mk_s" in head:
        print(
            f"speed-up vs mergekit: {head['mk_s'] / head['memo_s']:.1f}x   "
            f"memory vs mergekit: {head['memo_gib'] / head['mk_gib']:.2f}x   "
            f"bit-identical to mergekit: {head['identical']:.2%}"
        )
    else:
        print("(mergekit-yaml not installed: no head-to-head)")
    if args.busy and "mk_s" in head:
        print_busy(root, base, models[: args.k], args, head)
    if ks:
        on = f"  memo on {args.device} s" if args.device != "cpu" else ""
        print(f"\nK    memo s  memo GiB  I/O floor s  mergekit s  mergekit GiB  speed-up{on}")
        for k in ks:
            row = run_pair(root, base, models[:k], args, f"k{k}", mergekit=not args.no_mergekit_scaling)
            mk = (
                f"{row['mk_s']:10.1f}  {row['mk_gib']:12.2f}  {row['mk_s'] / row['memo_s']:7.1f}x"
                if "mk_s" in row
                else f"{'-':>10}  {'-':>12}  {'-':>8}"
            )
            dev = f"  {row['dev_s']:14.1f}" if "dev_s" in row else ""
            print(f"{k:<3} {row['memo_s']:7.1f}  {row['memo_gib']:8.2f}  {row['io_s']:11.1f}  {mk}{dev}")
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
