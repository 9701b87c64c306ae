"""Command line of :mod:`cqs_attention` (``cqs-attention`` / ``python -m cqs_attention``).

Sub-commands:

* ``demo``  -- exact attention over a sequence larger than a memory budget, streamed task by
  task (on the GPU when there is one, otherwise a smaller CPU run), checked against the
  float64 reference on sampled rows; prints the plan, tasks, peak memory, time and error.
* ``bench`` -- runs ``benchmarks/bench_attention.py`` with the given options.

Exit codes: 0 ok, 1 the demo's check failed (error above tolerance), 2 bad usage (a one-line
reason on stderr, never a traceback).

>>> from cqs_attention.cli import main
>>> main(["demo", "--seq-len", "256", "--heads", "2", "--head-dim", "16", "--budget", "64KiB",
...       "--device", "cpu", "--quiet"])  # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import math
import os
import re
import runpy
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cqs_attention import info
from cqs_attention.info import TORCH_MISSING, torch_available
from cqs_design.cli.options import EXIT_USAGE, UsageParser, int_at_least, window_side

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "TORCH_MISSING", "CLIError", "build_parser",
           "demo_host_bytes", "in_cli_terms", "main", "torch_available"]

EXIT_OK = 0
EXIT_FAILED = 1

_DTYPES = {"fp64": "float64", "float64": "float64", "fp32": "float32", "float32": "float32",
           "fp16": "float16", "float16": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16"}
# ||out - ref|| / ||ref|| on the sampled rows (the project's accuracy contract)
_TOLERANCE = {"float64": 1e-10, "float32": 1e-5, "float16": 2e-2, "bfloat16": 2e-2}
# default problem sizes: (seq_len, heads, kv_heads, head_dim, dtype, budget)
_GPU_DEFAULTS = (65536, 16, 4, 128, "bf16", "256MiB")
_CPU_DEFAULTS = (2048, 4, 2, 64, "fp32", "2MiB")
_DEFAULT_CHECK_ROWS = 64


class CLIError(Exception):
    """Bad usage detected by a command; printed as one line, exit code 2."""


def _emit(payload: dict[str, Any], *, as_json: bool, text: str) -> None:
    import json

    print(json.dumps(payload, indent=2, sort_keys=True) if as_json else text)


# --------------------------------------------------------------------------------- demo ----

_positive = int_at_least(1)


def _window(text: str) -> tuple[int | None, int | None]:
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"must be LEFT,RIGHT (e.g. 512,0 or 512,none), "
                                         f"got {text!r}")
    return window_side(parts[0].strip()), window_side(parts[1].strip())


def _register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="exact streamed attention over a sequence larger than a memory budget",
        description="Build a plan for a sequence whose q/k/v/out exceed --budget, run exact "
                    "attention streamed under that budget (GPU when present, else CPU), check "
                    "sampled rows against the float64 reference and print a short report. "
                    f"Defaults: GPU seq {_GPU_DEFAULTS[0]}, {_GPU_DEFAULTS[1]} heads "
                    f"({_GPU_DEFAULTS[2]} kv), dim {_GPU_DEFAULTS[3]}, {_GPU_DEFAULTS[4]}, "
                    f"budget {_GPU_DEFAULTS[5]}; CPU seq {_CPU_DEFAULTS[0]}, "
                    f"{_CPU_DEFAULTS[1]} heads ({_CPU_DEFAULTS[2]} kv), dim {_CPU_DEFAULTS[3]}, "
                    f"{_CPU_DEFAULTS[4]}, budget {_CPU_DEFAULTS[5]}.",
    )
    p.add_argument("--device", default="auto",
                   help="auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    p.add_argument("--seq-len", type=_positive, help="sequence length")
    p.add_argument("--batch", type=_positive, default=1)
    p.add_argument("--heads", type=_positive, help="query heads")
    p.add_argument("--kv-heads", type=_positive,
                   help="key/value heads (must divide --heads; fewer = GQA)")
    p.add_argument("--head-dim", type=_positive)
    p.add_argument("--dtype", choices=sorted(_DTYPES), help="element type")
    p.add_argument("--budget", help="device memory budget, e.g. 256MiB (bytes if no unit)")
    p.add_argument("--causal", action=argparse.BooleanOptionalAction, default=True,
                   help="causal mask (default on)")
    p.add_argument("--window", type=_window, help="sliding window LEFT,RIGHT (e.g. 1024,0)")
    p.add_argument("--design", type=_positive,
                   help="prime power q of the Singer design (default: chosen from the budget)")
    p.add_argument("--levels", type=_positive, default=None,
                   help="plan levels (default: chosen automatically)")
    p.add_argument("--backend", default="auto", help="kernel name or auto")
    p.add_argument("--check-rows", type=_positive, default=None,
                   help="query rows checked against the float64 reference (default 64, or "
                        "every row when --seq-len is shorter)")
    p.add_argument("--tolerance", type=float,
                   help="max ||out-ref||/||ref|| on the checked rows (default by dtype: "
                        "fp64 1e-10, fp32 1e-5, fp16/bf16 2e-2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs and rows")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_demo)


_DEVICE_RE = re.compile(r"(auto|cpu|cuda(:\d+)?)")


def _early_demo_checks(args: argparse.Namespace) -> int | None:
    """The checks that need neither torch nor memory (so a typo is reported at once); returns
    the budget in bytes (None: the device's default)."""
    from cqs_attention._bytes import parse_bytes

    if not _DEVICE_RE.fullmatch(args.device):
        raise CLIError(f"--device {args.device!r} is not a device here; use auto, cpu, cuda "
                       "or cuda:N")
    if args.heads is not None and args.kv_heads is not None and args.heads % args.kv_heads:
        raise CLIError(f"--kv-heads {args.kv_heads} must divide --heads {args.heads}")
    budget = None
    if args.budget is not None:
        try:
            budget = parse_bytes(args.budget)
        except ValueError as exc:
            raise CLIError(str(exc).replace("memory_budget", "--budget")) from None
        if budget is not None and budget <= 0:
            raise CLIError(f"--budget must be > 0, got {args.budget!r}")
    if args.tolerance is not None and (not args.tolerance > 0 or math.isinf(args.tolerance)):
        raise CLIError(f"--tolerance must be a finite number > 0, got {args.tolerance!r}")
    if args.check_rows is not None and args.seq_len is not None and \
            args.check_rows > args.seq_len:
        raise CLIError(f"--check-rows {args.check_rows} exceeds --seq-len {args.seq_len}")
    if args.window is not None and not args.causal and args.window == (None, None):
        raise CLIError("--window none,none is no window; leave --window out")
    return budget


def _resolve_demo_options(args: argparse.Namespace) -> dict[str, Any]:
    budget = _early_demo_checks(args)
    import torch

    requested = args.device
    if requested == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise CLIError(f"--device {requested}: no CUDA device is available here (use "
                           "--device cpu)")
        if device.type == "cuda" and device.index is not None and \
                device.index >= torch.cuda.device_count():
            raise CLIError(f"--device {requested}: only {torch.cuda.device_count()} CUDA "
                           "device(s) here")
    defaults = _GPU_DEFAULTS if device.type == "cuda" else _CPU_DEFAULTS
    seq_len = args.seq_len or defaults[0]
    heads = args.heads or defaults[1]
    kv_heads = args.kv_heads or (min(defaults[2], heads) if heads % min(defaults[2], heads) == 0
                                 else heads)
    if heads % kv_heads:
        raise CLIError(f"--kv-heads {kv_heads} must divide --heads {heads}")
    head_dim = args.head_dim or defaults[3]
    dtype_name = _DTYPES[args.dtype or defaults[4]]
    dtype = getattr(torch, dtype_name)
    if args.budget is None:
        from cqs_attention._bytes import parse_bytes

        budget = parse_bytes(defaults[5])
    tolerance = args.tolerance if args.tolerance is not None else _TOLERANCE[dtype_name]
    if args.check_rows is None:
        check_rows = min(_DEFAULT_CHECK_ROWS, seq_len)
    elif args.check_rows > seq_len:
        raise CLIError(f"--check-rows {args.check_rows} exceeds --seq-len {seq_len}")
    else:
        check_rows = args.check_rows
    opts = {"device": device, "seq_len": seq_len, "heads": heads, "kv_heads": kv_heads,
            "head_dim": head_dim, "dtype": dtype, "dtype_name": dtype_name, "budget": budget,
            "tolerance": tolerance, "check_rows": check_rows,
            "element_size": torch.empty((), dtype=dtype).element_size()}
    _check_host_memory(opts, batch=args.batch, run_bytes=None)
    return opts


def _demo_plan(args: argparse.Namespace, seq_len: int) -> Any:
    """The plan of ``--design``/``--levels`` (None: the planner's choice)."""
    if args.design is None and args.levels is None:
        return None
    from cqs_design.plans import make_plan

    plan_kwargs: dict[str, Any] = {"causal": args.causal, "window": args.window}
    if args.design is not None:
        plan_kwargs["design"] = args.design
    if args.levels is not None:
        plan_kwargs["levels"] = args.levels
    return make_plan(seq_len, **plan_kwargs)


def _dry_run(args: argparse.Namespace, opts: dict[str, Any], plan: Any) -> int | None:
    """Plan the demo's call on shapes only (meta tensors: nothing allocated), so a budget too
    small or a backend that cannot run is reported before any input is drawn. Returns the
    footprint bound of the chosen run (the device bytes it holds at once)."""
    import torch

    from cqs_attention.checkpoint import plan_digest
    from cqs_attention.engine.placement import call_budget, plan_call
    from cqs_attention.engine.request import AttentionRequest
    from cqs_attention.masks import make_mask_spec

    dev, dtype = opts["device"], opts["dtype"]
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    b, h, hkv, d, n = args.batch, opts["heads"], opts["kv_heads"], opts["head_dim"], \
        opts["seq_len"]
    q = torch.empty(b, h, n, d, dtype=dtype, device="meta")
    k = torch.empty(b, hkv, n, d, dtype=dtype, device="meta")
    spec = make_mask_spec(n, n, batch=b, heads=h, causal=args.causal, window=args.window)
    # the demo's inputs live on the host; a backend that cannot run: its error, now
    request = AttentionRequest(q=q, k=k, v=k, spec=spec, scale=d ** -0.5, plan=plan,
                               plan_digest=None if plan is None else plan_digest(plan),
                               memory_budget=opts["budget"], device=dev,
                               home=torch.device("cpu"), backend=args.backend,
                               needs_grad=False)
    choice = plan_call(request, call_budget(request)).forward
    return int(choice.footprint)


def demo_host_bytes(*, batch: int, heads: int, kv_heads: int, seq_len: int, head_dim: int,
                    element_size: int, budget: int | None, on_cpu: bool) -> int:
    """Host memory the demo needs at least: q, k, v and the output, the float32 tensor each
    input is drawn in, and (on a CPU, where the device is the host) ``budget``: the device
    bytes the run holds at once (the planner's footprint of the chosen run).

    >>> demo_host_bytes(batch=1, heads=2, kv_heads=1, seq_len=10, head_dim=4, element_size=4,
    ...                 budget=1000, on_cpu=True)
    1960
    """
    q_elems = batch * heads * seq_len * head_dim
    kv_elems = batch * kv_heads * seq_len * head_dim
    resident = (2 * q_elems + 2 * kv_elems) * element_size  # q, k, v, out
    drawn = q_elems * 4 if element_size != 4 else 0  # float32 draw before the cast
    return resident + drawn + ((budget or 0) if on_cpu else 0)


def _check_host_memory(opts: dict[str, Any], *, batch: int, run_bytes: int | None) -> None:
    """CLIError (one line, exit 2) when the demo cannot fit in the host memory available.

    ``run_bytes``: the device bytes of the planned run (host memory on a CPU); None before
    the plan is known (the inputs and output alone are checked)."""
    available = info.host_memory_available()  # looked up here: tests replace it
    if available is None:  # not Linux: nothing to check against
        return
    on_cpu = opts["device"].type == "cpu"
    sizes = {"heads": opts["heads"], "kv_heads": opts["kv_heads"],
             "head_dim": opts["head_dim"], "element_size": opts["element_size"],
             "budget": run_bytes, "on_cpu": on_cpu}
    seq_len = opts["seq_len"]
    need = demo_host_bytes(batch=batch, seq_len=seq_len, **sizes)
    if need <= available:
        return
    # q, k, v and output grow with batch x seq_len; the run's own bytes are taken as fixed
    per_token = demo_host_bytes(batch=1, seq_len=1, **{**sizes, "budget": None})
    fixed = need - per_token * batch * seq_len
    tokens = (available - fixed) // per_token  # the largest batch x seq_len that fits
    hints = []
    if batch > 1 and tokens // seq_len >= 1:
        hints.append(f"a smaller --batch (up to about {tokens // seq_len} at --seq-len "
                     f"{seq_len})")
    if tokens // batch >= 1:
        hints.append(f"a smaller --seq-len (up to about {tokens // batch}"
                     + (f" at --batch {batch})" if batch > 1 else ")"))
    if not hints:
        hints.append("smaller --batch, --seq-len, --heads or --head-dim" if tokens < 1 else
                     "a smaller --budget")
    run = f", plus {_fmt_bytes(run_bytes)} for the run on the CPU" if on_cpu and run_bytes \
        else ""
    raise CLIError(
        f"the demo needs at least {_fmt_bytes(need)} of host memory (q, k, v and output of "
        f"B={batch} H={opts['heads']} (kv {opts['kv_heads']}) L={seq_len} "
        f"D={opts['head_dim']} {opts['dtype_name']}{run}) but "
        f"{_fmt_bytes(available)} is available here; use {' or '.join(hints)}")


def _fmt_bytes(n: int | float | None, digits: int = 1) -> str:
    """``n`` bytes in the largest binary unit below it, with ``digits`` decimals.

    >>> _fmt_bytes(2122112), _fmt_bytes(2122112, digits=3), _fmt_bytes(512)
    ('2.0 MiB', '2.024 MiB', '512 B')
    """
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.{digits}f} {unit}"
        n /= 1024
    return f"{n:.{digits}f} TiB"  # pragma: no cover


