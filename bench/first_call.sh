#!/bin/sh
# Wall time of a new process's first dense and first PBS call (pbsa-run on small f32 inputs,
# D 128, 1024 tokens), with the kernel cache empty ("cold") and then filled by the previous run
# ("warm"). Runs once with PoCL's own kernel cache off, so the library's cache alone is measured,
# and once with it on (PoCL's default); other drivers ignore POCL_*.
# usage: first_call.sh PBSA_RUN [PYTHON [LABEL]]   prints one JSON line per run, LABEL in it
set -eu
run=${1:?usage: first_call.sh PBSA_RUN [PYTHON [LABEL]]}
python=${2:-python3}
label=${3:-}
work=$(mktemp -d "${TMPDIR:-/tmp}/pbsa-first-call-XXXXXX")
trap 'rm -rf "$work"' EXIT

"$python" -c "
import numpy as np, sys
rng = np.random.default_rng(1)
for name, heads in (('q', 4), ('k', 2), ('v', 2)):
    np.save(sys.argv[1] + '/' + name + '.npy',
            rng.standard_normal((1, heads, 1024, 128)).astype(np.float32))
" "$work"

now() { date +%s.%N; }
for pocl_cache in 0 1; do
    rm -rf "$work/xdg" "$work/pocl"
    for state in cold warm; do
        for mode in dense pbs; do
            start=$(now)
            XDG_CACHE_HOME="$work/xdg" POCL_CACHE_DIR="$work/pocl" POCL_KERNEL_CACHE=$pocl_cache \
                "$run" --mode "$mode" --warmup 0 --out-dir "$work/out" \
                "$work/q.npy" "$work/k.npy" "$work/v.npy" >/dev/null
            end=$(now)
            printf '{"build": "%s", "mode": "%s", "cache": "%s", "pocl_kernel_cache": %s, "seconds": %.2f}\n' \
                "$label" "$mode" "$state" "$pocl_cache" "$(awk "BEGIN { print $end - $start }")"
        done
    done
done
