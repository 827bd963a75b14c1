#!/usr/bin/env python3
"""The PBS-Attn authors' Triton implementation timed on one CUDA GPU, on the inputs of
pbsa-bench-pbs, with the parameters of our PBS attention: total and stage times, block density
and error against exact attention, to set beside pbsa-bench-pbs's rows.

Their code (github xinghaow99/pbs-attn, package pbs_attn; the call timed is
pbs_attn.src.pbs.permuted_block_sparse_attn_fwd) is not part of this repository: a copy of its
tree goes into .pbsref/ (ignored by git; a REVISION file there names the commit) or any folder
named by --pbs-attn. It needs PyTorch and Triton 3 only, not transformers or flash-attn.

    python3 bench/triton_anchor.py --preset llama3-8b --lengths 8192,16384,32768 \\
        --inputs DIR --json h100-triton-pbs-bf16.json

Inputs as bench/sdpa_anchor.py takes them: Q, K and V from .npy files (pbsa-bench-pbs
--dump-inputs DIR writes DIR/q.npy, k.npy, v.npy: [1, H, S, D], '<f4', '<f2', or '<u2' holding
bfloat16 bits) at the length they have, random normal values (same seed, same draws as
sdpa_anchor.py) at the other lengths. Causal prefill, batch 1.

Our parameters and theirs: --block (our block_size, default 128) is their block_size, 64 or
128 only (their kernel's tiles are 32 to 128 wide and must divide it); --segment (256) is their
segment_size; --threshold (0.9) is their threshold, except that a threshold of 1 or more, which
keeps every allowed block in ours, is passed as the integer 1, their switch for the same, with
force_select_first_block off (their code cannot combine the two, and the sink block is then
kept anyway); otherwise force_select_first_block is on, as our force_first_block. Always
causal (theirs supports nothing else), scale 1/sqrt(D), mean pooling. Grouped-query attention:
their call wants one K/V head per query head, so K and V are repeated per query head once per
length, outside the timed calls (kv_repeat_ms is that copy's time), as their HuggingFace patch
does; this is our default per-query-head permutation, which reads K and V without copying them.

What is measured per length, CUDA events after warm-up, median of the timed calls:
  ms_median   their whole call (permutation, selection, sparse attention);
  stages      permutation_ms (scores of the last block's queries, argsort per segment, gathered
              copy of K), selection_ms (padding, block means, block softmax, sort and cumulative
              sum, sink block) and sparse_ms (block mask merge, gathered copy of V, the Triton
              kernel), from a second series of calls with an event recorded after each of their
              two stage functions (wrapped for that series only); short sequences (S <= segment)
              fall back to SDPA in their code and have no stages;
  density     blocks their kernel visits (selected, sink, the query's whole own segment) over
              the causal blocks, mean over query heads, as pbsa_block_density() counts ours;
              density_identity: their selection on keys left in place;
  rel_l2      ||O - O_exact|| / ||O_exact||, O_exact being SDPA on float32 copies of the inputs
              (float32 arithmetic), over heads 0 and H-1 as pbsa-bench-pbs does (--error-heads).
pbsa-bench-pbs measures its error against its own dense output (bf16), whose own error, about
1e-3, is far below PBS's.

Where theirs differs from ours, beyond the copies of K and V: their permutation scores and
block scores are matrix products in the input type (bf16 logits) before a float32 softmax, and
their block means are bf16; ours are float32, so keys with near-equal scores may be ordered,
and blocks near the threshold selected, differently (their sort also leaves ties in no fixed
order; ours puts the smaller index first). Their kernel rounds the probabilities to the input
type before P.V, dots in TF32 for f32 inputs, and needs a power-of-two head dim (64, 128, 256).
Their kernel autotunes nine tile configurations on its first call, keyed without the length;
--autotune per-length (the default) clears that choice at each length, as one process per
length would, and the first warm-up call pays the tuning (keep --warmup at 1 or more). Their
configurations write num_warps and num_stages among the kernel's arguments, where Triton 3
overrides them with its defaults (4 warps, 3 stages, for all nine): --tile-configs as-run (the
default) leaves that so, as-written moves the written values to where Triton reads them.

Exit status: 0, 1 when a length failed or gave NaN/Inf, 2 on bad inputs or without PyTorch,
Triton, a CUDA device or the authors' code.
"""
import argparse
import hashlib
import importlib
import math
import os
import statistics
import sys

