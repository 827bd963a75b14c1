#!/bin/sh
# Installs the build into a staging folder, builds tests/consumer.c against it with pkg-config
# and with CMake (find_package(pbsattn), target pbsattn::pbsattn), runs both, and checks the
# installed library's soname and exported symbols.
# usage: install_test.sh BUILD_DIR CONSUMER_C   (CC selects the compiler, default cc)
set -eu

build=${1:?usage: install_test.sh BUILD_DIR CONSUMER_C}
consumer=${2:?usage: install_test.sh BUILD_DIR CONSUMER_C}
cc=${CC:-cc}

for tool in meson pkg-config readelf cmake "$cc"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "skipped: $tool is not installed"
        exit 77
    fi
done

stage=$(mktemp -d "${TMPDIR:-/tmp}/pbsattn-install-XXXXXX")
trap 'rm -rf "$stage"' EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

if ! meson install -C "$build" --no-rebuild --destdir "$stage/root" >"$stage/install.log" 2>&1; then
    cat "$stage/install.log" >&2
    fail "meson install into $stage/root failed"
fi

pc=$(find "$stage/root" -name pbsattn.pc | head -n 1)
[ -n "$pc" ] || fail "pbsattn.pc was not installed"
prefix=$(sed -n 's/^prefix=//p' "$pc")
[ -n "$prefix" ] || fail "$pc defines no prefix"
echo "installed pkg-config file: ${pc#"$stage/root"} (prefix $prefix)"

# The .pc file names the final prefix; point it at the staged copy instead.
pkg() {
    PKG_CONFIG_PATH="$(dirname "$pc")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}" \
        pkg-config --define-variable=prefix="$stage/root$prefix" "$@" pbsattn
}
cflags=$(pkg --cflags) || fail "pkg-config --cflags pbsattn failed"
libs=$(pkg --libs) || fail "pkg-config --libs pbsattn failed"
libdir=$(pkg --variable=libdir) || fail "pkg-config --variable=libdir pbsattn failed"
echo "cflags: $cflags"
echo "libs: $libs"

[ -f "$libdir/libpbsattn.so.0" ] || fail "libpbsattn.so.0 is not in $libdir"
[ -e "$libdir/libpbsattn.so" ] || fail "libpbsattn.so (the link-time name) is not in $libdir"
soname=$(readelf -d "$libdir/libpbsattn.so.0" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libpbsattn.so.0" ] || fail "SONAME is '$soname', expected libpbsattn.so.0"
echo "SONAME: $soname"

# Hidden visibility: only the API's pbsa_ names are exported.
exported=$(readelf --dyn-syms -W "$libdir/libpbsattn.so.0" |
    awk '$4 == "FUNC" || $4 == "OBJECT" { if ($7 != "UND" && $5 != "LOCAL") print $8 }' |
    sed 's/@.*//' | sort -u)
[ -n "$exported" ] || fail "the library exports no symbols"
stray=$(printf '%s\n' "$exported" | grep -v '^pbsa_' || true)
[ -z "$stray" ] || fail "symbols exported outside the pbsa_ namespace: $stray"
[ -z "$(printf '%s\n' "$exported" | grep '^pbsa_fail$' || true)" ] ||
    fail "internal symbols are exported"

# shellcheck disable=SC2086 # cflags and libs are word lists
"$cc" -std=c11 -Wall -Wextra -Wpedantic -Werror $cflags -o "$stage/consumer" "$consumer" $libs ||
    fail "the consumer program does not build against the installed header and library"

# The staged library first; the caller's path may hold the dependencies (OpenCL, CLBlast).
run_path="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if command -v ldd >/dev/null 2>&1; then
    resolved=$(LD_LIBRARY_PATH="$run_path" ldd "$stage/consumer" |
        sed -n 's/.*libpbsattn\.so\.0 => \([^ ]*\).*/\1/p')
    [ "$resolved" = "$libdir/libpbsattn.so.0" ] ||
        fail "the consumer loads libpbsattn.so.0 from '$resolved', not from the staged $libdir"
fi
output=$(LD_LIBRARY_PATH="$run_path" "$stage/consumer") || fail "the consumer program failed"
echo "consumer: $output"

# The CMake package, found through CMAKE_PREFIX_PATH as a CMake project would.
mkdir "$stage/cmake-consumer"
cp "$consumer" "$stage/cmake-consumer/consumer.c"
cat >"$stage/cmake-consumer/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.13)
project(consumer C)
find_package(pbsattn 0.1 REQUIRED)
add_executable(consumer consumer.c)
target_link_libraries(consumer PRIVATE pbsattn::pbsattn)
CMAKE
if ! { CC="$cc" cmake -S "$stage/cmake-consumer" -B "$stage/cmake-build" \
        -DCMAKE_PREFIX_PATH="$stage/root$prefix" -DCMAKE_C_FLAGS="-Wall -Wextra -Werror" &&
        cmake --build "$stage/cmake-build"; } >"$stage/cmake.log" 2>&1; then
    cat "$stage/cmake.log" >&2
    fail "the consumer program does not build through the CMake package"
fi
cmake_output=$(LD_LIBRARY_PATH="$run_path" "$stage/cmake-build/consumer") ||
    fail "the consumer program built with CMake failed"
[ "$cmake_output" = "$output" ] || fail "the CMake-built consumer printed '$cmake_output'"
echo "CMake consumer: $cmake_output"

bindir=$(pkg --variable=prefix)/bin
if [ -x "$bindir/pbsa-info" ]; then
    LD_LIBRARY_PATH="$run_path" "$bindir/pbsa-info" --help >/dev/null ||
        fail "the installed pbsa-info --help failed"
    echo "installed pbsa-info runs"
fi
echo "install test passed"
