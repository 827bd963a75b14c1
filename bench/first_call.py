#!/usr/bin/env python3
"""Time of a new process's first dense and first PBS call: pbsa-run on small f32 inputs (4 query
heads, 2 KV heads, 1024 tokens, D 128), with the kernel caches empty ("cold") and then as the
previous run left them ("warm"). Runs once with PoCL's own kernel cache off, so that the
library's cache is measured alone, and once with it on (PoCL's default); other drivers ignore
the POCL_ variables. Wall time and CPU time (user + system) of each process, one JSON line each.

    python3 bench/first_call.py build/tools/pbsa-run --label "kernel cache on" --rounds 3
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time

import numpy as np


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pbsa_run", help="the pbsa-run program")
    parser.add_argument("--label", default="", help="a note copied into every line")
    parser.add_argument("--rounds", type=int, default=1, help="cold and warm runs, repeated")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="pbsa-first-call-")
    try:
        rng = np.random.default_rng(1)
        paths = []
        for name, heads in (("q", 4), ("k", 2), ("v", 2)):
            paths.append(os.path.join(work, name + ".npy"))
            np.save(paths[-1], rng.standard_normal((1, heads, 1024, 128)).astype(np.float32))
        for _ in range(args.rounds):
            for pocl_cache in (0, 1):
                for folder in ("xdg", "pocl"):
                    shutil.rmtree(os.path.join(work, folder), ignore_errors=True)
                env = dict(os.environ, XDG_CACHE_HOME=os.path.join(work, "xdg"),
                           POCL_CACHE_DIR=os.path.join(work, "pocl"),
                           POCL_KERNEL_CACHE=str(pocl_cache))
                for state in ("cold", "warm"):
                    for mode in ("dense", "pbs"):
                        wall, cpu = time.perf_counter(), cpu_seconds()
                        subprocess.run([args.pbsa_run, "--mode", mode, "--warmup", "0",
                                        "--out-dir", os.path.join(work, "out"), *paths],
                                       env=env, check=True, stdout=subprocess.DEVNULL)
                        print(json.dumps({
                            "label": args.label, "mode": mode, "cache": state,
                            "pocl_kernel_cache": pocl_cache,
                            "PBSA_KERNEL_CACHE": os.environ.get("PBSA_KERNEL_CACHE", ""),
                            "wall_s": round(time.perf_counter() - wall, 2),
                            "cpu_s": round(cpu_seconds() - cpu, 2)}), flush=True)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
