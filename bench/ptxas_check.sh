#!/usr/bin/env bash
# Compiles a tensor-core attention kernel for NVIDIA without a GPU and reports what ptxas makes of
# it: registers, spills, local memory, and the diagnostics that say the wgmma products were
# serialised (C7513, C7515: registers of a product written while it runs) or a wait was added
# (C7517). Needs clang and libclc for nvptx (Debian:
# clang-15, libclc-15) and CUDA's ptxas. From the repository root:
#
#     bench/ptxas_check.sh dense sm_90a "-DMMA_WARPS=8 -DBN=64 -DMMA_STAGES=2 -DWGMMA=1"
#     bench/ptxas_check.sh pbs sm_80 "-DMMA_WARPS=4 -DMMA_GROUPS=2 -DBN=64 -DMMA_STAGES=2"
#
# The third argument adds to the defaults (bf16, head dim 128, causal, block 128); sm_90a builds
# the wgmma tiles, whose marked lines (cl/wgmma_ptx.cl) are uncommented as the library does. The
# PTX differs from NVIDIA's OpenCL compiler's, so register counts are indicative; the C7515 check
# has agreed with the driver's. Exits 1 when the products are serialised.
set -eu
kernel=$1 arch=$2 extra=${3:-}
ptxas=${PTXAS:-$(command -v ptxas || echo /usr/local/cuda/bin/ptxas)}
libclc=${LIBCLC:-/usr/lib/clc/nvptx64--nvidiacl.bc}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
case $kernel in
dense) main=dense_attention.cl ;;
pbs) main=pbs_attention.cl ;;
*) echo "kernel: dense or pbs" >&2; exit 2 ;;
esac
files="common.cl sequence.cl mma_ptx.cl"
[ "$arch" = sm_90a ] && files="$files wgmma_ptx.cl"
(cd cl && cat $files mma_tile.cl $main) > "$work/k.cl"
# Inline everything, as NVIDIA's compiler does: otherwise clang keeps the tile's arrays on the stack.
clang-15 -x cl -cl-std=CL1.2 -target nvptx64-nvidia-nvcl -Xclang -finclude-default-header \
    -fgnu-keywords -fgnu89-inline -O2 -mllvm -inline-threshold=100000 -emit-llvm -c \
    -DQ_DTYPE=bf16 -DKV_DTYPE=bf16 -DO_DTYPE=bf16 -DHEAD_DIM=128 -DCAUSAL=1 \
    -DLOGICAL_BLOCK=128 -DHAS_PI=1 $extra "$work/k.cl" -o "$work/k.bc"
llvm-link-15 "$work/k.bc" "$libclc" -o "$work/linked.bc" 2>/dev/null
opt-15 -O3 -inline-threshold=100000 "$work/linked.bc" -o "$work/opt.bc"
llc-15 -O3 -mcpu=sm_80 -mattr=+ptx70 "$work/opt.bc" -o "$work/k.ptx"
sed -i 's/^\.version .*/.version 8.0/' "$work/k.ptx"
[ "$arch" = sm_90a ] && sed -i 's#// PBSA_SM90A ##; s/^\.target sm_80/.target sm_90a/' "$work/k.ptx"
"$ptxas" -arch="$arch" -v "$work/k.ptx" -o "$work/k.cubin" 2>&1 |
    grep -E "C75[0-9]{2}|entry function '(dense|pbs)_attention'|Used [0-9]+ registers|spill" |
    grep -v -E "mma_probe|wgmma_probe" | tee "$work/report.txt"
! grep -q "instructions are serialized" "$work/report.txt"
