"""Block classification agrees with the mask definitions; bad masks fail early."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cqs_attention import MaskError
from cqs_attention.kernels.base import block_mask_tensor
from cqs_attention.masks import make_mask_spec, mask_matrix
from tests.attention._differential import allowed_mask

MODS = {
    "none": None,
    "stripes": lambda b, h, i, j: (i + 2 * j + h) % 3 != 0,
    "prefix": lambda b, h, i, j: j < 4 + b,
    "sparse_rows": lambda b, h, i, j: (i % 5 == 0) | (j == i),
    "nothing": lambda b, h, i, j: (i < 0) & (j >= 0),
}


@st.composite
def specs(draw):
    lq = draw(st.integers(1, 40))
    lk = draw(st.integers(1, 40)) if draw(st.booleans()) else lq
    b, h = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    causal = draw(st.booleans())
    window = draw(st.none() | st.tuples(st.none() | st.integers(0, 12),
                                        st.none() | st.integers(0, 12)))
    docs = None
    if draw(st.booleans()):
        def ids(n):
            cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
            return torch.tensor([sum(c <= t for c in cuts) for t in range(n)])
        if lq == lk and draw(st.booleans()):
            docs = torch.stack([ids(lq) for _ in range(b)])
        else:
            docs = (ids(lq), ids(lk))
    mod = MODS[draw(st.sampled_from(sorted(MODS)))]
    return make_mask_spec(lq, lk, batch=b, heads=h, causal=causal, window=window,
                          document_ids=docs, mask_mod=mod)


@given(spec=specs(), data=st.data())
def test_the_mask_matrix_is_the_definition(spec, data):
    """mask_matrix (the band rule of cqs_design's Mask, the one tensor builder) against the
    differential fuzzer's oracle, written from the definitions alone."""
    docs = None
    if spec.q_doc is not None:
        docs = (spec.q_doc, spec.kv_doc)
    want = allowed_mask(spec.batch, spec.heads, spec.q_len, spec.kv_len, causal=spec.causal,
                        window=spec.window, document_ids=docs, mask_mod=spec.mask_mod)
    r0 = data.draw(st.integers(0, spec.q_len - 1))
    r1 = data.draw(st.integers(r0 + 1, spec.q_len))
    for rows, expect in ((None, want), ((r0, r1), want[:, :, r0:r1])):
        got = mask_matrix(spec, rows=rows)
        if got is None:
            assert expect.all()
        else:
            assert torch.equal(got.expand_as(expect), expect)


@given(spec=specs(), data=st.data())
def test_classification_agrees_with_the_mask_matrix(spec, data):
    full = mask_matrix(spec)
    if full is None:
        full = torch.ones(1, 1, spec.q_len, spec.kv_len, dtype=torch.bool)
    full = full.expand(spec.batch, spec.heads, spec.q_len, spec.kv_len)
    q0 = data.draw(st.integers(0, spec.q_len - 1))
    q1 = data.draw(st.integers(q0 + 1, spec.q_len))
    k0 = data.draw(st.integers(0, spec.kv_len - 1))
    k1 = data.draw(st.integers(k0 + 1, spec.kv_len))
    block = full[:, :, q0:q1, k0:k1]
    c = spec.classify(q0, q1, k0, k1)
    if c.kind == "empty":
        assert not block.any()
    elif c.kind == "full":
        assert block.all()
    else:
        assert block.any()
        assert not block.all()
        got = block_mask_tensor(c.mask, q1 - q0, k1 - k0, torch.device("cpu"))
        assert torch.equal(got.expand_as(block), block)


def test_band_blocks_are_analytic_without_dense_masks():
    spec = make_mask_spec(100, 100, batch=1, heads=1, causal=True, window=(10, None))
    c = spec.classify(50, 60, 45, 60)
    assert c.kind == "partial"
    assert c.mask.causal_offset == 5
    # the left edge of the window is analytic too: no L x L tensor for a window mask
    assert (c.mask.lower_offset, c.mask.dense) == (-5, None)
    c2 = make_mask_spec(100, 100, batch=1, heads=1, causal=True).classify(50, 60, 50, 60)
    assert c2.mask.dense is None
    assert c2.mask.causal_offset == 0
    assert spec.classify(50, 60, 0, 30).kind == "empty"


def test_documents_classify_by_min_max():
    docs = torch.tensor([0] * 10 + [1] * 10)
    spec = make_mask_spec(20, 20, batch=1, heads=1, document_ids=docs)
    assert spec.classify(0, 10, 10, 20).kind == "empty"
    assert spec.classify(0, 10, 0, 10).kind == "full"
    assert spec.classify(5, 15, 0, 10).kind == "partial"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"window": (1,)}, "window"),
    ({"window": (-1, 2)}, "window"),
    ({"window": (1.5, 2)}, "window"),
    ({"causal": 1}, "causal"),
    ({"document_ids": torch.zeros(7, dtype=torch.long)}, "document_ids"),
    ({"document_ids": torch.zeros(8)}, "integer"),
    ({"document_ids": [0] * 8}, "document_ids"),
    ({"mask_mod": 3}, "callable"),
    ({"mask_mod": lambda b, h, i, j: i - j}, "bool tensor"),
    ({"mask_mod": lambda b, h, i, j: True}, "bool tensor"),
    ({"mask_mod": lambda b, h, i, j: 1 / 0}, "ZeroDivisionError"),
    ({"mask_mod": lambda b, h, i, j: torch.ones(3, 3, 3, 3, 3, dtype=torch.bool)}, "shape"),
])
def test_bad_masks_raise_mask_error_naming_the_argument(kwargs, match):
    with pytest.raises(MaskError, match=match):
        make_mask_spec(8, 8, batch=1, heads=2, **kwargs)


def test_cross_attention_needs_a_pair_of_document_ids():
    with pytest.raises(MaskError, match="pair"):
        make_mask_spec(8, 9, batch=1, heads=1, document_ids=torch.zeros(8, dtype=torch.long))


@pytest.mark.parametrize(("ids", "shape"), [(torch.zeros(10, dtype=torch.long), "(10,)"),
                                             (torch.zeros(3, 12, dtype=torch.long), "(3, 12)")])
def test_document_ids_shape_error_names_the_shape_given(ids, shape):
    """Issue: ``document_ids`` of shape (10,) was reported as "(1, 10)"."""
    with pytest.raises(MaskError) as info:
        make_mask_spec(12, 12, batch=2, heads=1, document_ids=ids)
    assert str(info.value) == (f"document_ids must have shape (12,) or (2, 12), got {shape}")
