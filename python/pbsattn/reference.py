"""The library's float64 CPU reference (include/pbsattn_ref.h) on numpy arrays: the results the
device calls are checked against."""
import ctypes
import math

import numpy as np

from . import _native
from ._native import lib, check
from .context import pbs_params, storage_dtype


def _host(name, array, bf16):
    array = np.ascontiguousarray(array)
    if array.ndim != 4:
        raise ValueError(f"{name} must have 4 dimensions [batch, heads, seq, head_dim]")
    b, h, s, d = array.shape
    tensor = _native.HostTensor(data=array.ctypes.data, dtype=storage_dtype(array.dtype, bf16, name),
                                batch=b, heads=h, seq=s, head_dim=d,
                                stride_batch=h * s * d, stride_head=s * d, stride_seq=d)
    return array, tensor


def dense_attention(q, k, v, *, causal=True, scale=0.0, bf16=False):
    """Dense attention in float64 with the semantics of Context.dense_attention."""
    (q, tq), (k, tk), (v, tv) = (_host(n, a, bf16) for n, a in (("q", q), ("k", k), ("v", v)))
    out = np.empty(q.shape, np.float64)
    params = _native.DenseParams(causal=int(bool(causal)), scale=float(scale))
    check(lib.pbsa_ref_dense_attention(tq, tk, tv, params, out.ctypes.data))
    return out


def pbs_attention(q, k, v, *, bf16=False, **params):
    """PBS attention in float64: returns (out float64 like q, pi int32 [B, Hp, Skv], mask bool
    [B, Hq, nqb, nkb] of the selected key blocks)."""
    p = pbs_params(**params)
    (q, tq), (k, tk), (v, tv) = (_host(n, a, bf16) for n, a in (("q", q), ("k", k), ("v", v)))
    hp = q.shape[1] if p.gqa_mode == _native.GQA_PER_QUERY_HEAD else k.shape[1]
    nqb, nkb = (math.ceil(s / p.block_size) for s in (q.shape[2], k.shape[2]))
    out = np.empty(q.shape, np.float64)
    pi = np.empty((q.shape[0], hp, k.shape[2]), np.int32)
    mask = np.empty(q.shape[:2] + (nqb, nkb), np.uint8)
    check(lib.pbsa_ref_pbs_attention(tq, tk, tv, ctypes.byref(p), out.ctypes.data,
                                     pi.ctypes.data, mask.ctypes.data))
    return out, pi, mask.astype(bool)


def blocks_to_mask(counts, blocks):
    """The bool mask [B, Hq, nqb, nkb] of block lists as Context.block_selection returns them."""
    counts, blocks = np.asarray(counts), np.asarray(blocks)
    mask = np.zeros(blocks.shape, bool)
    listed = np.arange(blocks.shape[-1]) < counts[..., None]
    index = np.nonzero(listed)
    mask[index[:-1] + (blocks[listed],)] = True
    return mask
