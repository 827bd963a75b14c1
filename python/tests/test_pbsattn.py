"""The Python package on the default OpenCL device against the library's float64 reference.

Fresh random inputs every run (PBSA_TEST_SEED replays one), outputs poisoned with NaN first so
unwritten elements fail, relative L2 limits of 1e-5 (f32), 1e-3 (f16) and 5e-3 (bf16).
The library is found through PBSATTN_LIBRARY (see .ci/run) or the system's library path.
"""
import os
import time

import numpy as np
import pyopencl as cl
import pyopencl.array as cla
import pytest

import pbsattn

SEED = int(os.environ.get("PBSA_TEST_SEED", time.time_ns() % 2**32))
print(f"PBSA_TEST_SEED={SEED}")
TOLERANCE = {"f32": 1e-5, "f16": 1e-3, "bf16": 5e-3}
# The log-sum-exp, absolute.
LSE_TOLERANCE = {"f32": 1e-5, "f16": 1e-4, "bf16": 1e-4}
# Small PBS shapes: two segments of two blocks each, and a tail.
PBS = dict(block_size=64, segment_size=128)


def rel_l2(out, ref):
    out = np.asarray(out, np.float64)
    return np.linalg.norm(out - ref) / np.linalg.norm(ref)


def to_bf16_bits(x):
    """float32 -> bfloat16 bits (round to nearest even)."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def inputs(request_id, dtype="f32", q_heads=4, kv_heads=2, q_len=320, kv_len=320, head_dim=64):
    rng = np.random.default_rng([SEED, request_id])
    shapes = [(1, q_heads, q_len, head_dim), (1, kv_heads, kv_len, head_dim),
              (1, kv_heads, kv_len, head_dim)]
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    if dtype == "f16":
        return [a.astype(np.float16) for a in arrays]
    if dtype == "bf16":
        return [to_bf16_bits(a) for a in arrays]
    return arrays


def poisoned(shape, dtype):
    return np.full(shape, np.nan, dtype) if dtype != np.uint16 else np.full(shape, 0x7FC0, dtype)


@pytest.fixture(scope="module")
def ctx():
    with pbsattn.Context() as context:
        yield context


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("causal", [True, False])
def test_dense_numpy(ctx, dtype, causal):
    q, k, v = inputs(1, dtype, q_len=200, kv_len=256)
    bf16 = dtype == "bf16"
    out = poisoned(q.shape, q.dtype)
    result = ctx.dense_attention(q, k, v, causal=causal, bf16=bf16, out=out)
    assert result is out
    ref = pbsattn.reference.dense_attention(q, k, v, causal=causal, bf16=bf16)
    values = from_bf16_bits(out) if bf16 else out
    assert not np.isnan(values).any()
    assert rel_l2(values, ref) <= TOLERANCE[dtype]
    # Again with the log-sum-exp: the same output.
    out_again, lse = ctx.dense_attention(q, k, v, causal=causal, bf16=bf16, lse=True)
    np.testing.assert_array_equal(out_again, out)
    _, ref_lse = pbsattn.reference.dense_attention(q, k, v, causal=causal, bf16=bf16, lse=True)
    assert lse.shape == ref_lse.shape and lse.dtype == np.float32
    assert np.abs(lse - ref_lse).max() <= LSE_TOLERANCE[dtype]


def test_mixed_dtypes_numpy(ctx):
    """float32 q and out with float16 k and v, each passed in its own dtype, head dim 80."""
    q, _, _ = inputs(6, "f32", head_dim=80)
    _, k, v = inputs(6, "f16", head_dim=80)
    dense = ctx.dense_attention(q, k, v, out=poisoned(q.shape, q.dtype))
    assert dense.dtype == np.float32
    assert rel_l2(dense, pbsattn.reference.dense_attention(q, k, v)) <= TOLERANCE["f16"]
    out = ctx.attention(q, k, v, out=poisoned(q.shape, q.dtype), **PBS)
    ref_out, _, _ = pbsattn.reference.pbs_attention(q, k, v, **PBS)
    assert rel_l2(out, ref_out) <= TOLERANCE["f16"]


@pytest.mark.parametrize("gqa", ["per-head", "shared"])
def test_pbs_pipeline_and_stages_numpy(ctx, gqa):
    q, k, v = inputs(2)
    ref_out, ref_pi, ref_mask = pbsattn.reference.pbs_attention(q, k, v, gqa=gqa, **PBS)
    assert 0 < ref_mask.mean() < 1  # the test only means something when blocks are skipped

    out, lse = ctx.attention(q, k, v, gqa=gqa, out=poisoned(q.shape, q.dtype), lse=True, **PBS)
    assert rel_l2(out, ref_out) <= TOLERANCE["f32"]
    ref_lse = pbsattn.reference.pbs_attention(q, k, v, gqa=gqa, lse=True, **PBS)[3]
    assert np.abs(lse - ref_lse).max() <= LSE_TOLERANCE["f32"]

    pi = ctx.permutation(q, k, gqa=gqa, out=np.full(ref_pi.shape, -7, np.int32), **PBS)
    np.testing.assert_array_equal(pi, ref_pi)
    counts, blocks = ctx.block_selection(q, k, pi, gqa=gqa, **PBS)
    np.testing.assert_array_equal(pbsattn.reference.blocks_to_mask(counts, blocks), ref_mask)
    sparse = ctx.sparse_attention(q, k, v, counts, blocks, pi, gqa=gqa,
                                  out=poisoned(q.shape, q.dtype), **PBS)
    assert rel_l2(sparse, ref_out) <= TOLERANCE["f32"]


def test_pyopencl_arrays_in_place():
    """The caller's context, queue and buffers: inputs and output are views at offsets into
    larger buffers, and nothing outside the output view is written."""
    cl_ctx = cl.create_some_context(interactive=False)
    queue = cl.CommandQueue(cl_ctx)
    q, k, v = inputs(3)
    # Each tensor is the second half of a buffer whose first half holds other data.
    device = []
    for a in (q, k, v):
        whole = cla.to_device(queue, np.stack([np.ones_like(a), a]))
        device.append(whole[1])
    out_whole = cla.to_device(queue, np.full((2,) + q.shape, np.nan, np.float32))
    out_view = out_whole[1]
    with pbsattn.Context.from_pyopencl(queue) as ctx:
        result = ctx.attention(*device, out=out_view, **PBS)
        assert result is out_view
        pi = ctx.permutation(device[0], device[1], **PBS)
        assert isinstance(pi, cla.Array)
        counts, blocks = ctx.block_selection(device[0], device[1], pi, **PBS)
        sparse = ctx.sparse_attention(*device, counts, blocks, pi, **PBS)
        dense = ctx.dense_attention(*device)
    host = out_whole.get()
    assert np.isnan(host[0]).all()
    ref_out, ref_pi, _ = pbsattn.reference.pbs_attention(q, k, v, **PBS)
    assert rel_l2(host[1], ref_out) <= TOLERANCE["f32"]
    np.testing.assert_array_equal(pi.get(), ref_pi)
    assert rel_l2(sparse.get(), ref_out) <= TOLERANCE["f32"]
    assert rel_l2(dense.get(), pbsattn.reference.dense_attention(q, k, v)) <= TOLERANCE["f32"]


def test_library_errors_are_raised_with_its_message(ctx):
    q, k, v = inputs(4)
    with pytest.raises(pbsattn.PbsaError, match="k.head_dim = 32 differs from q.head_dim = 64") \
            as error:
        ctx.dense_attention(q, k[..., :32], v)
    assert error.value.status == 1002  # PBSA_ERROR_SHAPE_MISMATCH
    with pytest.raises(pbsattn.PbsaError, match="segment_size") as error:
        ctx.attention(q, k, v, block_size=64, segment_size=96)
    assert error.value.status == 1001  # PBSA_ERROR_INVALID_VALUE
    with pytest.raises(pbsattn.PbsaError, match="no-such-device"):
        pbsattn.Context("no-such-device")


def test_python_side_errors(ctx):
    q, k, v = inputs(5)
    with pytest.raises(ValueError, match="q must have 4 dimensions"):
        ctx.dense_attention(q[0], k, v)
    with pytest.raises(TypeError, match="float64"):
        ctx.dense_attention(q.astype(np.float64), k, v)
    with pytest.raises(TypeError, match="unknown PBS parameter"):
        ctx.attention(q, k, v, blocksize=64)
    with pytest.raises(ValueError, match="gqa"):
        ctx.permutation(q, k, gqa="grouped")
    with pytest.raises(ValueError, match="out must be"):
        ctx.dense_attention(q, k, v, out=np.empty((1, 1, 1, 1), np.float32))
