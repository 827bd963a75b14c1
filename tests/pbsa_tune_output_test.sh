#!/bin/sh
# pbsa-tune --output refuses anything but a new path or a regular file (a FIFO, a directory, a
# device node, a symbolic link), with a message that names it, a non-zero exit status, and the
# special file left as it was.
# Usage: pbsa_tune_output_test.sh PBSA_TUNE SCRATCH_DIR
set -u
tune=$1
dir=$2
rm -rf "$dir"
mkdir -p "$dir/config" || exit 1
unset PBSA_TUNING_FILE PBSA_FLASH_CONFIG PBSA_MMA_CONFIG PBSA_TUNING
XDG_CONFIG_HOME=$dir/config
export XDG_CONFIG_HOME

fail() {
    echo "FAIL: $*"
    exit 1
}

# refuses PATH KIND WHAT_THE_MESSAGE_SAYS
refuses() {
    timeout 120 "$tune" --kernels dense --dtype f32 --head-dim 64 --heads 1 --kv-heads 1 \
        --lengths 256 --candidates 1 --budget 5 --output "$1" >"$dir/out" 2>"$dir/err"
    status=$?
    cat "$dir/out" "$dir/err"
    [ "$status" -ne 0 ] && [ "$status" -ne 124 ] || fail "$2: exit status $status"
    grep -q "$1 $3" "$dir/err" || fail "$2: no message saying that $1 $3"
}

echo "== a FIFO"
mkfifo "$dir/fifo" || fail "mkfifo"
refuses "$dir/fifo" FIFO "is not a regular file"
[ -p "$dir/fifo" ] || fail "the FIFO was replaced"

echo "== a directory"
mkdir "$dir/folder"
refuses "$dir/folder" directory "is a directory"
[ -d "$dir/folder" ] || fail "the directory was replaced"

echo "== a symbolic link to a regular file"
echo "# not a tuning file" >"$dir/target.txt"
ln -s target.txt "$dir/link.txt"
refuses "$dir/link.txt" symlink "is a symbolic link"
[ -L "$dir/link.txt" ] || fail "the link was replaced"
grep -q "not a tuning file" "$dir/target.txt" || fail "the link's target was changed"

echo "== a character device"
if mknod "$dir/null" c 1 3 2>/dev/null; then
    refuses "$dir/null" device "is not a regular file"
    [ -c "$dir/null" ] || fail "the device node was replaced"
else
    echo "(mknod not permitted here: skipped)"
fi
echo "PASS"