def _distinct_digits(sizes: Sequence[int]) -> int:
    """The fewest decimals (1 to 6) that print different ``sizes`` differently.

    >>> _distinct_digits([2097152, 2122112]), _distinct_digits([1024, 4096])
    (2, 1)
    """
    distinct = sorted(set(sizes))
    for digits in range(1, 7):
        if len({_fmt_bytes(n, digits) for n in distinct}) == len(distinct):
            return digits
    return 6


def _row_reference(q, k, v, rows, *, causal: bool, window, scale: float):
    """float64 reference output for the query ``rows`` (global indices) of self-attention."""
    import numpy as np
    import torch

    from cqs_attention.reference import reference_attention
    from cqs_design.plans.mask import Mask

    rows_t = torch.as_tensor(rows, dtype=torch.long)
    band = Mask.of(q.shape[-2], k.shape[-2], causal=causal, window=window)
    rows_np = np.asarray(rows, dtype=np.int64)
    # the keys [lo, hi) each checked row attends (the band rule, bottom-right aligned)
    lo, hi = torch.from_numpy(band.lo(rows_np)), torch.from_numpy(band.hi(rows_np))

    def mask_mod(b, h, q_idx, kv_idx):
        return (kv_idx >= lo.to(q_idx.device)[q_idx]) & (kv_idx < hi.to(q_idx.device)[q_idx])

    q_rows = q[:, :, rows_t].to(torch.float64)
    out, _ = reference_attention(q_rows, k.to(torch.float64), v.to(torch.float64),
                                 mask_mod=mask_mod, scale=scale)
    return out


