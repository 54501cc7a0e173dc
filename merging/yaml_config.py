"""mergekit YAML configs in and out: ``python -m merging`` is a drop-in for ``mergekit-yaml``.

Accepted (mergekit 0.1.5 semantics): ``merge_method`` (ties, task_arithmetic),
``base_model``, ``models`` with ``parameters: {weight, density}``, top-level
``parameters`` (``normalize``, ``lambda``, and ``weight``/``density`` as
defaults for every model), ``dtype``, ``out_dtype``. As in mergekit, every
model needs a ``weight``, a missing ``density`` means 1.0 (no trim), and a
``models`` entry equal to the base is skipped.

memo extension: an entry may name ``task_vector: DIR`` (stored deltas)
instead of ``model: DIR``; mergekit cannot read such a config.

Not supported (a clear error instead of a silent difference): slices,
modules, per-layer parameter gradients or filters, tokenizer options, LoRA
``model+adapter`` references, and Hub ids (memo reads local directories).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from merging.errors import MergeError
from merging.spec import METHODS, InputKind, MergeInput, MergeSpec, check_density, check_scale

_TOP_KEYS = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype"}
_MODEL_PARAMETERS = {"weight", "density"}
_UNSUPPORTED = {"slices", "modules", "tokenizer_source", "tokenizer", "chat_template"}
MERGEKIT_DEFAULT_DENSITY = 1.0


def _scalar(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MergeError(f"{where} must be a number; per-layer gradients and filters are not supported by memo")
    return float(value)


def _local_dir(ref: Any, where: str, root: Path) -> Path:
    if not isinstance(ref, str) or not ref:
        raise MergeError(f"{where} must be a path to a local model directory")
    if "+" in ref:
        raise MergeError(f"{where}: LoRA references ({ref!r}) are not supported; merge the adapter first")
    path = Path(ref).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_dir():
        raise MergeError(
            f"{where}: {ref!r} is not a local directory (memo works offline: "
            "download Hub models first, e.g. with `hf download`)"
        )
    return path


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise MergeError(f"{where} must be true or false")
    return value


def spec_from_config(config: dict[str, Any], *, root: Path | None = None) -> MergeSpec:
    """A :class:`MergeSpec` from a parsed mergekit YAML config (paths relative to ``root``)."""
    root = Path.cwd() if root is None else root
    method = _method(config)
    base = _local_dir(config["base_model"], "base_model", root)
    shared = _shared_parameters(config, method)
    inputs = []
    for n, entry in enumerate(config.get("models") or []):
        member = _member(entry, f"models[{n}]", shared, base, root)
        if member is not None:
            inputs.append(member)
    return MergeSpec(
        method=method,
        base=base,
        inputs=tuple(inputs),
        normalize=_bool(shared["normalize"], "parameters.normalize") if "normalize" in shared else None,
        lam=check_scale(_scalar(shared.get("lambda", 1.0), "parameters.lambda"), "parameters.lambda"),
        dtype=config.get("dtype"),
        out_dtype=config.get("out_dtype"),
    )


def _method(config: dict[str, Any]) -> str:
    """The config's merge method, once every top-level key is known and a base is named."""
    if not isinstance(config, dict):
        raise MergeError("the config must be a YAML mapping")
    for key in config:
        if key in _UNSUPPORTED:
            raise MergeError(f"config key {key!r} is not supported by memo's merge engine")
        if key not in _TOP_KEYS:
            raise MergeError(f"unknown config key {key!r}")
    method = config.get("merge_method")
    if not isinstance(method, str):
        raise MergeError(f"unknown merge method {method!r}; memo merges {', '.join(METHODS)}")
    if "base_model" not in config:
        raise MergeError(f"merge_method {method!r} needs a base_model")
    return method


def _shared_parameters(config: dict[str, Any], method: str) -> dict[str, Any]:
    shared = config.get("parameters") or {}
    if not isinstance(shared, dict):
        raise MergeError("parameters must be a mapping")
    for key in shared:
        if key not in {"normalize", "lambda", "weight", "density", "int8_mask", "rescale"}:
            raise MergeError(f"parameter {key!r} is not one of {method}'s parameters")
    if shared.get("rescale"):
        raise MergeError("rescale is not supported for ties/task_arithmetic")
    return shared


def _member(entry: Any, where: str, shared: dict[str, Any], base: Path, root: Path) -> MergeInput | None:
    """One ``models:`` entry as an input (None: the base itself, listed as mergekit allows)."""
    if not isinstance(entry, dict):
        raise MergeError(f"{where} must be a mapping with 'model' and 'parameters'")
    kind: InputKind = "task_vector" if "task_vector" in entry else "model"
    path = _local_dir(entry.get(kind), f"{where}.{kind}", root)
    if kind == "model" and path.resolve() == base.resolve():
        return None
    for key in entry:
        if key not in {"model", "task_vector", "parameters"}:
            raise MergeError(f"{where}: unknown key {key!r} (use 'model' or 'task_vector', and 'parameters')")
    own = entry.get("parameters") or {}
    if not isinstance(own, dict):
        raise MergeError(f"{where}.parameters must be a mapping of weight and density")
    for key in own:
        if key not in _MODEL_PARAMETERS:
            raise MergeError(
                f"{where}.parameters: unknown parameter {key!r} (use {' or '.join(sorted(_MODEL_PARAMETERS))})"
            )
    params = {**shared, **own}
    if "weight" not in params:
        raise MergeError(f"{where} has no weight (mergekit requires parameters.weight)")
    weight = _scalar(params["weight"], f"{where}.parameters.weight")
    density = _scalar(params.get("density", MERGEKIT_DEFAULT_DENSITY), f"{where}.parameters.density")
    return MergeInput(
        path=path,
        kind=kind,
        weight=check_scale(weight, f"{where}.parameters.weight"),
        density=check_density(density, f"{where}.parameters.density"),
    )


def load_config(path: Path) -> MergeSpec:
    try:
        config = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise MergeError(f"{path}: cannot read ({e.strerror})") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise MergeError(f"{path}: not valid YAML ({where}{getattr(e, 'problem', None) or e})") from e
    return spec_from_config(config)


def config_from_spec(spec: MergeSpec, *, names: dict[Path, str] | None = None) -> dict[str, Any]:
    """The mergekit config that reproduces ``spec`` (every parameter explicit)."""
    names = names or {}

    def ref(path: Path) -> str:
        return names.get(path, str(path))

    config: dict[str, Any] = {"merge_method": spec.method, "base_model": ref(spec.base), "models": []}
    for inp in spec.inputs:
        params: dict[str, Any] = {"weight": inp.weight}
        if spec.method_def.trims:
            params["density"] = inp.density
        config["models"].append(
            {("task_vector" if inp.kind == "task_vector" else "model"): ref(inp.path), "parameters": params}
        )
    config["parameters"] = {"normalize": spec.effective_normalize, "lambda": spec.lam}
    for key in ("dtype", "out_dtype"):
        if getattr(spec, key):
            config[key] = getattr(spec, key)
    return config


def dump_config(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)
