"""The merge engine on tiny models: a dense reference, streaming, edge cases, bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from merging import MergeError, MergeInput, MergeOptions, MergeSpec, merge
from tests.support.merge_models import dense_reference, load_dir, make_finetunes, save_model

QUIET = MergeOptions(progress=False)


def assert_valid_output(out: Path, base: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The shared invariant: every base tensor, base shapes, the dtype, no NaN, loadable files."""
    merged, ref = load_dir(out), load_dir(base)
    assert sorted(merged) == sorted(ref)
    for name, t in merged.items():
        assert t.shape == ref[name].shape, name
        assert t.dtype == dtype, name
        assert torch.isfinite(t).all(), name
    for f in ("config.json", "mergekit_config.yml", "README.md"):
        assert (out / f).is_file(), f
    assert not list(out.parent.glob(f".{out.name}.partial-*")), "temp directory left behind"
    return merged


def _spec(method, base, models, densities=None, weights=None, **kw) -> MergeSpec:
    densities = densities or [0.3] * len(models)
    weights = weights or [1.0] * len(models)
    return MergeSpec(
        method, base, tuple(MergeInput(m, weight=w, density=d) for m, d, w in zip(models, densities, weights)), **kw
    )


@pytest.fixture(scope="module")
def fp32_models(tmp_path_factory):
    return make_finetunes(tmp_path_factory.mktemp("fp32"), k=3, hidden=64)


