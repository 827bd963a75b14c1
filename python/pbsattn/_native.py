"""ctypes declarations of libpbsattn's C API (include/pbsattn.h and include/pbsattn_ref.h).

The shared library is found through PBSATTN_LIBRARY (a path), else the system's library search
(libpbsattn.so.0 as `meson install` puts it).
"""
import ctypes
import ctypes.util
import os

c_int64 = ctypes.c_int64
c_uint64 = ctypes.c_uint64
c_void_p = ctypes.c_void_p

SUCCESS = 0
DTYPE_F32, DTYPE_F16, DTYPE_BF16 = 0, 1, 2
GQA_PER_QUERY_HEAD, GQA_SHARED_PER_KV_GROUP = 0, 1


class PbsaError(RuntimeError):
    """A pbsattn call failed: status is the library's (or OpenCL's) code, the text its message."""

    def __init__(self, status, message):
        super().__init__(message or f"pbsattn status {status}")
        self.status = status


class Tensor(ctypes.Structure):
    _fields_ = [("buffer", c_void_p), ("offset", c_uint64), ("dtype", ctypes.c_int),
                ("batch", c_int64), ("heads", c_int64), ("seq", c_int64), ("head_dim", c_int64),
                ("stride_batch", c_int64), ("stride_head", c_int64), ("stride_seq", c_int64)]


class HostTensor(ctypes.Structure):
    _fields_ = [("data", c_void_p), ("dtype", ctypes.c_int),
                ("batch", c_int64), ("heads", c_int64), ("seq", c_int64), ("head_dim", c_int64),
                ("stride_batch", c_int64), ("stride_head", c_int64), ("stride_seq", c_int64)]


class ContextOptions(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("force_portable", ctypes.c_int),
                ("disable_kernel_cache", ctypes.c_int)]


# varlen and paged_kv: pointers to pbsa_varlen and pbsa_paged_kv, NULL (off) from Python; lse:
# the log-sum-exp output buffer (Context's lse=True).
class DenseParams(ctypes.Structure):
    _fields_ = [("causal", ctypes.c_int), ("scale", ctypes.c_float),
                ("varlen", c_void_p), ("paged_kv", c_void_p),
                ("lse", c_void_p), ("lse_offset", c_uint64)]


class Params(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("block_size", ctypes.c_int),
                ("segment_size", ctypes.c_int), ("threshold", ctypes.c_float),
                ("causal", ctypes.c_int), ("force_first_block", ctypes.c_int),
                ("gqa_mode", ctypes.c_int), ("scale", ctypes.c_float),
                ("varlen", c_void_p), ("paged_kv", c_void_p),
                ("lse", c_void_p), ("lse_offset", c_uint64)]


class BlockList(ctypes.Structure):
    _fields_ = [("counts", c_void_p), ("blocks", c_void_p), ("counts_offset", c_uint64),
                ("blocks_offset", c_uint64)]


def _load():
    path = os.environ.get("PBSATTN_LIBRARY") or ctypes.util.find_library("pbsattn")
    try:
        return ctypes.CDLL(path or "libpbsattn.so.0")
    except OSError as error:
        raise ImportError(
            "cannot load libpbsattn (install it with `meson install`, or set PBSATTN_LIBRARY "
            f"to the path of libpbsattn.so): {error}") from error


lib = _load()

_P = ctypes.POINTER
_signatures = {
    "pbsa_version_string": (ctypes.c_char_p, []),
    "pbsa_status_string": (ctypes.c_char_p, [ctypes.c_int]),
    "pbsa_context_last_error": (ctypes.c_char_p, [c_void_p]),
    "pbsa_helper_create_cl_context": (ctypes.c_int, [ctypes.c_char_p, _P(c_void_p), _P(c_void_p)]),
    "pbsa_context_create": (ctypes.c_int, [c_void_p, c_void_p, _P(ContextOptions), _P(c_void_p)]),
    "pbsa_context_release": (None, [c_void_p]),
    "pbsa_params_default": (Params, []),
    "pbsa_dense_attention": (ctypes.c_int, [c_void_p, c_void_p, _P(Tensor), _P(Tensor),
                                            _P(Tensor), _P(Tensor), _P(DenseParams), c_void_p]),
    "pbsa_attention": (ctypes.c_int, [c_void_p, c_void_p, _P(Tensor), _P(Tensor), _P(Tensor),
                                      _P(Tensor), _P(Params), c_void_p, c_void_p]),
    "pbsa_permutation": (ctypes.c_int, [c_void_p, c_void_p, _P(Tensor), _P(Tensor), _P(Params),
                                        c_void_p, c_uint64, c_void_p, c_void_p]),
    "pbsa_block_selection": (ctypes.c_int, [c_void_p, c_void_p, _P(Tensor), _P(Tensor),
                                            _P(Params), c_void_p, c_uint64, _P(BlockList),
                                            c_void_p, c_void_p]),
    "pbsa_sparse_attention": (ctypes.c_int, [c_void_p, c_void_p, _P(Tensor), _P(Tensor),
                                             _P(Tensor), _P(Tensor), _P(Params), c_void_p,
                                             c_uint64, _P(BlockList), c_void_p]),
    "pbsa_ref_dense_attention_lse": (ctypes.c_int, [_P(HostTensor), _P(HostTensor),
                                                    _P(HostTensor), _P(DenseParams), c_void_p,
                                                    c_void_p]),
    "pbsa_ref_pbs_attention_lse": (ctypes.c_int, [_P(HostTensor), _P(HostTensor), _P(HostTensor),
                                                  _P(Params), c_void_p, c_void_p, c_void_p,
                                                  c_void_p]),
}
for _name, (_restype, _argtypes) in _signatures.items():
    _function = getattr(lib, _name)
    _function.restype = _restype
    _function.argtypes = _argtypes


def check(status, ctx=None):
    """Raises PbsaError with the library's message when status is not SUCCESS."""
    if status != SUCCESS:
        message = lib.pbsa_context_last_error(ctx)
        raise PbsaError(status, message.decode() if message else
                        lib.pbsa_status_string(status).decode())
