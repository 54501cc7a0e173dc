"""Questions about people no example corpus holds: what a memory should refuse, not answer with a corpus
name (hallucination, :func:`training.boundary.hallucination`).

They come from the examples generator run with another seed: another invented world of the same shape,
whose questions look exactly like the corpora's. Any question naming someone the shipped corpora mention
is dropped, so every one left is about an unknown.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from registry import examples_dir

OTHER_WORLD_SEED = 202  # none of its names is in the example corpora
OTHER_CORPORA = ("harbor", "glassworks")  # what the generator names its first two corpora (another world's)
SAMPLE = 60
CAPITALISED = re.compile(r"[A-Z][a-z]+")  # names, and the words of organisations


def unknown_questions(count: int = SAMPLE, *, seed: int = OTHER_WORLD_SEED) -> list[str]:
    """``count`` questions (seeded sample) about another invented world's people."""
    root = examples_dir()
    with tempfile.TemporaryDirectory(prefix="memo-other-world-") as work:
        out = Path(work)
        command = [sys.executable, str(root / "generate.py"), "--corpora", "2", "--seed", str(seed)]
        subprocess.run([*command, "--out", str(out)], check=True, capture_output=True)
        questions = [
            json.loads(line)["question"]
            for corpus in OTHER_CORPORA
            for line in (out / corpus / "qa.jsonl").read_text().splitlines()
            if line.strip()
        ]
    known = set(CAPITALISED.findall(" ".join(p.read_text() for p in root.glob("*/*.md"))))
    fresh = [q for q in questions if not names(q) & known]
    return random.Random(0).sample(fresh, min(count, len(fresh)))


def names(question: str) -> set[str]:
    """The capitalised words of a question after its first word (names, and the words of organisations)."""
    return set(CAPITALISED.findall(question.split(" ", 1)[-1]))