import sdpa_anchor as anchor

PROGRAM = "triton_anchor"
DEVICE = "cuda"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = "pbs_attn.src.pbs"
STAGES = ("permutation", "selection", "sparse")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    anchor.add_input_options(ap)
    ap.add_argument("--pbs-attn", metavar="DIR", default=os.path.join(REPO_ROOT, ".pbsref"),
                    help="folder holding the authors' pbs_attn package (default: .pbsref in the "
                         "repository root)")
    ap.add_argument("--block", type=int, choices=(64, 128), default=128,
                    help="logical block size (default 128)")
    ap.add_argument("--segment", type=int, default=256,
                    help="permutation segment, a multiple of --block (default 256)")
    ap.add_argument("--threshold", type=float, default=0.9,
                    help="attention mass the block selection keeps (default 0.9)")
    ap.add_argument("--autotune", choices=("per-length", "once"), default="per-length",
                    help="tune their kernel's tiles again at each length (default) or once")
    ap.add_argument("--tile-configs", choices=("as-run", "as-written"), default="as-run",
                    help="their autotuner's warps and stages as Triton runs them (default) or "
                         "as their code writes them")
    ap.add_argument("--error-heads", choices=("sampled", "all", "none"), default="sampled",
                    help="heads of the error: 0 and H-1 (default), every head, or none")
    anchor.add_run_options(ap)
    args = ap.parse_args()
    anchor.resolve_input_options(ap, args)
    if args.segment <= 0 or args.segment % args.block:
        ap.error(f"--segment {args.segment} is not a positive multiple of --block {args.block}")
    if not args.threshold > 0:
        ap.error("--threshold must be positive")
    if args.head_dim & (args.head_dim - 1):
        ap.error(f"--head-dim {args.head_dim}: their kernel needs a power of two")
    return args


def reference_kwargs(args):
    """The keyword arguments of their call for our parameters (see the top of this file)."""
    keep_all = args.threshold >= 1
    return {"block_size": args.block, "segment_size": args.segment,
            "threshold": 1 if keep_all else args.threshold, "causal": True,
            "force_select_first_block": not keep_all}


def import_reference(directory):
    """Their module pbs_attn.src.pbs from directory. Raises ImportError saying what is wrong."""
    if not os.path.isfile(os.path.join(directory, *MODULE.split(".")) + ".py"):
        raise ImportError(f"{directory} holds no pbs_attn/src/pbs.py: put a copy of the "
                          "tree of github xinghaow99/pbs-attn there, or name it with --pbs-attn")
    sys.path.insert(0, os.path.abspath(directory))
    try:
        module = importlib.import_module(MODULE)
    except Exception as e:  # their import runs Triton decorators, which can fail in many ways
        raise ImportError(f"importing {MODULE} from {directory} failed: "
                          f"{type(e).__name__}: {e}") from e
    if not callable(getattr(module, "permuted_block_sparse_attn_fwd", None)):
        raise ImportError(f"{MODULE} in {directory} has no permuted_block_sparse_attn_fwd")
    return module


def describe_reference(directory):
    """Where their code came from: the REVISION file if one was written beside it, and a hash
    of the package's Python sources."""
    revision = None
    try:
        with open(os.path.join(directory, "REVISION")) as f:
            revision = f.read().strip() or None
    except OSError:
        pass
    digest = hashlib.sha256()
    package = os.path.join(directory, "pbs_attn")
    for folder, subfolders, files in sorted(os.walk(package)):
        subfolders.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, package).encode() + b"\0")
                with open(path, "rb") as f:
                    digest.update(f.read())
    return {"dir": os.path.abspath(directory), "revision": revision,
            "sources_sha256": digest.hexdigest()}


