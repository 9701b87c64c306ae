"""The ``cqs-attention`` command line: demo, bench front door, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from cqs_attention.cli import locate_bench, main

SMALL = ["demo", "--device", "cpu", "--seq-len", "300", "--heads", "4", "--kv-heads", "2",
         "--head-dim", "8", "--check-rows", "40", "--quiet"]


def _json_run(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def test_demo_small_cpu_passes(capsys) -> None:
    code, report, _ = _json_run(capsys, [*SMALL, "--budget", "64KiB", "--json"])
    assert code == 0
    assert report["ok"] is True
    assert report["seq_len"] == 300
    assert report["device"] == "cpu"
    assert report["input_bytes"] > report["budget_bytes"]  # larger than the budget
    assert report["plan"]["tasks"] > 1
    assert 0 < report["rel_error"] <= 1e-5
    assert report["checked_rows"] == 40
    assert report["seconds"] > 0


def test_demo_text_report_window_and_design(capsys) -> None:
    code = main([*SMALL, "--window", "17,0", "--design", "3", "--dtype", "fp64",
                 "--budget", "1MiB"])
    out = capsys.readouterr().out
    assert code == 0
    assert "v=13" in out
    assert "OK" in out
    assert "window" in out
    assert "rel error" in out


def test_demo_noncausal(capsys) -> None:
    code, report, _ = _json_run(capsys, [*SMALL, "--no-causal", "--budget", "1MiB", "--json"])
    assert code == 0
    assert report["causal"] is False
    assert report["ok"]


def test_demo_check_failure_exits_1(capsys) -> None:
    code, report, _ = _json_run(capsys, [*SMALL, "--budget", "1MiB", "--tolerance", "1e-300",
                                         "--json"])
    assert code == 1
    assert report["ok"] is False
    assert report["rel_error"] > 1e-300


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["demo", "--seq-len", "0"], "--seq-len"),
        (["demo", "--device", "cpu", "--budget", "lots"], "--budget"),
        (["demo", "--device", "cpu", "--heads", "4", "--kv-heads", "3"], "--kv-heads"),
        (["demo", "--device", "tpu"], "--device"),
        (["demo", "--device", "cpu", "--seq-len", "10", "--check-rows", "20"], "--check-rows"),
        (["demo", "--window", "1,2,3"], "--window"),
        (["demo", "--device", "cpu", "--seq-len", "64", "--backend", "nope"], "nope"),
        (["demo", "--device", "cpu", "--seq-len", "64", "--tolerance", "-1"], "--tolerance"),
        (["bench", "--script", "/nonexistent/bench_attention.py"], "no such file"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_options_exit_2_with_one_line(capsys, argv, needle) -> None:
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1


def test_demo_budget_too_small_is_a_usage_error(capsys) -> None:
    code = main([*SMALL, "--budget", "16"])
    err = capsys.readouterr().err
    assert code == 2
    assert "budget" in err
    assert len(err.strip().splitlines()) == 1


def test_bench_forwards_options_and_prints_json(tmp_path, capsys, monkeypatch) -> None:
    script = tmp_path / "bench_attention.py"
    script.write_text(textwrap.dedent("""
        import json, os
        def main(argv=None):
            print("table goes to stderr under --json")
            if "--json" in argv:
                with open(argv[argv.index("--json") + 1], "w") as fh:
                    json.dump({"records": [{"argv": argv[:2],
                                            "tqdm": os.environ.get("TQDM_DISABLE")}]}, fh)
            return 3 if "--fail" in argv else 0
    """))
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    code = main(["bench", "--script", str(script), "--json", "--quiet", "--lengths", "128"])
    captured = capsys.readouterr()
    assert code == 0
    record = json.loads(captured.out)["records"][0]
    assert record == {"argv": ["--lengths", "128"], "tqdm": "1"}
    assert "table goes to stderr" in captured.err
    assert "TQDM_DISABLE" not in __import__("os").environ
    assert main(["bench", "--script", str(script), "--", "--fail"]) == 3


def test_bench_script_without_main_runs_as_script(tmp_path, capsys) -> None:
    script = tmp_path / "bench_attention.py"
    script.write_text("import sys\nif __name__ == '__main__':\n"
                      "    print('ran', sys.argv[1:])\n    raise SystemExit(0)\n")
    assert main(["bench", "--script", str(script), "--reps", "2"]) == 0
    assert "ran ['--reps', '2']" in capsys.readouterr().out


def test_bench_of_the_checkout_without_gpu_exits_2(capsys) -> None:
    import torch

    assert locate_bench().name == "bench_attention.py"  # the tests run from a checkout
    if torch.cuda.is_available():
        pytest.skip("has a GPU: the benchmark would really run")
    assert main(["bench", "--lengths", "1024", "--no-backward"]) == 2
    assert "CUDA" in capsys.readouterr().err


def test_locate_bench(tmp_path, monkeypatch) -> None:
    import cqs_attention.cli as cli

    script = tmp_path / "bench_attention.py"
    script.write_text("def main(argv):\n    return 0\n")
    monkeypatch.setenv("CQS_BENCH_SCRIPT", str(script))
    assert locate_bench() == script
    monkeypatch.setattr(cli, "_bench_candidates", lambda s: [tmp_path / "missing.py"])
    with pytest.raises(cli.CLIError, match=r"missing\.py.*--script"):
        locate_bench()


def test_python_dash_m_entry_point() -> None:
    proc = subprocess.run([sys.executable, "-m", "cqs_attention", "demo", "--device", "cpu",
                           "--seq-len", "-5"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "--seq-len" in proc.stderr


@pytest.mark.gpu
def test_demo_gpu_streams_under_the_budget(capsys) -> None:
    code, report, _ = _json_run(capsys, ["demo", "--device", "cuda", "--seq-len", "16384",
                                         "--heads", "8", "--kv-heads", "2", "--head-dim", "64",
                                         "--dtype", "bf16", "--budget", "16MiB", "--json",
                                         "--quiet"])
    assert code == 0
    assert report["ok"] is True
    assert report["input_bytes"] > 2 * report["budget_bytes"]  # 40 MiB of q, k, v, out
    assert report["plan"]["tasks"] > 1
    # the documented margin of docs/streaming.md (fixed kernel workspace the estimate does
    # not count dominates at budgets of a few MiB): budget x 1.25 + 8 MiB
    assert 0 < report["peak_bytes"] <= 1.25 * report["budget_bytes"] + (8 << 20)
