"""pbsattn: dense and Permuted Block-Sparse Attention on any OpenCL device, from Python.

    import numpy as np, pbsattn
    with pbsattn.Context() as ctx:                # or pbsattn.Context.from_pyopencl(queue)
        o = ctx.dense_attention(q, k, v)          # numpy in, numpy out
        o = ctx.attention(q, k, v, threshold=0.9) # PBS attention
        pi = ctx.permutation(q, k)                # and the stages
        counts, blocks = ctx.block_selection(q, k, pi)
        o = ctx.sparse_attention(q, k, v, counts, blocks, pi)

`pbsattn.reference` has the float64 CPU reference of the same operations.
"""
from ._native import PbsaError, lib as _lib
from .context import Context, pbs_params
from . import reference

__all__ = ["Context", "PbsaError", "pbs_params", "reference", "version"]


def version():
    """The version of the loaded libpbsattn."""
    return _lib.pbsa_version_string().decode()
