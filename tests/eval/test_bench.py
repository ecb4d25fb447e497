"""Bench settings, entries and the ratio arithmetic (hand-computed)."""
from __future__ import annotations

import pytest
import torch

from compress.errors import CompressError
from compress.eval.bench import BenchSettings, add_ratios, flat_metrics, parse_ints, ratios
from compress.eval.entries import check_entries


def row(ppl, size, p512, d1, d8=None):
    r = {"perplexity": ppl, "size_bytes": size, "memory_bytes": size, "peak_memory_bytes": None,
         "prefill_ms": {"512": {"min": p512, "median": p512, "max": p512}},
         "decode_tokens_per_s": {"1": {"min": 0.0, "median": d1, "max": 1e9}}}
    if d8 is not None:
        r["decode_tokens_per_s"]["8"] = {"min": d8, "median": d8, "max": d8}
    return r


def test_flat_metrics_takes_medians():
    assert flat_metrics(row(20.0, 100, 4.0, 50.0, 300.0)) == {
        "perplexity": 20.0, "size_bytes": 100, "memory_bytes": 100, "peak_memory_bytes": None,
        "prefill_ms:512": 4.0, "decode_tokens_per_s:1": 50.0, "decode_tokens_per_s:8": 300.0}


def test_ratios_hand_computed():
    base, int8 = row(20.0, 200, 8.0, 40.0), row(21.0, 110, 6.0, 50.0)
    assert ratios(int8, base) == pytest.approx({"perplexity": 1.05, "size_bytes": 0.55, "memory_bytes": 0.55,
                                                "prefill_ms:512": 0.75, "decode_tokens_per_s:1": 1.25})


def test_ratios_skip_missing_and_zero():
    base = row(None, 0, 8.0, 40.0)
    other = row(30.0, 10, 4.0, 80.0, 100.0)
    assert ratios(other, base) == pytest.approx({"prefill_ms:512": 0.5, "decode_tokens_per_s:1": 2.0})


def test_add_ratios_base_is_one():
    rows = add_ratios([row(10.0, 100, 2.0, 10.0), row(12.0, 50, 1.0, 30.0)])
    assert set(rows[0]["ratios"].values()) == {1.0}
    assert rows[1]["ratios"]["decode_tokens_per_s:1"] == pytest.approx(3.0)
    assert rows[1]["ratios"]["perplexity"] == pytest.approx(1.2)


def test_settings_defaults_by_device_and_round_trip():
    cpu = BenchSettings().resolved(torch.device("cpu"))
    assert (cpu.batches, cpu.new_tokens, cpu.repeats, cpu.warmup, cpu.decode_mode) == ((1,), 32, 3, 1, "auto")
    gpu = BenchSettings().resolved(torch.device("cuda"))
    assert (gpu.batches, gpu.new_tokens, gpu.repeats, gpu.warmup, gpu.decode_mode) == ((1, 8), 128, 10, 3, "auto")
    assert BenchSettings.from_dict(cpu.to_dict()) == cpu
    with pytest.raises(CompressError, match="unknown bench setting.*'speed'"):
        BenchSettings.from_dict({"speed": 1})
    with pytest.raises(CompressError, match="repeats must be ≥ 1"):
        BenchSettings(repeats=0).resolved(torch.device("cpu"))


def test_parse_ints():
    assert parse_ints("512,2048", "--prefill") == (512, 2048)
    for bad in ("", "a,1", "0", "-3"):
        with pytest.raises(CompressError, match="--prefill"):
            parse_ints(bad, "--prefill")


def test_entry_checks(tmp_path):
    r = tmp_path / "r.yaml"
    r.write_text("passes: []\n")
    with pytest.raises(CompressError, match="first entry is the base"):
        check_entries([str(r)])
    with pytest.raises(CompressError, match="allowed: random:smollm2-135m"):
        check_entries(["random:gpt5"])
    with pytest.raises(CompressError, match="r.yaml: passes: expected a non-empty list"):  # before anything is measured
        check_entries(["random:smollm2-135m", str(r)])
    with pytest.raises(CompressError, match="not found"):
        check_entries(["m", str(tmp_path / "missing.yaml")])
    with pytest.raises(CompressError, match="at least one model"):
        check_entries([])