def _stats_dict(stats: Any) -> dict[str, Any]:
    if stats is None:
        return {}
    if hasattr(stats, "to_dict"):
        return dict(stats.to_dict())
    if hasattr(stats, "__dataclass_fields__"):
        import dataclasses

        return {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)}
    return dict(vars(stats)) if hasattr(stats, "__dict__") else {}


def _first(d: dict[str, Any], *names: str) -> Any:
    for n in names:
        if d.get(n) is not None:
            return d[n]
    return None


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def _demo(args: argparse.Namespace) -> int:
    opts = _resolve_demo_options(args)  # argument errors before torch is imported
    import torch

    from cqs_attention.api import attention
    from cqs_attention.report import last_run_stats

    device, seq_len, dtype = opts["device"], opts["seq_len"], opts["dtype"]
    b, h, hkv, d = args.batch, opts["heads"], opts["kv_heads"], opts["head_dim"]
    plan = _demo_plan(args, seq_len)
    run_bytes = _dry_run(args, opts, plan)  # budget and backend errors before any allocation
    if run_bytes is not None:
        _check_host_memory(opts, batch=b, run_bytes=run_bytes)
    gen = torch.Generator().manual_seed(args.seed)
    # inputs live in host memory (pinned when streaming to a GPU); only tasks go to the device
    pin = device.type == "cuda"

    def make(heads: int) -> torch.Tensor:
        x = torch.randn(b, heads, seq_len, d, generator=gen, dtype=torch.float32).to(dtype)
        return x.pin_memory() if pin else x

    q, k, v = make(h), make(hkv), make(hkv)
    input_bytes = sum(t.numel() * t.element_size() for t in (q, k, v)) + q.numel() * \
        q.element_size()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    out = attention(q, k, v, causal=args.causal, window=args.window, plan=plan,
                    memory_budget=opts["budget"], device=device, backend=args.backend,
                    progress=not args.quiet)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    stats = _stats_dict(last_run_stats())
    peak = None
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _first(stats, "peak_device_bytes")

    rows = torch.randperm(seq_len, generator=gen)[: opts["check_rows"]].sort().values
    scale = 1.0 / math.sqrt(d)
    ref = _row_reference(q, k, v, rows, causal=args.causal, window=args.window, scale=scale)
    got = out[:, :, rows].to(torch.float64).cpu()
    diff = got - ref
    ref_norm = float(ref.norm())
    rel = float(diff.norm()) / ref_norm if ref_norm > 0 else float(diff.norm())
    max_err = float(diff.abs().max())
    ok = rel <= opts["tolerance"] and math.isfinite(rel)

    plan_info = {
        "schedule": _first(stats, "schedule"),
        "v": _first(stats, "design_v"),
        "k": _first(stats, "design_k"),
        "levels": _first(stats, "levels"),
        "tasks": _first(stats, "tasks"),
        "tasks_skipped": _first(stats, "tasks_skipped"),
        "chosen": _first(stats, "plan_source"),
        "footprint_bytes": _first(stats, "task_bytes_estimate"),
    }
    what = (f"design v={plan_info['v']} k={plan_info['k']}, levels {plan_info['levels']}"
            if plan_info["v"] is not None else f"{plan_info['schedule']}")
    if device.type == "cuda":
        peak_text = f"{_fmt_bytes(peak)} (device, measured)"
    else:
        peak_text = (f"not measured on the CPU (the plan's bound: "
                     f"{_fmt_bytes(plan_info['footprint_bytes'])})")
    payload = {
        "ok": ok, "device": str(device), "seq_len": seq_len, "batch": b, "heads": h,
        "kv_heads": hkv, "head_dim": d, "dtype": opts["dtype_name"], "causal": args.causal,
        "window": list(args.window) if args.window else None, "budget_bytes": opts["budget"],
        "input_bytes": input_bytes, "plan": plan_info, "peak_bytes": peak,
        "seconds": elapsed, "checked_rows": len(rows), "rel_error": rel,
        "max_abs_error": max_err, "tolerance": opts["tolerance"],
        "kernels": _jsonable(_first(stats, "kernel_calls")),
        "bytes_to_device": _first(stats, "bytes_to_device"),
        "stats": _jsonable(stats),
    }
    mask = "causal" if args.causal else "full"
    if args.window:
        mask += f", window {args.window}"
    text = "\n".join([
        f"cqs-attention demo on {device}: B={b} H={h} (kv {hkv}) L={seq_len} D={d} "
        f"{opts['dtype_name']}, {mask}",
        f"  inputs+output  {_fmt_bytes(input_bytes)}   budget {_fmt_bytes(opts['budget'])}",
        f"  plan           {what}, {plan_info['tasks']} tasks "
        f"({plan_info['tasks_skipped']} emptied by the mask; chosen: {plan_info['chosen']})",
        f"  kernel calls   {payload['kernels']}",
        f"  peak memory    {peak_text}",
        f"  time           {elapsed:.3f} s",
        f"  check          {len(rows)} rows vs float64 reference: rel error {rel:.2e}, "
        f"max abs error {max_err:.2e} (tolerance {opts['tolerance']:.0e}) -> "
        f"{'OK' if ok else 'FAILED'}",
    ])
    _emit(payload, as_json=args.json, text=text)
    return EXIT_OK if ok else EXIT_FAILED


