"""Run a merge: plan, stream every tensor through the kernel, write the model directory.

    from merging import MergeSpec, MergeInput, merge
    spec = MergeSpec("ties", base=Path("base"), inputs=(MergeInput(Path("ft1")), ...))
    merge(spec, Path("out"))

Planning (shapes, missing tensors, dtypes) happens before any tensor is read;
every output tensor is then computed in name order and appended to its shard.
The output appears only when complete (see :mod:`merging.writer`).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm  # not tqdm.auto: it imports IPython where installed (slow start-up)

from merging.card import BASE_FILES, engine_version, model_card, output_config
from merging.checkpoint import FLOAT_DTYPES, Checkpoint, open_checkpoint, open_sources
from merging.errors import MergeError
from merging.kernels import KernelConfig, all_finite
from merging.native import available as native_available
from merging.native import status as native_status
from merging.plan import LM_HEAD, TensorPlan, plan_tensors
from merging.reader import TensorReader, torch_dtype
from merging.spec import MergeInput, MergeSpec, dtype_name, parse_dtype
from merging.tensor_merge import TensorJob, merge_tensor
from merging.writer import ModelDirWriter, OutputTensor
from merging.yaml_config import config_from_spec, dump_config
from osutil.tuning import pin_threads, rebalance


@dataclass(frozen=True)
class MergeOptions:
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", ...
    max_shard_size: int = 5_000_000_000  # bytes per output shard
    memory_budget: int = 1 << 30  # bytes of chunks in flight; bounds peak memory
    overwrite: bool = False
    progress: bool = True
    threads: int | None = None  # torch intra-op threads; None: torch's default (all cores)
    native: bool | None = None  # the fused C kernels; None: where they apply (CPU, bf16/fp32, ties/task arithmetic)


@dataclass(frozen=True)
class MergeResult:
    out_dir: Path
    tensors: int
    merged: int
    copied: int
    parameters: int
    compute_dtype: str
    out_dtype: str
    seconds: float
    seed: int | None = None  # the random methods' seed (drawn when the spec gave none)
    kernel: str = ""  # which kernel ran, and why not the fused one where it could have (:func:`kernel_used`)


def _compute_dtype(spec: MergeSpec, plans: list[TensorPlan]) -> torch.dtype:
    explicit = parse_dtype(spec.dtype)
    if explicit is not None:
        return explicit
    dtypes = {info.dtype for p in plans if p.merged for info in (p.base, *p.inputs) if info}
    result = None
    for d in sorted(dtypes & FLOAT_DTYPES):
        t = torch_dtype(d)
        result = t if result is None else torch.promote_types(result, t)
    return result or torch.float32


def _chunk_elements(
    budget: int, k: int, input_bytes: int, dt_bytes: int, sparsification: str = "magnitude", native: bool = False
) -> int:
    """Elements per chunk so that a chunk's tensors fit ``budget``.

    Per element: K inputs and the base as read, K magnitude keys, the eager
    kernel's K weighted deltas and K factors, and a few fp32 accumulators;
    random methods add K fp32 uniform numbers, DELLA its row sort's indices.
    The fused kernels keep nothing but the inputs (in the compute dtype) and the output. Random
    methods' keep factors are drawn for all K before the kernel runs (K more in the compute dtype).
    """
    if native:
        return max(4096, budget // ((k + 1) * max(input_bytes, dt_bytes) + (k + 1) * dt_bytes + 4))
    per_element = (k + 1) * input_bytes + 3 * k * dt_bytes + 4 * 4
    if sparsification in ("random", "della"):
        per_element += 4 * k + k * dt_bytes + (24 if sparsification == "della" else 0)
    return max(4096, budget // per_element)


def _want_native(spec: MergeSpec, options: MergeOptions, dt: torch.dtype) -> bool:
    """The fused C kernels cover TIES and task arithmetic in bf16 or fp32 on the CPU, lowest-index ties."""
    method = spec.method_def
    covered = method.sparsification in ("none", "magnitude") and not method.averages_models
    if options.native is False or not covered or spec.tie_break != "index":
        return False
    usable = native_available(dt, torch.device(options.device), len(spec.inputs))
    if options.native and not usable:
        raise MergeError("the fused kernels need a CPU, bf16 or fp32, at most 64 inputs and a C compiler (cc)")
    return usable


def kernel_used(native: bool, device: torch.device) -> str:
    """The kernel a merge ran, for its output: ``fused C``, or ``torch`` with the reason the fused kernels
    were not used where they could have been (a failed build, a self-test)."""
    if native:
        return "fused C"
    why = native_status().reason if device.type == "cpu" else ""
    return f"torch ({why})" if why else "torch"


def _input_bytes(plans: list[TensorPlan]) -> int:
    sizes = [torch_dtype(i.dtype).itemsize for p in plans for i in (p.base, *p.inputs) if i is not None]
    return max(sizes, default=4)


def _check_inputs(spec: MergeSpec, options: MergeOptions) -> None:
    if len({i.kind for i in spec.inputs}) > 1:
        raise MergeError("merge either fine-tuned model directories or task vectors, not a mix")
    if spec.tie_break == "torch-cpu" and torch.device(options.device).type != "cpu":
        raise MergeError("tie break 'torch-cpu' reproduces a CPU mergekit run; use --device cpu")


def merge(
    spec: MergeSpec,
    out_dir: Path,
    options: MergeOptions = MergeOptions(),
    *,
    card_body: str = "",
    names: dict[Path, str] | None = None,
) -> MergeResult:
    """Merge ``spec`` into a new Hugging Face model directory ``out_dir``."""
    started = time.perf_counter()
    _check_inputs(spec, options)
    if spec.method_def.random and spec.seed is None:
        spec = replace(spec, seed=secrets.randbelow(2**31))  # drawn once, written into the output's config
    if options.threads:
        pin_threads(options.threads)
    base = open_checkpoint(spec.base)
    inputs = [_open_input(i) for i in spec.inputs]
    plans = plan_tensors(base, [(c, i.kind) for c, i in zip(inputs, spec.inputs)])
    dt = _compute_dtype(spec, plans)
    out_dt = parse_dtype(spec.out_dtype) or dt
    outputs = [
        OutputTensor(p.name, out_dt if p.base.dtype in FLOAT_DTYPES else torch_dtype(p.base.dtype), p.shape)
        for p in plans
    ]
    config_yaml = dump_config(config_from_spec(spec, names=names))
    with (
        TensorReader() as reader,
        ModelDirWriter(
            out_dir,
            outputs,
            max_shard_size=options.max_shard_size,
            overwrite=options.overwrite,
            index_metadata={"memo_version": engine_version()},
        ) as writer,
    ):
        job = _job(spec, options, plans, reader, dt, out_dt)
        _write_tensors(job, plans, writer, progress=options.progress)
        extra = _extra_files(spec, base.tensors, plans, out_dt, config_yaml, card_body, names)
        for source in (s for i in spec.inputs for s in i.sources):
            source.finish()  # e.g. a streamed blob's sha256 is checked: no output from unverified bytes
        writer.commit(extra)
    merged = sum(p.merged for p in plans)
    return MergeResult(
        out_dir=Path(out_dir),
        tensors=len(plans),
        merged=merged,
        copied=len(plans) - merged,
        parameters=sum(p.numel for p in plans),
        compute_dtype=dtype_name(dt),
        out_dtype=dtype_name(out_dt),
        seconds=time.perf_counter() - started,
        kernel=kernel_used(job.native, torch.device(options.device)),
        seed=spec.seed,
    )


def _open_input(inp: MergeInput) -> Checkpoint:
    return open_sources(inp.path, inp.sources) if inp.sources else open_checkpoint(inp.path)


def _job(
    spec: MergeSpec,
    options: MergeOptions,
    plans: list[TensorPlan],
    reader: TensorReader,
    dt: torch.dtype,
    out_dt: torch.dtype,
) -> TensorJob:
    """Everything the per-tensor merge needs: the reader, the device, the dtypes, the method and the chunking."""
    method = spec.method_def
    native = _want_native(spec, options, dt)
    config = KernelConfig(
        len(spec.inputs),
        dt,
        out_dt,
        method.consensus,
        spec.effective_normalize,
        spec.lam,
        inputs_are_deltas=spec.inputs[0].kind == "task_vector",
        averages_models=method.averages_models,
    )
    return TensorJob(
        reader=reader,
        device=torch.device(options.device),
        compute_dtype=dt,
        out_dtype=out_dt,
        densities=tuple(i.density for i in spec.inputs),
        weights=tuple(i.weight for i in spec.inputs),
        sparsification=method.sparsification,
        tie_break=spec.tie_break,
        chunk_elements=_chunk_elements(
            options.memory_budget, len(spec.inputs), _input_bytes(plans), dt.itemsize, method.sparsification, native
        ),
        config=config,
        native=native,
        gammas=tuple(i.gamma for i in spec.inputs),
        epsilons=tuple(i.epsilon for i in spec.inputs),
        rescale=spec.effective_rescale,
        seed=spec.seed,
    )


def _write_tensors(job: TensorJob, plans: list[TensorPlan], writer: ModelDirWriter, *, progress: bool) -> None:
    by_name = {p.name: p for p in plans}
    total = sum(p.numel for p in plans)
    with tqdm(total=total, unit="param", unit_scale=True, desc="merging", disable=not progress) as bar:
        while writer.next_tensor is not None:
            rebalance()  # this process's share of the cores, as other memo processes come and go
            out = writer.next_tensor
            plan = by_name[out.name]
            chunks = merge_tensor(job, plan) if plan.merged else _copy_tensor(job, plan, out.dtype)
            for chunk in chunks:
                writer.write(out.name, chunk.to(out.dtype))
                bar.update(chunk.numel())


def _copy_tensor(job: TensorJob, plan: TensorPlan, dtype: torch.dtype):
    for start in range(0, max(plan.numel, 1), job.chunk_elements):
        stop = min(start + job.chunk_elements, plan.numel)
        chunk = job.reader.read(plan.base, start, stop)
        if not all_finite(chunk):
            raise MergeError(
                f"tensor {plan.name!r} in {plan.base.file} contains NaN or Inf; repair or re-export the base model"
            )
        yield chunk.to(dtype)


def _extra_files(spec, base_tensors, plans, out_dt, config_yaml, card_body, names) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    untie = LM_HEAD not in base_tensors and any(p.name == LM_HEAD for p in plans)
    config = output_config(spec.base, out_dt, untie=untie)
    if config is not None:
        files["config.json"] = config
    for name in BASE_FILES:
        if (spec.base / name).is_file():
            files[name] = (spec.base / name).read_bytes()
    files["mergekit_config.yml"] = config_yaml.encode()
    names = names or {}
    files["README.md"] = model_card(
        spec,
        config_yaml,
        base_name=names.get(spec.base, spec.base.name),
        input_names=[names.get(i.path, i.path.name) for i in spec.inputs],
        body=card_body,
    )
    return files
