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


def _lse(q, wanted):
    """Room for the log-sum-exp of q's rows, float64 [B, Hq, Sq], when wanted, else None."""
    return np.empty(q.shape[:3], np.float64) if wanted else None


def _address(array):
    return array.ctypes.data if array is not None else None


def dense_attention(q, k, v, *, causal=True, scale=0.0, bf16=False, lse=False):
    """Dense attention in float64 with the semantics of Context.dense_attention: out, or
    (out, lse) with lse=True."""
    (q, tq), (k, tk), (v, tv) = (_host(n, a, bf16) for n, a in (("q", q), ("k", k), ("v", v)))
    out, lse_out = np.empty(q.shape, np.float64), _lse(q, lse)
    params = _native.DenseParams(causal=int(bool(causal)), scale=float(scale))
    check(lib.pbsa_ref_dense_attention_lse(tq, tk, tv, params, out.ctypes.data,
                                           _address(lse_out)))
    return (out, lse_out) if lse else out


def pbs_attention(q, k, v, *, bf16=False, lse=False, **params):
    """PBS attention in float64: returns (out float64 like q, pi int32 [B, Hp, Skv], mask bool
    [B, Hq, nqb, nkb] of the selected key blocks), and with lse=True the log-sum-exp of every
    query row (float64 [B, Hq, Sq]) after them."""
    p = pbs_params(**params)
    (q, tq), (k, tk), (v, tv) = (_host(n, a, bf16) for n, a in (("q", q), ("k", k), ("v", v)))
    hp = q.shape[1] if p.gqa_mode == _native.GQA_PER_QUERY_HEAD else k.shape[1]
    nqb, nkb = (math.ceil(s / p.block_size) for s in (q.shape[2], k.shape[2]))
    out = np.empty(q.shape, np.float64)
    pi = np.empty((q.shape[0], hp, k.shape[2]), np.int32)
    mask = np.empty(q.shape[:2] + (nqb, nkb), np.uint8)
    lse_out = _lse(q, lse)
    check(lib.pbsa_ref_pbs_attention_lse(tq, tk, tv, ctypes.byref(p), out.ctypes.data,
                                         pi.ctypes.data, mask.ctypes.data, _address(lse_out)))
    return (out, pi, mask.astype(bool)) + ((lse_out,) if lse else ())


def blocks_to_mask(counts, blocks):
    """The bool mask [B, Hq, nqb, nkb] of block lists as Context.block_selection returns them."""
    counts, blocks = np.asarray(counts), np.asarray(blocks)
    mask = np.zeros(blocks.shape, bool)
    listed = np.arange(blocks.shape[-1]) < counts[..., None]
    index = np.nonzero(listed)
    mask[index[:-1] + (blocks[listed],)] = True
    return mask
