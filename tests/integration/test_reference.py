"""Every fast path equals `flowroutes.reference` (the paper's equations part by part, in float64): the numba,
torch and batched paths on every family's tiny model, and the routes walk edge for edge."""

import numpy as np
import pytest
import torch

import flowroutes
from flowroutes import reference
from flowroutes.errors import FlowroutesError
from tests.helpers.families import FAMILIES, tiny_family
from tests.helpers.models import word_tokenizer
from tests.helpers.tolerances import IMPORTANCE_ABS, OTHER_PATH

IDS = torch.tensor([5, 17, 3, 17, 40, 8, 22, 5, 61, 2])
ARRAYS = ("attention", "attention_residual", "ffn", "ffn_residual")


def edge_keys(routes) -> dict[tuple, float]:
    """A Routes in the reference walk's terms: {(kind, block, source, target, head): weight}."""
    nodes = {n.id: n for n in routes.nodes}
    out = {}
    for e in routes.edges:
        src, tgt = nodes[e.source].position, nodes[e.target].position
        if e.kind == "attention":
            out |= {("attention", e.layer, src, tgt, h): w for h, w in e.heads.items()}
        elif e.kind == "residual" and nodes[e.target].kind == "residual" and not routes.parallel[e.layer]:
            out[("ffn-residual", e.layer, src, tgt, None)] = e.weight  # x^{lA} -> x^{l+1}
        else:
            out[(e.kind, e.layer, src, tgt, None)] = e.weight
    return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fast_paths_equal_the_reference(family):
    loaded = flowroutes.load_model(tiny_family(family), tokenizer=word_tokenizer())
    ref = flowroutes.trace(loaded, input_ids=IDS, kernel="reference")
    assert ref.attention.dtype == np.float64 and ref.meta["kernel"] == "reference"
    batched = flowroutes.trace(loaded, input_ids=[IDS, IDS[:6]])  # the batch path, one prompt shorter
    for got in (flowroutes.trace(loaded, input_ids=IDS), flowroutes.trace(loaded, input_ids=IDS, kernel="torch"),
                batched[0]):
        for name in ARRAYS:
            np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=0, atol=IMPORTANCE_ABS,
                                       err_msg=f"{family} {name}")
        assert np.array_equal(got.degenerate_attention, ref.degenerate_attention)
        assert np.array_equal(got.degenerate_ffn, ref.degenerate_ffn)
    short = flowroutes.trace(loaded, input_ids=IDS[:6], kernel="reference")
    np.testing.assert_allclose(batched[1].attention, short.attention, rtol=0, atol=IMPORTANCE_ABS)
    parallel = [ref.is_parallel(b) for b in range(ref.n_layers)]
    for position, tau in ((-1, 0.04), (4, 0.1)):
        routes = flowroutes.trace(loaded, input_ids=IDS).routes(tau, position)
        want = reference.walk(ref.attention, ref.attention_residual, ref.ffn, ref.ffn_residual,
                              position % len(IDS), tau, tau, True, parallel)
        got = edge_keys(routes)
        assert got.keys() == want.keys(), family
        assert got == pytest.approx(want, abs=OTHER_PATH), family  # float32 importances, renormalised


def test_each_trace_says_which_backend_computed_it():
    """One backend choice (`importance.backend`), recorded in every trace's meta: on this CPU "auto" is the fused
    numba kernel, float64 goes to the torch path, a named kernel is the one used; a float32 kernel cannot give
    float64 importances."""
    loaded = flowroutes.load_model(tiny_family("llama"), tokenizer=word_tokenizer())
    got = {(k, p): flowroutes.trace(loaded, input_ids=IDS, kernel=k, precision=p).meta["backend"]
           for k, p in (("auto", "float32"), ("auto", "float64"), ("torch", "float32"), ("reference", "float32"))}
    assert got == {("auto", "float32"): "numba", ("auto", "float64"): "torch", ("torch", "float32"): "torch",
                   ("reference", "float32"): "reference"}
    assert flowroutes.trace(loaded, input_ids=IDS, lazy=True).meta["backend"] == "numba"
    with pytest.raises(FlowroutesError, match="kernel='numba' computes in float32: precision='float64' needs"):
        flowroutes.trace(loaded, input_ids=IDS, kernel="numba", precision="float64")


def test_the_reference_kernel_is_asked_for_by_name():
    loaded = flowroutes.load_model(tiny_family("llama"), tokenizer=word_tokenizer())
    with pytest.raises(FlowroutesError, match="kernel must be one of 'auto', 'numba', 'triton', 'torch', "
                                              "'reference', got 'fast'"):
        flowroutes.trace(loaded, input_ids=IDS, kernel="fast")
    with pytest.raises(FlowroutesError, match="kernel='reference' computes every node exactly"):
        flowroutes.trace(loaded, input_ids=IDS, kernel="reference", lazy=True)
