"""A pbsattn context and the queue its calls run on, with dense attention, PBS attention and the
three PBS stages.

Arrays are [batch, heads, seq, head_dim] (BHSD), C-contiguous: Q [B, Hq, Sq, D], K and V
[B, Hkv, Skv, D], each float32, float16, or bfloat16 bits as uint16 (pass bf16=True, which then
holds for every array); q may differ from k and v in dtype (k and v share one), and the output
takes q's. Each call
takes either numpy arrays (copied to the device, the results copied back as numpy arrays) or
pyopencl arrays of this context's queue (used in place: outputs are new pyopencl arrays, or the
`out` given, and the work is enqueued without waiting for it).
"""
import math

import numpy as np

from . import _native, _opencl
from ._native import lib, check

_PARAMS = ("block_size", "segment_size", "threshold", "causal", "sink", "gqa", "scale")


def pbs_params(**params):
    """The C pbsa_params from the paper's defaults changed by keyword: block_size (128),
    segment_size (256), threshold (0.9), causal (True), sink (True: always keep key block 0),
    gqa ('per-head' or 'shared'), scale (0: 1/sqrt(D))."""
    unknown = set(params) - set(_PARAMS)
    if unknown:
        raise TypeError(f"unknown PBS parameter(s): {', '.join(sorted(unknown))}")
    p = lib.pbsa_params_default()
    for name in ("block_size", "segment_size"):
        if name in params:
            setattr(p, name, int(params[name]))
    for name in ("threshold", "scale"):
        if name in params:
            setattr(p, name, float(params[name]))
    if "causal" in params:
        p.causal = int(bool(params["causal"]))
    if "sink" in params:
        p.force_first_block = int(bool(params["sink"]))
    if "gqa" in params:
        modes = {"per-head": _native.GQA_PER_QUERY_HEAD, "shared": _native.GQA_SHARED_PER_KV_GROUP}
        if params["gqa"] not in modes:
            raise ValueError(f"gqa must be 'per-head' or 'shared', not {params['gqa']!r}")
        p.gqa_mode = modes[params["gqa"]]
    return p


def storage_dtype(dtype, bf16, name):
    """The library's dtype code for a numpy dtype (uint16 holds bfloat16 bits with bf16=True)."""
    dtype = np.dtype(dtype)
    if bf16:
        if dtype != np.uint16:
            raise TypeError(f"{name}: bf16=True needs uint16 arrays of bfloat16 bits, not {dtype}")
        return _native.DTYPE_BF16
    codes = {np.dtype(np.float32): _native.DTYPE_F32, np.dtype(np.float16): _native.DTYPE_F16}
    if dtype not in codes:
        raise TypeError(f"{name}: dtype {dtype} is not float32 or float16 (or uint16 with bf16=True)")
    return codes[dtype]


def _is_pyopencl_array(array):
    return hasattr(array, "base_data") and hasattr(array, "queue")


