#!/usr/bin/env python3
"""pbsa-bench-pbs result files (JSON or CSV) read as flat rows with the CSV's columns, for
plot.py, table7.py and the smoke test. Standard library only.

    python3 bench/results.py summary FILE...            the rows and their targets as a table
    python3 bench/results.py triton PBS TRITON          our mixed-workload rows beside the authors'
                                                        Triton implementation on the same inputs
    python3 bench/results.py merge OUT FIRST MORE...    concatenates runs of one configuration
                                                        (all JSON or all CSV) into OUT; JSON
                                                        runs of triton_anchor.py too
"""
import csv
import json
import math
import os
import sys

NUMBERS = ("dense_ms", "pbs_ms", "speedup", "perm_ms", "select_ms", "sparse_ms",
           "perm_select_ms", "overhead", "density", "density_without_permutation", "rel_l2",
           "recall", "recall_min", "recall_without_permutation", "threshold")
INTEGERS = ("seq", "heads", "kv_heads", "head_dim", "block", "segment", "dense_fallback",
            "input_sets", "runs", "non_finite_outputs")
TARGETS = (("target_overhead", "overhead_at_most_5pct_from_32k"),
           ("target_perm_select_8k", "perm_select_under_1ms_at_8k"),
           ("target_faster", "pbs_faster_from_16k"))


def _number(value):
    if value in (None, ""):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _json_rows(doc):
    params = doc.get("params", {})
    for r in doc.get("results", []):
        ms = r.get("ms_median") or {}
        row = {
            "workload": r.get("workload", doc.get("workload")),
            "seq": r.get("seq"), "dtype": doc.get("dtype"), "heads": doc.get("heads"),
            "kv_heads": doc.get("kv_heads"), "head_dim": doc.get("head_dim"),
            "block": params.get("block_size"), "segment": params.get("segment_size"),
            "threshold": params.get("threshold"),
            "dense_fallback": int(bool(r.get("dense_fallback"))),
            "input_sets": r.get("input_sets"), "runs": r.get("runs"),
            "dense_ms": r.get("dense_ms"), "pbs_ms": r.get("pbs_ms"), "speedup": r.get("speedup"),
            "perm_ms": ms.get("permutation"), "select_ms": ms.get("selection"),
            "sparse_ms": ms.get("sparse"), "perm_select_ms": r.get("perm_select_ms"),
            "overhead": r.get("overhead"), "non_finite_outputs": r.get("non_finite_outputs"),
            "device": doc.get("device_name"), "error": r.get("error", ""),
        }
        for key in ("density", "density_without_permutation", "rel_l2", "recall", "recall_min",
                    "recall_without_permutation"):
            row[key] = r.get(key)
        for column, key in TARGETS:
            row[column] = (r.get("targets") or {}).get(key) or ""
        # Files written before these columns existed.
        if row["perm_select_ms"] is None and None not in (row["perm_ms"], row["select_ms"]):
            row["perm_select_ms"] = row["perm_ms"] + row["select_ms"]
        if row["overhead"] is None and row["perm_select_ms"] is not None and row["dense_ms"]:
            row["overhead"] = row["perm_select_ms"] / row["dense_ms"]
        yield row


def load(paths):
    """Returns (documents, rows): the top-level members of each JSON file ({"path": ...} for a
    CSV file) and every row of every file, numbers as float/int and None where missing."""
    docs, rows = [], []
    for path in paths:
        with open(path, newline="") as f:
            if path.endswith(".csv"):
                docs.append({"path": path})
                file_rows = list(csv.DictReader(f))
            else:
                doc = json.load(f)
                docs.append(dict((k, v) for k, v in doc.items() if k != "results"))
                docs[-1]["path"] = path
                file_rows = list(_json_rows(doc))
        for row in file_rows:
            for key in NUMBERS:
                row[key] = _number(row.get(key))
            for key in INTEGERS:
                value = _number(row.get(key))
                row[key] = None if value is None else int(value)
            row["source"] = path
            rows.append(row)
    return docs, rows


def workloads(rows):
    """Workload names in the order they first appear."""
    seen = []
    for row in rows:
        if row["workload"] not in seen:
            seen.append(row["workload"])
    return seen


def length_label(seq):
    return f"{seq // 1024}K" if seq % 1024 == 0 else str(seq)


def fmt(value, spec, scale=1.0, empty="-"):
    """value * scale formatted by spec, or empty padded to the spec's width."""
    if isinstance(value, (int, float)):
        return format(value * scale, spec)
    width = spec.split(".")[0]
    return empty.rjust(int(width)) if width.isdigit() else empty


