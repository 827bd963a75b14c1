#!/usr/bin/env bash
# The GPU machine's run: build (release), unit and device tests, pbsa-conformance, then the PBS
# benchmark (PBS against dense attention, Llama-3.1-8B shape, bf16) and the dense attention
# benchmark. Run from the repository root after `source .devdeps/env.sh`:
#
#     OUT=/some/dir bash bench/gpu-run.sh
#
# Every step logs into $OUT (default ./out) and the run goes on after a failing step; the exit
# status is non-zero when any step failed. A summary table comes last.
# Step time limits (seconds) can be changed through TIMEOUT_TESTS, TIMEOUT_CONFORMANCE,
# TIMEOUT_BENCH_PBS, TIMEOUT_BENCH and TIMEOUT_BENCH_SHORT; BUILD_DIR (default /tmp/b) moves the
# build.
set -u -o pipefail

OUT=${OUT:-./out}
BUILD_DIR=${BUILD_DIR:-/tmp/b}
TIMEOUT_TESTS=${TIMEOUT_TESTS:-150}
TIMEOUT_CONFORMANCE=${TIMEOUT_CONFORMANCE:-90}
TIMEOUT_BENCH_PBS=${TIMEOUT_BENCH_PBS:-150}
TIMEOUT_BENCH=${TIMEOUT_BENCH:-200}
TIMEOUT_BENCH_SHORT=${TIMEOUT_BENCH_SHORT:-60}
mkdir -p "$OUT"

if [ -z "${OCL_ICD_VENDORS:-}" ] && [ -f .devdeps/env.sh ]; then
    echo "note: OCL_ICD_VENDORS is not set; was .devdeps/env.sh sourced?" | tee "$OUT/notes.log"
fi

declare -a STEP_NAMES=()
declare -a STEP_STATUS=()
record() { STEP_NAMES+=("$1"); STEP_STATUS+=("$2"); }

# run_step NAME LOG TIMEOUT COMMAND...: runs COMMAND (under `timeout` when TIMEOUT > 0) with its
# output shown and appended to $OUT/LOG; records its exit status.
run_step() {
    local name=$1 log=$OUT/$2 limit=$3
    shift 3
    echo "=== $name: $*" | tee -a "$log"
    local status
    if [ "$limit" -gt 0 ] && command -v timeout >/dev/null; then
        timeout "$limit" "$@" 2>&1 | tee -a "$log"
        status=$?
    else
        "$@" 2>&1 | tee -a "$log"
        status=$?
    fi
    [ "$status" -eq 124 ] && echo "=== $name: timed out after $limit s" | tee -a "$log"
    echo "=== $name: exit status $status" | tee -a "$log"
    record "$name" "$status"
    return "$status"
}

# ---- the machine -------------------------------------------------------------------------------
{
    echo "date (UTC): $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -a)"
    echo "revision: $(git describe --always --dirty 2>/dev/null || echo unknown)"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version --format=csv
    else
        echo "nvidia-smi: not found"
    fi
    command -v clinfo >/dev/null && clinfo -l
    echo "meson $(meson --version 2>/dev/null), ninja $(ninja --version 2>/dev/null)"
} 2>&1 | tee "$OUT/machine.log"

# ---- build -------------------------------------------------------------------------------------
: >"$OUT/build.log"
if [ -f "$BUILD_DIR/build.ninja" ]; then
    run_step setup build.log 0 meson setup --reconfigure "$BUILD_DIR" -Dbuildtype=release
else
    run_step setup build.log 0 meson setup "$BUILD_DIR" -Dbuildtype=release
fi
if [ "${STEP_STATUS[-1]}" -eq 0 ]; then
    run_step build build.log 0 ninja -C "$BUILD_DIR"
fi
BUILT=0
[ "${STEP_STATUS[-1]}" -eq 0 ] && BUILT=1

# ---- tests and conformance ---------------------------------------------------------------------
BENCH=$BUILD_DIR/bench/pbsa-bench-dense
if [ "$BUILT" -eq 1 ]; then
    : >"$OUT/test.log"
    run_step tests test.log "$TIMEOUT_TESTS" meson test -C "$BUILD_DIR" --print-errorlogs
    cp "$BUILD_DIR/meson-logs/testlog.txt" "$OUT/testlog.txt" 2>/dev/null

    : >"$OUT/conformance.log"
    run_step conformance conformance.log "$TIMEOUT_CONFORMANCE" "$BUILD_DIR/tools/pbsa-conformance"

    # ---- PBS against dense attention (the main job) --------------------------------------------
    : >"$OUT/bench-pbs.log"
    run_step bench-pbs bench-pbs.log "$TIMEOUT_BENCH_PBS" "$BUILD_DIR/bench/pbsa-bench-pbs" \
        --workload mixed --lengths 8192,16384,32768 --dtype bf16 --heads 32 --kv-heads 8 \
        --head-dim 128 --json "$OUT/h100-pbs-bf16.json"

    # ---- dense attention benchmark -------------------------------------------------------------
    : >"$OUT/bench-dense.log"
    run_step bench-bf16 bench-dense.log "$TIMEOUT_BENCH" "$BENCH" --dtype bf16 --heads 32 \
        --kv-heads 32 --head-dim 128 --batch 1 --causal 1 --lengths 4096,8192,16384,32768 \
        --check always --json "$OUT/h100-dense-bf16.json"
    run_step bench-f16 bench-dense.log "$TIMEOUT_BENCH_SHORT" "$BENCH" --dtype f16 --heads 32 \
        --kv-heads 32 --head-dim 128 --batch 1 --causal 1 --lengths 16384 --repeats 5 \
        --check always --json "$OUT/h100-dense-f16.json"
    run_step bench-f32 bench-dense.log "$TIMEOUT_BENCH_SHORT" "$BENCH" --dtype f32 --heads 32 \
        --kv-heads 32 --head-dim 128 --batch 1 --causal 1 --lengths 16384 --repeats 5 \
        --check always --json "$OUT/h100-dense-f32.json"
