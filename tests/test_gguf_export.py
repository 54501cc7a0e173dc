"""`memo export --format gguf`: one GGUF file per merge, read back by transformers' GGUF reader and
answered by llama.cpp (llama-cpp-python) as the torch model answers; refused below the gate."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

from registry import GateRefused, InvalidInput, Registry
from tests.conftest import Memo
from tests.support.cli import assert_one_line_error
from tests.support.homes import clone_home
from training.chat import prompt_ids
from training.evaluate import generate_answers
from training.sft import load_model

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
if not HAS_LLAMA_CPP and os.environ.get("MEMO_REQUIRE_LLAMA_CPP"):
    raise RuntimeError("MEMO_REQUIRE_LLAMA_CPP is set but llama-cpp-python is not installed")
needs_llama_cpp = pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed")


@pytest.fixture(scope="module")
def merged_home(trained_home_template, tmp_path_factory):
    """harbor and glassworks trained long enough to recall their questions, merged (TIES, density 1)."""
    from training.settings import SFTSettings

    home = clone_home(trained_home_template, tmp_path_factory.mktemp("gguf") / "home")
    with Registry.open(home) as reg:
        for corpus in ("harbor", "glassworks"):
            reg.train(corpus, SFTSettings(steps=40, batch=8, lr=3e-3), device="cpu", progress=False)
        reg.merge(["harbor", "glassworks"], strategy="ties", density=1.0, progress=False)
    return home


@pytest.fixture
def merged(merged_home, tmp_path):
    reg = Registry.open(clone_home(merged_home, tmp_path / "home"))
    yield reg, reg.list_merges()[-1]
    reg.close()


def _gguf_model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)


@pytest.mark.parametrize(("quant", "tolerance"), [("f32", 0.0), ("f16", 1e-3), ("q8_0", 1 / 127)])
def test_the_gguf_file_reads_back_as_the_merged_model(merged, tmp_path, quant, tolerance):
    reg, record = merged
    exported = reg.export_gguf(record.id, tmp_path / "out", quant=quant)
    path = tmp_path / "out" / exported.file
    assert exported.file == f"memo-{record.ref}-{quant}.gguf" and exported.size == path.stat().st_size
    ours = load_model(reg.model_dir(record.ref))[0].state_dict()
    theirs = _gguf_model(path).state_dict()
    assert set(theirs) >= {k for k in ours if "rotary" not in k}
    for name, tensor in ours.items():
        if "rotary" in name:
            continue
        error = (theirs[name] - tensor).abs().max().item()
        bound = tolerance * tensor.abs().max().item()  # q8_0: half a step of 1/127 of a block's largest value
        assert error <= bound + 1e-7, (name, error, bound)
    # Asked through the file, every member keeps what the merge recalled (f32: exactly).
    for corpus, recall in exported.recall.items():
        assert abs(recall.exact_match - record.recall[corpus].exact_match) <= (0.0 if quant == "f32" else 0.1)
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        exported.file,
        "Modelfile",
        "README.md",
        "memo-provenance.json",
    }


def test_the_modelfile_renders_the_chat_template_for_ollama(merged, tmp_path):
    reg, record = merged
    exported = reg.export_gguf(record.id, tmp_path / "out", quant="q8_0")
    text = (tmp_path / "out" / "Modelfile").read_text()
    tokenizer = load_model(reg.model_dir(record.ref))[1]
    expected_prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "{{ .Prompt }}"}], tokenize=False, add_generation_prompt=True
    )
    assert text.splitlines()[0] == f"FROM ./{exported.file}"
    assert f'TEMPLATE """{expected_prompt}{{{{ .Response }}}}{tokenizer.eos_token}"""' in text
    assert f"PARAMETER stop {json.dumps(tokenizer.eos_token)}" in text


def test_an_export_below_the_gate_is_refused_and_writes_nothing(merged, tmp_path):
    reg, record = merged
    reg.promote(record.id, "production")
    lowest = min(v for v in record.retention.values() if v is not None)
    assert lowest < 1.0
    with pytest.raises(GateRefused, match="measured through the file"):
        reg.export_gguf(record.id, tmp_path / "out", quant="q8_0", min_retention=1.0)
    reg.set_min_retention("production", 1.0)  # a channel's own gate applies to its export
    with pytest.raises(GateRefused):
        reg.export_gguf("production", tmp_path / "out", quant="q8_0")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    reg.set_min_retention("production", lowest * 0.5)
    assert reg.export_gguf("production", tmp_path / "out", quant="f32").gate == pytest.approx(lowest * 0.5)


def test_bad_gguf_exports_are_one_line_and_change_nothing(merged, tmp_path):
    reg, record = merged
    memo = Memo(reg.settings.home, None)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    gguf = ("--format", "gguf")
    assert_one_line_error(memo("export", str(record.id), str(tmp_path / "full"), *gguf, ok=False), "not an empty")
    assert (tmp_path / "full" / "x").read_text() == "mine"
    bad = memo("export", str(record.id), str(tmp_path / "o"), *gguf, "--min-retention", "2", ok=False)
    assert_one_line_error(bad, "between 0 and 1")
    assert_one_line_error(memo("export", str(record.id), str(tmp_path / "o"), *gguf, "--quant", "q4", ok=False), "q4")
    assert not (tmp_path / "o").exists()
    with pytest.raises(InvalidInput):
        reg.export_gguf(record.id, tmp_path / "o2", quant="q8_0", min_retention=-0.1)


def test_the_cli_exports_and_prints_the_figures(merged, tmp_path):
    reg, record = merged
    memo = Memo(reg.settings.home, None)
    out = memo("export", str(record.id), str(tmp_path / "g"), "--format", "gguf", "--quant", "f16")
    assert f"memo-{record.ref}-f16.gguf" in out.stdout and "ollama create NAME -f" in out.stdout
    data = json.loads(memo("export", str(record.id), str(tmp_path / "j"), "--format", "gguf", "--json").stdout)
    assert data["quant"] == "q8_0" and set(data["recall"]) == {"harbor", "glassworks"}


@needs_llama_cpp
@pytest.mark.parametrize("quant", ["f32", "q8_0"])
def test_llama_cpp_answers_the_corpus_questions_as_torch_does(merged, tmp_path, quant):
    from llama_cpp import Llama

    reg, record = merged
    exported = reg.export_gguf(record.id, tmp_path / "out", quant=quant)
    model, tokenizer = load_model(reg.model_dir(record.ref))
    questions = [q.question for q in reg.questions("harbor")[:12] + reg.questions("glassworks")[:12]]
    torch_answers = generate_answers(model, tokenizer, questions)
    llm = Llama(model_path=str(tmp_path / "out" / exported.file), n_ctx=256, n_threads=2, verbose=False, seed=0)
    agree = 0
    for question, expected in zip(questions, torch_answers):
        ids = prompt_ids(tokenizer, question)
        text = tokenizer.decode(ids)
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids  # the same tokenizer
        out = llm.create_completion(ids, max_tokens=16, temperature=0.0, top_k=1)
        agree += out["choices"][0]["text"].strip() == expected
    llm.close()
    # Greedy answers agree but where two next tokens are within float rounding of each other.
    assert agree >= len(questions) - (1 if quant == "f32" else 2), (agree, len(questions))


def test_publish_commits_the_gguf_file_beside_the_model(merged, hub, tmp_path, monkeypatch):
    from tests.conftest import HUB_TOKEN

    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    reg, record = merged
    reg.publish(record.id, "org/memory", endpoint=hub.url, gguf="q8_0")
    files = hub.main_files("org/memory")
    name = f"memo-{record.ref}-q8_0.gguf"
    local = reg.export_gguf(record.id, tmp_path / "local", quant="q8_0")
    assert files[name] == (tmp_path / "local" / local.file).read_bytes()  # the same bytes as an export
    assert files["Modelfile"].decode().startswith(f"FROM ./{name}\n") and "model.safetensors" in files
    assert not list(reg.settings.home.glob("tmp/gguf-*"))  # the work directory is gone
    reg.set_min_retention("gated", 1.0)
    reg.promote(record.id, "gated", force=True)
    with pytest.raises(GateRefused):  # a channel's gate holds for its GGUF on the Hub too
        reg.publish("gated", "org/other", endpoint=hub.url, gguf="q8_0")
    assert "org/other" not in hub.state.repos or name not in hub.main_files("org/other")


def test_a_qwen2_model_round_trips_and_llama_cpp_computes_as_torch(tmp_path):
    """Qwen2 (attention biases, NeoX rotary: no interleave), built small with random weights."""
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from training.gguf_export import export_gguf
    from training.tiny import train_tokenizer

    tokenizer = train_tokenizer(["Who founded Port Velin? Ada Korr founded it in 1712."] * 20, 300)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    source = tmp_path / "qwen2"
    model.save_pretrained(source, safe_serialization=True)
    tokenizer.save_pretrained(source)
    path = export_gguf(source, tmp_path / "qwen2.gguf", quant="f32")
    back = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(back[name], tensor), name
    if not HAS_LLAMA_CPP:
        return
    from llama_cpp import Llama

    ids = prompt_ids(tokenizer, "Who founded Port Velin?")
    with torch.no_grad():
        expected = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=8, min_new_tokens=8)[
            0, len(ids) :
        ]
    llm = Llama(model_path=str(path), n_ctx=128, n_threads=2, verbose=False)
    made = []
    for token in llm.generate(ids, temp=0.0, top_k=1):
        made.append(token)
        if len(made) == 8:
            break
    llm.close()
    assert made == expected.tolist()
