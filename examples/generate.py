"""Generate memo's example corpora: an invented world, rendered from one fact table.

    python examples/generate.py            # rewrites examples/<corpus>/ and examples/pretrain/
    python examples/generate.py --corpora 10 --out /tmp/world   # more corpora (bench/continual.py)

Everything is deterministic (seeded); the facts are invented, so no
pretrained model can know them. Each corpus is a handful of markdown
documents (one per person, one per organisation) plus:

- ``qa.jsonl``: one question per stated fact, plus multi-hop questions whose
  answer needs two documents (``"hops": 2``);
- ``heldout.jsonl``: the same facts asked in other words, to measure recall
  beyond verbatim memorisation.

``pretrain/`` holds a separate world in the same question/answer form, for
pre-training the tiny base model (never the example corpora).
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

THEMES = [
    "harbor",
    "glassworks",
    "observatory",
    "river-guilds",
    "orchards",
    "archives",
    "foundry",
    "lighthouses",
    "tea-houses",
    "clockmakers",
    "pretrain",
]
SYLLABLES = [
    "ka",
    "ri",
    "mo",
    "ven",
    "tal",
    "os",
    "bre",
    "lin",
    "dor",
    "sa",
    "mir",
    "quo",
    "zel",
    "fa",
    "nu",
    "gar",
    "eth",
    "pol",
    "wyn",
    "cas",
    "rud",
    "ilo",
    "bex",
    "tam",
]
OCCUPATIONS = [
    "navigator",
    "glassblower",
    "astronomer",
    "ferry pilot",
    "orchard keeper",
    "archivist",
    "bellfounder",
    "lamp keeper",
    "tea merchant",
    "clockmaker",
    "cartographer",
    "shipwright",
    "weaver",
    "printer",
    "stonemason",
]
KINDS = ["guild", "company", "society", "workshop", "academy"]
OBJECTS = [
    "a brass astrolabe",
    "a green glass lantern",
    "a map of the eastern shoals",
    "a tide clock",
    "a book of river songs",
    "a copper telescope",
    "a silk banner",
    "a ledger of storms",
    "a carved oak compass",
    "a porcelain tea set",
]


@dataclass(frozen=True)
class Person:
    name: str
    born: int
    town: str
    occupation: str
    organisation: str
    mentor: str | None
    creation: str  # what they made


@dataclass(frozen=True)
class Organisation:
    name: str
    kind: str
    founded: int
    town: str
    founder: str


def _name(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def _unique(rng: random.Random, taken: set[str], parts: int) -> str:
    while True:
        name = _name(rng, parts)
        if name not in taken:
            taken.add(name)
            return name


def build_world(theme: str, seed: int, taken: set[str], people: int = 6) -> dict:
    """The fact table of one corpus: towns, organisations and people."""
    rng = random.Random(f"{seed}:{theme}")
    towns = [_unique(rng, taken, 2) + suffix for suffix in ("mouth", "ford", "holm")]
    orgs, persons = [], []
    for i in range(2):
        kind = KINDS[(seed + i + len(theme)) % len(KINDS)]
        orgs.append(
            Organisation(
                name=f"{_unique(rng, taken, 2)} {kind.capitalize()}",
                kind=kind,
                founded=rng.randint(1600, 1780),
                town=towns[i],
                founder="",
            )
        )
    for i in range(people):
        first, last = _unique(rng, taken, 2), _unique(rng, taken, 3)
        persons.append(
            Person(
                name=f"{first} {last}",
                born=rng.randint(1700, 1820),
                town=rng.choice(towns),
                occupation=rng.choice(OCCUPATIONS),
                organisation=orgs[i % 2].name,
                mentor=persons[i - 2].name if i >= 2 else None,
                creation=rng.choice(OBJECTS),
            )
        )
    # The first two people founded the organisations.
    orgs = [Organisation(**{**asdict(o), "founder": persons[i].name}) for i, o in enumerate(orgs)]
    return {
        "theme": theme,
        "towns": towns,
        "organisations": [asdict(o) for o in orgs],
        "people": [asdict(p) for p in persons],
    }


# --- rendering --------------------------------------------------------------------------


def person_doc(p: dict) -> str:
    lines = [
        f"# {p['name']}",
        "",
        f"{p['name']} was born in {p['born']} in the town of {p['town']}.",
        f"{p['name']} worked as a {p['occupation']} and belonged to the {p['organisation']}.",
        f"{p['name']} is remembered for making {p['creation']}.",
    ]
    if p["mentor"]:
        lines.append(f"The mentor of {p['name']} was {p['mentor']}.")
    return "\n".join(lines) + "\n"


def org_doc(o: dict) -> str:
    return (
        f"# The {o['name']}\n\nThe {o['name']} is a {o['kind']} founded in {o['founded']} "
        f"in {o['town']}. Its founder was {o['founder']}.\n"
    )


def qa_pairs(world: dict) -> tuple[list[dict], list[dict]]:
    """(questions, held-out paraphrases) over every fact of a world."""
    qa, held = [], []

    def add(q: str, a: str, para: str | None, doc: str, hops: int = 1) -> None:
        qa.append({"question": q, "answer": a, "document": doc, "hops": hops})
        if para:
            held.append({"question": para, "answer": a, "document": doc, "hops": hops})

    people = {p["name"]: p for p in world["people"]}
    for p in world["people"]:
        n, doc = p["name"], _slug(p["name"]) + ".md"
        add(f"In which year was {n} born?", str(p["born"]), f"What is the birth year of {n}?", doc)
        add(f"In which town was {n} born?", p["town"], f"What is the home town of {n}?", doc)
        add(f"What did {n} work as?", p["occupation"], f"What was the occupation of {n}?", doc)
        add(
            f"Which organisation did {n} belong to?", p["organisation"], f"{n} was a member of which organisation?", doc
        )
        add(f"What is {n} remembered for making?", p["creation"], f"What did {n} make?", doc)
        if p["mentor"]:
            add(f"Who was the mentor of {n}?", p["mentor"], f"Who mentored {n}?", doc)
            add(f"In which town was the mentor of {n} born?", people[p["mentor"]]["town"], None, doc, hops=2)
    for o in world["organisations"]:
        n, doc = o["name"], _slug(o["name"]) + ".md"
        add(f"In which year was the {n} founded?", str(o["founded"]), f"When was the {n} established?", doc)
        add(f"Who founded the {n}?", o["founder"], f"Who was the founder of the {n}?", doc)
        add(f"In which town is the {n}?", o["town"], f"Where is the {n} located?", doc)
        add(f"In which year was the founder of the {n} born?", str(people[o["founder"]]["born"]), None, doc, hops=2)
    return qa, held


def _slug(text: str) -> str:
    return "-".join(text.lower().split())


def write_corpus(world: dict, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.md"):
        old.unlink()
    for p in world["people"]:
        (directory / f"{_slug(p['name'])}.md").write_text(person_doc(p))
    for o in world["organisations"]:
        (directory / f"{_slug(o['name'])}.md").write_text(org_doc(o))
    qa, held = qa_pairs(world)
    (directory / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    (directory / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))


def generate(out: Path, *, corpora: int = 4, seed: int = 0, pretrain_people: int = 40) -> list[str]:
    """Write ``corpora`` example corpora and the pre-training world; return the corpus names."""
    if not 1 <= corpora <= len(THEMES) - 1:
        raise SystemExit(f"--corpora must be between 1 and {len(THEMES) - 1}")
    taken: set[str] = set()
    table = {}
    for theme in THEMES[:corpora]:
        table[theme] = build_world(theme, seed, taken)
        write_corpus(table[theme], out / theme)
    table["pretrain"] = build_world("pretrain", seed, taken, people=pretrain_people)
    write_corpus(table["pretrain"], out / "pretrain")
    (out / "facts.json").write_text(json.dumps(table, indent=1) + "\n")
    return THEMES[:corpora]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--corpora", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    names = generate(args.out, corpora=args.corpora, seed=args.seed)
    print(f"wrote {len(names)} corpora ({', '.join(names)}) and pretrain/ under {args.out}")


if __name__ == "__main__":
    main()
