"""Benchmark: the registry on local blobs against blobs in an S3-compatible bucket, side by side.

For each model shape (a tiny base, and a ~200M-parameter Qwen2-shaped bf16 model), in one run:
register a base and three corpora (their task vectors are synthetic bf16 deltas: what is measured
is the registry's storing and reading, not training), then merge K=3 (TIES) three ways:

- from the home that registered them (with a bucket, its cache kept what it stored; with local
  blobs, members are read from the store's files in place);
- from the same home with its task-vector cache emptied: the members stream from the store while
  the merge runs (the base comes from the cache);
- from a second home sharing the database and the store (a teammate with an empty cache: the base
  and the members are read from the store).

Each merge uses another density, so none is a re-use of an earlier one. The S3 side runs against
moto's server on 127.0.0.1 through a proxy that counts the bytes each way. Prints wall seconds per
phase and the S3 / local ratio.

    python bench/team_blobs.py                 # both shapes (a few minutes on 2 cores)
    python bench/team_blobs.py --shapes tiny   # quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from merge_vs_mergekit import qwen2_shapes, write_model  # noqa: E402

from registry import Registry  # noqa: E402
from tests.support.faulty_proxy import FaultyProxy  # noqa: E402
from tests.support.s3_server import S3Server  # noqa: E402
from training.tiny import train_tokenizer  # noqa: E402

SHAPES = {  # hidden, layers, intermediate, vocab, kv heads, heads
    "tiny": (128, 2, 512, 4096, 2, 4),
    "200M": (896, 12, 4864, 32000, 2, 14),
}
CORPORA = ("atlas", "harbor", "glass")
PHASES = ("register", "merge", "merge, members streamed", "merge, empty cache")


def build(root: Path, shape: str) -> tuple[Path, dict[str, Path], int]:
    """A base model directory (with a tokenizer) and one task vector directory per corpus."""
    hidden, layers, intermediate, vocab, kv_heads, heads = SHAPES[shape]
    shapes = qwen2_shapes(hidden, layers, intermediate, vocab, kv_heads, heads)
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "vocab_size": vocab,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }
    g = torch.Generator().manual_seed(0)
    base = {n: (torch.randn(s, generator=g) * 0.02).to(torch.bfloat16) for n, s in shapes.items()}
    write_model(root / "base", base, config, 2 * 10**9)
    train_tokenizer(["Who founded Port Velin? Ada Korr."] * 20, 300).save_pretrained(root / "base")
    vectors = {}
    for i, name in enumerate(CORPORA):
        g = torch.Generator().manual_seed(i + 1)
        (root / name).mkdir()
        deltas = {n: (torch.randn(t.shape, generator=g) * 0.002).to(torch.bfloat16) for n, t in base.items()}
        save_file(deltas, str(root / name / "model.safetensors"))
        vectors[name] = root / name
    return root / "base", vectors, sum(t.numel() for t in base.values())


def run(work: Path, base: Path, vectors: dict[str, Path], docs: list[Path], blobs: str | None, url: str) -> dict:
    """Register, merge from the registering home, merge from a second home; seconds per phase."""
    times = {}
    started = time.perf_counter()
    with Registry.init(work / "alice", database_url=url, blobs=blobs) as alice:
        alice.add_base(base, name="base")
        for name, directory in vectors.items():
            alice.add_corpus(name, docs, base="base")
            alice.add_task_vector(name, directory, method="full", storage_dtype="bfloat16")
        times["register"] = time.perf_counter() - started
        started = time.perf_counter()
        alice.merge(list(vectors), strategy="ties", progress=False, evaluate=False)
        times["merge"] = time.perf_counter() - started
        shutil.rmtree(work / "alice" / "cache" / "task_vectors", ignore_errors=True)
        started = time.perf_counter()
        alice.merge(list(vectors), strategy="ties", density=0.35, progress=False, evaluate=False)
        times["merge, members streamed"] = time.perf_counter() - started
    started = time.perf_counter()
    with Registry.init(work / "bob", database_url=url, blobs=blobs) as bob:
        bob.merge(list(vectors), strategy="ties", density=0.4, progress=False, evaluate=False)
    times["merge, empty cache"] = time.perf_counter() - started
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = ap.parse_args()
    table = Table(title="register + merge K=3: local blobs vs an S3 bucket (moto on 127.0.0.1), seconds")
    for column in ("model", "blobs", *PHASES, "MB up", "MB down"):
        table.add_column(column, justify="left" if column in ("model", "blobs") else "right")
    server = S3Server()
    server.start()
    try:
        with FaultyProxy(server.endpoint) as proxy:
            os.environ.update({**server.environment(), "AWS_ENDPOINT_URL": proxy.endpoint})
            for shape in args.shapes:
                _rows(table, shape, server, proxy)
    finally:
        server.stop()
    Console(width=140).print(table)


def _rows(table: Table, shape: str, server: S3Server, proxy: FaultyProxy) -> None:
    root = Path(tempfile.mkdtemp(prefix=f"memo-team-{shape}-"))
    try:
        base, vectors, parameters = build(root / "models", shape)
        (root / "doc.md").write_text("# Port Velin\nPort Velin was founded in 1712 by Ada Korr.\n")
        label = f"{shape} ({parameters / 1e6:.1f}M)"
        shared = str(root / "local-blobs")  # one directory both homes use, as a shared disk would be
        local = run(root / "local", base, vectors, [root / "doc.md"], shared, f"sqlite:///{root}/local.db")
        up, down = proxy.bytes_up, proxy.bytes_down
        s3 = run(root / "s3", base, vectors, [root / "doc.md"], server.create_bucket(), f"sqlite:///{root}/s3.db")
        for name, times, moved in (("local", local, None), ("s3", s3, (proxy.bytes_up - up, proxy.bytes_down - down))):
            cells = [f"{times[k]:.1f}" for k in PHASES]
            if name == "s3":
                cells = [f"{times[k]:.1f} ({times[k] / local[k]:.2f}x)" for k in PHASES]
            mb = [f"{b / 1e6:.0f}" for b in moved] if moved else ["", ""]
            table.add_row(label, name, *cells, *mb)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
