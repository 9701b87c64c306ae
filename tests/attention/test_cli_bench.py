"""``cqs-attention bench --device cpu``: small CPU defaults, a line per measured part as it
completes, and Ctrl-C that stops promptly with what was measured (issue: "no silent minute").

The limits are generous (the shared 2-core box can be loaded) but real: the CPU defaults take
about 10 s there unloaded, and the interrupted run exits about 1 s after SIGINT.
"""

from __future__ import annotations

import json

import pytest

from tests._live import LiveProcess

pytestmark = pytest.mark.slow

PARTS = ("monolithic", "attention on device", "attention on device bwd", "attention streamed",
         "out-of-core baseline", "attention streamed bwd")


def test_cpu_defaults_finish_with_a_line_per_measurement(tmp_path) -> None:
    out = tmp_path / "bench.json"
    with LiveProcess("cqs_attention", "bench", "--device", "cpu", "--",
                     "--json", str(out)) as run:
        # the first measurement is reported long before a minute (it takes ~2 s unloaded)
        run.wait_for(r"L=1024 full  monolithic: cpu_flash", timeout=60)
        code, _ = run.finish(timeout=240)
    assert code == 0, run.stderr
    lines = run.stdout.splitlines()
    for mask in ("full", "causal"):
        for part in PARTS:
            assert any(line.startswith(f"L=1024 {mask}") and f"  {part}:" in line
                       for line in lines), (mask, part, run.stdout)
    data = json.loads(out.read_text())
    assert [(r["L"], r["H"], r["D"], r["reps"]) for r in data["records"]] == \
        [(1024, 4, 64, 3)] * 2


def test_ctrl_c_stops_promptly_and_prints_what_was_measured(tmp_path) -> None:
    out = tmp_path / "bench.json"
    with LiveProcess("cqs_attention", "bench", "--device", "cpu", "--",
                     "--json", str(out)) as run:
        run.wait_for(r"monolithic: cpu_flash", timeout=60)
        run.interrupt()
        code, waited = run.finish(timeout=30)
    assert code == 130, (run.stdout, run.stderr[-3000:])
    # about 1 s on the dev box (interpreter exit included); a loaded machine gets room
    assert waited < 15, waited
    assert "Traceback" not in run.stderr
    records = json.loads(out.read_text())["records"]
    # at least the measurement whose line was seen (more if the box was slow to read it)
    assert len(records) >= 1
    assert f"interrupted; {len(records)} record(s) measured so far" in run.stderr
    assert records[-1]["interrupted"] is True
    assert all(r["mono_fwd_ms"] > 0 for r in records)
    table = run.stdout[run.stdout.index("       L   mask"):].splitlines()[1:]
    assert len(table) == len(records)
    # the fastest monolithic kernel timed: cpu_flash unloaded, the reference on a loaded box
    assert records[0]["mono_kernel"] in ("cpu_flash", "reference"), records[0]
    assert table[0].split()[:3] == ["1024", "full", records[0]["mono_kernel"][:6]]


def _bench_module():
    import importlib.util
    import sys

    from tests._live import ROOT

    spec = importlib.util.spec_from_file_location("_bench_cli", ROOT / "benchmarks" /
                                                  "bench_attention.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_bench_quiet_prints_only_the_table(capsys) -> None:
    rc = _bench_module().main(["--device", "cpu", "--lengths", "64", "--masks", "full",
                               "--heads", "1", "--head-dim", "8", "--reps", "1",
                               "--no-backward", "--no-streamed", "--no-baseline", "--no-gpu",
                               "--quiet"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[:2] == ["L", "mask"]


@pytest.mark.parametrize(("args", "message"), [
    (["--lengths", "0"], "argument --lengths: must be an integer >= 1, got 0"),
    (["--heads", "x"], "argument --heads: expected an integer >= 1, got 'x'"),
    (["--budget-fraction", "-1"],
     "argument --budget-fraction: must be a finite number > 0, got -1"),
    (["--device", "tpu"], "--device must be cuda, cuda:N or cpu, got 'tpu'"),
])
def test_bench_bad_options_one_line(args: list[str], message: str, capsys) -> None:
    main = _bench_module().main
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's exit
        code = exc.code
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"bench_attention: error: {message}"]
