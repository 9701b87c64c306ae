"""Every mask kind on a CUDA device at lengths that are not multiples of 128 (``pytest -m gpu``).

A window mask at such a length once killed the CUDA context (an out-of-range read of the dense
mask on the padding of FlexAttention's last tile). These tests run every mask kind (window,
window with causal, document ids, ``mask_mod``, and their combinations with causal) at lengths
below 128, just over a block, about 4K and 64K+7, with and without GQA, with ``Lq != Lk``, on
resident inputs and streamed from pinned host memory, forward and backward. Each result is
compared with a float32 reference computed from the mask definitions
(:func:`tests.attention._gpu_reference.chunked_reference`) and with the monolithic kernel
(FlexAttention over the whole sequence) on the same bf16 inputs; streamed runs must stay
within their budget (after a warm-up call: compiling a new FlexAttention variant the first time
allocates Inductor's workspace, which no budget covers). After the runs, the CUDA context must
still work.
"""

from __future__ import annotations

import pytest
import torch

from cqs_attention import attention, last_run_stats
from cqs_attention.errors import MemoryBudgetError
from cqs_attention.kernels.flex import FlexKernel
from cqs_attention.masks import make_mask_spec
from tests.attention._gpu_reference import chunked_reference, record, rel

pytestmark = pytest.mark.gpu

DEV = torch.device("cuda")


