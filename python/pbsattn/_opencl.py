"""The few OpenCL calls the package makes itself: a queue on a device it opened, and buffers that
carry numpy arrays to the device and back."""
import ctypes

from ._native import PbsaError

_cl = ctypes.CDLL("libOpenCL.so.1")
_c = ctypes.c_void_p
_err_p = ctypes.POINTER(ctypes.c_int32)
_signatures = {
    "clCreateCommandQueue": (_c, [_c, _c, ctypes.c_uint64, _err_p]),
    "clCreateBuffer": (_c, [_c, ctypes.c_uint64, ctypes.c_size_t, _c, _err_p]),
    "clEnqueueReadBuffer": (ctypes.c_int32, [_c, _c, ctypes.c_uint32, ctypes.c_size_t,
                                             ctypes.c_size_t, _c, ctypes.c_uint32, _c, _c]),
    "clFinish": (ctypes.c_int32, [_c]),
    "clReleaseMemObject": (ctypes.c_int32, [_c]),
    "clReleaseCommandQueue": (ctypes.c_int32, [_c]),
    "clReleaseContext": (ctypes.c_int32, [_c]),
}
for _name, (_restype, _argtypes) in _signatures.items():
    getattr(_cl, _name).restype = _restype
    getattr(_cl, _name).argtypes = _argtypes

MEM_READ_WRITE = 1 << 0
MEM_COPY_HOST_PTR = 1 << 5


def _check(err, what):
    if err != 0:
        raise PbsaError(err, f"{what} failed (OpenCL error {err})")


def create_queue(context, device):
    err = ctypes.c_int32(0)
    queue = _cl.clCreateCommandQueue(context, device, 0, ctypes.byref(err))
    _check(err.value, "clCreateCommandQueue")
    return queue


def buffer_from(context, array):
    """A new device buffer holding a copy of the C-contiguous numpy array (released by release)."""
    err = ctypes.c_int32(0)
    flags = MEM_READ_WRITE | (MEM_COPY_HOST_PTR if array.nbytes else 0)
    mem = _cl.clCreateBuffer(context, flags, max(array.nbytes, 1),
                             array.ctypes.data if array.nbytes else None, ctypes.byref(err))
    _check(err.value, "clCreateBuffer")
    return mem


def empty_buffer(context, nbytes):
    err = ctypes.c_int32(0)
    mem = _cl.clCreateBuffer(context, MEM_READ_WRITE, max(nbytes, 1), None, ctypes.byref(err))
    _check(err.value, "clCreateBuffer")
    return mem


def read(queue, mem, array):
    """Blocking read of the whole of array from mem (after the queue's earlier work)."""
    _check(_cl.clEnqueueReadBuffer(queue, mem, 1, 0, array.nbytes, array.ctypes.data, 0, None,
                                   None), "clEnqueueReadBuffer")


def release_buffer(mem):
    _cl.clReleaseMemObject(mem)


def release_queue(queue):
    """Waits for the queue's work, then releases it."""
    _cl.clFinish(queue)
    _cl.clReleaseCommandQueue(queue)


def release_context(context):
    _cl.clReleaseContext(context)
