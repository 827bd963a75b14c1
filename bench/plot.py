#!/usr/bin/env python3
"""Plots pbsa-bench-pbs results: speedup over dense and block density against the sequence
length, one line per workload, with the paper's Table 7 values dashed.

    python3 bench/plot.py h100-pbs-bf16.json [more .json/.csv] -o h100-pbs-bf16.png

Needs matplotlib (Debian: python3-matplotlib).
"""
import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results  # noqa: E402
from table7 import PAPER_DENSITY, PAPER_SPEEDUP  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="pbsa-bench-pbs JSON or CSV files")
    ap.add_argument("-o", "--out", required=True, help="PNG to write")
    ap.add_argument("--no-paper", action="store_true", help="leave out the paper's values")
    args = ap.parse_args()
    docs, rows = results.load(args.files)
    meta = next((d for d in docs if "device_name" in d), {})

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    lengths = sorted({r["seq"] for r in rows})
    for workload in results.workloads(rows):
        # One point per length: a later file's row replaces an earlier one.
        mine = {r["seq"]: r for r in rows if r["workload"] == workload and r["speedup"] is not None}
        mine = [mine[s] for s in sorted(mine)]
        left.plot([r["seq"] for r in mine], [r["speedup"] for r in mine], "o-", label=workload)
        mine = [r for r in mine if r["density"] is not None]
        right.plot([r["seq"] for r in mine], [100 * r["density"] for r in mine], "o-",
                   label=workload)
    for ax, paper, scale, label in ((left, PAPER_SPEEDUP, 1, "paper (vs FlashAttention)"),
                                    (right, PAPER_DENSITY, 100, "paper")):
        seqs = [s for s in sorted(paper) if lengths and lengths[0] <= s <= lengths[-1]]
        if seqs and not args.no_paper:
            ax.plot(seqs, [scale * paper[s] for s in seqs], "k--", label=label)
    left.axhline(1.0, color="grey", linewidth=0.8)
    left.set_ylabel("speedup: dense time / PBS time")
    right.set_ylabel("computed share of the causal blocks (%)")
    right.set_ylim(bottom=0)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [results.length_label(s) for s in lengths])
        ax.minorticks_off()
        ax.set_xlabel("sequence length")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"PBS vs dense attention: {meta.get('device_name', '')}, "
                 f"{meta.get('dtype', '')}, heads {meta.get('heads', '?')}/"
                 f"{meta.get('kv_heads', '?')}, D {meta.get('head_dim', '?')}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