# -------------------------------------------------------------------------------- bench ----

def _register_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="run benchmarks/bench_attention.py (a GPU; --device cpu: a smoke test)",
        description="Run the attention benchmark (benchmarks/bench_attention.py of a source "
                    "checkout, $CQS_BENCH_SCRIPT, or --script PATH). Arguments after the ones "
                    "below are passed to the benchmark (e.g. --lengths 65536 --masks causal); "
                    "cqs-attention bench -- --help lists them. It prints a line per measured "
                    "part; Ctrl-C stops it with what was measured so far (exit 130). "
                    "--device cpu runs a small smoke test (L=1024, 4 heads, D=64).",
    )
    p.add_argument("--script", type=Path, help="path of bench_attention.py (default: found "
                                               "next to the installed package or in ./benchmarks)")
    p.add_argument("--json", action="store_true",
                   help="print the benchmark records as JSON on stdout (the benchmark's table "
                        "goes to stderr)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (TQDM_DISABLE=1)")
    p.set_defaults(func=_bench, bench_args=[])


def _bench_candidates(script: Path | None) -> list[Path]:
    if script is not None:
        return [script]
    here = Path(__file__).resolve().parent
    found = [here.parent / "benchmarks" / "bench_attention.py",
             Path.cwd() / "benchmarks" / "bench_attention.py"]
    env = os.environ.get("CQS_BENCH_SCRIPT")
    if env:
        found.insert(0, Path(env))
    return found


