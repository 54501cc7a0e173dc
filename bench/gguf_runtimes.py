"""Benchmark: a merge exported as GGUF (f16 and q8_0) against the merged model in torch.

For each: the file's size, recall on every member corpus (torch on the safetensors model; transformers
reading the GGUF file back; llama.cpp through llama-cpp-python on the file), and generation speed
(new tokens per second, greedy, one prompt at a time, 2 threads) of llama.cpp against transformers on
the same CPU, measured side by side in one run.

    pip install llama-cpp-python
    python bench/gguf_runtimes.py --home bench-out/study-smol/home --ref study-warm     # SmolLM2, two corpora
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from registry import Registry  # noqa: E402
from training.chat import prompt_ids  # noqa: E402
from training.evaluate import recall  # noqa: E402
from training.sft import load_model  # noqa: E402
from training.text import normalize  # noqa: E402

NEW_TOKENS = 48  # per prompt in the speed runs (greedy, no early stop)


def llama_cpp_recall(llm, tokenizer, pairs) -> float:
    right = 0
    for pair in pairs:
        out = llm.create_completion(prompt_ids(tokenizer, pair.question), max_tokens=16, temperature=0.0)
        right += normalize(out["choices"][0]["text"]) == normalize(pair.answer)
    return right / max(1, len(pairs))


def torch_speed(model, tokenizer, questions: list[str]) -> float:
    started, made = time.perf_counter(), 0
    for question in questions:
        ids = torch.tensor([prompt_ids(tokenizer, question)])
        out = model.generate(
            ids,
            do_sample=False,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            pad_token_id=tokenizer.pad_token_id,
        )
        made += out.shape[1] - ids.shape[1]
    return made / (time.perf_counter() - started)


def llama_cpp_speed(llm, tokenizer, questions: list[str]) -> float:
    started, made = time.perf_counter(), 0
    for question in questions:
        llm.reset()
        tokens = prompt_ids(tokenizer, question)
        for i, _ in enumerate(llm.generate(tokens, temp=0.0, top_k=1, reset=True)):
            if i + 1 >= NEW_TOKENS:
                break
        made += NEW_TOKENS
    return made / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, required=True, help="A memo home holding the merge.")
    ap.add_argument("--ref", required=True, help="The merge (merge-N) or a channel.")
    ap.add_argument("--speed-prompts", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(2)
    from llama_cpp import Llama

    with Registry.open(args.home) as reg:
        merged = (
            reg.get_merge(args.ref)
            if args.ref.startswith("merge-")
            else reg.get_merge(reg.get_channel(args.ref).current_merge_id)
        )
        model, tokenizer = load_model(reg.model_dir(merged.ref))
        pairs = {m.corpus: reg.questions(m.corpus) for m in merged.members}
        questions = [p.question for ps in pairs.values() for p in ps][: args.speed_prompts]
        rows = [
            {
                "format": "safetensors (torch)",
                "bytes": sum(f.stat().st_size for f in reg.model_dir(merged.ref).glob("*.safetensors")),
                "recall": {c: recall(model, tokenizer, ps).exact_match for c, ps in pairs.items()},
                "tokens_per_second": round(torch_speed(model, tokenizer, questions), 1),
            }
        ]
        for quant in ("f16", "q8_0"):
            out = Path(tempfile.mkdtemp(prefix="memo-gguf-")) / "out"
            exported = reg.export_gguf(merged.ref, out, quant=quant, device="cpu")
            llm = Llama(model_path=str(out / exported.file), n_ctx=512, n_threads=2, verbose=False)
            rows.append(
                {
                    "format": f"GGUF {quant}",
                    "bytes": exported.size,
                    "recall_through_file_transformers": {c: r.exact_match for c, r in exported.recall.items()},
                    "recall": {c: llama_cpp_recall(llm, tokenizer, ps) for c, ps in pairs.items()},
                    "tokens_per_second": round(llama_cpp_speed(llm, tokenizer, questions), 1),
                }
            )
    for row in rows:
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