class StageProbe:
    """Wraps the two stage functions that their pipeline looks up in its module at every call,
    while in a `with` block: after each it records a CUDA event (when `marks` is a list), and it
    keeps the block selection's output (when `keep_selection` is set)."""

    NAMES = {"apply_permutation": "permutation", "permuted_block_selection": "selection"}

    def __init__(self, torch, module):
        self.torch = torch
        self.module = module
        self.originals = {name: getattr(module, name, None) for name in self.NAMES}
        self.usable = all(callable(fn) for fn in self.originals.values())
        self.marks = None
        self.keep_selection = False
        self.selection = None

    def __enter__(self):
        for name, fn in self.originals.items():
            setattr(self.module, name, self._wrap(self.NAMES[name], fn))
        return self

    def __exit__(self, *exc):
        for name, fn in self.originals.items():
            setattr(self.module, name, fn)
        self.marks = None
        self.keep_selection = False

    def event(self):
        e = self.torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    def _wrap(self, stage, fn):
        def wrapped(*a, **kw):
            out = fn(*a, **kw)
            if self.marks is not None:
                self.marks.append((stage, self.event()))
            if self.keep_selection and stage == "selection":
                self.selection = out
            return out

        return wrapped


def time_stages(probe, call, repeats):
    """Median milliseconds of each stage over `repeats` calls, or None when the calls did not
    pass through both stage functions (their short-sequence fallback)."""
    times = {stage: [] for stage in STAGES}
    with probe:
        call()  # untimed, with the wrappers in place
        for _ in range(repeats):
            probe.marks = [("start", probe.event())]
            call()
            probe.marks.append(("end", probe.event()))
            probe.marks[-1][1].synchronize()
            if [name for name, _ in probe.marks] != ["start", "permutation", "selection", "end"]:
                return None
            events = [e for _, e in probe.marks]
            for stage, begin, end in zip(STAGES, events, events[1:]):
                times[stage].append(begin.elapsed_time(end))
    return {f"{stage}_ms": statistics.median(t) for stage, t in times.items()}


def block_density(torch, selection):
    """Mean over (batch, head) of the key blocks their kernel visits over the causal blocks,
    from their selection's (block scores, block mask, segment mask)."""
    _, block_mask, segment_mask = selection
    nqb, nkb = block_mask.shape[-2:]
    visited = (block_mask | segment_mask).sum(dim=(-2, -1), dtype=torch.float64)
    causal_blocks = sum(i + nkb - nqb + 1 for i in range(nqb))
    return (visited / causal_blocks).mean().item()


def identity_selection(torch, pbs, q, k_rep, kwargs):
    """Their block selection on unpermuted keys."""
    heads, seq = q.shape[1], q.shape[2]
    index = torch.arange(seq, device=q.device).expand(1, heads, seq).contiguous()
    return pbs.permuted_block_selection(
        permuted_query_states=q, permuted_key_states=k_rep, query_indices=index,
        key_indices=index, block_size=kwargs["block_size"], segment_size=kwargs["segment_size"],
        threshold=kwargs["threshold"], causal=True,
        force_select_first_block=kwargs["force_select_first_block"])