def locate_bench(script: Path | None = None) -> Path:
    """The benchmark script to run; :class:`CLIError` saying where it looked if none."""
    candidates = _bench_candidates(script)
    for path in candidates:
        if path.is_file():
            return path
    if script is not None:
        raise CLIError(f"--script {script}: no such file")
    looked = ", ".join(str(p) for p in candidates)
    raise CLIError(f"benchmarks/bench_attention.py is not available (looked in {looked}); run "
                   "from a source checkout or pass --script PATH")


def _run_bench_module(path: Path, argv: list[str]) -> int:
    """Import ``path`` and call its ``main(argv)`` (or run it as ``__main__``)."""
    module_name = "_cqs_bench_attention"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise CLIError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    old_argv = sys.argv
    sys.argv = [str(path), *argv]
    try:
        try:
            spec.loader.exec_module(module)
        except ImportError as exc:
            raise CLIError(f"{path.name} cannot be imported here: {exc}") from None
        main_fn = getattr(module, "main", None)
        try:
            if callable(main_fn):
                result = main_fn(argv) if inspect.signature(main_fn).parameters else main_fn()
            else:
                runpy.run_path(str(path), run_name="__main__")
                result = 0
        except SystemExit as exc:
            code = exc.code
            result = code if isinstance(code, int) else (0 if code is None else EXIT_USAGE)
    finally:
        sys.argv = old_argv
        sys.modules.pop(module_name, None)
    return int(result or 0)


