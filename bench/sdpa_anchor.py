#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention timed on one CUDA GPU: the anchor that pbsattn's dense
and PBS times are read against. Causal prefill, batch 1, the shape and storage type of
pbsa-bench-pbs, CUDA events after warm-up, median of the timed calls; FLOPs counted as
pbsa-bench-dense counts them (4 * H * S * S * D / 2 for causal attention).

Inputs: Q, K and V from .npy files (pbsa-bench-pbs --dump-inputs DIR writes DIR/q.npy, k.npy,
v.npy; pbsa-run's format: [1, H, S, D], '<f4', '<f2', or '<u2' holding bfloat16 bits) at the
length they have, random normal values at the other lengths.

    python3 bench/sdpa_anchor.py --preset llama3-8b --lengths 8192,16384,32768 \\
        --inputs DIR --json h100-sdpa-bf16.json

Grouped-query attention (--gqa): native (enable_gqa=True), repeat (K and V repeated per query
head once, before timing), or best (both timed, the faster reported; the default).
Exit status: 0, 1 when a length failed, 2 on bad inputs or without PyTorch or a CUDA device.
"""
import argparse
import datetime
import json
import os
import shlex
import statistics
import sys

PRESETS = {"llama3-8b": (32, 8, 128), "qwen2.5-7b": (28, 4, 128)}
DTYPES = ("bf16", "f16", "f32")


def add_input_options(ap):
    """The options that say which inputs to run on (shared with bench/triton_anchor.py)."""
    ap.add_argument("--lengths", default="8192,16384,32768",
                    help="comma-separated sequence lengths (default 8192,16384,32768)")
    ap.add_argument("--preset", choices=sorted(PRESETS), help="shape of a model's attention")
    ap.add_argument("--heads", type=int, help="query heads (default 32)")
    ap.add_argument("--kv-heads", type=int, help="key/value heads (default: --heads)")
    ap.add_argument("--head-dim", type=int, help="head dim (default 128)")
    ap.add_argument("--dtype", choices=DTYPES, default="bf16")
    ap.add_argument("--inputs", metavar="DIR", help="q.npy, k.npy and v.npy in DIR")
    ap.add_argument("--q", help="Q .npy (with --k and --v, instead of --inputs)")
    ap.add_argument("--k")
    ap.add_argument("--v")


def add_run_options(ap):
    """Warm-up, repeats, seed and the JSON file (shared with bench/triton_anchor.py)."""
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int,
                    help="timed calls per length (default 10 up to 32768 tokens, then 5)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="also write the results as JSON here")


def resolve_input_options(ap, args):
    """Fills the shape from --preset and the defaults, parses --lengths, checks the inputs."""
    heads, kv_heads, head_dim = PRESETS.get(args.preset, (32, None, 128))
    args.heads = args.heads or heads
    args.kv_heads = args.kv_heads or kv_heads or args.heads
    args.head_dim = args.head_dim or head_dim
    args.lengths = [int(x) for x in args.lengths.split(",") if x]
    if args.inputs:
        if args.q or args.k or args.v:
            ap.error("--inputs or --q/--k/--v, not both")
        args.q, args.k, args.v = (os.path.join(args.inputs, n) for n in ("q.npy", "k.npy", "v.npy"))
    if (args.q is None) != (args.k is None) or (args.q is None) != (args.v is None):
        ap.error("--q, --k and --v go together")
    if args.heads % args.kv_heads:
        ap.error("--kv-heads must divide --heads")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_input_options(ap)
    ap.add_argument("--gqa", choices=("best", "native", "repeat"), default="best")
    ap.add_argument("--backend", choices=("auto", "flash", "efficient", "cudnn", "math"),
                    default="auto", help="restrict SDPA to one backend (default: PyTorch picks)")
    add_run_options(ap)
    args = ap.parse_args()
    resolve_input_options(ap, args)
    return args


class InputError(Exception):
    """Bad .npy inputs: the scripts report it and exit with status 2."""


def load_npy(torch, args, device="cuda"):
    """Q, K, V from the .npy files, on the device; checks them against the options. Raises
    InputError."""
    import numpy as np

    loaded = []
    for path in (args.q, args.k, args.v):
        a = np.load(path)
        if a.dtype == np.uint16:
            t, dtype = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16), "bf16"
        elif a.dtype in (np.float16, np.float32):
            t, dtype = torch.from_numpy(a), "f16" if a.dtype == np.float16 else "f32"
        else:
            raise InputError(f"{path}: dtype {a.dtype} is not '<f4', '<f2' or '<u2' "
                             "(bfloat16 bits)")
        if a.ndim != 4 or a.shape[0] != 1:
            raise InputError(f"{path}: shape {a.shape} is not [1, H, S, D]")
        loaded.append(t.to(device))
    q, k, v = loaded
    want = ((args.heads, args.head_dim), (args.kv_heads, args.head_dim))
    got = ((q.shape[1], q.shape[3]), (k.shape[1], k.shape[3]))
    if got != want or k.shape != v.shape or q.shape[2] != k.shape[2] or dtype != args.dtype:
        raise InputError(f"the .npy inputs (Q {list(q.shape)}, K {list(k.shape)}, V "
                         f"{list(v.shape)}, {dtype}) do not match heads {args.heads}/"
                         f"{args.kv_heads}, D {args.head_dim}, {args.dtype}")
    return q, k, v


def import_cuda_torch(program):
    """torch, or None after saying on stderr why it cannot run (not importable, no CUDA)."""
    try:
        import torch
    except ImportError as e:
        print(f"{program}: PyTorch is not importable ({e})", file=sys.stderr)
        return None
    if not torch.cuda.is_available():
        print(f"{program}: PyTorch sees no CUDA device", file=sys.stderr)
        return None
    return torch


def torch_dtype(torch, name):
    return {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[name]


def inputs_at(torch, args, npy, seq, gen, device="cuda"):
    """Q, K, V at length seq and where they come from: the .npy inputs when they have that
    length, else random normal values drawn from gen (Q, then K, then V)."""
    if npy and npy[0].shape[2] == seq:
        return (*npy, "npy")
    dtype = torch_dtype(torch, args.dtype)
    q = torch.randn(1, args.heads, seq, args.head_dim, dtype=dtype, device=device, generator=gen)
    k, v = (torch.randn(1, args.kv_heads, seq, args.head_dim, dtype=dtype, device=device,
                        generator=gen) for _ in range(2))
    return q, k, v, "random"


def run_info(torch):
    """The fields that start every anchor's JSON after "benchmark": when, how, where."""
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command_line": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
        "device_name": torch.cuda.get_device_name(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
    }


def time_calls(torch, call, warmup, repeats):
    """Milliseconds of each timed call, from CUDA events around it."""
    for _ in range(warmup):
        call()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def main():
    args = parse_args()
    torch = import_cuda_torch("sdpa_anchor")
    if torch is None:
        return 2
    import torch.nn.functional as F

    backend = None
    if args.backend != "auto":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = sdpa_kernel({"flash": SDPBackend.FLASH_ATTENTION,
                               "efficient": SDPBackend.EFFICIENT_ATTENTION,
                               "cudnn": SDPBackend.CUDNN_ATTENTION,
                               "math": SDPBackend.MATH}[args.backend])
        backend.__enter__()
    try:
        npy = load_npy(torch, args) if args.q else None
    except InputError as e:
        print(f"sdpa_anchor: {e}", file=sys.stderr)
        return 2
    if npy and npy[0].shape[2] not in args.lengths:
        print(f"sdpa_anchor: note: the .npy inputs have {npy[0].shape[2]} positions, not one of "
              "--lengths: every length runs on random inputs", file=sys.stderr)
    group = args.heads // args.kv_heads
    modes = ["native"] if group == 1 else ["native", "repeat"] if args.gqa == "best" else [args.gqa]
    gen = torch.Generator(device="cuda").manual_seed(args.seed)
    doc = {
        "benchmark": "torch_sdpa",
        **run_info(torch),
        "cudnn_version": torch.backends.cudnn.version(),
        "dtype": args.dtype, "batch": 1, "heads": args.heads, "kv_heads": args.kv_heads,
        "head_dim": args.head_dim, "causal": True, "preset": args.preset,
        "backend": args.backend, "gqa": args.gqa,
        "timing": "CUDA events around each call after warm-up; median of the timed calls",
        "flops": "4 * heads * seq * seq * head_dim / 2 (causal)",
        "inputs": {"q": args.q, "k": args.k, "v": args.v} if npy else None,
        "results": [],
    }
    print(f"SDPA: {doc['device_name']}, torch {doc['torch_version']}, {args.dtype}, heads "
          f"{args.heads}/{args.kv_heads}, D {args.head_dim}, causal, backend {args.backend}")
    print(f"{'seq':>7} {'input':>6} {'gqa':>7} {'ms_median':>10} {'ms_min':>9} {'TFLOP/s':>8}")
    failed = False
    for seq in args.lengths:
        row = {"seq": seq}
        try:
            q, k, v, row["input"] = inputs_at(torch, args, npy, seq, gen)
            repeats = args.repeats or (10 if seq <= 32768 else 5)
            by_mode = {}
            for mode in modes:
                kr = vr = None
                try:
                    if mode == "repeat":
                        kr = k.repeat_interleave(group, dim=1)
                        vr = v.repeat_interleave(group, dim=1)
                        call = lambda: F.scaled_dot_product_attention(  # noqa: E731
                            q, kr, vr, is_causal=True)
                    elif group > 1:
                        call = lambda: F.scaled_dot_product_attention(  # noqa: E731
                            q, k, v, is_causal=True, enable_gqa=True)
                    else:
                        call = lambda: F.scaled_dot_product_attention(  # noqa: E731
                            q, k, v, is_causal=True)
                    times = time_calls(torch, call, args.warmup, repeats)
                    finite = bool(torch.isfinite(call()).all())
                    by_mode[mode] = {"ms_median": statistics.median(times), "ms_min": min(times),
                                     "runs": len(times), "finite_output": finite}
                except (RuntimeError, TypeError) as e:
                    by_mode[mode] = {"error": str(e).splitlines()[0][:300]}
                kr = vr = None
                torch.cuda.empty_cache()
            ok = {m: r for m, r in by_mode.items() if "ms_median" in r}
            if not ok:
                raise RuntimeError("; ".join(f"{m}: {r['error']}" for m, r in by_mode.items()))
            mode = min(ok, key=lambda m: ok[m]["ms_median"])
            flops = 4.0 * args.heads * seq * seq * args.head_dim / 2
            row.update(gqa_used=mode if group > 1 else "none", **ok[mode],
                       tflops=flops / (ok[mode]["ms_median"] * 1e-3) / 1e12, flops=flops,
                       by_gqa_mode=by_mode if group > 1 else None)
            failed |= not row["finite_output"]
            print(f"{seq:>7} {row['input']:>6} {row['gqa_used']:>7} {row['ms_median']:>10.3f} "
                  f"{row['ms_min']:>9.3f} {row['tflops']:>8.1f}"
                  + ("" if row["finite_output"] else "  NaN/Inf in the output!"))
        except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
            row["error"] = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            failed = True
            print(f"{seq:>7} error: {row['error']}")
        q = k = v = None
        torch.cuda.empty_cache()
        doc["results"].append(row)
        doc["complete"] = len(doc["results"]) == len(args.lengths)
        write_json(args.json, doc)  # after every length: an interrupted run keeps what finished
    if backend is not None:
        backend.__exit__(None, None, None)
    return 1 if failed else 0


def write_json(path, doc):
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    sys.exit(main())
