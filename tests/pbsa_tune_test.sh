#!/bin/sh
# Smoke test of pbsa-tune on the test device, with tiny shapes: a session writes the user's tuning
# file (atomically, keyed to the device), a new context (pbsa-info, through
# pbsa_query_kernel_config()) then uses it; the same file through PBSA_TUNING_FILE; PBSA_TUNING=off;
# a corrupt file is ignored with a warning; --output and --resume; the tensor-core kinds (tuned
# where the device runs them, else reported and skipped); Ctrl-C keeps what was tuned.
# Usage: pbsa_tune_test.sh PBSA_TUNE PBSA_INFO SCRATCH_DIR
set -u
tune=$1
info=$2
dir=$3
rm -rf "$dir"
mkdir -p "$dir/config" "$dir/empty" "$dir/corrupt/pbsattn/tuning" || exit 1
unset PBSA_TUNING_FILE PBSA_FLASH_CONFIG PBSA_MMA_CONFIG PBSA_TUNING
XDG_CONFIG_HOME=$dir/config
export XDG_CONFIG_HOME

fail() {
    echo "FAIL: $*"
    exit 1
}
show() {
    for f in "$@"; do
        echo "---- $f"
        cat "$f"
    done
}

# The line pbsa-info prints for a kernel ("dense bf16 D128 causal" or "sparse bf16 D128 b128").
info_line() {
    grep "^  $1" "$dir/info.out"
}

small="--heads 2 --kv-heads 1 --head-dim 128 --dtype bf16 --lengths 512 --budget 120"

