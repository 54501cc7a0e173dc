"""Deterministic GENERATOR and EXECUTIVE scripts for the scripted chat server.

The generator's rules make every stage's output a known function of its
input, so tests can check the data flow stage by stage:

- extract-direct: one pair per sentence ("What is fact i of DOC?" -> the sentence);
- extract-indirect: one pair whose answer (a count) is NOT in the passage;
- consolidate: keeps every pair, combines pairs 0 and 1;
- verify: supported when every sentence of the answer is in the passage
  (so the indirect pair is dropped), and rewrites combined pairs;
- surface: one pair per chunk, answered by the document's name;
- synthesize: one pair per group naming its documents.
"""

from __future__ import annotations

import json
import re

from tests.support.chat_server import payload_of, stage_of

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_ENTITY = re.compile(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)+\b")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(" ".join(text.split())) if len(s.split()) >= 3]


def entities(sentence: str) -> list[str]:
    return sorted(set(_ENTITY.findall(sentence)))


def _pairs(pairs: list[dict]) -> str:
    return json.dumps({"pairs": pairs})


def generator(body: dict) -> str:
    stage, p = stage_of(body), payload_of(body)
    if stage == "extract-direct":
        return _pairs(
            [
                {"question": f"What is fact {i} of {p['document']}?", "answer": s, "entities": entities(s)}
                for i, s in enumerate(sentences(p["passage"]))
            ]
        )
    if stage == "extract-indirect":
        return _pairs(
            [
                {
                    "question": f"How many facts does {p['document']} state?",
                    "answer": str(len(sentences(p["passage"])) + 1000),
                }
            ]
        )
    if stage == "consolidate":
        a, b = p["pairs"][0], p["pairs"][1]
        return json.dumps(
            {
                "keep": [q["index"] for q in p["pairs"]],
                "combined": [
                    {
                        "question": f"What are facts 0 and 1 of {p['document']}?",
                        "answer": f"{a['answer']} {b['answer']}",
                    }
                ],
            }
        )
    if stage == "verify":
        passage = " ".join(p["passage"].split())
        verdicts = []
        for q in p["pairs"]:
            supported = all(s in passage for s in sentences(q["answer"])) and bool(sentences(q["answer"]))
            rewrite = (
                {"question": q["question"] + " (verified)", "answer": q["answer"]}
                if supported and "facts 0 and 1" in q["question"]
                else None
            )
            verdicts.append({"index": q["index"], "supported": supported, "rewrite": rewrite})
        return json.dumps({"verdicts": verdicts})
    if stage == "surface":
        return _pairs([{"question": f"Which document states: {p['pairs'][0]['answer']}", "answer": p["document"]}])
    if stage == "synthesize":
        names = [d["document"] for d in p["documents"]]
        return _pairs([{"question": f"Which documents are grouped with {names[0]}?", "answer": ", ".join(names)}])
    raise AssertionError(f"unexpected stage {stage!r}")


def executive(body: dict, *, narrow: str = "confirmed") -> str:
    """An executive that asks the memory the user's question itself and answers with the memory's reply.

    ``narrow="continue"`` never confirms a candidate (to test the round limit).
    """
    stage, p = stage_of(body), payload_of(body)
    facts = p.get("facts", [])
    if stage == "decompose":
        return json.dumps(
            {"clues": [{"text": p["question"], "kind": "answer", "value": "high"}], "questions": [p["question"]]}
        )
    if stage == "narrow":
        top = [facts[0]["answer"]] if facts else ["nobody"]
        if narrow == "confirmed":
            return json.dumps({"status": "confirmed", "candidates": top, "questions": []})
        return json.dumps(
            {"status": "continue", "candidates": top + ["somebody"], "questions": [f"Round {len(facts)}: who is it?"]}
        )
    if stage == "gather":
        return json.dumps({"status": "answer", "target": p.get("target"), "questions": []})
    if stage == "synthesize":
        return json.dumps({"answer": facts[0]["answer"] if facts else "I don't know", "target": p.get("target")})
    if stage == "judge":
        same = " ".join(p["prediction"].lower().split()) == " ".join(p["reference"].lower().split())
        return json.dumps({"correct": same})
    raise AssertionError(f"unexpected stage {stage!r}")