def summary(paths):
    docs, rows = load(paths)
    for doc in docs:
        if "device_name" in doc:
            print(f"{doc['path']}: {doc.get('device_name')}, {doc.get('dtype')}, heads "
                  f"{doc.get('heads')}/{doc.get('kv_heads')}, D {doc.get('head_dim')}, "
                  f"complete: {doc.get('complete', '?')}")
    print(f"{'workload':<14} {'seq':>6} {'dense_ms':>9} {'pbs_ms':>9} {'speedup':>7} "
          f"{'perm':>7} {'select':>7} {'sparse':>9} {'ovh':>6} {'density':>7} {'no_perm':>7} "
          f"{'rel_l2':>8} {'recall':>6}")
    for r in rows:
        line = (f"{r['workload']:<14} {r['seq']:>6} {fmt(r['dense_ms'], '9.3f')} "
                f"{fmt(r['pbs_ms'], '9.3f')} {fmt(r['speedup'], '6.2f')}x "
                f"{fmt(r['perm_ms'], '7.3f')} {fmt(r['select_ms'], '7.3f')} "
                f"{fmt(r['sparse_ms'], '9.3f')} {fmt(r['overhead'], '5.1f', 100)}% "
                f"{fmt(r['density'], '6.1f', 100)}% "
                f"{fmt(r['density_without_permutation'], '6.1f', 100)}% "
                f"{fmt(r['rel_l2'], '8.2e')} {fmt(r['recall'], '5.1f', 100)}%")
        if r.get("error"):
            line += "  error: " + r["error"]
        print(line)
    print("targets (met, or missed by how much):")
    for column, _ in TARGETS:
        hits = [f"{r['workload']} {length_label(r['seq'])}: {r[column]}" for r in rows
                if r.get(column)]
        print(f"  {column}: " + ("; ".join(hits) if hits else "not measured"))


def merge(out, paths):
    if out.endswith(".csv"):
        fields, rows = None, []
        for path in paths:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                fields = fields or reader.fieldnames
                rows.extend(reader)
        with open(out + ".tmp", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    else:
        docs = []
        for path in paths:
            with open(path) as f:
                docs.append(json.load(f))
        merged = dict(docs[0])
        merged["results"] = [r for d in docs for r in d.get("results", [])]
        merged["complete"] = all(d.get("complete", True) for d in docs)
        # pbsa-bench-pbs runs also count their planned rows and name their workloads.
        if "planned_rows" in docs[0]:
            merged["planned_rows"] = sum(d.get("planned_rows", len(d.get("results", [])))
                                         for d in docs)
        if "workloads" in docs[0]:
            merged["workloads"] = workloads([{"workload": r.get("workload")}
                                             for r in merged["results"]])
        merged["merged_runs"] = [{"command_line": d.get("command_line"),
                                  "date_utc": d.get("date_utc"),
                                  "warmup_rounds": d.get("warmup_rounds"),
                                  "rows": len(d.get("results", []))} for d in docs]
        with open(out + ".tmp", "w") as f:
            json.dump(merged, f, indent=2)
            f.write("\n")
    os.replace(out + ".tmp", out)


def triton(pbs_path, triton_path):
    """Our PBS rows of the dumped workload beside triton_anchor.py's rows of the same length."""
    docs, rows = load([pbs_path])
    with open(triton_path) as f:
        theirs = {r["seq"]: r for r in json.load(f).get("results", []) if "ms_median" in r}
    dumped = docs[0].get("workloads", ["mixed"])[0]
    print(f"PBS on the same inputs ({dumped} workload), ours (pbsattn, OpenCL) and the authors' "
          "Triton implementation; ratio = their ms / our ms")
    print(f"{'seq':>7} {'ours_ms':>9} {'triton_ms':>9} {'ratio':>6} {'ours_sparse':>11} "
          f"{'their_sparse':>12} {'ours_dens':>9} {'their_dens':>10} {'ours_l2':>8} {'their_l2':>8}")
    for r in rows:
        t = theirs.get(r["seq"])
        if r["workload"] != dumped or t is None:
            continue
        ratio = t["ms_median"] / r["pbs_ms"] if r["pbs_ms"] else None
        print(f"{r['seq']:>7} {fmt(r['pbs_ms'], '9.3f')} {fmt(t['ms_median'], '9.3f')} "
              f"{fmt(ratio, '5.2f')}x {fmt(r['sparse_ms'], '11.3f')} "
              f"{fmt(t.get('sparse_ms'), '12.3f')} {fmt(r['density'], '8.1f', 100)}% "
              f"{fmt(t.get('density'), '9.1f', 100)}% {fmt(r['rel_l2'], '8.3f')} "
              f"{fmt(t.get('rel_l2'), '8.3f')}")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "summary":
        summary(sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "triton":
        triton(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "merge":
        merge(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
