#!/bin/sh
# Bounded libFuzzer runs of every fuzz target, in CI and by hand:
#
#   CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
#       "-Dc_args=-fsanitize=fuzzer-no-link -fno-sanitize-recover=all"
#   tests/fuzz/run.sh build-fuzz [SECONDS_PER_TARGET] [TARGET...]
#
# Each target starts from its seeds (tests/fuzz/corpus/TARGET) and any crash reproducers kept in
# tests/fuzz/crashes/TARGET; what it learns goes to BUILD/fuzz/TARGET/corpus, and a crash to
# BUILD/fuzz/TARGET/ (the script prints it and fails). Keep the reproducer with the fix: copy it
# into tests/fuzz/crashes/TARGET/, where every build replays it as a test.
set -eu

build=${1:?usage: run.sh BUILD_DIR [SECONDS] [TARGET...]}
seconds=${2:-30}
[ $# -ge 2 ] && shift 2 || shift $#
targets=${*:-npy params selector tuning}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

mkdir -p "$build/fuzz"
# shellcheck disable=SC2046
if ! ninja -C "$build" $(for t in $targets; do printf 'tests/fuzz/fuzz_%s ' "$t"; done) \
    >"$build/fuzz/build.log" 2>&1; then
    cat "$build/fuzz/build.log"
    echo "FAIL: the fuzz targets do not build"
    exit 1
fi

# The OpenCL implementation's own leaks are suppressed as in the sanitizer test runs
# (tests/lsan.supp), and the loader opens PoCL alone, as in those runs (tests/meson.build says
# why); PoCL's kernel cache stays inside the build folder.
export OCL_ICD_VENDORS="${OCL_ICD_VENDORS:-/etc/OpenCL/vendors/pocl.icd}"
export LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_stack_use_after_return=1:check_initialization_order=1}"
export POCL_CACHE_DIR="${POCL_CACHE_DIR:-$(cd "$build" && pwd)/fuzz/pocl-cache}"

failed=0
for target in $targets; do
    work="$build/fuzz/$target"
    mkdir -p "$work/corpus"
    inputs="$work/corpus $here/corpus/$target"
    [ -d "$here/crashes/$target" ] && inputs="$inputs $here/crashes/$target"
    dict=""
    [ -f "$here/$target.dict" ] && dict="-dict=$here/$target.dict"
    echo "== fuzz_$target: $seconds s"
    # shellcheck disable=SC2086
    if ! "$build/tests/fuzz/fuzz_$target" -max_total_time="$seconds" -timeout=30 \
        -rss_limit_mb=4096 -max_len=4096 -print_final_stats=1 $dict \
        -artifact_prefix="$work/" $inputs >"$work/log.txt" 2>&1; then
        failed=1
        tail -n 60 "$work/log.txt"
        for crash in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
            [ -f "$crash" ] || continue
            echo "reproducer $crash (base64):"
            base64 "$crash"
        done
        echo "FAIL: fuzz_$target"
    else
        grep -E "^stat::number_of_executed_units|^stat::new_units_added" "$work/log.txt" |
            tr '\n' ' '
        echo
    fi
done
exit $failed
