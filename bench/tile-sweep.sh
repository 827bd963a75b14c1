#!/usr/bin/env bash
# Times the dense kernel under several tile configurations (PBSA_FLASH_CONFIG) in one run, for
# choosing defaults: bench/tile-sweep.sh BUILD_DIR OUT_DIR [lengths].
set -u -o pipefail
build=$1 out=$2 lengths=${3:-16384}
for config in ${CONFIGS:-64,64,16,16,16,16 64,64,8,16,16,16 64,64,8,16,16,8 32,64,4,16,16,16 \
              64,64,8,16,8,8 32,64,8,16,16,16}; do
    echo "== PBSA_FLASH_CONFIG=$config"
    PBSA_FLASH_CONFIG=$config timeout 60 "$build/bench/pbsa-bench-dense" --lengths "$lengths" \
        --dtype bf16 --heads 32 --head-dim 128 --repeats 5 --check always \
        --json "$out/sweep-${config//,/-}.json" 2>&1 | tail -2
done