class Context:
    """A library context (pbsa_context) with a queue.

    Context(device=None) opens a device itself (device: None for $PBSA_DEVICE, else the first GPU,
    else the first device; or 'P:D', an index or a name substring as `pbsa-info` lists them).
    Context.from_pyopencl(queue) runs on the caller's pyopencl queue, context and device instead.
    force_portable and disable_kernel_cache are the options of pbsa_context_create().
    Failures raise PbsaError with the library's message. A context is not for concurrent use by
    several Python threads; close() (or a with block) releases it.
    """

    def __init__(self, device=None, *, force_portable=False, disable_kernel_cache=False,
                 _pyopencl_queue=None):
        self._ctx = None
        self._owned = None
        self._pyopencl_queue = _pyopencl_queue
        if _pyopencl_queue is None:
            cl_ctx, cl_device = _native.c_void_p(), _native.c_void_p()
            selector = device.encode() if device else None
            check(lib.pbsa_helper_create_cl_context(selector, cl_ctx, cl_device))
            try:
                queue = _opencl.create_queue(cl_ctx, cl_device)
            except _native.PbsaError:
                _opencl.release_context(cl_ctx)
                raise
            self._owned = (queue, cl_ctx)
            self._cl_ctx, self._device, self._queue = cl_ctx.value, cl_device.value, queue
        else:
            self._cl_ctx = _pyopencl_queue.context.int_ptr
            self._device = _pyopencl_queue.device.int_ptr
            self._queue = _pyopencl_queue.int_ptr
        options = _native.ContextOptions(struct_size=_native.ctypes.sizeof(_native.ContextOptions),
                                         force_portable=int(force_portable),
                                         disable_kernel_cache=int(disable_kernel_cache))
        ctx = _native.c_void_p()
        status = lib.pbsa_context_create(self._cl_ctx, self._device, options, ctx)
        if status != _native.SUCCESS:
            self.close()
            check(status)
        self._ctx = ctx.value

    @classmethod
    def from_pyopencl(cls, queue, **options):
        """A context on a pyopencl CommandQueue (its context and device); no copies of pyopencl
        arrays are made, and the calls are enqueued on this queue."""
        return cls(_pyopencl_queue=queue, **options)

    def close(self):
        if self._ctx:
            lib.pbsa_context_release(self._ctx)
            self._ctx = None
        if self._owned:
            queue, cl_ctx = self._owned
            _opencl.release_queue(queue)
            _opencl.release_context(cl_ctx)
            self._owned = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    # ---- calls ----------------------------------------------------------------------------------

    def dense_attention(self, q, k, v, *, causal=True, scale=0.0, bf16=False, out=None,
                        lse=False):
        """Dense attention O = softmax(Q K^T * scale [+ causal mask]) V; returns O like Q, or
        with lse=True (O, LSE), LSE float32 [B, Hq, Sq]: each query row's log-sum-exp (natural
        log) of its scaled logits."""
        with _Call(self, bf16) as call:
            tq, tk, tv = call.input("q", q), call.input("k", k), call.input("v", v)
            to = call.output("out", out, q.shape, q.dtype, tensor=True)
            params = _native.DenseParams(causal=int(bool(causal)), scale=float(scale))
            tlse = call.lse(params, q, lse)
            call.run(lib.pbsa_dense_attention, self._ctx, self._queue, tq, tk, tv, to, params,
                     None)
            return (call.result(to), call.result(tlse)) if lse else call.result(to)

    def attention(self, q, k, v, *, bf16=False, out=None, lse=False, **params):
        """PBS attention, the whole pipeline (params: see pbs_params); returns O like Q, or with
        lse=True (O, LSE) as dense_attention does, over the keys each row attends."""
        p = pbs_params(**params)
        with _Call(self, bf16) as call:
            tq, tk, tv = call.input("q", q), call.input("k", k), call.input("v", v)
            to = call.output("out", out, q.shape, q.dtype, tensor=True)
            tlse = call.lse(p, q, lse)
            call.run(lib.pbsa_attention, self._ctx, self._queue, tq, tk, tv, to, p, None, None)
            return (call.result(to), call.result(tlse)) if lse else call.result(to)

    def permutation(self, q, k, *, bf16=False, out=None, **params):
        """Stage 1: the segmented key permutation pi, int32 [B, Hp, Skv] (Hp = Hq per head,
        Hkv shared); pi[p] is the original index of the key at permuted position p."""
        p = pbs_params(**params)
        with _Call(self, bf16) as call:
            tq, tk = call.input("q", q), call.input("k", k)
            hp = q.shape[1] if p.gqa_mode == _native.GQA_PER_QUERY_HEAD else k.shape[1]
            pi = call.output("out", out, (q.shape[0], hp, k.shape[2]), np.int32)
            call.run(lib.pbsa_permutation, self._ctx, self._queue, tq, tk, p, pi.mem, pi.offset,
                     None, None)
            return call.result(pi)

    def block_selection(self, q, k, pi, *, bf16=False, **params):
        """Stage 2: the key blocks each query block attends to, from pi; returns (counts int32
        [B, Hq, nqb], blocks int32 [B, Hq, nqb, nkb]), the first counts[...] entries of each row
        of blocks being the block indices (nqb = ceil(Sq / block), nkb = ceil(Skv / block))."""
        p = pbs_params(**params)
        with _Call(self, bf16) as call:
            tq, tk = call.input("q", q), call.input("k", k)
            tpi = call.input("pi", pi, int_array=True)
            nqb, nkb = (math.ceil(s / p.block_size) for s in (q.shape[2], k.shape[2]))
            counts = call.output("counts", None, q.shape[:2] + (nqb,), np.int32)
            blocks = call.output("blocks", None, q.shape[:2] + (nqb, nkb), np.int32)
            lists = _native.BlockList(counts.mem, blocks.mem, counts.offset, blocks.offset)
            call.run(lib.pbsa_block_selection, self._ctx, self._queue, tq, tk, p, tpi.mem,
                     tpi.offset, lists, None, None)
            return call.result(counts), call.result(blocks)

    def sparse_attention(self, q, k, v, counts, blocks, pi=None, *, bf16=False, out=None,
                         **params):
        """Stage 3: attention of each query block over the listed key blocks, through pi (None:
        the identity); counts and blocks as block_selection returns them. Returns O like Q."""
        p = pbs_params(**params)
        with _Call(self, bf16) as call:
            tq, tk, tv = call.input("q", q), call.input("k", k), call.input("v", v)
            tcounts = call.input("counts", counts, int_array=True)
            tblocks = call.input("blocks", blocks, int_array=True)
            tpi = call.input("pi", pi, int_array=True) if pi is not None else None
            to = call.output("out", out, q.shape, q.dtype, tensor=True)
            lists = _native.BlockList(tcounts.mem, tblocks.mem, tcounts.offset, tblocks.offset)
            call.run(lib.pbsa_sparse_attention, self._ctx, self._queue, tq, tk, tv, to, p,
                     tpi.mem if tpi else None, tpi.offset if tpi else 0, lists, None)
            return call.result(to)


