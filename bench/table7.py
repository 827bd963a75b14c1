#!/usr/bin/env python3
"""Our PBS results beside the paper's Table 7 (arXiv 2510.21270: Triton PBS against
FlashAttention on one H100, bf16, 32 heads, D 128), as markdown tables, one per workload.

    python3 bench/table7.py h100-pbs-bf16.json [more .json/.csv] [--sdpa h100-sdpa-bf16.json]
                            [--workload mixed] [--out table.md]

Our speedup is PBS over our own dense OpenCL kernel; the paper's is PBS over FlashAttention.
With --sdpa (bench/sdpa_anchor.py's JSON), PyTorch SDPA's time at each length and our PBS's
speedup over it are added: that is the comparison the paper's numbers make.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results  # noqa: E402

LENGTHS = (8192, 16384, 32768, 65536, 131072)
PAPER_SPEEDUP = {4096: 0.26, 8192: 0.60, 16384: 1.17, 32768: 1.62, 65536: 2.28,
                 131072: 2.77, 262144: 3.12, 524288: 3.41}
PAPER_DENSITY = {8192: 0.58, 16384: 0.49, 32768: 0.41, 65536: 0.29, 131072: 0.22}


def sdpa_times(path):
    if not path:
        return {}, None
    with open(path) as f:
        doc = json.load(f)
    return {r["seq"]: r["ms_median"] for r in doc.get("results", [])
            if isinstance(r.get("ms_median"), (int, float))}, doc


def pct(value):
    return results.fmt(value, ".1f", 100) + ("%" if value is not None else "")


def times(value):
    return results.fmt(value, ".2f") + ("x" if value is not None else "")


def table(rows, workload, sdpa):
    fmt = results.fmt
    by_seq = {r["seq"]: r for r in rows if r["workload"] == workload}
    head = ["length", "dense ms", "PBS ms", "perm ms", "select ms", "sparse ms",
            "perm+select / dense", "speedup (ours vs our dense)", "paper speedup (vs FA)",
            "density", "paper density", "density w/o perm", "recall", "rel L2"]
    if sdpa:
        head += ["SDPA ms", "PBS vs SDPA"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for seq in LENGTHS:
        r = by_seq.get(seq, {})
        cells = [results.length_label(seq), fmt(r.get("dense_ms"), ".1f"),
                 fmt(r.get("pbs_ms"), ".1f"), fmt(r.get("perm_ms"), ".2f"),
                 fmt(r.get("select_ms"), ".2f"), fmt(r.get("sparse_ms"), ".1f"),
                 pct(r.get("overhead")), times(r.get("speedup")), f"{PAPER_SPEEDUP[seq]:.2f}x",
                 pct(r.get("density")), f"{PAPER_DENSITY[seq] * 100:.0f}%",
                 pct(r.get("density_without_permutation")), pct(r.get("recall")),
                 fmt(r.get("rel_l2"), ".3f")]
        if sdpa:
            ms = sdpa.get(seq)
            ratio = ms / r["pbs_ms"] if ms and r.get("pbs_ms") else None
            cells += [fmt(ms, ".2f"), results.fmt(ratio, ".3f") + ("x" if ratio else "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="pbsa-bench-pbs JSON or CSV files")
    ap.add_argument("--sdpa", help="bench/sdpa_anchor.py JSON")
    ap.add_argument("--workload", action="append", help="only these workloads (repeatable)")
    ap.add_argument("--out", help="also write the markdown here")
    args = ap.parse_args()
    docs, rows = results.load(args.files)
    sdpa, sdpa_doc = sdpa_times(args.sdpa)
    meta = next((d for d in docs if "device_name" in d), {})
    params = meta.get("params", {})
    out = ["# PBS-Attn: our runs beside the paper's Table 7", "",
           f"Ours: {meta.get('device_name', '?')}, {meta.get('dtype', '?')}, "
           f"{meta.get('heads', '?')} query heads / {meta.get('kv_heads', '?')} KV heads, "
           f"D {meta.get('head_dim', '?')}, block {params.get('block_size', '?')}, segment "
           f"{params.get('segment_size', '?')}, threshold "
           f"{results.fmt(params.get('threshold'), '.3g', empty='?')}; times "
           "are medians of OpenCL event times; speedup = our dense kernel / our PBS.",
           "Paper (Table 7): Triton PBS against FlashAttention on one H100, bf16, 32 heads, "
           "D 128; density as a share of the causal blocks, with permutation."]
    if sdpa_doc:
        out.append(f"SDPA: torch {sdpa_doc.get('torch_version')} "
                   f"scaled_dot_product_attention on {sdpa_doc.get('device_name')} "
                   "(causal, bf16); PBS vs SDPA = SDPA ms / our PBS ms, the paper's kind of "
                   "speedup.")
    for workload in args.workload or results.workloads(rows):
        out += ["", f"## workload: {workload}", "", table(rows, workload, sdpa)]
    text = "\n".join(out) + "\n"
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
