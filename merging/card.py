"""The files that travel with a merged model: model card, mergekit config, base config."""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
import yaml

from merging.spec import MergeSpec, dtype_name

# Copied from the base as they are (tokenizer and generation settings).
BASE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.jinja",
    "generation_config.json",
)


def engine_version() -> str:
    try:
        return version("memo-registry")
    except PackageNotFoundError:
        return "0+unknown"


def output_config(base_dir: Path, out_dtype: torch.dtype, *, untie: bool) -> bytes | None:
    path = base_dir / "config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    for key in ("torch_dtype", "dtype"):
        if key in config:
            config[key] = dtype_name(out_dtype)
    if untie:  # an lm_head was written where the base tied it to the embedding
        config["tie_word_embeddings"] = False
    return (json.dumps(config, indent=2) + "\n").encode()


def model_card(
    spec: MergeSpec,
    config_yaml: str,
    *,
    base_name: str,
    input_names: list[str],
    extra_metadata: dict[str, Any] | None = None,
    body: str = "",
) -> bytes:
    meta: dict[str, Any] = {
        "base_model": [base_name],
        "base_model_relation": "merge",
        "library_name": "transformers",
        "tags": ["mergekit", "merge", "memo"],
        **(extra_metadata or {}),
    }
    method = spec.method_def
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).rstrip(),
        "---",
        "",
        "# Merged model",
        "",
        f"Made with memo {engine_version()} using the **{method.name}** method ({method.reference}).",
        "",
        f"Base model: `{base_name}`",
        "",
        "## Merged inputs",
        "",
        *[
            f"- `{name}` (weight {inp.weight}" + (f", density {inp.density})" if method.trims else ")")
            for name, inp in zip(input_names, spec.inputs)
        ],
        "",
    ]
    if body:
        lines += [body, ""]
    lines += [
        "## Configuration",
        "",
        "Reproduce with `mergekit-yaml` or `python -m merging`:",
        "",
        "```yaml",
        config_yaml.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines).encode()