class _Operand:
    """An array on the device: its buffer, element offset, tensor descriptor and, for numpy
    outputs, the host array the result is read into."""

    def __init__(self, array, mem, offset, host=None):
        self.array, self.mem, self.offset, self.host = array, mem, offset, host
        self.tensor = None


class _Call:
    """One call's arrays: numpy ones copied through buffers released at the end, pyopencl ones
    used in place. All the arrays of a call are of one kind."""

    def __init__(self, context, bf16):
        if context._ctx is None:
            raise ValueError("the context is closed")
        self.context, self.bf16 = context, bf16
        self.kind = None
        self.buffers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for mem in self.buffers:
            _opencl.release_buffer(mem)

    def _kind(self, name, array):
        kind = "pyopencl" if _is_pyopencl_array(array) else "numpy"
        if self.kind and kind != self.kind:
            raise TypeError(f"{name} is a {kind} array but the call's other arrays are {self.kind}")
        self.kind = kind
        if kind == "pyopencl" and array.context.int_ptr != self.context._cl_ctx:
            raise ValueError(f"{name} is an array of another OpenCL context than the Context's")
        return kind

    def input(self, name, array, int_array=False):
        if self._kind(name, array) == "numpy":
            array = np.ascontiguousarray(array)
        elif not array.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous")
        if int_array:
            if array.dtype != np.int32:
                raise TypeError(f"{name} must be int32, not {array.dtype}")
        elif array.ndim != 4:
            raise ValueError(f"{name} must have 4 dimensions [batch, heads, seq, head_dim], "
                             f"not {array.ndim}")
        if self.kind == "numpy":
            operand = _Operand(array, _opencl.buffer_from(self.context._cl_ctx, array), 0)
            self.buffers.append(operand.mem)
        else:
            operand = _Operand(array, array.base_data.int_ptr, array.offset // array.dtype.itemsize)
        if int_array:
            return operand
        return self._describe(name, operand)

    def output(self, name, out, shape, dtype, tensor=False):
        shape, dtype = tuple(shape), np.dtype(dtype)
        if out is not None:
            self._kind(name, out)
            if tuple(out.shape) != shape or out.dtype != dtype:
                raise ValueError(f"{name} must be {dtype} of shape {shape}, not {out.dtype} of "
                                 f"shape {tuple(out.shape)}")
            if not out.flags.c_contiguous:
                raise ValueError(f"{name} must be C-contiguous")
        if self.kind == "pyopencl":
            if out is None:
                import pyopencl.array
                out = pyopencl.array.empty(self.context._pyopencl_queue, shape, dtype)
            operand = _Operand(out, out.base_data.int_ptr, out.offset // dtype.itemsize)
        else:
            host = out if out is not None else np.empty(shape, dtype)
            mem = _opencl.empty_buffer(self.context._cl_ctx, host.nbytes)
            self.buffers.append(mem)
            operand = _Operand(host, mem, 0, host)
        return self._describe(name, operand) if tensor else operand

    def lse(self, params, q, wanted):
        """When wanted, a float32 [B, Hq, Sq] output for the log-sum-exp of q's rows, set in
        params (DenseParams or Params); else None."""
        if not wanted:
            return None
        operand = self.output("lse", None, q.shape[:3], np.float32)
        params.lse, params.lse_offset = operand.mem, operand.offset
        return operand

    def _describe(self, name, operand):
        b, h, s, d = operand.array.shape
        operand.tensor = _native.Tensor(
            buffer=operand.mem, offset=operand.offset,
            dtype=storage_dtype(operand.array.dtype, self.bf16, name),
            batch=b, heads=h, seq=s, head_dim=d,
            stride_batch=h * s * d, stride_head=s * d, stride_seq=d)
        return operand

    def run(self, function, *args):
        args = [a.tensor if isinstance(a, _Operand) else a for a in args]
        check(function(*args), self.context._ctx)

    def result(self, operand):
        if self.kind == "numpy":
            _opencl.read(self.context._queue, operand.mem, operand.host)
        return operand.array