def _bench(args: argparse.Namespace) -> int:
    import contextlib
    import json
    import tempfile

    path = locate_bench(args.script)
    forwarded = [a for a in args.bench_args if a != "--"]
    old_tqdm = os.environ.get("TQDM_DISABLE")
    if args.quiet:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        if not args.json or "--json" in forwarded:
            return _run_bench_module(path, forwarded)
        with tempfile.TemporaryDirectory() as tmp:
            records = Path(tmp) / "records.json"
            with contextlib.redirect_stdout(sys.stderr):
                code = _run_bench_module(path, [*forwarded, "--json", str(records)])
            if records.is_file():
                print(json.dumps(json.loads(records.read_text()), indent=2, sort_keys=True))
            return code
    finally:
        if args.quiet:
            if old_tqdm is None:
                os.environ.pop("TQDM_DISABLE", None)
            else:
                os.environ["TQDM_DISABLE"] = old_tqdm


# --------------------------------------------------------------------------------- main ----

def in_cli_terms(message: str, *, plan_options: str | None = None) -> str:
    """Reword an error of the Python API (:func:`cqs_attention.attention`, ``make_plan``) in
    the demo's option names, so the advice is something the user can type.

    ``plan_options`` names the options the plan came from (e.g. ``"--design 2"``), if any.

    >>> in_cli_terms("memory_budget=1024 bytes is smaller than the 4096 bytes one task of the "
    ...              "given plan needs; pass a finer plan or plan=None",
    ...              plan_options="--design 2")
    'the --budget 1024 bytes (1.0 KiB) is smaller than the 4096 bytes one task of the plan of \
--design 2 needs; use a finer --design (a larger prime power), a larger --budget, or omit --design'
    >>> in_cli_terms("memory_budget=2048 bytes is too small for the given plan: ...; pass "
    ...              "memory_budget >= 4096 or a finer plan", plan_options="--design 2")
    'the --budget 2048 bytes (2.0 KiB) is too small for the plan of --design 2: ...; use \
--budget 4096 or more (4.0 KiB), a finer --design (a larger prime power), or omit --design'
    >>> in_cli_terms("memory_budget=10 bytes is too small for any plan: ...; pass "
    ...              "memory_budget >= 2048")
    'the --budget 10 bytes is too small for any plan: ...; use --budget 2048 or more (2.0 KiB)'
    """
    omit = "omit --design" if plan_options is None or "--levels" not in plan_options else \
        "omit --design and --levels"

    # the sizes named are printed with enough digits to tell them apart (a budget of 2.0 MiB
    # is not "use 2.0 MiB or more")
    digits = _distinct_digits([int(n) for n in re.findall(
        r"(?:memory_budget=|memory_budget >= )(\d+)", message)] or [0])

    def size(n: str) -> str:
        return "" if int(n) < 1024 else f" ({_fmt_bytes(int(n), digits)})"

    rules: list[tuple[str, Any]] = [
        (r"pass memory_budget >= (\d+)( bytes)? or a finer plan",
         lambda m: f"use --budget {m.group(1)} or more{size(m.group(1))}, a finer --design (a "
                   f"larger prime power), or {omit}"),
        (r"pass a finer plan or plan=None",
         f"use a finer --design (a larger prime power), a larger --budget, or {omit}"),
        (r"pass memory_budget >= (\d+)( bytes)?",
         lambda m: f"use --budget {m.group(1)} or more{size(m.group(1))}"),
        (r"memory_budget=(\d+) bytes",
         lambda m: f"the --budget {m.group(1)} bytes{size(m.group(1))}"),
        (r"\bthe given plan\b", f"the plan of {plan_options}" if plan_options else "the plan"),
        (r"\bmemory_budget\b", "--budget"),
        (r"\bbackend=", "--backend "),
        (r"\bseq_len=", "--seq-len "),
        (r"\bdesign=", "--design "),
        (r"Singer design is q=(\d+)", r"Singer design is --design \1"),
        (r" or a DifferenceSet\b", ""),
        (r"\bplan=None\b", "no --design"),
    ]
    for pattern, repl in rules:
        message = re.sub(pattern, repl, message)
    return message


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog="cqs-attention",
        description="Exact attention streamed under a memory budget (the cqs_attention package; "
                    "also python -m cqs_attention). Exit codes: 0 ok, 1 the demo's check "
                    "failed, 2 bad usage.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=UsageParser)
    sub.required = True
    _register_demo(sub)
    _register_bench(sub)
    return parser


