"""mergekit YAML configs in and out: ``python -m merging`` is a drop-in for ``mergekit-yaml``.

Accepted (mergekit 0.1.5 semantics): ``merge_method`` (ties, task_arithmetic,
dare_ties, dare_linear, breadcrumbs, breadcrumbs_ties, della, della_linear,
linear), ``base_model``, ``models`` with ``parameters`` (``weight``,
``density``; ``gamma`` for breadcrumbs, ``epsilon`` for della), top-level
``parameters`` (``normalize``, ``rescale``, ``lambda``, ``int8_mask``, and the
per-model ones as defaults for every model), ``dtype``, ``out_dtype``. As in
mergekit, every model needs a ``weight``, a missing ``density`` means 1.0 (no
trim), and a ``models`` entry equal to the base is skipped (except for
``linear``, which ignores ``base_model`` and averages the models listed; memo
still reads the base's, or else the first model's, layout and files).

memo extensions: an entry may name ``task_vector: DIR`` (stored deltas)
instead of ``model: DIR`` (mergekit cannot read such a config); a top-level
``random_seed`` fixes the masks of dare_* and della* (mergekit ignores the
key; ``mergekit-yaml --random-seed`` seeds its own generator instead).

Not supported (a clear error instead of a silent difference): slices,
modules, per-layer parameter gradients or filters, tokenizer options, LoRA
``model+adapter`` references, and Hub ids (memo reads local directories).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from merging.errors import MergeError
from merging.methods import DEFAULT_EPSILON, DEFAULT_GAMMA, METHODS, check_density, check_scale
from merging.spec import InputKind, MergeInput, MergeSpec

_TOP_KEYS = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "random_seed"}
_SHARED_ONLY = {"normalize", "rescale", "lambda", "int8_mask"}
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


def _parameters_of(method: str) -> tuple[set[str], set[str]]:
    """The method's shared-only parameters and its per-model ones (mergekit's ParameterSpec)."""
    m = METHODS[method]
    if m.averages_models:
        return {"normalize"}, {"weight"}
    own = {"weight", "density"}
    own |= {"gamma"} if m.sparsification == "outliers" else set()
    own |= {"epsilon"} if m.sparsification == "della" else set()
    return set(_SHARED_ONLY), own


def spec_from_config(config: dict[str, Any], *, root: Path | None = None) -> MergeSpec:
    """A :class:`MergeSpec` from a parsed mergekit YAML config (paths relative to ``root``)."""
    root = Path.cwd() if root is None else root
    method = _method(config)
    linear = METHODS[method].averages_models
    base = _base(config, root, linear)
    shared = _shared_parameters(config, method)
    inputs = []
    entries = list(config.get("models") or [])
    if linear and "base_model" in config:
        entries = _with_base(entries, config["base_model"], base, root)
    for n, entry in enumerate(entries):
        member = _member(entry, f"models[{n}]", shared, None if linear else base, root, method)
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
        rescale=_bool(shared["rescale"], "parameters.rescale") if "rescale" in shared else None,
        seed=_seed(config.get("random_seed")),
    )


def _base(config: dict[str, Any], root: Path, linear: bool) -> Path:
    """The base model; ``linear`` ignores it in the sum, so without one the first model gives the layout."""
    if "base_model" in config or not linear:
        return _local_dir(config["base_model"], "base_model", root)
    models = config.get("models") or []
    first = models[0] if isinstance(models, list) and models and isinstance(models[0], dict) else {}
    return _local_dir(first.get("model", first.get("task_vector")), "models[0].model", root)


def _with_base(entries: list[Any], ref: str, base: Path, root: Path) -> list[Any]:
    """mergekit's ``linear`` averages a named ``base_model`` too: where ``models`` lists it, else last
    (with the shared weight)."""
    for e in entries:
        if isinstance(e, dict) and isinstance(e.get("model"), str) and _local_dir(e["model"], "model", root) == base:
            return entries
    return [*entries, {"model": ref}]


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MergeError(f"random_seed must be a non-negative integer, not {value!r}")
    return value


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
    if not isinstance(method, str) or method not in METHODS:
        raise MergeError(f"unknown merge method {method!r}; memo merges {', '.join(METHODS)}")
    if "base_model" not in config and not METHODS[method].averages_models:
        raise MergeError(f"merge_method {method!r} needs a base_model")
    return method


def _shared_parameters(config: dict[str, Any], method: str) -> dict[str, Any]:
    shared = config.get("parameters") or {}
    if not isinstance(shared, dict):
        raise MergeError("parameters must be a mapping")
    shared_only, own = _parameters_of(method)
    for key in shared:
        if key not in shared_only | own:
            raise MergeError(f"parameter {key!r} is not one of {method}'s parameters")
    return shared


def _member(
    entry: Any, where: str, shared: dict[str, Any], base: Path | None, root: Path, method: str
) -> MergeInput | None:
    """One ``models:`` entry as an input (None: the base itself, listed as mergekit allows)."""
    if not isinstance(entry, dict):
        raise MergeError(f"{where} must be a mapping with 'model' and 'parameters'")
    kind: InputKind = "task_vector" if "task_vector" in entry else "model"
    path = _local_dir(entry.get(kind), f"{where}.{kind}", root)
    if kind == "model" and base is not None and path.resolve() == base.resolve():
        return None
    for key in entry:
        if key not in {"model", "task_vector", "parameters"}:
            raise MergeError(f"{where}: unknown key {key!r} (use 'model' or 'task_vector', and 'parameters')")
    own = entry.get("parameters") or {}
    allowed = _parameters_of(method)[1]
    if not isinstance(own, dict):
        raise MergeError(f"{where}.parameters must be a mapping of {', '.join(sorted(allowed))}")
    for key in own:
        if key not in allowed:
            raise MergeError(f"{where}.parameters: unknown parameter {key!r} (use {', '.join(sorted(allowed))})")
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
        gamma=_scalar(params.get("gamma", DEFAULT_GAMMA), f"{where}.parameters.gamma"),
        epsilon=_scalar(params.get("epsilon", DEFAULT_EPSILON), f"{where}.parameters.epsilon"),
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

    method = spec.method_def
    config: dict[str, Any] = {"merge_method": spec.method, "base_model": ref(spec.base), "models": []}
    for inp in spec.inputs:
        config["models"].append(
            {("task_vector" if inp.kind == "task_vector" else "model"): ref(inp.path), "parameters": _own(spec, inp)}
        )
    config["parameters"] = (
        {"normalize": spec.effective_normalize}
        if method.averages_models
        else {"normalize": spec.effective_normalize, "rescale": spec.effective_rescale, "lambda": spec.lam}
    )
    for key in ("dtype", "out_dtype"):
        if getattr(spec, key):
            config[key] = getattr(spec, key)
    if method.random and spec.seed is not None:
        config["random_seed"] = spec.seed
    return config


def _own(spec: MergeSpec, inp: MergeInput) -> dict[str, Any]:
    """One input's parameters, every one the method reads written out."""
    params: dict[str, Any] = {"weight": inp.weight}
    sparsification = spec.method_def.sparsification
    if spec.method_def.trims:
        params["density"] = inp.density
    if sparsification == "outliers":
        params["gamma"] = inp.gamma
    if sparsification == "della":
        params["epsilon"] = inp.epsilon
    return params


def dump_config(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)
