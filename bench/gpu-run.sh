#!/usr/bin/env bash
# The GPU machine's run, everything in one command (about 9 minutes on an H100, stopped at 9.5):
# build (release), unit and device tests, pbsa-conformance, pbsa-tune and the tuned-versus-default
# comparison, the dense benchmark (bf16, 8K-64K), the PBS benchmark (Llama-3.1-8B shape, bf16;
# mixed, vertical and random workloads at 8K-64K, and mixed at 128K when time is left), PyTorch
# SDPA (random inputs: its time does not depend on them), the authors' Triton PBS-Attn on the PBS
# run's mixed inputs at every length (bench/triton_anchor.py; their code in .pbsref/, or skipped),
# the Table 7 comparison and the plot. From the repository root:
#
#     source .devdeps/env.sh && OUT=/some/dir bash bench/gpu-run.sh
#
# $OUT receives eight files (PREFIX, default h100, starts every name):
#   h100-dense-bf16.json, h100-pbs-bf16.json, h100-pbs-bf16.csv, h100-sdpa-bf16.json,
#   h100-triton-pbs-bf16.json, h100-table7.md, h100-summary.txt, h100-logs.tar.gz (every step's
#   log, the meson test log, the machine's description, the tuning file written, the
#   tuned-versus-default JSONs and the plot h100-pbs-bf16.png).
# The run goes on after a failing step; the exit status is non-zero when any step failed. Each
# step has a time limit, cut further so that the whole run ends DEADLINE seconds (default 540)
# after it started; a step with less than a minimum left is skipped. Variables: OUT, PREFIX,
# BUILD_DIR (default /tmp/b), WORK (logs and dumped inputs, default /tmp/pbsa-gpu-run),
# PART (checks: build, tests, conformance and tuning only; bench: build and benchmarks only;
# default: both), DEADLINE, TESTS_LIMIT (seconds for meson test, default 300), TUNE_BUDGET (seconds of
# pbsa-tune, 0 to skip), PBSREF (the authors' code), and PBS_LENGTHS, PBS_LONG (the mixed-only
# length, empty to skip), PBS_WORKLOADS (default mixed,vertical,random), DENSE_LENGTHS,
# SDPA_LENGTHS, WGMMA_CONFIGS (on Hopper, the wgmma configurations checked and timed; empty to
# skip). On Hopper the default path is wgmma; mma.sync (PBSA_WGMMA=0) is checked and timed beside.
set -u -o pipefail

OUT=${OUT:-./out}
PART=${PART:-all}
PREFIX=${PREFIX:-h100}
BUILD_DIR=${BUILD_DIR:-/tmp/b}
WORK=${WORK:-/tmp/pbsa-gpu-run}
DEADLINE=${DEADLINE:-570}
PBS_LENGTHS=${PBS_LENGTHS:-8192,16384,32768,65536}
PBS_LONG=${PBS_LONG-131072}
PBS_WORKLOADS=${PBS_WORKLOADS:-mixed,vertical,random}
DENSE_LENGTHS=${DENSE_LENGTHS:-8192,16384,32768,65536}
SDPA_LENGTHS=${SDPA_LENGTHS:-8192,16384,32768,65536,131072}
TUNE_BUDGET=${TUNE_BUDGET:-100}
WGMMA_CONFIGS=${WGMMA_CONFIGS-8,1,64,2 8,1,64,5 8,1,64,6}
PBSREF=${PBSREF:-.pbsref}
TESTS_LIMIT=${TESTS_LIMIT:-300}
LOGS=$WORK/logs
START=$SECONDS
mkdir -p "$OUT" "$LOGS"
rm -rf "$WORK/inputs" "$WORK"/pbs-long.* "$WORK"/triton-*.json

declare -a STEP_NAMES=() STEP_STATUS=()
record() { STEP_NAMES+=("$1"); STEP_STATUS+=("$2"); }

# run_step NAME LOG LIMIT MINIMUM COMMAND...: runs COMMAND under `timeout` for at most LIMIT
# seconds, or what is left before DEADLINE when that is less; skips it (status 125) when less
# than MINIMUM seconds are left. Output shown and appended to $LOGS/LOG.
run_step() {
    local name=$1 log=$LOGS/$2 limit=$3 minimum=$4
    shift 4
    local left=$((DEADLINE - (SECONDS - START)))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt "$minimum" ]; then
        echo "=== $name: skipped, ${left}s left of the run's ${DEADLINE}s" | tee -a "$log"
        record "$name" 125
        return 125
    fi
    echo "=== $name (limit ${limit}s, at $((SECONDS - START))s): $*" | tee -a "$log"
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    local status=$?
    [ "$status" -eq 124 ] && echo "=== $name: timed out after ${limit}s" | tee -a "$log"
    echo "=== $name: exit status $status" | tee -a "$log"
    record "$name" "$status"
    return "$status"
}

