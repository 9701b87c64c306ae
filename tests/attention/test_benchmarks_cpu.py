"""The CPU-runnable paths of the GPU benchmark scripts: plots from synthetic results, the
headline's dry run and projection, and tiny ``--device cpu`` smoke runs of every script (which
exercise the same measuring code as the GPU runs, the out-of-core baseline included).

benchmarks/ is not a package: the scripts are imported from their file paths.
"""

from __future__ import annotations

import argparse
import doctest
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench_attention():
    return _load("bench_attention")


@pytest.fixture(scope="module")
def bench_memory_scaling():
    return _load("bench_memory_scaling")


@pytest.fixture(scope="module")
def bench_headline():
    return _load("bench_headline")


def _is_png(path: Path) -> bool:
    return path.exists() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


def test_bench_attention_plot_from_synthetic_json(bench_attention, tmp_path):
    recs = []
    for i, (L, causal) in enumerate([(65536, False), (65536, True), (1 << 20, True)]):
        recs.append({"L": L, "causal": causal, "gpu": "NVIDIA H100", "H": 16, "D": 128,
                     "dtype": "bfloat16", "mono_kernel": "fa4",
                     "mono_fwd_tflops": 650.0 + i, "gpu_fwd_tflops": 600.0,
                     "streamed_fwd_tflops": 500.0, "baseline_fwd_tflops": 450.0,
                     "mono_bwd_tflops": 550.0, "gpu_bwd_tflops": 400.0,
                     "streamed_bwd_tflops": 300.0 if i < 2 else None})
    recs.append({"L": 262144, "causal": False, "error": "RuntimeError: boom"})
    src = tmp_path / "res.json"
    src.write_text(json.dumps({"meta": {}, "records": recs}))
    png = tmp_path / "res.png"
    assert bench_attention.main(["--plot", str(src), str(png)]) == 0
    assert _is_png(png)


def test_bench_attention_len_labels(bench_attention):
    assert [bench_attention._len_label(n) for n in (300, 65536, 1 << 20, 5_505_024)] == [
        "300", "64K", "1M", "5.25M"]


def test_bench_attention_backward_difference_refuses_noise(bench_attention):
    assert bench_attention._difference(30.0, 10.0) == 20.0
    with pytest.raises(RuntimeError, match="timing noise"):
        bench_attention._difference(9.0, 10.0)