CASES = [
    ("ties", [0.3, 0.3, 0.3], [1.0, 1.0, 1.0], {}),
    ("ties", [0.1, 0.5, 1.0], [0.5, 1.3, 2.0], {"lam": 1.5}),
    ("ties", [0.001, 0.3, 0.0005], [1.0, 1.0, 1.0], {"normalize": False}),
    ("task_arithmetic", [1.0] * 3, [0.5, 0.3, 0.2], {}),
    ("task_arithmetic", [1.0] * 3, [1.0, 1.0, 1.0], {"normalize": True, "lam": 0.7}),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_matches_dense_float64_reference(fp32_models, tmp_path, case):
    method, densities, weights, kw = case
    base, models = fp32_models
    merge(_spec(method, base, models, densities, weights, **kw), tmp_path / "out", QUIET)
    merged = assert_valid_output(tmp_path / "out", base, torch.float32)
    ref = dense_reference(
        method,
        load_dir(base),
        [load_dir(m) for m in models],
        densities=densities,
        weights=weights,
        normalize=kw.get("normalize"),
        lam=kw.get("lam", 1.0),
    )
    for name, t in merged.items():
        torch.testing.assert_close(t.double(), ref[name], rtol=1e-6, atol=1e-6, msg=name)


def test_streaming_equals_resident(fp32_models, tmp_path):
    """A memory budget far below the tensors' size streams them in chunks: same bits."""
    base, models = fp32_models
    spec = _spec("ties", base, models, [0.3, 0.2, 0.5])
    merge(spec, tmp_path / "resident", QUIET)
    merge(spec, tmp_path / "streamed", replace(QUIET, memory_budget=4096 * 64))
    a, b = load_dir(tmp_path / "resident"), load_dir(tmp_path / "streamed")
    assert all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_streaming_keeps_lowest_index_ties(tmp_path, dtype):
    base, models = make_finetunes(tmp_path / "m", k=2, dtype=dtype, hidden=64)
    spec = _spec("ties", base, models, [0.3, 0.4])
    merge(spec, tmp_path / "resident", QUIET)
    merge(spec, tmp_path / "streamed", replace(QUIET, memory_budget=4096 * 64))
    a = assert_valid_output(tmp_path / "resident", base, dtype)
    b = load_dir(tmp_path / "streamed")
    assert all(torch.equal(a[n].view(torch.int16), b[n].view(torch.int16)) for n in a)
    # The selection is the stable-sort (lowest index) one: trim with a stable sort, then
    # run the kernel on the pre-trimmed deltas (its arithmetic is mergekit's, tests/test_kernels.py).
    ref = _stable_trim_then_kernel(load_dir(base), [load_dir(m) for m in models], [0.3, 0.4], dtype)
    for name, t in a.items():
        assert torch.equal(t.view(torch.int16), ref[name].view(torch.int16)), name


def _stable_trim_then_kernel(base, models, densities, dtype):
    from merging import merge_op
    from merging.kernels import KernelConfig

    cfg = KernelConfig(len(models), dtype, dtype, True, True, 1.0, inputs_are_deltas=True)
    out = {}
    for name, b in base.items():
        b = b.reshape(-1).to(dtype)
        trimmed = []
        for m, dens in zip(models, densities):
            d = m[name].reshape(-1).to(dtype) - b
            k = max(1, int(dens * d.numel()))
            mask = torch.zeros_like(d)
            mask[torch.sort(d.abs().float(), descending=True, stable=True).indices[:k]] = 1
            trimmed.append(d * mask)
        k = len(models)
        merged, _ = merge_op.merge(b, trimmed, [[]] * k, [None] * k, [None] * k, [1.0] * k, cfg, fused=False)
        out[name] = merged.reshape(base[name].shape)
    return out


def test_k1_density_one_and_zero(fp32_models, tmp_path):
    base, models = fp32_models
    merge(_spec("ties", base, models[:1], [1.0]), tmp_path / "full", QUIET)
    ft = load_dir(models[0])
    for n, t in load_dir(tmp_path / "full").items():  # base + (ft - base): ft up to rounding
        torch.testing.assert_close(t, ft[n], rtol=0, atol=1e-6)
    # Density 0 would keep nothing (mergekit stops on it with an assertion): refused up front.
    with pytest.raises(MergeError, match=r"density of input 0 \(ft0\) must be in \(0, 1\]"):
        merge(_spec("ties", base, models[:1], [0.0]), tmp_path / "none", QUIET)
    assert not (tmp_path / "none").exists()


def test_all_zero_deltas_give_the_base(fp32_models, tmp_path):
    base, _ = fp32_models
    merge(_spec("ties", base, [base, base]), tmp_path / "out", QUIET)
    b = load_dir(base)
    assert all(torch.equal(t, b[n]) for n, t in load_dir(tmp_path / "out").items())


def test_task_vectors_merge_like_their_models(fp32_models, tmp_path):
    base, models = fp32_models
    b = load_dir(base)
    tvs = []
    for i, m in enumerate(models):
        ft = load_dir(m)
        delta = {n: ft[n] - b[n] for n in ft if n != "model.norm.weight"}  # omitted: zero delta
        tvs.append(save_model(tmp_path / f"tv{i}", delta, base))
    spec = _spec("ties", base, models, [0.3, 0.4, 0.5])
    merge(spec, tmp_path / "from-models", QUIET)
    tv_spec = replace(
        spec, inputs=tuple(replace(inp, path=tv, kind="task_vector") for inp, tv in zip(spec.inputs, tvs))
    )
    merge(tv_spec, tmp_path / "from-tvs", QUIET)
    a, c = load_dir(tmp_path / "from-models"), load_dir(tmp_path / "from-tvs")
    for n in a:
        if n == "model.norm.weight":
            assert torch.equal(c[n], b[n])
        else:
            assert torch.equal(a[n], c[n]), n


def test_output_dtype_and_sharding(fp32_models, tmp_path):
    base, models = fp32_models
    spec = _spec("ties", base, models, out_dtype="bfloat16")
    merge(spec, tmp_path / "out", replace(QUIET, max_shard_size=20_000))
    merged = assert_valid_output(tmp_path / "out", base, torch.bfloat16)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((tmp_path / "out" / s).is_file() for s in shards)
    assert index["metadata"]["total_size"] == sum(t.numel() * 2 for t in merged.values())
    assert json.loads((tmp_path / "out" / "config.json").read_text()).get("dtype", "bfloat16") == "bfloat16"


def test_output_loads_with_transformers(fp32_models, tmp_path):
    from transformers import AutoModelForCausalLM

    base, models = fp32_models
    merge(_spec("ties", base, models), tmp_path / "out", QUIET)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    merged = load_dir(tmp_path / "out")
    assert torch.equal(
        model.state_dict()["model.layers.0.mlp.up_proj.weight"], merged["model.layers.0.mlp.up_proj.weight"]
    )
    assert "base_model_relation: merge" in (tmp_path / "out" / "README.md").read_text()


def test_sharded_inputs(tmp_path):
    base, models = make_finetunes(tmp_path / "m", k=2, shards=3)
    merge(_spec("ties", base, models), tmp_path / "out", QUIET)
    assert_valid_output(tmp_path / "out", base, torch.float32)


# --- bad input ------------------------------------------------------------------------


def test_shape_mismatch_names_the_tensor(fp32_models, tmp_path):
    base, models = fp32_models
    other = make_finetunes(tmp_path / "other", k=1, hidden=32)[1][0]
    with pytest.raises(MergeError, match=r"tensor '.*' has shape \[.*\] in .*other.* but \[.*\] in the base"):
        merge(_spec("ties", base, [models[0], other]), tmp_path / "out", QUIET)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_names_tensor_and_file(fp32_models, tmp_path, bad):
    base, models = fp32_models
    ft = load_dir(models[1])
    ft["model.layers.1.self_attn.q_proj.weight"][3, 4] = bad
    broken = save_model(tmp_path / "broken", ft, base)
    for density in (0.3, 1.0):  # trimmed (radix pass) and untrimmed (kernel pass)
        with pytest.raises(MergeError, match=r"'model.layers.1.self_attn.q_proj.weight' in .*broken.* NaN or Inf"):
            merge(_spec("ties", base, [models[0], broken], [density] * 2), tmp_path / "out", QUIET)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_truncated_shard_is_an_error(fp32_models, tmp_path):
    base, models = fp32_models
    broken = Path(tmp_path / "trunc")
    broken.mkdir()
    data = (models[0] / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[:-10])
    with pytest.raises(MergeError, match="truncated"):
        merge(_spec("ties", base, [broken]), tmp_path / "out", QUIET)


def test_missing_tensor_and_extra_tensor(fp32_models, tmp_path):
    base, models = fp32_models
    ft = load_dir(models[0])
    del ft["model.norm.weight"]
    with pytest.raises(MergeError, match="'model.norm.weight' is missing from"):
        merge(_spec("ties", base, [save_model(tmp_path / "a", ft, base)]), tmp_path / "out", QUIET)
    ft = load_dir(models[0])
    ft["extra.bias"] = torch.zeros(3)
    with pytest.raises(MergeError, match="'extra.bias' in .* is not in the base"):
        merge(_spec("ties", base, [save_model(tmp_path / "b", ft, base)]), tmp_path / "out", QUIET)


def test_existing_output_is_refused_unless_overwrite(fp32_models, tmp_path):
    base, models = fp32_models
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(MergeError, match="already exists.*--overwrite"):
        merge(_spec("ties", base, models), out, QUIET)
    assert (out / "keep.txt").read_text() == "mine"
    merge(_spec("ties", base, models), out, replace(QUIET, overwrite=True))
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_crash_mid_merge_leaves_nothing(fp32_models, tmp_path, monkeypatch):
    import merging.engine as engine

    base, models = fp32_models
    calls = {"n": 0}
    real = engine.merge_tensor

    def dying(job, plan):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(job, plan)

    monkeypatch.setattr(engine, "merge_tensor", dying)
    with pytest.raises(KeyboardInterrupt):
        merge(_spec("ties", base, models), tmp_path / "out", QUIET)
    assert list(tmp_path.iterdir()) == [], "no output and no temp directory may remain"


def test_tied_base_with_untied_finetune(tmp_path):
    from tests.support.models import build_tiny_llama

    base = build_tiny_llama(tmp_path / "base", seed=0)
    b = load_dir(base)
    emb = b["model.embed_tokens.weight"]
    tied = {n: t for n, t in b.items() if n != "lm_head.weight"}
    tied_base = save_model(tmp_path / "tied-base", tied, base)
    ft = {n: t + 0.01 for n, t in b.items()}  # has its own lm_head
    ft_dir = save_model(tmp_path / "ft", ft, base)
    merge(_spec("ties", tied_base, [ft_dir], [1.0]), tmp_path / "out", QUIET)
    merged = load_dir(tmp_path / "out")
    # The tied base supplies its embedding as lm_head: out = emb + (ft_head - emb).
    assert torch.equal(merged["lm_head.weight"], emb + (ft["lm_head.weight"] - emb))
    assert not torch.equal(merged["lm_head.weight"], emb + (ft["lm_head.weight"] - b["lm_head.weight"]))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["tie_word_embeddings"] is False


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_merge_equals_cpu(tmp_path, dtype):
    """The same kernels on CUDA: elementwise IEEE ops in the same order give the same bits."""
    base, models = make_finetunes(tmp_path / "m", k=3, dtype=dtype, hidden=64)
    spec = _spec("ties", base, models, [0.3, 0.5, 0.2])
    merge(spec, tmp_path / "cpu", QUIET)
    merge(spec, tmp_path / "cuda", replace(QUIET, device="cuda"))
    a, b = load_dir(tmp_path / "cpu"), load_dir(tmp_path / "cuda")
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=0, atol=0, msg=n)