# ---- the machine -------------------------------------------------------------------------------
{
    echo "date (UTC): $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -a)"
    echo "revision: $(git describe --always --dirty 2>/dev/null || echo unknown)"
    git status --short 2>/dev/null | head -50
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    else
        echo "nvidia-smi: not found"
    fi
    [ -z "${OCL_ICD_VENDORS:-}" ] &&
        echo "note: OCL_ICD_VENDORS is not set; was .devdeps/env.sh sourced?"
    command -v clinfo >/dev/null && clinfo -l
    echo "meson $(meson --version 2>/dev/null), ninja $(ninja --version 2>/dev/null)"
    echo "python3: $(command -v python3) $(python3 --version 2>&1)"
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 |
        tail -1
    python3 -c 'import matplotlib; print("matplotlib", matplotlib.__version__)' 2>&1 | tail -1
} 2>&1 | tee "$LOGS/machine.log"

# ---- build, tests, conformance -----------------------------------------------------------------
if [ -f "$BUILD_DIR/build.ninja" ]; then
    run_step setup build.log 120 10 meson setup --reconfigure "$BUILD_DIR" -Dbuildtype=release
else
    run_step setup build.log 120 10 meson setup "$BUILD_DIR" -Dbuildtype=release
fi
[ "${STEP_STATUS[-1]}" -eq 0 ] && run_step build build.log 240 10 ninja -C "$BUILD_DIR"
BUILT=0
[ "${STEP_STATUS[-1]}" -eq 0 ] && BUILT=1
WGMMA=0
[ "$BUILT" -eq 1 ] && "$BUILD_DIR/tools/pbsa-info" 2>/dev/null |
    grep -q "tensor-core path:     wgmma" && WGMMA=1