def test_bench_attention_cpu_smoke_covers_every_part(bench_attention, tmp_path, capsys):
    out = tmp_path / "a.json"
    rc = bench_attention.main(["--device", "cpu", "--lengths", "128", "--masks", "causal",
                               "--heads", "2", "--head-dim", "8", "--kernels", "cpu_flash",
                               "reference", "--reps", "1", "--budget-fraction", "4", "0.5",
                               "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["meta"]["gpu"] == "cpu"
    rec, rec2 = data["records"]
    assert (rec["budget_fraction"], rec2["budget_fraction"]) == (4.0, 0.5)
    assert rec2["mono_fwd_tflops"] == rec["mono_fwd_tflops"]  # measured once, shared
    assert rec2["streamed_budget_bytes"] < rec["streamed_budget_bytes"]
    for r in (rec, rec2):
        assert r["schedule"] in ("whole", "query_blocks", "cqs", "kv_blocks")
        assert "predicted" in r["streamed_chosen_because"]
    assert "error" not in rec
    assert set(rec.get("errors", {})) <= {"gpu_bwd", "streamed_bwd"}  # only timing noise
    for key in ("mono_fwd_tflops", "ratio_on_gpu", "ratio_streamed", "ratio_baseline",
                "streamed_vs_baseline", "baseline_fwd_ms", "baseline_fwd_tflops",
                "baseline_peak_gib", "streamed_report", "budget_fraction", "schedule",
                "reps", "mono_kernels", "mono_kernels_timed"):
        assert key in rec, key
    assert rec["reps"] == 1
    assert set(rec["mono_kernels"]) == {"cpu_flash", "reference"}
    # every way of computing the same attention agrees with the fastest monolithic kernel
    for key in ("gpu_vs_mono_rel_err", "streamed_vs_mono_rel_err", "baseline_vs_mono_rel_err"):
        assert rec[key] <= 2e-2, key
    if "streamed_bwd" not in rec.get("errors", {}):
        assert rec["ratio_backward_streamed"] > 0
    _check_bound_fields(data["records"])
    table = capsys.readouterr().out.splitlines()
    assert any("r_base" in line for line in table)  # the summary has the baseline columns
    png = tmp_path / "a.png"
    assert bench_attention.main(["--plot", str(out), str(png)]) == 0
    assert _is_png(png)
    ratio_png = tmp_path / "ratio.png"  # the ratio-against-budget plot of CPU-made records
    assert _load("plot_budget_ratio").main([str(ratio_png), str(out)]) == 0
    assert _is_png(ratio_png)


def _sweep_records(with_bound: bool) -> list[dict]:
    recs = []
    for L in (262144, 1 << 20):
        for causal in (False, True):
            for i, frac in enumerate((1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)):
                r = {"L": L, "causal": causal, "gpu": "NVIDIA H100", "H": 16, "D": 128,
                     "mono_kernel": "fa4", "mono_fwd_ms": 800.0, "mono_fwd_tflops": 690.0,
                     "mono_bwd_ms": 2000.0, "budget_fraction": frac,
                     "ratio_streamed": 0.5 + 0.1 * i, "ratio_backward_streamed": 0.2 + 0.1 * i}
                if with_bound:
                    r.update(streamed_bound_ms=1000.0 if frac < 0.2 else 800.0,
                             streamed_bwd_bound_ms=2000.0)
                recs.append(r)
    recs.append({"L": 262144, "causal": False, "error": "RuntimeError: boom"})
    return recs


@pytest.mark.parametrize("with_bound", [False, True])
def test_plot_budget_ratio_old_and_new_records(tmp_path, with_bound):
    mod = _load("plot_budget_ratio")
    src = tmp_path / "sweep.json"
    recs = _sweep_records(with_bound)
    src.write_text(json.dumps({"meta": {}, "records": recs}))
    fwd = mod.series(mod.load([str(src)]), 262144, True, "forward")
    assert fwd["fractions"] == [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0]
    assert fwd["ratio"] == [0.5, 0.6, 0.7, 0.8, 0.9]
    assert fwd["ceiling"] == ([0.8, 0.8, 1.0, 1.0, 1.0] if with_bound else [None] * 5)
    png = tmp_path / "sweep.png"
    assert mod.main([str(png), str(src), "--lengths", "262144", "1048576"]) == 0
    assert _is_png(png)


def test_plot_budget_ratio_later_files_override_and_errors(tmp_path, capsys):
    mod = _load("plot_budget_ratio")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    recs = _sweep_records(True)
    a.write_text(json.dumps({"records": recs}))
    b.write_text(json.dumps({"records": [{**recs[0], "ratio_streamed": 0.123}]}))
    merged = mod.load([str(a), str(b)])
    assert len(merged) == 20
    assert mod.series(merged, 262144, False, "forward")["ratio"][0] == 0.123
    png = tmp_path / "x.png"
    assert mod.main([str(png), str(a), "--lengths", "65536"]) == 2
    assert "L = 65536" in capsys.readouterr().err
    no_budget = tmp_path / "c.json"
    no_budget.write_text(json.dumps({"records": [{"L": 1, "causal": False,
                                                  "mono_fwd_ms": 1.0}]}))
    assert mod.main([str(png), str(no_budget)]) == 2
    assert mod.main([str(png), str(tmp_path / "missing.json")]) == 2
    assert not png.exists()
    assert doctest.testmod(mod, verbose=False).failed == 0


def _check_bound_fields(records: list[dict]) -> None:
    """The host-link bound of every streamed part: no link on the CPU, so the bound is the
    fastest monolithic kernel's time; bytes moved at least the bound's; the ratio in (0, ~1]
    where the part ran, None where it failed."""
    for r in records:
        assert r["link_h2d_bytes_per_s"] is None
        assert r["link_d2h_bytes_per_s"] is None
        for prefix, ratio_key, kernel_key, measured_key in (
                ("streamed", "ratio_to_bound", "mono_fwd_ms", "streamed_fwd_ms"),
                ("streamed_bwd", "ratio_to_bound_backward", "mono_bwd_ms", "streamed_bwd_ms")):
            assert ratio_key in r, ratio_key
            if prefix in r.get("errors", {}):
                assert r[ratio_key] is None
                continue
            assert r[f"{prefix}_bytes_to_device"] >= r[f"{prefix}_min_bytes_to_device"] > 0
            assert r[f"{prefix}_bytes_from_device"] >= r[f"{prefix}_min_bytes_from_device"] > 0
            assert r[f"{prefix}_bound_kind"] in ("compulsory", "reuse")
            assert r[f"{prefix}_link_ms"] is None
            assert r[f"{prefix}_bound_ms"] == r[kernel_key]
            assert r[f"{prefix}_bound_limited_by"] == "kernel"
            assert math.isclose(r[ratio_key], r[kernel_key] / r[measured_key])
            assert r[ratio_key] > 0
        # the streamed forward cannot beat the one kernel call by much (the backward, a
        # difference of two timings, can look faster on a loaded machine)
        if "streamed" not in r.get("errors", {}):
            assert r["ratio_to_bound"] <= 1.5


def test_bench_attention_time_bound(bench_attention):
    tb = bench_attention.time_bound
    link = tb(kernel_ms=10.0, min_in=4 * 10**9, min_out=10**9, h2d=5e10, d2h=2e10,
              measured_ms=160.0)
    assert link == {"link_ms": 80.0, "bound_ms": 80.0, "bound_limited_by": "link",
                    "ratio_to_bound": 0.5}
    duplex = tb(kernel_ms=10.0, min_in=10**9, min_out=2 * 10**9, h2d=5e10, d2h=5e10,
                measured_ms=80.0)  # the directions overlap: the larger, not the sum
    assert (duplex["link_ms"], duplex["ratio_to_bound"]) == (40.0, 0.5)
    kernel = tb(kernel_ms=100.0, min_in=10**9, min_out=10**9, h2d=5e10, d2h=5e10,
                measured_ms=125.0)
    assert (kernel["bound_limited_by"], kernel["ratio_to_bound"]) == ("kernel", 0.8)
    assert tb(kernel_ms=None, min_in=1, min_out=1, h2d=1.0, d2h=1.0,
              measured_ms=1.0)["ratio_to_bound"] is None
    assert tb(kernel_ms=1.0, min_in=1, min_out=1, h2d=1.0, d2h=1.0,
              measured_ms=None)["ratio_to_bound"] is None
    assert doctest.testmod(bench_attention, verbose=False).failed == 0


def test_bench_attention_bound_uses_the_measured_link(bench_attention, monkeypatch):
    # a slow fake link (1 MB/s each way): the bound is the link's time, from the least bytes
    monkeypatch.setattr(bench_attention, "link_rates", lambda dev: (1e6, 2e6))
    (rec,) = bench_attention.measure(64, False, heads=1, head_dim=8, reps=1,
                                     kernel_names=["cpu_flash"], backward=False,
                                     streamed=True, progress=False, gpu=False, baseline=False,
                                     streamed_backward=False, device="cpu",
                                     budget_fraction=0.5)
    assert (rec["link_h2d_bytes_per_s"], rec["link_d2h_bytes_per_s"]) == (1e6, 2e6)
    q_bytes = 64 * 8 * 2
    assert rec["streamed_min_bytes_to_device"] == 3 * q_bytes
    assert rec["streamed_min_bytes_from_device"] == q_bytes
    assert math.isclose(rec["streamed_link_ms"], 3 * q_bytes / 1e6 * 1e3)
    assert rec["streamed_bound_limited_by"] == "link"
    assert math.isclose(rec["ratio_to_bound"], rec["streamed_link_ms"] / rec["streamed_fwd_ms"])
    assert "ratio_to_bound_backward" not in rec  # no streamed backward asked


def test_bench_attention_budget_fraction_accepts_sixteenths(bench_attention):
    assert bench_attention._fraction("1/16") == 0.0625
    assert bench_attention._fraction("1") == 1.0
    for bad in ("0", "1/0", "-1/4", "x", "inf"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench_attention._fraction(bad)


def test_bench_attention_mono_only_fastest(bench_attention):
    (rec,) = bench_attention.measure(64, False, heads=1, head_dim=8, reps=1,
                                  kernel_names=["cpu_flash", "reference"], backward=False,
                                  streamed=False, progress=False, mono_only_fastest=True,
                                  gpu=False, baseline=False, streamed_backward=False,
                                  device="cpu")
    assert rec["mono_kernels_timed"] == ["cpu_flash"]
    assert list(rec["mono_kernels"]) == ["cpu_flash"]


def test_bench_attention_cpu_picks_cpu_kernels_and_fails_when_nothing_ran(bench_attention,
                                                                         tmp_path, capsys):
    rc = bench_attention.main(["--device", "cpu", "--lengths", "64", "--masks", "full",
                               "--heads", "1", "--head-dim", "8", "--reps", "1", "--no-backward",
                               "--no-streamed", "--no-baseline", "--no-gpu"])
    assert rc == 0
    # the faster of the two CPU kernels is the monolithic reference (at 64 tokens on a loaded
    # machine either may win)
    table = capsys.readouterr().out.splitlines()[-1]
    assert table.split()[2] in ("cpu_fl", "refere"), table
    rc = bench_attention.main(["--device", "cpu", "--lengths", "64", "--heads", "1",
                               "--head-dim", "8", "--kernels", "fa4", "--reps", "1"])
    assert rc == 1
    assert "every measurement failed" in capsys.readouterr().err


@pytest.mark.parametrize("content", [None, "dir", "{not json", '{"meta": {}}', "[1, 2]",
                                     '{"records": [{"L": 1, "error": "x"}]}'])
def test_bench_attention_plot_refuses_bad_files_in_one_line(bench_attention, tmp_path, capsys,
                                                           content):
    src = tmp_path / "in.json"
    if content == "dir":
        src.mkdir()
    elif content is not None:
        src.write_text(content)
    assert bench_attention.main(["--plot", str(src), str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert str(src) in err[0]


def test_bench_attention_needs_cuda_without_device_option(bench_attention, capsys):
    if torch.cuda.is_available():
        pytest.skip("checks the no-CUDA exit")
    assert bench_attention.main(["--lengths", "64"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err


def _scaling_json(path: Path, with_baseline: bool) -> None:
    recs = []
    for gib, v, t in [(2, 273, 30.0), (4, 133, 15.0), (8, 57, 10.0), (16, 21, 8.0),
                      (32, 7, 7.5)]:
        r = {"budget_gib": gib, "time_s": t, "peak_gib": 0.9 * gib, "design_v": v,
             "tflops": 600.0 * 7.5 / t}
        if with_baseline:
            r.update(baseline_time_s=t * 1.1, baseline_peak_gib=0.8 * gib)
        recs.append(r)
    recs.append({"budget_gib": 64, "error": "MemoryBudgetError: nope"})
    path.write_text(json.dumps({"meta": {"gpu": "H100", "L": 1 << 20, "causal": True,
                                         "H": 16, "D": 128}, "records": recs}))


@pytest.mark.parametrize("with_baseline", [False, True])
def test_bench_memory_scaling_plot_from_synthetic_json(bench_memory_scaling, tmp_path,
                                                       with_baseline):
    src = tmp_path / "s.json"
    _scaling_json(src, with_baseline)
    png = tmp_path / "s.png"
    assert bench_memory_scaling.main(["--plot", str(src), str(png)]) == 0
    assert _is_png(png)


def test_bench_memory_scaling_cpu_smoke(bench_memory_scaling, tmp_path):
    out = tmp_path / "s.json"
    rc = bench_memory_scaling.main(["--device", "cpu", "--seq", "256", "--heads", "2",
                                    "--head-dim", "8", "--budgets-gib", "0.00003", "0.0003",
                                    "--with-baseline", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["meta"]["qkv_bytes"] == 3 * 256 * 2 * 8 * 2
    recs = data["records"]
    assert [r["budget_gib"] for r in recs] == [0.00003, 0.0003]
    for r in recs:
        assert "error" not in r, r.get("error")
        assert r["timed_run"] in ("first", "second")
        assert r["tflops"] > 0
        # a CQS design only for CQS plans (query blocks and a single call have none)
        assert (r["design_v"] is not None) == (r["schedule"] == "cqs")
        assert r["rel_to_first"] <= 2e-2
        assert r["baseline_rel_to_first"] <= 2e-2
    # a smaller budget needs a finer plan: more tasks, each within its budget
    assert recs[0]["tasks"] >= recs[1]["tasks"]
    for r in recs:
        assert r["task_bytes_estimate"] <= r["budget_gib"] * 2**30
    png = tmp_path / "s.png"
    assert bench_memory_scaling.main(["--plot", str(out), str(png)]) == 0
    assert _is_png(png)


def test_bench_memory_scaling_fill_host_is_seeded(bench_memory_scaling):
    a = bench_memory_scaling.fill_host((1, 2, 10, 4), seed=3, device="cpu", pin=False,
                                       slab_rows=4)
    b = bench_memory_scaling.fill_host((1, 2, 10, 4), seed=3, device="cpu", pin=False,
                                       slab_rows=4)
    c = bench_memory_scaling.fill_host((1, 2, 10, 4), seed=4, device="cpu", pin=False,
                                       slab_rows=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert float(a.float().std()) > 0.5


def test_bench_headline_dry_run(bench_headline, tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert bench_headline.main(["--dry-run", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "5,505,024" in text
    plan = json.loads(out.read_text())["plan"]
    L = 5_505_024
    assert plan["tensor_bytes"] == L * 16 * 128 * 2
    assert plan["qkvo_bytes"] == 4 * L * 16 * 128 * 2
    assert plan["exceeds_gpu_memory"] is True  # 90.2 GB > 80 GB
    assert plan["flop"] == 4 * 16 * L * L * 128 / 2
    assert plan["fp32_accumulator_bytes"] == L * 16 * 129 * 4
    assert plan["budget_bytes"] == 60 * 2**30
    small = tmp_path / "small.json"
    assert bench_headline.main(["--dry-run", "--seq", "65536", "--json", str(small)]) == 0
    assert json.loads(small.read_text())["plan"]["exceeds_gpu_memory"] is False


def test_bench_headline_bad_arguments(bench_headline, capsys):
    assert bench_headline.main(["--dry-run", "--seq", "0"]) == 2
    assert bench_headline.main(["--dry-run", "--budget-gib", "-1"]) == 2
    assert "must be positive" in capsys.readouterr().err


def test_bench_headline_projection(bench_headline):
    p = bench_headline.projection(600.0)
    expect = 3.5 * 4 * 1e18 * 128 / 2 / 600e12 / 3600
    assert math.isclose(p["hours_causal"], expect)
    assert math.isclose(p["hours_full"], 2 * expect)
    assert math.isclose(bench_headline.projection(300.0)["hours_causal"], 2 * expect)
    assert "2.5" in p["formula"]
    assert doctest.testmod(bench_headline, verbose=False).failed == 0


def test_bench_headline_mem_available(bench_headline, tmp_path):
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:  100 kB\nMemFree: 5 kB\nMemAvailable:   2048 kB\n")
    assert bench_headline.mem_available_bytes(str(f)) == 2048 * 1024
    assert bench_headline.mem_available_bytes(str(tmp_path / "missing")) is None


def test_bench_headline_spot_check_detects_wrong_rows(bench_headline):
    from cqs_attention.reference import reference_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 3, 200, 16, generator=g).to(torch.bfloat16) for _ in range(3))
    ref, _ = reference_attention(q.float(), k.float(), v.float(), causal=True)
    out = ref.to(torch.bfloat16)
    good = bench_headline.spot_check(q, k, v, out, n=16, seed=1, causal=True, device="cpu",
                                     slab_rows=37)
    assert good["max_row_rel_err"] <= 1e-2
    bad = out.clone()
    bad[0, good["heads"][0], good["rows"][0]] *= 1.5
    res = bench_headline.spot_check(q, k, v, bad, n=16, seed=1, causal=True, device="cpu",
                                    slab_rows=37)
    assert res["max_row_rel_err"] > 0.2
    assert res["worst"] == {"head": good["heads"][0], "row": good["rows"][0]}
    full_ref, _ = reference_attention(q.float(), k.float(), v.float())
    full = bench_headline.spot_check(q, k, v, full_ref.to(torch.bfloat16), n=8, seed=2,
                                     causal=False, device="cpu", slab_rows=64)
    assert full["max_row_rel_err"] <= 1e-2


def test_bench_headline_cpu_smoke(bench_headline, tmp_path):
    out = tmp_path / "h.json"
    rc = bench_headline.main(["--device", "cpu", "--seq", "300", "--heads", "2",
                              "--head-dim", "8", "--budget-gib", "0.0001", "--slab-rows",
                              "128", "--check-rows", "8", "--no-progress", "--json",
                              str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["spot_check_passed"] is True
    assert res["spot_check"]["pairs"] == 8
    assert res["tflops"] > 0
    assert (res["design_v"] is not None) == (res["report"]["schedule"] == "cqs")
    assert res["projection"]["hours_causal"] > 0


def test_bench_headline_backward_cpu_smoke(bench_headline, tmp_path):
    out = tmp_path / "hb.json"
    rc = bench_headline.main(["--device", "cpu", "--seq", "300", "--heads", "2",
                              "--head-dim", "8", "--budget-fraction", "1.0", "--backward",
                              "--slab-rows", "128", "--check-rows", "8", "--no-progress",
                              "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["mode"] == "backward"
    assert res["spot_check_passed"] is True
    assert res["dq_spot_check"]["max_row_rel_err"] < 2e-2  # bf16 inputs and gradients
    assert res["backward_tflops"] > 0
    assert res["backward_report"]["direction"] == "backward"
    assert res["host_inputs_outputs_bytes"] == 8 * 300 * 2 * 8 * 2


def test_streamed_results_plot(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "plot_streamed_results.py"
    spec = importlib.util.spec_from_file_location("plot_streamed_results", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    data = {"previous_executor_for_comparison": {"ratio_causal": 0.1, "ratio_full": 0.2},
            "runs": [{"records": [{"L": 262144, "causal": True, "ratio": 0.3},
                                  {"L": 1 << 20, "causal": True, "ratio": 0.5}]},
                     {"records": [{"L": 1 << 20, "causal": False, "ratio": 0.9}]}]}
    rows = mod.bars(data)
    assert [r[1] for r in rows] == [0.1, 0.2, 0.3, 0.9]
    assert rows[-1][0] == "1M full\n(device merge)"
    src = tmp_path / "r.json"
    src.write_text(json.dumps(data))
    mod.plot(str(src), str(tmp_path / "r.png"))
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_bench_overhead_cpu_smoke(tmp_path, capsys):
    bench = _load("bench_overhead")
    out = tmp_path / "overhead.json"
    assert bench.main(["--lengths", "32", "--repeat", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["L"], r["backward"]) for r in rows] == [(32, False), (32, True)]
    for r in rows:
        assert r["attention_s"] > 0
        assert r["kernel_s"] > 0
        assert math.isclose(r["overhead_s"], r["attention_s"] - r["kernel_s"])
    assert capsys.readouterr().out.count("overhead") == 2


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_runs_sweep_parts_run_the_benchmark(tmp_path):
    """Every sweep part of scripts/gpu_runs.sh passes arguments the benchmark accepts and
    writes one record per budget fraction (run here on the CPU: a stand-in python3 appends
    tiny CPU sizes, which override the GPU ones)."""
    root = BENCH.parent
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text(
        f'#!/bin/sh\nexec {sys.executable} "$@" --device cpu --lengths 64 --heads 1 '
        '--head-dim 8 --kernels cpu_flash --reps 1 --quiet\n')
    (fake / "nvidia-smi").write_text('#!/bin/sh\necho "NVIDIA H100 80GB HBM3"\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "OUT": str(out),
           "PYTHONPATH": str(root)}
    parts = ["sweep_256k_full", "sweep_256k_causal", "sweep_1m_causal_a", "sweep_1m_causal_b",
             "sweep_1m_full"]
    res = subprocess.run(["bash", "scripts/gpu_runs.sh", *parts], cwd=root, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    expect = {"sweep_256k_full": [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1],
              "sweep_256k_causal": [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1],
              "sweep_1m_causal_a": [1 / 16, 1 / 8, 1 / 4], "sweep_1m_causal_b": [1 / 2, 1],
              "sweep_1m_full": [1 / 4]}
    for part, fractions in expect.items():
        recs = json.loads((out / f"attention_h100_{part}.json").read_text())["records"]
        assert [r["budget_fraction"] for r in recs] == fractions, part
        assert all("ratio_to_bound" in r for r in recs), part