def test_device_and_threads_checks():
    from compress.models import pick_device as _device

    assert _device("cpu") == torch.device("cpu")
    with pytest.raises(CompressError, match="allowed: cpu, cuda"):
        _device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(CompressError, match="no CUDA device"):
            _device("cuda")
    with pytest.raises(CompressError, match="threads must be ≥ 1"):
        BenchSettings(threads=0).resolved(torch.device("cpu"))


def test_benchmark_restores_threads(monkeypatch):
    """--threads applies to the run only; the caller's setting comes back even when a row fails."""
    import compress.eval.bench as bench

    seen = []

    def fail(*args):
        seen.append(torch.get_num_threads())
        raise RuntimeError("row failed")

    monkeypatch.setattr(bench, "_measure_all", fail)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="row failed"):
            bench.benchmark(["m"], BenchSettings(threads=1, skip_perplexity=True), "cpu", progress=False)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_interleave_keeps_the_decode_mode():
    s = BenchSettings(interleave=True).resolved(torch.device("cpu"))
    assert s.interleave and s.decode_mode == "auto"
    assert BenchSettings(interleave=True, decode_mode="eager").resolved(torch.device("cpu")).decode_mode == "eager"


def test_data_free_recipe_on_a_random_shape_is_packed_and_flagged(monkeypatch, tmp_path):
    """Speed of int8 on a model shape nobody has weights for (e.g. random:llama3-8b) runs the recipe on it."""
    import compress.eval.bench as bench
    from compress.eval import entries

    monkeypatch.setitem(entries.RANDOM_SHAPES, "tiny", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                            num_attention_heads=4, num_key_value_heads=2, vocab_size=300))
    recipe = tmp_path / "int8.yaml"
    recipe.write_text("passes:\n  - rtn: {bits: 8}\n")
    s = BenchSettings(prefill=(8,), batches=(1,), new_tokens=2, warmup=0, repeats=1, skip_perplexity=True)
    rows = bench.benchmark(["random:tiny", str(recipe)], s, "cpu", progress=False)["results"]
    assert [r["random_weights"] for r in rows] == [True, True] and rows[1]["kind"] == "recipe"
    assert set(rows[1]["weight_bytes_by_format"]) == {"dense", "int8/g-1"}  # embeddings stay dense
    assert rows[1]["memory_bytes"] < 0.8 * rows[0]["memory_bytes"]


def test_a_recipe_that_reads_text_is_refused_on_a_random_base(tmp_path):
    recipe = tmp_path / "gptq.yaml"
    recipe.write_text("passes:\n  - gptq: {bits: 4}\n")
    with pytest.raises(CompressError, match="reads text .* needs a real base model"):
        check_entries(["random:smollm2-135m", str(recipe)])


def test_report_says_which_decode_gemvs_rounded_x(monkeypatch):
    """Numbers from the int8-activation GEMVs are labelled as such (env and the table's last line)."""
    import compress.eval.bench as bench
    from compress.eval import entries
    from compress.eval.table import bench_table
    from compress.kernels import native

    monkeypatch.setitem(entries.RANDOM_SHAPES, "tiny", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                                            num_attention_heads=4, num_key_value_heads=2, vocab_size=300))
    s = BenchSettings(prefill=(8,), batches=(1,), new_tokens=2, warmup=0, repeats=1, skip_perplexity=True,
                      decode_mode="eager")
    for bits, label in ((frozenset({8}), "(int8 GEMVs on int8 activations)"), (frozenset({4, 8}), "(int4/int8 GEMVs"),
                        (frozenset(), None)):
        monkeypatch.setattr(native, "GEMV_Q8", bits)
        report = bench.benchmark(["random:tiny"], s, "cpu", progress=False)
        assert report["env"]["gemv_q8"] == sorted(bits)
        footer = bench_table(report).splitlines()[-1]
        assert (label in footer) if label else "activations" not in footer, footer