PBS_JSON=$OUT/$PREFIX-pbs-bf16.json
PBS_CSV=$OUT/$PREFIX-pbs-bf16.csv
DENSE_JSON=$OUT/$PREFIX-dense-bf16.json
SDPA_JSON=$OUT/$PREFIX-sdpa-bf16.json
TRITON_JSON=$OUT/$PREFIX-triton-pbs-bf16.json
TABLE7=$OUT/$PREFIX-table7.md
PLOT=$WORK/$PREFIX-pbs-bf16.png
TUNING=$WORK/$PREFIX-tuning.txt
if [ "$BUILT" -eq 1 ]; then
  if [ "$PART" != bench ]; then
    # TESTS names the meson tests to run (default: all of them).
    run_step tests test.log "$TESTS_LIMIT" 30 meson test -C "$BUILD_DIR" --print-errorlogs ${TESTS:-}
    cp "$BUILD_DIR/meson-logs/testlog.txt" "$LOGS/testlog.txt" 2>/dev/null
    run_step conformance conformance.log 60 10 "$BUILD_DIR/tools/pbsa-conformance"
    # Where the tensor-core kernels run, the portable ones must pass the same cases.
    run_step conformance-portable conformance.log 60 10 "$BUILD_DIR/tools/pbsa-conformance" --portable
    PBSA_FORCE_PORTABLE=1 run_step pbs-portable test.log 120 30 \
        meson test -C "$BUILD_DIR" --no-rebuild --print-errorlogs pbs_attention pbs_pipeline
    # On Hopper, where wgmma is the default, the mma.sync tiles must pass the same cases.
    if [ "$WGMMA" -eq 1 ]; then
        PBSA_WGMMA=0 run_step conformance-mma-sync conformance.log 60 10 \
            "$BUILD_DIR/tools/pbsa-conformance"
        # Each wgmma configuration timed below, forced: the cases it runs (head dim 128).
        for config in $WGMMA_CONFIGS; do
            PBSA_MMA_CONFIG=$config run_step "conformance-wgmma-$config" \
                conformance.log 40 10 "$BUILD_DIR/tools/pbsa-conformance" --filter d128 \
                --filter defaults
        done
    fi

    # ---- pbsa-tune, then the tuned configurations against the heuristic defaults -------------
    if [ "$TUNE_BUDGET" -gt 0 ]; then
        run_step tune tune.log $((TUNE_BUDGET + 60)) 60 "$BUILD_DIR/tools/pbsa-tune" --full \
            --dtype bf16 --lengths 16384 --budget "$TUNE_BUDGET" --fresh --output "$TUNING"
        if [ -f "$TUNING" ]; then
            for mode in default tuned; do
                if [ "$mode" = default ]; then env=(PBSA_TUNING=off); else env=(PBSA_TUNING_FILE="$TUNING"); fi
                run_step "tuning-$mode" tune.log 60 20 env "${env[@]}" \
                    "$BUILD_DIR/bench/pbsa-bench-dense" --lengths 16384,32768 --repeats 5 \
                    --json "$WORK/$PREFIX-dense-$mode.json"
                run_step "tuning-$mode-pbs" tune.log 60 20 env "${env[@]}" \
                    "$BUILD_DIR/bench/pbsa-bench-pbs" --preset llama3-8b --lengths 32768 \
                    --json "$WORK/$PREFIX-pbs-$mode.json"
            done
            cp "$TUNING" "$LOGS/"
        fi
    fi
  fi
  if [ "$PART" != checks ]; then
    # ---- dense attention, 32 heads ---------------------------------------------------------
    run_step bench-dense bench-dense.log 120 30 "$BUILD_DIR/bench/pbsa-bench-dense" \
        --dtype bf16 --heads 32 --kv-heads 32 --head-dim 128 --batch 1 --causal 1 \
        --lengths "$DENSE_LENGTHS" --check always --json "$DENSE_JSON"

    # ---- on Hopper, mma.sync beside the default wgmma tiles, and the wgmma tiles at 32K in
    # each configuration of WGMMA_CONFIGS (bench/NOTES.md: w6 stages 6, the default) ----------
    if [ "$WGMMA" -eq 1 ]; then
        PBSA_WGMMA=0 run_step bench-dense-mma-sync bench-dense.log 120 30 \
            "$BUILD_DIR/bench/pbsa-bench-dense" --dtype bf16 --heads 32 --kv-heads 32 \
            --head-dim 128 --batch 1 --causal 1 --lengths "$DENSE_LENGTHS" --check always \
            --json "$WORK/$PREFIX-dense-mma-sync-bf16.json"
        for config in $WGMMA_CONFIGS; do
            PBSA_MMA_CONFIG=$config run_step "bench-dense-wgmma-$config" \
                bench-dense.log 60 20 "$BUILD_DIR/bench/pbsa-bench-dense" --dtype bf16 \
                --heads 32 --kv-heads 32 --head-dim 128 --batch 1 --causal 1 --lengths 32768 \
                --check always --json "$WORK/$PREFIX-dense-wgmma-$config-bf16.json"
        done
    fi

    # ---- PBS against dense attention (the main job) ----------------------------------------
    run_step bench-pbs bench-pbs.log 240 60 "$BUILD_DIR/bench/pbsa-bench-pbs" \
        --preset llama3-8b --dtype bf16 --workload "$PBS_WORKLOADS" \
        --lengths "$PBS_LENGTHS" --dump-inputs "$WORK/inputs" --dump-length all \
        --json "$PBS_JSON" --csv "$PBS_CSV"
    [ "$WGMMA" -eq 1 ] && PBSA_WGMMA=0 run_step bench-pbs-mma-sync bench-pbs.log 60 20 \
        "$BUILD_DIR/bench/pbsa-bench-pbs" --preset llama3-8b --dtype bf16 --workload mixed \
        --lengths 32768 --json "$WORK/$PREFIX-pbs-mma-sync-bf16.json"

    # ---- PyTorch SDPA, the same shape ------------------------------------------------------
    if python3 -c 'import torch' >/dev/null 2>&1; then
        run_step sdpa sdpa.log 90 20 python3 bench/sdpa_anchor.py --preset llama3-8b \
            --dtype bf16 --lengths "$SDPA_LENGTHS" --json "$SDPA_JSON"
    else
        echo "=== sdpa: skipped, python3 cannot import torch" | tee -a "$LOGS/sdpa.log"
    fi

    # ---- engines' calls: a varlen batch against its sequences one by one, paged K/V ---------
    for attention in pbs dense; do
        run_step "bench-varlen-$attention" bench-varlen.log 120 30 \
            "$BUILD_DIR/bench/pbsa-bench-varlen" --attention "$attention" --dtype bf16 \
            --heads 32 --kv-heads 8 --head-dim 128 --page-sizes 16,64,256 \
            --json "$WORK/$PREFIX-varlen-$attention-bf16.json"
    done

    # ---- PBS at the long length, mixed workload only, when time is left ----------------------
    if [ -n "$PBS_LONG" ]; then
        run_step bench-pbs-long bench-pbs.log 150 100 "$BUILD_DIR/bench/pbsa-bench-pbs" \
            --preset llama3-8b --dtype bf16 --workload mixed --lengths "$PBS_LONG" \
            --warmup 1 --repeats 3 --json "$WORK/pbs-long.json" --csv "$WORK/pbs-long.csv" \
            --dump-inputs "$WORK/inputs" --dump-length all
        if [ -f "$WORK/pbs-long.json" ] && [ -f "$PBS_JSON" ]; then
            python3 bench/results.py merge "$PBS_JSON" "$PBS_JSON" "$WORK/pbs-long.json"
            python3 bench/results.py merge "$PBS_CSV" "$PBS_CSV" "$WORK/pbs-long.csv"
            echo "=== merged the $PBS_LONG-token run into $PBS_JSON and $PBS_CSV" |
                tee -a "$LOGS/bench-pbs.log"
        fi
    fi

    # ---- the authors' Triton implementation on the same inputs, one length at a time ---------
    if [ -d "$PBSREF" ] && python3 -c 'import torch, triton' >/dev/null 2>&1; then
        for dir in $(ls -d "$WORK"/inputs/*/ 2>/dev/null | sort -V); do
            seq=$(basename "$dir")
            run_step "triton-$seq" triton.log 120 30 python3 bench/triton_anchor.py \
                --pbs-attn "$PBSREF" --preset llama3-8b --lengths "$seq" --inputs "$dir" \
                --json "$WORK/triton-$seq.json"
        done
        python3 bench/results.py merge "$TRITON_JSON" "$WORK"/triton-*.json
    else
        echo "=== triton: skipped, no $PBSREF or python3 cannot import torch and triton" |
            tee -a "$LOGS/triton.log"
    fi

    # ---- Table 7 side by side, and the plot ------------------------------------------------
    if [ -f "$PBS_JSON" ]; then
        sdpa=()
        [ -f "$SDPA_JSON" ] && sdpa=(--sdpa "$SDPA_JSON")
        run_step table7 report.log 30 5 python3 bench/table7.py "$PBS_JSON" \
            ${sdpa[@]+"${sdpa[@]}"} --out "$TABLE7"
        if python3 -c 'import matplotlib' >/dev/null 2>&1; then
            run_step plot report.log 60 5 python3 bench/plot.py "$PBS_JSON" -o "$PLOT"
        else
            echo "=== plot: matplotlib is not importable here; on the development machine:" \
                "python3 bench/plot.py $(basename "$PBS_CSV") -o $(basename "$PLOT")" |
                tee -a "$LOGS/report.log"
        fi
    fi
  fi
fi

# ---- summary -----------------------------------------------------------------------------------
{
    echo
    echo "==================== summary ($((SECONDS - START)) s) ===================="
    for i in "${!STEP_NAMES[@]}"; do
        s=${STEP_STATUS[$i]}
        word=ok
        [ "$s" -ne 0 ] && word="FAILED ($s)"
        [ "$s" -eq 124 ] && word="TIMED OUT"
        [ "$s" -eq 125 ] && word="skipped (no time left)"
        printf '%-15s %s\n' "${STEP_NAMES[$i]}" "$word"
    done
    [ "$BUILT" -eq 1 ] || echo "build failed: see build.log in $PREFIX-logs.tar.gz"
    grep -E '^(Ok|Expected Fail|Fail|Unexpected Pass|Skipped|Timeout):' "$LOGS/test.log" 2>/dev/null
    grep -E 'cases passed' "$LOGS/conformance.log" 2>/dev/null
    echo
    [ -f "$DENSE_JSON" ] && python3 - "$DENSE_JSON" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
num = lambda v, f: format(v, f) if isinstance(v, (int, float)) else "-"
print(f"dense: {doc.get('device_name')}, fp32 FMA peak {num(doc.get('fma_peak_tflops'), '.1f')} "
      "TFLOP/s measured in the same run")
print(f"{'dtype':>5} {'seq':>6} {'ms_median':>10} {'TFLOP/s':>8} {'%FMA':>6} {'rel_l2':>9} check")
for r in doc.get("results", []):
    frac = r.get("fraction_of_fma_peak")
    check = {True: "ok", False: "FAIL"}.get(r.get("check_passed"), "-")
    print(f"{r['dtype']:>5} {r['seq']:>6} {num(r.get('ms_median'), '10.3f')} "
          f"{num(r.get('tflops'), '8.2f')} {num(frac * 100 if frac else None, '5.1f')}% "
          f"{num(r.get('rel_l2_check'), '9.2e')} {check} {r.get('error', '')}")
EOF
    echo
    for f in "$WORK/$PREFIX"-dense-mma-sync-bf16.json "$WORK/$PREFIX"-dense-wgmma-*-bf16.json; do
        [ -f "$f" ] && python3 - "$f" <<'EOF'
import json, os, sys
name = os.path.basename(sys.argv[1]).split("-dense-")[1].rsplit("-bf16", 1)[0]
how = ("mma.sync (PBSA_WGMMA=0)" if name == "mma-sync"
       else f"wgmma (PBSA_MMA_CONFIG={name.split('wgmma-')[1]})")
for r in json.load(open(sys.argv[1])).get("results", []):
    print(f"dense on {how}: seq {r['seq']} {r['ms_median']:.3f} ms {r['tflops']:.1f} TFLOP/s")
EOF
    done
    [ -f "$WORK/$PREFIX-pbs-mma-sync-bf16.json" ] &&
        echo "PBS on mma.sync (PBSA_WGMMA=0):" &&
        python3 bench/results.py summary "$WORK/$PREFIX-pbs-mma-sync-bf16.json"
    [ -f "$PBS_JSON" ] && python3 bench/results.py summary "$PBS_JSON"
    echo
    [ -f "$SDPA_JSON" ] && python3 - "$SDPA_JSON" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
print(f"SDPA: {doc.get('device_name')}, torch {doc.get('torch_version')}, {doc.get('dtype')}, "
      f"heads {doc.get('heads')}/{doc.get('kv_heads')}, D {doc.get('head_dim')}")
for r in doc.get("results", []):
    if "ms_median" in r:
        print(f"{r['seq']:>7} {r['input']:>6} {r['gqa_used']:>7} {r['ms_median']:10.3f} ms "
              f"{r['tflops']:7.1f} TFLOP/s")
    else:
        print(f"{r['seq']:>7} error: {r.get('error')}")
EOF
    echo
    [ -f "$PBS_JSON" ] && [ -f "$TRITON_JSON" ] && python3 bench/results.py triton "$PBS_JSON" "$TRITON_JSON"
    echo
    for mode in default tuned; do
        [ -f "$WORK/$PREFIX-dense-$mode.json" ] && python3 - "$mode" "$WORK/$PREFIX-dense-$mode.json" <<'EOF'
import json, sys
for r in json.load(open(sys.argv[2])).get("results", []):
    print(f"dense, tuning {sys.argv[1]}: seq {r['seq']} {r['ms_median']:.3f} ms")
EOF
        [ -f "$WORK/$PREFIX-pbs-$mode.json" ] && echo "PBS, tuning $mode:" &&
            python3 bench/results.py summary "$WORK/$PREFIX-pbs-$mode.json" | sed -n '3,4p'
    done
    echo
    [ -f "$TABLE7" ] && cat "$TABLE7"
} 2>&1 | tee "$OUT/$PREFIX-summary.txt"

# Everything else travels in one archive; $OUT keeps the eight result files only.
mv "$OUT"/*.tmp "$LOGS"/ 2>/dev/null
extra=$(cd "$WORK" && ls pbs-long.* triton-*.json inputs/*/inputs.json "$PREFIX"-*.json \
    "$PREFIX"-*.png 2>/dev/null)
tar -czf "$OUT/$PREFIX-logs.tar.gz" -C "$WORK" logs $extra
ls -l "$OUT"

for s in "${STEP_STATUS[@]}"; do
    [ "$s" -ne 0 ] && [ "$s" -ne 125 ] && exit 1
done
[ "$BUILT" -eq 1 ] || exit 1
exit 0
