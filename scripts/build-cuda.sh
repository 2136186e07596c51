#!/usr/bin/env bash
# Builds ragtune with `--features cuda` on a machine without a GPU or a CUDA install, for
# scripts/gpu-check.sh to carry to one: the toolkit from PyPI wheels (scripts/cuda-toolkit.sh),
# link-time stand-ins for the driver and CUDA libraries (scripts/cuda-stubs.py; the real ones
# are loaded on the GPU machine), then the `ragtune` binary and the tests/cuda.rs test binary,
# stripped and packed into target/gpu-check/bins.tar.xz.
#
#   bash scripts/build-cuda.sh        # CARGO_TARGET_DIR defaults to target/cuda
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/cuda-toolkit.sh)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/cuda}
stubs=$CARGO_TARGET_DIR/cuda-stubs
pack=$PWD/target/gpu-check
mkdir -p "$stubs" "$pack"

cudarc=$(cargo metadata --format-version 1 --locked --features cuda 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(next(p["manifest_path"] for p in m["packages"] if p["name"] == "cudarc"))')
python3 scripts/cuda-stubs.py "$(dirname "$cudarc")/src" "$stubs"
ln -sf "$CUDA_HOME/lib/libcudart.so.13" "$stubs/libcudart.so"
export LIBRARY_PATH=$stubs${LIBRARY_PATH:+:$LIBRARY_PATH}

echo "build-cuda: building ragtune and the CUDA tests (the first build compiles candle's kernels: many minutes)" >&2
cargo build --locked --features cuda --bin ragtune
tests=$(cargo test --locked --features cuda --test cuda --no-run --message-format json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda" and m.get("executable"):
        print(m["executable"])')
[ -n "$tests" ] || { echo "build-cuda: no tests/cuda.rs executable was built" >&2; exit 1; }

# One solid archive with a dictionary larger than either binary: the two share candle, its PTX
# and most of ragtune, so it packs to about 30 MB where compressing each alone gives 42 MB.
rm -f "$pack"/ragtune.xz "$pack"/cuda-tests.xz
strip -o "$pack/ragtune" "$CARGO_TARGET_DIR/debug/ragtune"
strip -o "$pack/cuda-tests" "$tests"
echo "build-cuda: packing both binaries (about 2 minutes)" >&2
tar -C "$pack" -cf - cuda-tests ragtune | xz -T1 --lzma2=preset=9,dict=320MiB > "$pack/bins.tar.xz"
rm -f "$pack/ragtune" "$pack/cuda-tests"
echo "build-cuda: $pack/bins.tar.xz ($(du -h "$pack/bins.tar.xz" | cut -f1))" >&2