def error_vs_exact(torch, out, q, k, v, heads):
    """Relative L2 error of out against SDPA on float32 copies of the inputs, over `heads`
    together and one by one; non-finite elements of out are left out (counted elsewhere)."""
    F = torch.nn.functional
    group = q.shape[1] // k.shape[1]
    diff2_all = ref2_all = 0.0
    per_head = []
    for h in heads:
        kv = slice(h // group, h // group + 1)
        ref = F.scaled_dot_product_attention(q[:, h:h + 1].float(), k[:, kv].float(),
                                             v[:, kv].float(), is_causal=True)
        got = out[:, h:h + 1].float()
        diff = torch.where(torch.isfinite(got), got - ref, torch.zeros_like(ref))
        diff2 = diff.square().sum(dtype=torch.float64).item()
        ref2 = ref.square().sum(dtype=torch.float64).item()
        per_head.append(math.sqrt(diff2 / ref2) if ref2 > 0 else math.sqrt(diff2))
        diff2_all += diff2
        ref2_all += ref2
    total = math.sqrt(diff2_all / ref2_all) if ref2_all > 0 else math.sqrt(diff2_all)
    return total, per_head


def use_written_warps(kernel):
    """Gives each of their autotuner's configurations the num_warps and num_stages written in
    its kwargs (which Triton 3 overrides with the Config's own fields). Returns how many
    configurations changed."""
    changed = 0
    for config in getattr(kernel, "configs", None) or []:
        written = {field: config.kwargs.pop(field) for field in ("num_warps", "num_stages")
                   if field in config.kwargs}
        for field, value in written.items():
            setattr(config, field, value)
        changed += bool(written)
    return changed


def describe_config(kernel):
    """The tile configuration their autotuner chose last, with the warps and stages it ran
    with (Triton 3 takes those from the Config's own fields, not from its kwargs dict)."""
    config = getattr(kernel, "best_config", None)
    if config is None:
        return None
    kwargs = getattr(config, "kwargs", {})
    return {"BLOCK_M": kwargs.get("BLOCK_M"), "BLOCK_N": kwargs.get("BLOCK_N"),
            "num_warps": getattr(config, "num_warps", None),
            "num_stages": getattr(config, "num_stages", None)}


def measure_length(torch, pbs, probe, args, q, k, v, row):
    """Times and measures one length; fills row. Returns False when the output has NaN/Inf.
    Exceptions go to the caller; row["phase"] says how far it got."""
    seq = q.shape[2]
    group = args.heads // args.kv_heads
    kwargs = reference_kwargs(args)
    repeats = args.repeats or (10 if seq <= 32768 else 5)
    row["fallback"] = seq <= args.segment

    row["phase"] = "K/V repeat"
    if group > 1:
        repeat = lambda: (k.repeat_interleave(group, dim=1),  # noqa: E731
                          v.repeat_interleave(group, dim=1))
        row["kv_repeat_ms"] = statistics.median(anchor.time_calls(torch, repeat, 1, repeats))
        k_rep, v_rep = repeat()
    else:
        row["kv_repeat_ms"] = None
        k_rep, v_rep = k, v

    row["phase"] = "timing"
    kernel = getattr(pbs, "_permuted_block_sparse_attn_fwd", None)
    if args.autotune == "per-length" and isinstance(getattr(kernel, "cache", None), dict):
        kernel.cache.clear()
    call = lambda: pbs.permuted_block_sparse_attn_fwd(q, k_rep, v_rep, **kwargs)  # noqa: E731
    times = anchor.time_calls(torch, call, args.warmup, repeats)
    row.update(ms_median=statistics.median(times), ms_min=min(times), runs=len(times),
               triton_config=None if row["fallback"] else describe_config(kernel))

    row["phase"] = "stage timing"
    stages = time_stages(probe, call, repeats) if probe.usable and not row["fallback"] else None
    row.update(stages or {f"{stage}_ms": None for stage in STAGES})

    row["phase"] = "density and error"
    with probe:
        probe.keep_selection = True
        probe.selection = None
        out = call()
        selection, probe.selection = probe.selection, None
    if row["fallback"]:
        row["density"] = row["density_identity"] = 1.0
    elif probe.usable:
        row["density"] = block_density(torch, selection) if selection is not None else None
        row["density_identity"] = block_density(
            torch, identity_selection(torch, pbs, q, k_rep, kwargs))
    else:
        row["density"] = row["density_identity"] = None
    selection = None
    row["non_finite"] = int((~torch.isfinite(out)).sum().item())
    row["finite_output"] = row["non_finite"] == 0
    heads = {"sampled": sorted({0, args.heads - 1}), "all": range(args.heads),
             "none": []}[args.error_heads]
    if heads:
        row["rel_l2"], per_head = error_vs_exact(torch, out, q, k, v, heads)
        row["head_rel_l2"] = dict(zip((str(h) for h in heads), per_head))
    else:
        row["rel_l2"] = row["head_rel_l2"] = None
    del row["phase"]
    return row["finite_output"]


def fmt(value, width, digits):
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def print_row(row):
    if "error" in row:
        print(f"{row['seq']:>7} error: {row['error']}")
        return
    density = None if row["density"] is None else 100 * row["density"]
    identity = None if row["density_identity"] is None else 100 * row["density_identity"]
    print(f"{row['seq']:>7} {row['input']:>6} {row['ms_median']:>9.3f} "
          f"{fmt(row['permutation_ms'], 8, 3)} {fmt(row['selection_ms'], 8, 3)} "
          f"{fmt(row['sparse_ms'], 9, 3)} {fmt(density, 7, 1)} {fmt(identity, 7, 1)} "
          f"{fmt(row['rel_l2'], 7, 4)}"
          + ("" if row["finite_output"] else f"  NaN/Inf in {row['non_finite']} elements!"))


def main():
    args = parse_args()
    torch = anchor.import_cuda_torch(PROGRAM)
    if torch is None:
        return 2
    try:
        import triton
    except ImportError as e:
        print(f"{PROGRAM}: Triton is not importable ({e})", file=sys.stderr)
        return 2
    try:
        pbs = import_reference(args.pbs_attn)
    except ImportError as e:
        print(f"{PROGRAM}: {e}", file=sys.stderr)
        return 2
    try:
        npy = anchor.load_npy(torch, args, DEVICE) if args.q else None
    except anchor.InputError as e:
        print(f"{PROGRAM}: {e}", file=sys.stderr)
        return 2
    if npy and npy[0].shape[2] not in args.lengths:
        print(f"{PROGRAM}: note: the .npy inputs have {npy[0].shape[2]} positions, not one of "
              "--lengths: every length runs on random inputs", file=sys.stderr)
    if args.tile_configs == "as-written" and not use_written_warps(
            getattr(pbs, "_permuted_block_sparse_attn_fwd", None)):
        print(f"{PROGRAM}: note: --tile-configs as-written changed none of their configurations",
              file=sys.stderr)
    probe = StageProbe(torch, pbs)
    if not probe.usable:
        print(f"{PROGRAM}: note: {MODULE} lacks apply_permutation or permuted_block_selection: "
              "no stage times or density", file=sys.stderr)
    gen = torch.Generator(device=DEVICE).manual_seed(args.seed)
    doc = {
        "benchmark": "pbs_attn_triton",
        **anchor.run_info(torch),
        "triton_version": triton.__version__,
        "dtype": args.dtype, "batch": 1, "heads": args.heads, "kv_heads": args.kv_heads,
        "head_dim": args.head_dim, "causal": True, "preset": args.preset,
        "params": {"block_size": args.block, "segment_size": args.segment,
                   "threshold": args.threshold, "force_first_block": True,
                   "gqa_mode": "per-query-head (K and V repeated, untimed)"},
        "reference": {**describe_reference(args.pbs_attn),
                      "call": f"{MODULE}.permuted_block_sparse_attn_fwd",
                      "kwargs": reference_kwargs(args)},
        "autotune": args.autotune,
        "tile_configs": args.tile_configs,
        "timing": "CUDA events around each call after warm-up; median of the timed calls; "
                  "stages from a second series with events between their stage functions",
        "density": "visited key blocks over causal blocks, mean over query heads",
        "error": "relative L2 against SDPA on float32 copies of the inputs, heads "
                 + args.error_heads,
        "inputs": {"q": args.q, "k": args.k, "v": args.v} if npy else None,
        "results": [],
    }
    print(f"PBS-Attn (Triton, authors' code): {doc['device_name']}, torch "
          f"{doc['torch_version']}, triton {triton.__version__}, {args.dtype}, heads "
          f"{args.heads}/{args.kv_heads}, D {args.head_dim}, causal, block {args.block}, segment "
          f"{args.segment}, threshold {args.threshold:g}")
    print(f"{'seq':>7} {'input':>6} {'ms_median':>9} {'perm_ms':>8} {'sel_ms':>8} "
          f"{'sparse_ms':>9} {'dens%':>7} {'noperm%':>7} {'rel_l2':>7}")
    failed = False
    for seq in args.lengths:
        row = {"seq": seq}
        q = k = v = None
        try:
            q, k, v, row["input"] = anchor.inputs_at(torch, args, npy, seq, gen, DEVICE)
            failed |= not measure_length(torch, pbs, probe, args, q, k, v, row)
        except Exception as e:  # noqa: BLE001 -- any failure of one length is reported, not fatal
            message = str(e).splitlines()[0][:300] if str(e) else ""
            row["error"] = f"{row.pop('phase', 'inputs')}: {type(e).__name__}: {message}"
            failed = True
        print_row(row)
        q = k = v = None
        torch.cuda.empty_cache()
        doc["results"].append(row)
        doc["complete"] = len(doc["results"]) == len(args.lengths)
        anchor.write_json(args.json, doc)  # after every length: an interrupted run keeps rows
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
