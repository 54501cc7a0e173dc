"""``python -m merging CONFIG.yml OUT_DIR``: a drop-in for ``mergekit-yaml`` (its task-vector methods and linear)."""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import replace
from pathlib import Path

from osutil.tuning import keep_freed_memory, share_cores

share_cores()  # before torch loads (the engine imports it): OpenMP reads its settings once
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's BLAS threads: never used here, only woken
gc.disable()  # importing torch makes ~10^6 objects: collecting them while they are made is wasted time

import click  # noqa: E402

from merging.engine import MergeOptions, merge  # noqa: E402
from merging.errors import MergeError  # noqa: E402
from merging.yaml_config import load_config  # noqa: E402

gc.freeze()  # what the imports made lives as long as the process: never scan it again
gc.enable()


def _size(text: str) -> int:
    units = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    text = text.strip().upper().removesuffix("B")
    try:
        return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(float(text))
    except (ValueError, IndexError):
        raise click.BadParameter(f"{text!r} is not a size like 5G or 500M") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ...")
@click.option(
    "--max-shard-size",
    "--out-shard-size",
    "max_shard_size",
    default="5G",
    show_default=True,
    help="Largest output shard, e.g. 2G or 500M (mergekit's --out-shard-size).",
)
@click.option(
    "--memory",
    "memory_budget",
    default="1G",
    show_default=True,
    help="Memory for tensor chunks in flight; bounds peak memory.",
)
@click.option(
    "--tie-break",
    type=click.Choice(["index", "torch-cpu"]),
    default="index",
    show_default=True,
    help="Ties at the trim threshold: lowest index (deterministic, as mergekit on CUDA) or "
    "torch-cpu (mergekit's CPU argsort, bit for bit; slow).",
)
@click.option(
    "--random-seed",
    type=click.IntRange(min=0),
    default=None,
    help="Seed of dare_* and della* masks (default: the config's random_seed, else a fresh one, recorded).",
)
@click.option("-j", "--threads", type=int, default=None, help="Torch threads (default: all cores).")
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def main(
    config: Path,
    out_dir: Path,
    device: str,
    max_shard_size: str,
    memory_budget: str,
    tie_break: str,
    random_seed: int | None,
    threads: int | None,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Merge the models of a mergekit CONFIG into OUT_DIR.

    Methods: ties, task_arithmetic, dare_ties, dare_linear, breadcrumbs,
    breadcrumbs_ties, della, della_linear, linear (mergekit 0.1.5 semantics).

    \b
    Example:
      python -m merging ties.yml ./merged --max-shard-size 2G
    """
    keep_freed_memory()
    try:
        spec = load_config(config)
        spec = replace(spec, tie_break="torch-cpu" if tie_break == "torch-cpu" else "index")
        if random_seed is not None:
            spec = replace(spec, seed=random_seed)
        result = merge(
            spec,
            out_dir,
            MergeOptions(
                device=device,
                max_shard_size=_size(max_shard_size),
                memory_budget=_size(memory_budget),
                overwrite=overwrite,
                progress=not quiet,
                threads=threads,
            ),
        )
    except MergeError as e:
        raise click.ClickException(" ".join(str(e).split())) from e
    click.echo(
        f"merged {result.merged} tensors, copied {result.copied} ({result.parameters:,} parameters, "
        f"{result.compute_dtype} -> {result.out_dtype}) into {result.out_dir} in {result.seconds:.1f}s"
        + (f" (random seed {result.seed})" if result.seed is not None else "")
        + f"; kernel: {result.kernel}",
        err=True,
    )


if __name__ == "__main__":
    sys.exit(main())
