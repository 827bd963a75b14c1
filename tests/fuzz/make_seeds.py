#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/.

Usage: make_seeds.py [OUTPUT_DIR]   (default: the corpus folder beside this script)
The params seeds follow the input format decoded by fuzz_params.c: keep the two in step.
"""
import os
import struct
import sys

INT_TABLE = [
    0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 80, 96, 100, 127, 128, 129, 192,
    255, 256, 257, 300, 511, 512, 513, 1000, 1024, 4096, 65536, 1 << 20, 1 << 24, 1 << 30,
    2**31 - 2, 2**31 - 1, 2**31, 2**32 - 1, 1 << 40, (2**63 - 1) // 2, 2**63 - 2, 2**63 - 1,
    -1, -2, -16, -64, -2**31, -2**63,
]
FLOAT_TABLE = [0.0, 0.125, 0.5, 0.9, 1.0, 1.5, 2.0, -0.0, -1.0, 1e-30, 1e30, 1e-45, "nan", "-nan",
               "inf", "-inf"]
NULL, SMALL, MEDIUM, BIG, FOREIGN, VIEW = range(6)
F32, F16, BF16 = 0, 1, 2


def i(value):
    """An int field: a table index, or 0xff and 8 raw bytes."""
    if value in INT_TABLE:
        return bytes([INT_TABLE.index(value)])
    return bytes([0xfe]) + struct.pack("<q", value)


def f(value):
    if value in FLOAT_TABLE:
        return bytes([FLOAT_TABLE.index(value)])
    return bytes([0xfe]) + struct.pack("<f", value)


def tensor(buffer, dtype, b, h, s, d, layout=0, strides=None, offset=0):
    out = bytes([buffer, (dtype + 1) & 0xff]) + i(b) + i(h) + i(s) + i(d) + bytes([layout])
    if layout == 2:
        out += b"".join(i(x) for x in strides)
    return out + i(offset)


def params(block=32, segment=64, threshold=0.9, causal=1, sink=1, gqa=0, scale=0.0, size=0):
    head = bytes([size]) if size in (0, 1) else bytes([2]) + i(size)
    return (head + i(block) + i(segment) + f(threshold) + bytes([causal, sink]) + i(gqa) +
            f(scale))


def call(q, k, v, o, p, dense_causal=1, dense_scale=0.0, nulls=0, pi=BIG, counts=BIG,
         blocks=BIG, workspace=BIG, pi_offset=0, counts_offset=0, blocks_offset=0, part=1,
         capacity=64):
    return (q + k + v + o + p + bytes([dense_causal]) + f(dense_scale) +
            bytes([nulls, pi, counts, blocks, workspace]) + i(pi_offset) + i(counts_offset) +
            i(blocks_offset) + i(part) + struct.pack("<H", capacity))


def params_seeds():
    # q [1, 2, 64, 64] f32 in the 64 KiB buffer; k, v, o in the 1 MiB one, apart.
    q = tensor(MEDIUM, F32, 1, 2, 64, 64)
    k = tensor(BIG, F32, 1, 1, 128, 64)
    v = tensor(BIG, F32, 1, 1, 128, 64, offset=8192)
    o = tensor(BIG, F32, 1, 2, 64, 64, offset=16384)
    p = params()
    seeds = {
        "valid_f32_gqa": call(q, k, v, o, p),
        "valid_bshd_f16": call(tensor(MEDIUM, F16, 1, 2, 64, 128, layout=1),
                               tensor(BIG, F16, 1, 2, 64, 128, layout=1),
                               tensor(BIG, F16, 1, 2, 64, 128, layout=1, offset=16384),
                               tensor(BIG, F16, 1, 2, 64, 128, layout=1, offset=65536),
                               params(block=16, segment=32, gqa=1)),
        "strided_bf16": call(tensor(MEDIUM, BF16, 2, 1, 32, 96, layout=2, strides=[4096, 4096, 100]),
                             tensor(BIG, BF16, 2, 1, 64, 96, layout=2, strides=[8192, 0, 128]),
                             tensor(BIG, BF16, 2, 1, 64, 96, layout=2, strides=[8192, 0, 128],
                                    offset=65536),
                             tensor(BIG, BF16, 2, 1, 32, 96, layout=2, strides=[4096, 4096, 96],
                                    offset=1 << 20 // 2),
                             params(block=16, segment=16, causal=0)),
        "head_dim_80": call(tensor(MEDIUM, F32, 1, 2, 64, 80), k, v, o, p),
        "o_overlaps_k": call(q, k, v, tensor(BIG, F32, 1, 2, 64, 64, offset=4096), p),
        "buffer_too_small": call(tensor(SMALL, F32, 1, 2, 64, 64), k, v, o, p),
        "foreign_buffer": call(q, tensor(FOREIGN, F32, 1, 1, 128, 64), v, o, p),
        "sub_buffer": call(tensor(VIEW, F32, 1, 1, 32, 64), k, v, o, p),
        "nulls": call(q, k, v, o, p, nulls=0x7f),
        "bad_params": call(q, k, v, o, params(block=48, segment=0, threshold="nan", gqa=7,
                                              scale=-1.0, size=3)),
        "bad_dtype": call(tensor(MEDIUM, 7, 1, 2, 64, 64), k, v, o, p),
        "overflow": call(tensor(BIG, F32, 2**31 - 1, 2**31 - 1, 2**31 - 1, 64, layout=2,
                                strides=[2**63 - 1, 2**62, 2**40], offset=2**63 - 2), k, v, o, p),
        "chunked_misaligned": call(tensor(MEDIUM, F32, 1, 2, 48, 64), k, v,
                                   tensor(BIG, F32, 1, 2, 48, 64, offset=16384), p),
        "workspace_read_parts": call(q, k, v, o, p, part=2, capacity=4096, workspace=BIG),
        "pi_offsets": call(q, k, v, o, p, pi=SMALL, pi_offset=2**63 - 1, counts_offset=-1,
                           blocks_offset=2**40),
    }
    return seeds


def npy(major, header, data, pad=True):
    prefix = 10 if major == 1 else 12
    text = header.encode()
    total = (prefix + len(text) + 1 + 63) // 64 * 64 if pad else prefix + len(text) + 1
    length = total - prefix
    head = b"\x93NUMPY" + bytes([major, 0])
    head += struct.pack("<H", length) if major == 1 else struct.pack("<I", length)
    return head + text + b" " * (length - len(text) - 1) + b"\n" + data


def npy_seeds():
    return {
        "f4_1d.npy": npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
                         struct.pack("<3f", 1.0, -2.0, 3.5)),
        "f2_2d.npy": npy(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 2), }",
                         bytes(8)),
        "u2_4d_v2.npy": npy(2, "{'descr': '<u2', 'fortran_order': False, 'shape': (1, 2, 1, 2)}",
                            bytes(8)),
        "i4_scalar_v3.npy": npy(3, '{"descr": "<i4", "fortran_order": False, "shape": ()}',
                                struct.pack("<i", 7)),
        "b1_empty.npy": npy(1, "{'shape': (0,), 'fortran_order': False, 'descr': '|b1'}", b""),
        "unpadded.npy": npy(1, "{'descr':'<f4','fortran_order':False,'shape':(1,1,)}",
                            bytes(4), pad=False),
        "fortran.npy": npy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }",
                           bytes(4)),
        "truncated.npy": npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }",
                             bytes(15)),
        "big_shape.npy": npy(1, "{'descr': '<f4', 'fortran_order': False, "
                                "'shape': (4294967296, 4294967296, 4294967296), }", b""),
    }


def selector_seeds():
    return {name: text.encode() for name, text in {
        "index": "0", "pair": "0:0", "name": "pthread", "platform": "portable", "far": "99:0",
        "colon_only": ":", "trailing_colon": "0:", "long_index": "1234567", "spaces": " 0 ",
    }.items()}


def tuning_seeds():
    entry = ("entry kernel=dense dtype=bf16 head_dim=128 block=0 causal=1 block_m=64 block_n=64 "
             "wg_rows=8 wg_cols=16 kchunk=16 vchunk=16 unroll_qk=16 unroll_pv=16 ms=21.5 "
             "default_ms=22.9 seq=4096 heads=32 kv_heads=8")
    mma = ("entry kernel=dense_mma dtype=bf16 head_dim=128 block=0 causal=1 warps=4 groups=1 "
           "keys=64 stages=2 ms=12.5 default_ms=13.1 seq=8192 heads=32 kv_heads=8")
    head = ("pbsattn-tuning 1\nplatform NVIDIA CUDA\ndevice NVIDIA H100 80GB HBM3\n"
            "driver 550.54.15\ngenerator pbsa-tune 0.1.0 --quick\ndate 2026-01-31T12:00:00Z\n")
    return {name: text.encode() for name, text in {
        "full.txt": "# a comment\n" + head + entry + "\n" +
                    entry.replace("kernel=dense", "kernel=sparse").replace("block=0", "block=64") +
                    "\n",
        "crlf_tabs.txt": (head + entry + "\n").replace("\n", " \r\n").replace(" ", "\t", 3),
        "header_only.txt": head,
        "older.txt": "pbsattn-tuning 0\nplatform x\ndevice y\n",
        "newer.txt": "pbsattn-tuning 99\nplatform x\ndevice y\n",
        "bad_value.txt": head + entry.replace("wg_rows=8", "wg_rows=-8") + "\n",
        "amd_name.txt": head.replace("NVIDIA H100 80GB HBM3", "gfx90a:sramecc+:xnack-"),
        "mma.txt": head + mma + "\n" +
                   mma.replace("kernel=dense_mma", "kernel=sparse_mma")
                      .replace("block=0", "block=128") + "\n",
    }.items()}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus")
    for target, seeds in (("params", params_seeds()), ("npy", npy_seeds()),
                          ("selector", selector_seeds()), ("tuning", tuning_seeds())):
        folder = os.path.join(out, target)
        os.makedirs(folder, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(folder, name), "wb") as seed:
                seed.write(data)


if __name__ == "__main__":
    main()