def _version() -> str:
    from cqs_attention import __version__

    return __version__


def _glue_dash_values(argv: list[str], options: tuple[str, ...] = ("--window",)) -> list[str]:
    """``--window -1,0`` as ``--window=-1,0``: argparse takes a value that starts with "-"
    for an option and says "expected one argument"; glued, the option's own check explains.

    >>> _glue_dash_values(["demo", "--window", "-1,0", "--quiet"])
    ['demo', '--window=-1,0', '--quiet']
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in options and i + 1 < len(argv) and argv[i + 1].startswith("-") and \
                argv[i + 1][1:2].isdigit():
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 check failed, 2 bad usage)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # everything after a bare "--" belongs to the benchmark
    tail = argv[argv.index("--") + 1:] if "--" in argv else []
    head = _glue_dash_values(argv[: len(argv) - len(tail) - (1 if "--" in argv else 0)])
    # --help and --version work without torch (argparse exits 0; bad usage exits 2)
    args, extra = parser.parse_known_args(head)
    if args.command == "bench":
        args.bench_args = [*extra, *tail]
    elif extra or tail:
        parser.error(f"unrecognized arguments: {' '.join([*extra, *tail])}")
    from cqs_attention.errors import KernelUnavailableError

    try:
        if args.command == "demo":
            _early_demo_checks(args)  # a typo is reported even where torch is missing
        if not torch_available():
            raise CLIError(TORCH_MISSING)
        return int(args.func(args) or EXIT_OK)
    except (CLIError, ValueError, TypeError, KernelUnavailableError, ImportError) as exc:
        message = str(exc)
        if args.command == "demo" and not isinstance(exc, CLIError):
            given = [f"--{name} {value}" for name, value in
                     (("design", args.design), ("levels", args.levels)) if value is not None]
            message = in_cli_terms(message, plan_options=" ".join(given) or None)
        print(f"cqs-attention {args.command}: error: {message}".splitlines()[0],
              file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"cqs-attention {args.command}: interrupted", file=sys.stderr)
        return 130
