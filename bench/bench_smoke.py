#!/usr/bin/env python3
"""Smoke test of pbsa-bench-pbs and the scripts that read its files, on tiny sizes:

 1. two synthetic workloads at one length, f32 queries with f16 keys and values, JSON and CSV
    written, the inputs dumped to .npy;
 2. the dumped inputs read back through --q/--k/--v (their dtypes with them): the same
    selection, so the same density, recall and error as the synthetic run of the first workload;
 3. every row of both runs present in both files, with finite times, density, recall and error,
    and the target columns; results.py, table7.py (and plot.py where matplotlib is importable)
    read the files.

    bench_smoke.py PBSA_BENCH_PBS SCRATCH_DIR
Exit status: 0, 1 on a failed check, 77 (skipped) when there is no OpenCL device.
"""
import csv
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import results  # noqa: E402

SHAPE = ["--lengths", "512", "--heads", "2", "--kv-heads", "1", "--head-dim", "64",
         "--dtype", "f32", "--kv-dtype", "f16", "--repeats", "1", "--warmup", "1"]
WORKLOADS = ["mixed", "random"]
# Finite in every row; the stage times only where PBS does not fall back to dense attention.
REQUIRED = ("dense_ms", "pbs_ms", "speedup", "density", "density_without_permutation", "rel_l2",
            "recall", "recall_min", "recall_without_permutation")
STAGES = ("perm_ms", "select_ms", "sparse_ms", "perm_select_ms", "overhead")

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
    return condition


def run(bench, args, log):
    with open(log, "w") as out:
        status = subprocess.call([bench] + args, stdout=out, stderr=subprocess.STDOUT)
    with open(log) as f:
        text = f.read()
    if status == 3:
        print("skipped: no OpenCL device\n" + text)
        sys.exit(77)
    check(status == 0, f"{' '.join(args)}: exit status {status}\n{text}")
    return text


def check_files(json_path, csv_path, workloads):
    """Every (workload, length) row in both files, with numbers; returns the JSON rows."""
    if not all(check(os.path.isfile(p), f"{p}: not written") for p in (json_path, csv_path)):
        return []
    with open(json_path) as f:
        doc = json.load(f)
    check(doc.get("complete") is True, f"{json_path}: not complete")
    rows = doc.get("results", [])
    check([r.get("workload") for r in rows] == workloads,
          f"{json_path}: rows {[r.get('workload') for r in rows]}, expected {workloads}")
    with open(csv_path, newline="") as f:
        csv_rows = list(csv.DictReader(f))
    check(len(csv_rows) == len(workloads), f"{csv_path}: {len(csv_rows)} rows")
    for path in (json_path, csv_path):
        for r in results.load([path])[1]:
            where = f"{path}: {r['workload']} {r['seq']}"
            check(not r.get("error"), f"{where}: error {r.get('error')}")
            check(r.get("non_finite_outputs") == 0, f"{where}: NaN/Inf outputs")
            for key in REQUIRED + (() if r["dense_fallback"] else STAGES):
                value = r.get(key)
                check(isinstance(value, float) and math.isfinite(value),
                      f"{where}: {key} = {value!r}")
            check(0.0 < (r.get("recall") or 0.0) <= 1.0 + 1e-9, f"{where}: recall {r['recall']}")
            for column, _ in results.TARGETS:
                check(column in r, f"{where}: no column {column}")
    return rows


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    bench, scratch = sys.argv[1], sys.argv[2]
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    path = lambda name: os.path.join(scratch, name)  # noqa: E731

    run(bench, SHAPE + ["--workload", ",".join(WORKLOADS), "--json", path("synthetic.json"),
                        "--csv", path("synthetic.csv"), "--dump-inputs", path("inputs")],
        path("synthetic.log"))
    for name in ("q.npy", "k.npy", "v.npy", "inputs.json"):
        check(os.path.isfile(os.path.join(scratch, "inputs", name)), f"inputs/{name} missing")
    synthetic = check_files(path("synthetic.json"), path("synthetic.csv"), WORKLOADS)

    run(bench, ["--repeats", "1", "--warmup", "1", "--q", path("inputs/q.npy"),
                "--k", path("inputs/k.npy"), "--v", path("inputs/v.npy"),
                "--json", path("npy.json"), "--csv", path("npy.csv")], path("npy.log"))
    from_npy = check_files(path("npy.json"), path("npy.csv"), ["npy"])
    for name in ("synthetic.json", "npy.json"):
        with open(path(name)) as f:
            doc = json.load(f)
        check((doc.get("dtype"), doc.get("kv_dtype")) == ("f32", "f16"),
              f"{name}: dtype {doc.get('dtype')}, kv_dtype {doc.get('kv_dtype')}")
    if synthetic and from_npy:
        a, b = synthetic[0], from_npy[0]
        for key in ("seq", "density", "density_without_permutation", "recall", "rel_l2"):
            x, y = a.get(key), b.get(key)
            check(isinstance(x, (int, float)) and isinstance(y, (int, float)) and
                  abs(x - y) <= 1e-6 * max(1.0, abs(x)),
                  f"the .npy round trip changed {key}: {x} vs {y}")

    scripts = [["results.py", "summary", path("synthetic.json"), path("npy.csv")],
               ["table7.py", path("synthetic.json"), "--out", path("table7.md")]]
    if importlib.util.find_spec("matplotlib"):
        scripts.append(["plot.py", path("synthetic.csv"), "-o", path("plot.png")])
    else:
        print("plot.py not run: matplotlib is not importable")
    for script in scripts:
        status = subprocess.call([sys.executable, os.path.join(HERE, script[0])] + script[1:],
                                 stdout=subprocess.DEVNULL)
        check(status == 0, f"{' '.join(script)}: exit status {status}")

    for message in failures:
        print("FAIL:", message)
    print(f"bench smoke: {'FAILED' if failures else 'ok'} ({len(failures)} failed checks)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
