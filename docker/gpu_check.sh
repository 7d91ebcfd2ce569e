#!/usr/bin/env bash
# The one-command GPU self-check of the GPU bundle (make gpu-bundle), for a bare CUDA 13
# machine (driver >= 580; tested target: one H200, compute capability 9.0):
#   bash docker/gpu_check.sh --out DIR                  # the bundle at build/pixelfeedback-gpu.tar.xz
#   bash pixelfeedback-gpu/gpu_check.sh --out DIR       # from an unpacked bundle
#   bash docker/gpu_check.sh --bundle FILE.tar.xz --out DIR [--gpu ID] [--cpu]
# It finds CUDA's libraries on the machine, fails at once when a library is missing, then
# runs tools/gpu_check.py (pixelfeedback.gpu_check) from the bundle: caffe device_query, CPU vs GPU forward and
# backward passes of the full-width LargeFOV train nets, Caffe's own GPU layer tests and
# the timings, and writes DIR/gpu_check.json and DIR/gpu_check.md (with the extrapolated
# wall time of the whole Table 3.1 sweep). Exit status 0 when no step failed.
# --cpu runs the parts that need no GPU (what the tests do on a machine without one).
# CUDA_LIB_DIRS=dir1:dir2 names the folders of CUDA's libraries when the search misses them.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { printf 'gpu_check.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'gpu_check.sh: %s\n' "$*"; }

BUNDLE=""
OUT=""
CPU_ONLY=0
CHECK_ARGS=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --bundle) BUNDLE=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --cpu) CPU_ONLY=1; CHECK_ARGS+=(--cpu); shift ;;
        --gpu|--iterations|--width-div|--tests-timeout) CHECK_ARGS+=("$1" "$2"); shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
[[ -n $OUT ]] || die "--out DIR is required (the reports go there)"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# --- The bundle: this script's own folder, an archive, or the repository's build/ ----------
if [[ -z $BUNDLE ]]; then
    if [[ -f $HERE/MANIFEST.json ]]; then BUNDLE=$HERE; else BUNDLE=$HERE/../build/pixelfeedback-gpu.tar.xz; fi
fi
if [[ -f $BUNDLE ]]; then
    say "unpacking $BUNDLE"
    mkdir -p "$OUT/bundle"
    tar -C "$OUT/bundle" -xJf "$BUNDLE" || die "could not unpack $BUNDLE"
    BUNDLE=$OUT/bundle/pixelfeedback-gpu
fi
[[ -f $BUNDLE/MANIFEST.json ]] || die "no GPU bundle at $BUNDLE; build it with 'make gpu-bundle' and pass --bundle build/pixelfeedback-gpu.tar.xz"
BUNDLE=$(cd "$BUNDLE" && pwd)

# --- CUDA's libraries on this machine -------------------------------------------------------
NEEDED=(libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10)
[[ $CPU_ONLY = 1 ]] || NEEDED+=(libcuda.so.1)  # the driver; only a GPU run loads it
candidate_dirs() {
    local d
    tr ':' '\n' <<<"${CUDA_LIB_DIRS:-}:${LD_LIBRARY_PATH:-}"
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64 \
             /usr/local/cuda-13*/targets/x86_64-linux/lib /usr/local/nvidia/lib64 /usr/local/nvidia/lib \
             /usr/lib/x86_64-linux-gnu /usr/lib64 /lib/x86_64-linux-gnu \
             /usr/local/lib/python3*/dist-packages/nvidia/cu13/lib /usr/lib/python3*/dist-packages/nvidia/cu13/lib \
             /opt/conda/lib /opt/conda/lib/python3*/site-packages/nvidia/cu13/lib; do
        echo "$d"
    done
    command -v ldconfig >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -E 'lib(cuda|cudart|cublas|cublasLt|curand)\.so' \
        | sed 's/.*=> //' | xargs -r -n1 dirname
    true
}
CUDA_DIRS=""
missing=()
for lib in "${NEEDED[@]}"; do
    found=""
    while read -r dir; do
        [[ -n $dir && -e $dir/$lib ]] && { found=$dir; break; }
    done < <(candidate_dirs)
    if [[ -z $found ]]; then
        missing+=("$lib")
    elif [[ ":$CUDA_DIRS:" != *":$found:"* ]]; then
        CUDA_DIRS+="${CUDA_DIRS:+:}$found"
    fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
    die "CUDA libraries not found on this machine: ${missing[*]}
       searched CUDA_LIB_DIRS, LD_LIBRARY_PATH, /usr/local/cuda*, /usr/local/nvidia, the system
       library folders, pip's nvidia/cu13 and ldconfig; the bundle needs CUDA 13's runtime
       (cudart, cuBLAS, cuRAND) and the driver (libcuda.so.1, driver >= 580). Set
       CUDA_LIB_DIRS=/path/to/their/folder if they are elsewhere."
fi
say "CUDA libraries from $CUDA_DIRS"

# --- The bundle's environment, then the check --------------------------------------------------
PYVER=$(sed -n 's/.*"python": "\([0-9]*\.[0-9]*\).*/\1/p' "$BUNDLE/MANIFEST.json")
export LD_LIBRARY_PATH="$BUNDLE/lib:$BUNDLE/caffe/lib:$CUDA_DIRS"
export PYTHONHOME="$BUNDLE/python"
export PYTHONPATH="$BUNDLE/toolkit:$BUNDLE/caffe/lib/python3/dist-packages:$BUNDLE/shims"
export PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1
export PATH="$BUNDLE/python/bin:$PATH"
PY=$BUNDLE/python/bin/python$PYVER
if ! "$PY" -c 'import numpy' >/dev/null 2>&1; then
    ldd "$PY" >&2 || true
    die "the bundle's Python does not start here (see its libraries above); the bundle needs glibc 2.35 or newer"
fi
cd "$BUNDLE/toolkit"
exec "$PY" tools/gpu_check.py --bundle "$BUNDLE" --out "$OUT" "${CHECK_ARGS[@]}"