fi

# ---- summary -----------------------------------------------------------------------------------
{
    echo
    echo "==================== summary ===================="
    for i in "${!STEP_NAMES[@]}"; do
        s=${STEP_STATUS[$i]}
        word=ok
        [ "$s" -ne 0 ] && word="FAILED ($s)"
        [ "$s" -eq 124 ] && word="TIMED OUT"
        printf '%-12s %s\n' "${STEP_NAMES[$i]}" "$word"
    done
    [ "$BUILT" -eq 1 ] || echo "build failed: see $OUT/build.log"
    grep -E '^(Ok|Expected Fail|Fail|Unexpected Pass|Skipped|Timeout):' "$OUT/test.log" 2>/dev/null
    shopt -s nullglob
    pbs_jsons=("$OUT"/h100-pbs-*.json)
    [ "${#pbs_jsons[@]}" -gt 0 ] && python3 - "${pbs_jsons[@]}" <<'PBS_EOF'
import json, sys

def num(value, fmt, scale=1.0):
    return format(value * scale, fmt) if isinstance(value, (int, float)) else "-"

for path in sys.argv[1:]:
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        print(f"{path}: unreadable ({e})")
        continue
    p = doc.get("params", {})
    print(f"PBS vs dense: {doc.get('device_name', '?')}, {doc.get('dtype')}, heads "
          f"{doc.get('heads')}/{doc.get('kv_heads')}, D {doc.get('head_dim')}, workload "
          f"{doc.get('workload')}, block {p.get('block_size')}, segment {p.get('segment_size')}, "
          f"threshold {p.get('threshold')}")
    print(f"{'seq':>6} {'dense_ms':>9} {'pbs_ms':>8} {'speedup':>7} {'perm':>7} {'select':>7} "
          f"{'sparse':>8} {'density':>7} {'no_perm':>7} {'rel_l2':>8} {'recall':>6}")
    for r in doc.get("results", []):
        ms = r.get("ms_median", {})
        line = (f"{r['seq']:>6} {num(r.get('dense_ms'), '9.3f')} {num(r.get('pbs_ms'), '8.3f')} "
                f"{num(r.get('speedup'), '6.2f')}x {num(ms.get('permutation'), '7.3f')} "
                f"{num(ms.get('selection'), '7.3f')} {num(ms.get('sparse'), '8.3f')} "
                f"{num(r.get('density'), '6.1f', 100)}% "
                f"{num(r.get('density_without_permutation'), '6.1f', 100)}% "
                f"{num(r.get('rel_l2'), '8.2e')} {num(r.get('recall'), '5.1f', 100)}%")
        if r.get("error"):
            line += " error: " + r["error"]
        print(line)
    print()
PBS_EOF
    jsons=("$OUT"/h100-dense-*.json)
    [ "${#jsons[@]}" -gt 0 ] && python3 - "${jsons[@]}" <<'EOF'
import json, sys
rows = []
for path in sys.argv[1:]:
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        print(f"{path}: unreadable ({e})")
        continue
    peak = doc.get("fma_peak_tflops")
    for r in doc.get("results", []):
        rows.append((doc.get("device_name", "?"), peak, r))
if rows:
    print(f"device: {rows[0][0]} (%FMA: of the fp32 FMA peak measured in the same run)")
    print(f"{'dtype':>5} {'seq':>6} {'ms_median':>10} {'TFLOP/s':>8} {'FMA peak':>8} "
          f"{'%FMA':>6} {'rel_l2':>9} check")

    def num(value, fmt):
        return format(value, fmt) if isinstance(value, (int, float)) else "-"

    for _, peak, r in rows:
        frac = r.get("fraction_of_fma_peak")
        check = {True: "ok", False: "FAIL"}.get(r.get("check_passed"), "-")
        if r.get("error"):
            check += " error: " + r["error"]
        print(f"{r['dtype']:>5} {r['seq']:>6} {num(r.get('ms_median'), '10.3f')} "
              f"{num(r.get('tflops'), '8.2f')} {num(peak, '8.2f')} "
              f"{num(frac * 100 if isinstance(frac, float) else None, '5.1f')}% "
              f"{num(r.get('rel_l2_check'), '9.2e')} {check}")
EOF
} 2>&1 | tee "$OUT/summary.log"

for s in "${STEP_STATUS[@]}"; do
    [ "$s" -ne 0 ] && exit 1
done
[ "$BUILT" -eq 1 ] || exit 1
exit 0
