"""Benchmark: how long each page of `memo ui` takes on a large registry.

Seeds a registry (SQLite, local blobs) with 100 corpora, 300 task vectors (3 versions each),
1,000 merges of 2-6 members (chains of warm merges, each with recall and retention), two
channels with 500 promotions and rollbacks between them, and times every page and its JSON twin
through the ASGI app (median of 5 requests after one warm-up). The rows are written directly,
as the registry would have recorded them: what is measured is the page, not the training.

    python bench/ui_pages.py
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from registry import Registry  # noqa: E402
from registry.store.schema import (  # noqa: E402
    BaseModelRow,
    ChannelEventRow,
    ChannelRow,
    CorpusRow,
    DocumentRow,
    MergeMemberRow,
    MergeRow,
    ReflectionSetRow,
    TaskVectorRow,
)
from registry.ui import create_app  # noqa: E402

CORPORA, VERSIONS, MERGES, EVENTS = 100, 3, 1000, 500


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def seed(reg: Registry) -> None:
    rng = random.Random(0)
    config = reg.store.put_bytes(b"merge_method: ties\nbase_model: tiny\nmodels: []\n")
    manifest = reg.store.put_bytes(
        json.dumps({"kind": "merge", "files": {"mergekit_config.yml": {"sha256": config, "size": 46}}}).encode()
    )
    with reg.db.write() as s:
        base = BaseModelRow(
            name="tiny",
            source="-",
            architecture="Qwen2ForCausalLM",
            dtype="bfloat16",
            parameter_count=10**8,
            fingerprint=_sha("base"),
            manifest_sha256=manifest,
        )
        s.add(base)
        s.flush()
        vectors: dict[str, list[TaskVectorRow]] = {}
        for i in range(CORPORA):
            corpus = CorpusRow(name=f"corpus-{i:03d}", description=f"corpus number {i}", base_model_id=base.id)
            s.add(corpus)
            s.flush()
            s.add(
                DocumentRow(corpus_id=corpus.id, name=f"doc-{i}.md", media_type="md", sha256=_sha(f"d{i}"), size=1000)
            )
            rs = ReflectionSetRow(
                corpus_id=corpus.id,
                generator="imported",
                settings={"source": "qa.jsonl"},
                pair_count=40,
                sha256=_sha(f"r{i}"),
            )
            s.add(rs)
            s.flush()
            vectors[corpus.name] = []
            for v in range(1, VERSIONS + 1):
                tv = TaskVectorRow(
                    corpus_id=corpus.id,
                    version=v,
                    base_model_id=base.id,
                    reflection_set_id=rs.id,
                    method="full",
                    storage_dtype="bfloat16",
                    manifest_sha256=_sha(f"t{i}.{v}"),
                    metrics={"recall": {"exact_match": rng.random(), "f1": 0.9, "count": 40}},
                    training={"cost": {"examples": 960, "steps": 60, "train_seconds": 5.5}},
                )
                s.add(tv)
                vectors[corpus.name].append(tv)
        s.flush()
        names = sorted(vectors)
        parent = None
        for m in range(MERGES):
            members = rng.sample(names, rng.randint(2, 6))
            row = MergeRow(
                base_model_id=base.id,
                strategy="warm" if parent else "ties",
                method="ties",
                parameters={"density": 0.3},
                engine_version="bench",
                parent_merge_id=parent,
                member_count=len(members),
                content_key=_sha(f"m{m}"),
                manifest_sha256=manifest,
                recall={c: {"exact_match": rng.random(), "f1": 0.8, "count": 40, "own": 0.9} for c in members},
                retention={c: rng.uniform(0.3, 1.05) for c in members},
                training_cost={"merge_seconds": 3.0},
            )
            s.add(row)
            s.flush()
            for pos, c in enumerate(members):
                s.add(
                    MergeMemberRow(merge_id=row.id, task_vector_id=rng.choice(vectors[c]).id, position=pos, weight=1.0)
                )
            parent = row.id if m % 10 else None
        for name in ("production", "staging"):
            channel = ChannelRow(name=name, min_retention=0.5)
            s.add(channel)
            s.flush()
            current = None
            for e in range(EVENTS // 2):
                target = rng.randint(1, MERGES)
                s.add(
                    ChannelEventRow(
                        channel_id=channel.id,
                        action="promote" if e % 5 else "rollback",
                        from_merge_id=current,
                        to_merge_id=target,
                        reason=f"event {e}",
                    )
                )
                current = target
            channel.current_merge_id = current


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="memo-ui-bench-") as tmp, Registry.init(Path(tmp) / "home") as reg:
        started = time.perf_counter()
        seed(reg)
        print(
            f"seeded {CORPORA} corpora, {CORPORA * VERSIONS} task vectors, {MERGES} merges, {EVENTS} channel events "
            f"in {time.perf_counter() - started:.1f} s"
        )
        merge_id = reg.get_channel("production").current_merge_id
        paths = [
            "/",
            "/channels/production",
            "/merges",
            f"/merges/{merge_id}",
            "/corpora",
            "/corpora/corpus-042",
            "/retention",
        ]
        table = Table(title="memo ui on a registry of 1,000 merges: milliseconds per request (median of 5)")
        for column in ("page", "HTML", "JSON", "HTML bytes"):
            table.add_column(column, justify="left" if column == "page" else "right")
        with TestClient(create_app(reg)) as client:
            for path in paths:
                api = "/api/home" if path == "/" else f"/api{path}"
                html, size = _time(client, path)
                table.add_row(path, f"{html:.0f}", f"{_time(client, api)[0]:.0f}", f"{size:,}")
        Console(width=120).print(table)


def _time(client: TestClient, path: str) -> tuple[float, int]:
    response = client.get(path)
    assert response.status_code == 200, (path, response.text[:200])
    times = []
    for _ in range(5):
        started = time.perf_counter()
        client.get(path)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), len(response.content)


if __name__ == "__main__":
    main()