echo "== a session into the user's tuning file"
"$tune" $small --candidates 3 >"$dir/tune.out" 2>"$dir/tune.err"
status=$?
show "$dir/tune.out" "$dir/tune.err"
[ "$status" -eq 0 ] || fail "pbsa-tune: exit status $status"
set -- "$dir"/config/pbsattn/tuning/*
[ "$#" -eq 1 ] && [ -f "$1" ] || fail "expected one file in $dir/config/pbsattn/tuning, found: $*"
file=$1
case "$file" in *.txt) ;; *) fail "not a .txt file (a temporary left?): $file" ;; esac
grep -q '^pbsattn-tuning 1$' "$file" || fail "no version line in $file"
grep -q '^device ' "$file" && grep -q '^platform ' "$file" || fail "no device key in $file"
[ "$(grep -c '^entry kernel=dense dtype=bf16 head_dim=128 block=0 causal=1 ' "$file")" -eq 1 ] ||
    fail "no dense entry"
[ "$(grep -c '^entry kernel=sparse dtype=bf16 head_dim=128 block=128 causal=1 ' "$file")" -eq 1 ] ||
    fail "no sparse entry"
[ "$(grep -Ec '^entry kernel=scores_method dtype=bf16 head_dim=128 block=128 causal=0 clblast=[01] ' \
    "$file")" -eq 1 ] || fail "no scores_method entry"
grep -q '(default): [0-9.]* ms$' "$dir/tune.err" || fail "no timed default on stderr"
grep -q '^dense  *bf16  *128 .*x$' "$dir/tune.out" || fail "no dense row with a speedup"
grep -q '^sparse  *bf16  *128  *128 .*x$' "$dir/tune.out" || fail "no sparse row with a speedup"
grep -q 'dense bf16 D128 causal: .*(user tuning file ' "$dir/tune.out" ||
    fail "pbsa-tune's own check of a new context"

echo "== a new context uses it"
"$info" >"$dir/info.out" 2>"$dir/info.err" || fail "pbsa-info failed"
show "$dir/info.out" "$dir/info.err"
info_line "dense bf16 D128 causal" | grep -qF "(user tuning file $file, line" ||
    fail "dense: not from the user's file"
info_line "sparse bf16 D128 b128 causal" | grep -qF "(user tuning file $file, line" ||
    fail "sparse: not from the user's file"
grep -q 'tuning' "$dir/info.err" && fail "pbsa-info warned about tuning data"

echo "== PBSA_TUNING_FILE"
cp "$file" "$dir/named.txt" || exit 1
XDG_CONFIG_HOME=$dir/empty PBSA_TUNING_FILE=$dir/named.txt "$info" >"$dir/info.out" 2>&1 ||
    fail "pbsa-info failed"
info_line "dense bf16 D128 causal" | grep -qF "(PBSA_TUNING_FILE $dir/named.txt, line" ||
    fail "dense: not from PBSA_TUNING_FILE"
info_line "sparse bf16 D128 b128 causal" | grep -qF "(PBSA_TUNING_FILE $dir/named.txt, line" ||
    fail "sparse: not from PBSA_TUNING_FILE"

echo "== PBSA_TUNING=off"
PBSA_TUNING=off "$info" >"$dir/info.out" 2>&1 || fail "pbsa-info failed"
info_line "dense bf16 D128 causal" | grep -q '(heuristic default, PBSA_TUNING=off)' ||
    fail "PBSA_TUNING=off: not the heuristic"

echo "== a corrupt user file"
sed 's/ block_m=/ block_m=x/' "$file" >"$dir/corrupt/pbsattn/tuning/$(basename "$file")"
XDG_CONFIG_HOME=$dir/corrupt "$info" >"$dir/info.out" 2>"$dir/info.err" || fail "pbsa-info failed"
show "$dir/info.err"
grep -q 'is corrupt and ignored: line [0-9]*: bad value' "$dir/info.err" || fail "no warning"
info_line "dense bf16 D128 causal" | grep -Eq '\((heuristic default|built-in tuning data )' ||
    fail "the corrupt file was used"

echo "== --output, --resume, --fresh"
out=$dir/out/tuning.txt
"$tune" $small --kernels dense --candidates 2 --output "$out" >"$dir/tune.out" 2>"$dir/tune.err" ||
    { show "$dir/tune.out" "$dir/tune.err"; fail "pbsa-tune --output failed"; }
[ -f "$out" ] || fail "--output: $out not written"
grep -q "to use $out: PBSA_TUNING_FILE=$out" "$dir/tune.out" || fail "no hint to use the file"
"$tune" $small --kernels dense --candidates 2 --output "$out" --resume >"$dir/tune.out" \
    2>"$dir/tune.err" || fail "pbsa-tune --resume failed"
grep -q 'already in .* (--resume)' "$dir/tune.err" || fail "--resume tuned again"
# Another key is added to the file; --fresh drops the old ones.
"$tune" $small --kernels dense --causal 0 --candidates 1 --output "$out" >/dev/null 2>&1 ||
    fail "pbsa-tune --causal 0 failed"
[ "$(grep -c '^entry ' "$out")" -eq 2 ] || fail "the first key was not kept"
"$tune" $small --kernels dense --causal 0 --candidates 1 --output "$out" --fresh >/dev/null 2>&1 ||
    fail "pbsa-tune --fresh failed"
[ "$(grep -c '^entry ' "$out")" -eq 1 ] || fail "--fresh kept old keys"

echo "== the tensor-core kernels"
"$info" >"$dir/info.out" 2>&1 || fail "pbsa-info failed"
if info_line "dense bf16 D128 causal" | grep -q 'tensor-core kernel warps='; then
    # The device runs them: the first session tuned them too, and a new context uses the result.
    # Those of the path it takes: wgmma where its probe passed, else mma.sync.
    if grep -q 'tensor-core path: *wgmma' "$dir/info.out"; then
        kind=wgmma mma='warps=(4|8|12) groups=1 keys=(32|64) stages=[1-6]'
    else
        kind=mma mma='warps=(2|4|8) groups=(1|2) keys=(32|64) stages=(1|2)'
    fi
    grep -Eq "^entry kernel=dense_$kind dtype=bf16 head_dim=128 block=0 causal=1 $mma " "$file" ||
        fail "no dense_$kind entry"
    grep -Eq "^entry kernel=sparse_$kind dtype=bf16 head_dim=128 block=128 causal=1 $mma " \
        "$file" || fail "no sparse_$kind entry"
    info_line "dense bf16 D128 causal" | grep -Eq "tensor-core kernel $mma \(" ||
        fail "pbsa-info: no tensor-core configuration"
else
    grep -q '^entry kernel=[a-z]*_mma ' "$file" && fail "tensor-core entries without tensor cores"
    "$tune" $small --kernels dense_mma,sparse_mma --output "$dir/mma.txt" >"$dir/tune.out" \
        2>"$dir/tune.err" || { show "$dir/tune.out" "$dir/tune.err"; fail "pbsa-tune failed"; }
    show "$dir/tune.err"
    grep -q '^pbsa-tune: dense_mma bf16 D128 causal: not tuned: .*tensor-core kernel dense_mma' \
        "$dir/tune.err" || fail "no reason for dense_mma"
    grep -q '^pbsa-tune: sparse_mma bf16 D128 b128 causal: not tuned: ' "$dir/tune.err" ||
        fail "no reason for sparse_mma"
    grep -q 'nothing tuned' "$dir/tune.out" || fail "no 'nothing tuned'"
    [ -e "$dir/mma.txt" ] && fail "a file was written with nothing tuned"
fi

echo "== Ctrl-C keeps what was tuned"
int=$dir/interrupted.txt
"$tune" $small --candidates 50 --output "$int" >"$dir/tune.out" 2>"$dir/tune.err" &
pid=$!
waited=0
until grep -q ' ms$' "$dir/tune.err" 2>/dev/null; do
    sleep 0.2
    waited=$((waited + 1))
    [ "$waited" -lt 600 ] || { kill "$pid"; fail "no candidate timed within 120 s"; }
done
kill -INT "$pid"
wait "$pid"
status=$?
show "$dir/tune.out" "$dir/tune.err"
[ "$status" -eq 130 ] || fail "exit status $status after SIGINT, expected 130"
grep -q 'interrupted' "$dir/tune.err" || fail "no note of the interruption"
grep -q '^entry kernel=dense ' "$int" || fail "nothing written after SIGINT"
echo "ok"