def _docs(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cuts = torch.randint(1, max(2, n), (4,), generator=g)
    ids = torch.zeros(n, dtype=torch.int64)
    for c in cuts.tolist():
        ids[c:] += 1
    return ids


def _mask_mod(b, h, q_idx, kv_idx):
    return ((kv_idx + 3 * h) % 7 != 0) | (q_idx == kv_idx)


def _masks(kind: str, lq: int, lk: int) -> dict:
    docs = _docs(lq, 1) if lq == lk else (_docs(lq, 1), _docs(lk, 2))
    return {
        "window": {"window": (100, 0)},
        "window_both_sides": {"window": (100, 50)},
        "window_causal": {"causal": True, "window": (64, None)},
        "docs": {"document_ids": docs},
        "docs_causal": {"causal": True, "document_ids": docs},
        "mask_mod": {"mask_mod": _mask_mod},
        "mask_mod_causal": {"causal": True, "mask_mod": _mask_mod},
    }[kind]


def _inputs(h, hkv, lq, lk, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, h, lq, d, generator=g)
    k = torch.randn(1, hkv, lk, d, generator=g)
    v = torch.randn(1, hkv, lk, d, generator=g)
    dout = torch.randn(1, h, lq, d, generator=g)
    return [t.to(torch.bfloat16) for t in (q, k, v, dout)]


def _mono(q, k, v, dout, masks):
    """FlexAttention over the whole sequence (the monolithic kernel), forward and backward."""
    q, k, v, dout = (t.to(DEV) for t in (q, k, v, dout))
    spec = make_mask_spec(q.shape[2], k.shape[2], batch=1, heads=q.shape[1], **masks)
    cls = spec.classify(0, q.shape[2], 0, k.shape[2], DEV)
    flex = FlexKernel()
    scale = q.shape[-1] ** -0.5
    mask = None if cls.kind == "full" else cls.mask
    out, lse = flex.fwd(q, k, v, scale=scale, mask=mask)
    grads = flex.bwd(dout, q, k, v, out, lse, scale=scale, mask=mask)
    return out, grads


def _run(q, k, v, dout, masks, *, streamed: bool, backward: bool):
    kw: dict = {"progress": False}
    if streamed:
        q, k, v, dout = (t.pin_memory() for t in (q, k, v, dout))
        qkv = sum(t.numel() * t.element_size() for t in (q, k, v))
        kw.update(device="cuda", memory_budget=qkv // 4)
    else:
        q, k, v, dout = (t.to(DEV) for t in (q, k, v, dout))
    qg, kg, vg = (t.detach().requires_grad_(backward) for t in (q, k, v))

    def call():
        out = attention(qg, kg, vg, **masks, **kw)
        fwd = last_run_stats()
        bwd = None
        if backward:
            out.backward(dout)
            bwd = last_run_stats()
        return out, fwd, bwd

    try:
        call()  # warm-up: compiling a new kernel variant allocates outside the run's budget
    except MemoryBudgetError as exc:  # the budget named by the error runs
        kw["memory_budget"] = exc.minimum
        call()
    for t in (qg, kg, vg):
        t.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out, fwd, bwd = call()
    peak = torch.cuda.max_memory_allocated() - base
    grads = (qg.grad, kg.grad, vg.grad) if backward else None
    return out, grads, fwd, bwd, kw.get("memory_budget"), peak


def _check(name, q, k, v, dout, masks, *, streamed, backward):
    out, grads, fwd, bwd, budget, peak = _run(q, k, v, dout, masks, streamed=streamed,
                                              backward=backward)
    ref = chunked_reference(q, k, v, dout=dout if backward else None, **masks)
    mono_out, mono_grads = _mono(q, k, v, dout, masks)
    err, mono_err = rel(out, ref["out"]), rel(mono_out, ref["out"])
    fields = {"case": name, "streamed": streamed, "err": err, "mono_err": mono_err,
              "kernels": fwd.kernel_calls, "schedule": fwd.schedule, "budget": budget,
              "peak": peak}
    assert torch.isfinite(out.float()).all()
    assert err <= 2e-2, fields
    assert err <= 2 * mono_err + 1e-4, fields
    if backward:
        for i, (name_g, want) in enumerate(zip(("dq", "dk", "dv"), (ref["dq"], ref["dk"],
                                                                      ref["dv"]), strict=True)):
            g_err, g_mono = rel(grads[i], want), rel(mono_grads[i], want)
            fields[f"{name_g}_err"], fields[f"{name_g}_mono_err"] = g_err, g_mono
            assert g_err <= 2e-2, fields
            assert g_err <= 2 * g_mono + 1e-4, fields
        assert bwd.direction == "backward"
    if budget is not None:  # streamed: the budget holds (forward and backward)
        fields["fwd_peak"] = fwd.peak_device_bytes
        fields["bwd_peak"] = None if bwd is None else bwd.peak_device_bytes
        assert peak <= budget, fields
    record("masks_odd_lengths", **fields)


MASK_KINDS = ["window", "window_both_sides", "window_causal", "docs", "docs_causal",
              "mask_mod", "mask_mod_causal"]
#: (name, H, Hkv, Lq, Lk, streamed): below 128, just over a block, about 4K; GQA or not
CASES = [("97-gqa-device", 4, 2, 97, 97, False), ("4099-gqa-device", 8, 2, 4099, 4099, False),
         ("129x300-streamed", 4, 4, 129, 300, True)]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_every_mask_kind_at_odd_lengths(kind, case):
    name, h, hkv, lq, lk, streamed = case
    q, k, v, dout = _inputs(h, hkv, lq, lk, seed=lq + h)
    _check(f"{kind}/{name}", q, k, v, dout, _masks(kind, lq, lk), streamed=streamed,
           backward=True)


@pytest.mark.parametrize(("kind", "streamed", "backward"), [
    ("window_causal", False, False), ("window_causal", True, True), ("docs", False, False),
    ("mask_mod_causal", False, False)])
def test_64k_plus_7(kind, streamed, backward):
    L = 65536 + 7
    q, k, v, dout = _inputs(4, 4, L, L, d=64, seed=7)
    masks = {"causal": True, "window": (4096, None)} if kind == "window_causal" else \
        _masks(kind, L, L)
    _check(f"{kind}/64K+7", q, k, v, dout, masks, streamed=streamed, backward=backward)


def test_reported_window_crash_at_131079_and_the_context_lives_on():
    """The reported case: window (4096, 0), L = 131079, H = 8, Hkv = 2, bf16, on the GPU."""
    L = 131072 + 7
    q, k, v, _ = _inputs(8, 2, L, L, d=128, seed=3)
    qd, kd, vd = (t.to(DEV) for t in (q, k, v))
    out = attention(qd, kd, vd, window=(4096, 0), progress=False)
    torch.cuda.synchronize()
    ref = chunked_reference(q, k, v, window=(4096, 0))
    err = rel(out, ref["out"])
    record("window_crash_131079", err=err, kernels=last_run_stats().kernel_calls)
    assert err <= 2e-2
    # the CUDA context still works afterwards
    small = torch.randn(1, 2, 300, 64, device=DEV, dtype=torch.bfloat16)
    again = attention(small, small, small, causal=True, progress=False)
    assert torch.isfinite(again.float()).all()


def test_transformers_sliding_window_at_an_odd_length_on_the_gpu():
    transformers = pytest.importorskip("transformers")
    from cqs_attention.integrations.transformers import register, unregister

    seq, window = 1031, 256
    cfg = transformers.MistralConfig(vocab_size=97, hidden_size=64, intermediate_size=128,
                                     num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, max_position_embeddings=2048,
                                     sliding_window=window, head_dim=16)
    register("cqs_gpu_test")
    try:
        torch.manual_seed(0)
        base = transformers.AutoModelForCausalLM.from_config(
            cfg, attn_implementation="eager", dtype=torch.float32).to(DEV)
        ours = transformers.AutoModelForCausalLM.from_config(
            cfg, attn_implementation="cqs_gpu_test", dtype=torch.float32).to(DEV)
        ours.load_state_dict(base.state_dict())
        ids = torch.randint(0, 97, (2, seq), generator=torch.Generator().manual_seed(1)).to(DEV)
        with torch.no_grad():
            ref = base(input_ids=ids).logits
            got = ours(input_ids=ids).logits
        err = rel(got, ref)
        record("transformers_mistral_swa_gpu", seq=seq, window=window, err=err,
               kernels=last_run_stats().kernel_calls)
        assert err < 1e-4
    finally:
        unregister("cqs_gpu_test")
