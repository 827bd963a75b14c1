#!/bin/sh
# Smoke test of pbsa-run: small .npy inputs (written with Python's struct module, numpy is not
# needed), dense and PBS runs whose outputs and JSON line are checked, then malformed inputs and
# arguments that must fail cleanly with exit status 2.
# Usage: pbsa_run_test.sh PBSA_RUN PYTHON3 SCRATCH_DIR
set -u
run=$1
python=$2
dir=$3
rm -rf "$dir"
mkdir -p "$dir" || exit 1

"$python" - "$dir" <<'EOF' || exit 1
import random, struct, sys

out = sys.argv[1]
rng = random.Random(7)

def header(descr, shape, fortran=False):
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    text = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (descr, fortran, dims)
    total = (10 + len(text) + 1 + 63) // 64 * 64
    text = text + " " * (total - 10 - len(text) - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()

def count(shape):
    n = 1
    for d in shape:
        n *= d
    return n

def write(name, descr, shape, payload, fortran=False):
    with open("%s/%s" % (out, name), "wb") as f:
        f.write(header(descr, shape, fortran) + payload)

def f32(shape, amplitude):
    n = count(shape)
    return struct.pack("<%df" % n, *(amplitude * rng.uniform(-1, 1) for _ in range(n)))

def bf16(shape, amplitude):
    # Truncated float32 bits are valid bfloat16 values.
    words = struct.unpack("<%dI" % count(shape), f32(shape, amplitude))
    return struct.pack("<%dH" % len(words), *(w >> 16 for w in words))

q, kv = [1, 2, 300, 64], [1, 1, 300, 64]
write("q.npy", "<f4", q, f32(q, 2.0))
write("k.npy", "<f4", kv, f32(kv, 1.0))
write("v.npy", "<f4", kv, f32(kv, 1.0))
write("q16.npy", "<u2", q, bf16(q, 2.0))
write("k16.npy", "<u2", kv, bf16(kv, 1.0))
write("v16.npy", "<u2", kv, bf16(kv, 1.0))

# Malformed inputs.
latin1 = header("<f4", kv).replace(b"<f4", b"\xe9\x9b[", 1)
open("%s/latin1.npy" % out, "wb").write(latin1 + f32(kv, 1.0))
good = open("%s/k.npy" % out, "rb").read()
open("%s/truncated.npy" % out, "wb").write(good[:len(good) - 10])
write("fortran.npy", "<f4", kv, f32(kv, 1.0), fortran=True)
write("three_d.npy", "<f4", [1, 300, 64], f32([1, 300, 64], 1.0))
write("other_kv.npy", "<f4", [1, 1, 299, 64], f32([1, 1, 299, 64], 1.0))
write("f64.npy", "<f8", kv, f32(kv, 1.0) * 2)
open("%s/garbage.npy" % out, "wb").write(b"\x93NUMPY\x01\x00\xff\xff{'descr'")
EOF

status=0
fail() {
    echo "FAIL: $*" >&2
    status=1
}

# Runs pbsa-run; a missing OpenCL device (exit status 3) skips the whole test.
run_ok() {
    name=$1
    shift
    "$run" "$@" >"$dir/$name.json" 2>"$dir/$name.err"
    rc=$?
    if [ $rc -eq 3 ]; then
        echo "skipped: no OpenCL device: $(cat "$dir/$name.err")"
        exit 77
    fi
    if [ $rc -ne 0 ]; then
        fail "$name: exit status $rc: $(cat "$dir/$name.err")"
        return 1
    fi
    cat "$dir/$name.json"
    return 0
}

# Checks the JSON line and the .npy outputs of one run.
check_outputs() {
    "$python" - "$@" <<'EOF'
import json, struct, sys

name, mode, out, descr = sys.argv[1:5]
line = open(sys.argv[5]).read()
stats = json.loads(line)
assert stats["mode"] == mode, stats
assert stats["q_heads"] == 2 and stats["kv_heads"] == 1 and stats["kv_len"] == 300, stats
assert stats["times_ms"]["total"] is None or stats["times_ms"]["total"] >= 0, stats

def read(path):
    data = open(path, "rb").read()
    assert data[:6] == b"\x93NUMPY", path
    hlen = struct.unpack("<H", data[8:10])[0]
    header = eval(data[10:10 + hlen].decode(), {"__builtins__": {}}, {"False": False, "True": True})
    return header, data[10 + hlen:]

header, data = read(out + "/O.npy")
assert header["descr"] == descr and header["shape"] == (1, 2, 300, 64), header
if descr == "<f4":
    values = struct.unpack("<%df" % (len(data) // 4), data)
    assert len(values) == 2 * 300 * 64 and all(abs(x) < 10 for x in values), "O is not finite"
if mode == "pbs":
    header, data = read(out + "/pi.npy")
    assert header["descr"] == "<i4" and header["shape"] == (1, 2, 300), header
    pi = struct.unpack("<600i", data)
    for row in range(2):
        assert sorted(pi[row * 300:(row + 1) * 300]) == list(range(300)), "pi is not a permutation"
    header, data = read(out + "/mask.npy")
    assert header["descr"] == "|b1" and header["shape"] == (1, 2, 10, 10), header
    assert set(data) <= {0, 1} and sum(data) > 0, "mask is not boolean"
    assert len(stats["density_per_head"]) == 2 and stats["density"] > 0, stats
    for stage in ("permutation", "selection", "sparse_attention"):
        assert stage in stats["times_ms"], stats
print("%s: outputs OK" % name)
EOF
}

if run_ok dense --mode dense --causal 1 --out-dir "$dir/dense" \
        "$dir/q.npy" "$dir/k.npy" "$dir/v.npy"; then
    check_outputs dense dense "$dir/dense" "<f4" "$dir/dense.json" || fail "dense outputs"
fi
if run_ok pbs --mode pbs --block 32 --segment 64 --threshold 0.9 --gqa per-head --repeat 2 \
        --out-dir "$dir/pbs" "$dir/q.npy" "$dir/k.npy" "$dir/v.npy"; then
    check_outputs pbs pbs "$dir/pbs" "<f4" "$dir/pbs.json" || fail "pbs outputs"
fi
if run_ok pbs_bf16 --bf16 --block 32 --segment 64 --threshold 0.8 --causal 0 --sink 0 \
        --scale 0.1 --out-dir "$dir/pbs16" "$dir/q16.npy" "$dir/k16.npy" "$dir/v16.npy"; then
    check_outputs pbs_bf16 pbs "$dir/pbs16" "<u2" "$dir/pbs_bf16.json" || fail "bf16 outputs"
fi

# Runs that must fail with exit status 2 and a message, without crashing.
expect_bad() {
    what=$1
    shift
    "$run" "$@" >"$dir/bad.out" 2>"$dir/bad.err"
    rc=$?
    if [ $rc -ne 2 ]; then
        fail "$what: exit status $rc, expected 2 ($(cat "$dir/bad.err"))"
    elif [ ! -s "$dir/bad.err" ]; then
        fail "$what: no message"
    else
        echo "$what: $(cat "$dir/bad.err")"
    fi
}
q=$dir/q.npy
v=$dir/v.npy
expect_bad "truncated file" "$q" "$dir/truncated.npy" "$v"
expect_bad "fortran order" "$q" "$dir/fortran.npy" "$v"
expect_bad "3-D input" "$q" "$dir/three_d.npy" "$v"
expect_bad "K and V shapes differ" "$q" "$dir/k.npy" "$dir/other_kv.npy"
expect_bad "float64 input" "$q" "$dir/f64.npy" "$v"
expect_bad "garbage header" "$q" "$dir/garbage.npy" "$v"
expect_bad "missing file" "$q" "$dir/none.npy" "$v"
expect_bad "uint16 without --bf16" "$dir/q16.npy" "$dir/k16.npy" "$dir/v16.npy"
expect_bad "mixed dtypes" --bf16 "$dir/q16.npy" "$dir/k.npy" "$dir/v16.npy"
expect_bad "bad --causal" --causal 2 "$q" "$dir/k.npy" "$v"
expect_bad "bad --gqa" --gqa all "$q" "$dir/k.npy" "$v"
expect_bad "unknown option" --fast "$q" "$dir/k.npy" "$v"
expect_bad "two inputs" "$q" "$dir/k.npy"
expect_bad "block 48 (rejected by the library)" --block 48 --segment 96 "$q" "$dir/k.npy" "$v"

# Raw bytes of a header are never echoed: no byte outside printable ASCII in the message.
expect_bad "non-ASCII dtype" "$q" "$dir/latin1.npy" "$v"
if LC_ALL=C grep -q "$(printf '[^ -~]')" "$dir/bad.err"; then
    fail "non-ASCII dtype: raw bytes in the message"
fi
grep -q 'xe9.x9b' "$dir/bad.err" || fail "non-ASCII dtype: the bytes are not shown as \\xe9\\x9b"

# Numbers a float cannot hold are refused, not rounded to 0 or infinity.
expect_bad "threshold 1e-50" --threshold 1e-50 "$q" "$dir/k.npy" "$v"
grep -q "1e-50" "$dir/bad.err" || fail "threshold 1e-50: the message does not give the value"
expect_bad "scale 1e39" --scale 1e39 "$q" "$dir/k.npy" "$v"

"$run" --help >"$dir/help.txt" || fail "--help exit status"
grep -q -- "--threshold" "$dir/help.txt" || fail "--help does not document --threshold"

[ $status -eq 0 ] && echo "pbsa-run smoke test passed"
exit $status
