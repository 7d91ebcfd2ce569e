#!/usr/bin/env bash
# The images' entrypoint: runs the project's tools inside the venv. Mount three folders
# (docs/docker-gpu.md): /data (VOC, lists), /weights (caffemodels), /runs (results).
#   fetch-data [ARGS]     VOC 2012 + SBD into /data (tools/fetch_voc.py --sbd): verified,
#                         unpacked, lists made, counts printed (a warning unless 10,582 / 1,449)
#   fetch-weights [NAMES] [ARGS]  caffemodels into /weights (weights/fetch.py; largefov-init
#                         when no name comes first; largefov: the released model, seen VOC val)
#   reproduce [ARGS]      Table 3.1, the fair default (tools/reproduce_table.py) into /runs
#   gpu-check [ARGS]      seconds per iteration and the default sweep's wall time
#                         (tools/gpu_check.py) into /runs/gpu-check
#   demo [ARGS]           the synthetic end-to-end run (tools/demo.py)
#   test                  the test suite, without the CUDA compile check and the GPU bundle
#   fixations | evaluate [ARGS]; caffe ARGS | python ARGS | bash   the tools themselves
# With a GPU visible (docker run --gpus all), reproduce and gpu-check get --gpu 0 unless
# --gpu or --gpus is given; --gpus all means every GPU nvidia-smi -L lists. The CUDA image
# without a usable GPU runs on the CPU and says so; there --gpu/--gpus are refused.
set -euo pipefail
cd "${PIXELFEEDBACK_WORKSPACE:-/workspace}"
source .venv/bin/activate
cmd=${1:-help}; shift || true
# The mount points (PIXELFEEDBACK_DATA, _WEIGHTS, _RUNS move them, e.g. for the tests).
DATA=${PIXELFEEDBACK_DATA:-/data} WEIGHTS=${PIXELFEEDBACK_WEIGHTS:-/weights}
RUNS=${PIXELFEEDBACK_RUNS:-/runs}

visible_gpus() {  # the ids of the GPUs nvidia-smi lists (the NVIDIA container toolkit mounts it)
    command -v nvidia-smi >/dev/null 2>&1 || return 0
    { nvidia-smi -L 2>/dev/null || true; } | sed -n 's/^GPU \([0-9][0-9]*\):.*/\1/p' | paste -sd, -
}

gpu_flag_given() {
    local arg
    for arg in "$@"; do
        [[ $arg == --gpu || $arg == --gpu=* || $arg == --gpus || $arg == --gpus=* ]] && return 0
    done
    return 1
}

gpus=""
[[ $cmd == help ]] || gpus=$(visible_gpus)
if [[ $cmd != help && -z $gpus && ${PIXELFEEDBACK_CUDA_IMAGE:-} == 1 ]]; then
    for arg in "$@"; do
        if [[ $arg == --gpu || $arg == --gpu=* || $arg == --gpus || $arg == --gpus=* ]]; then
            echo "error: $arg given, but no GPU is visible in this container; start it with" \
                 "'docker run --gpus all' (NVIDIA container toolkit, driver 580 or newer), or" \
                 "leave out $arg to run on the CPU" >&2
            exit 2
        fi
    done
    echo "no GPU visible: running on the CPU (start the container with 'docker run --gpus all'" \
         "for the GPU)" >&2
    # Caffe's CUDA build logs "Cannot create Cublas handle" (an ERROR) and then runs on the
    # CPU anyway: the line above says it once. Set GLOG_minloglevel yourself to see it.
    export GLOG_minloglevel=${GLOG_minloglevel:-3}
fi

# --gpus all -> the visible ids; the rest as given.
args=()
while [[ $# -gt 0 ]]; do
    if [[ $1 == --gpus && ${2:-} == all || $1 == --gpus=all ]]; then
        if [[ -z $gpus ]]; then
            echo "error: --gpus all: no GPU is visible in this container (nvidia-smi -L lists" \
                 "none); start it with 'docker run --gpus all', or leave out --gpus" >&2
            exit 2
        fi
        args+=(--gpus "$gpus")
        [[ $1 == --gpus=all ]] && shift || shift 2
        continue
    fi
    args+=("$1")
    shift
done
set -- "${args[@]+"${args[@]}"}"
device_args=()   # for reproduce and gpu-check: GPU 0 unless told otherwise
if [[ -n $gpus ]] && ! gpu_flag_given "$@"; then
    device_args=(--gpu 0)
fi

# The tools' default folders data/ and runs/ are the mounts; each caffemodel of the mounted
# weights folder appears under weights/, where the tools and the sweep's defaults look.
link_mounts() {
    local name file
    mkdir -p "$DATA" "$WEIGHTS" "$RUNS"
    for name in data runs; do
        [[ -e $name || -L $name ]] || ln -s "$([[ $name == data ]] && echo "$DATA" || echo "$RUNS")" "$name"
    done
    mkdir -p weights
    for file in "$WEIGHTS"/*.caffemodel "$WEIGHTS"/checksums.json; do
        [[ -e $file && ! -e weights/${file##*/} ]] && ln -s "$file" "weights/${file##*/}"
    done
    return 0
}

[[ $cmd == help ]] || link_mounts

case $cmd in
    fetch-data) exec python tools/fetch_voc.py --sbd --dest "$DATA" "$@" ;;
    fetch-weights)
        [[ $# -gt 0 && $1 != -* ]] || set -- largefov-init "$@"   # no name first: the init
        exec python weights/fetch.py --dest "$WEIGHTS" "$@" ;;
    reproduce)
        voc=$DATA/VOCdevkit/VOC2012
        [[ -d $voc/JPEGImages ]] || { echo "error: no PASCAL VOC at $voc: mount a data folder (-v \"\$PWD/data:$DATA\") and run fetch-data first, or mount a VOCdevkit folder you have (-v /path/to/VOCdevkit:$DATA/VOCdevkit)" >&2; exit 2; }
        python tools/fetch_voc.py --lists-only "$voc" --lists-dir "$DATA/lists"
        exec python tools/reproduce_table.py --data-root "$voc" "${device_args[@]+"${device_args[@]}"}" "$@" ;;
    gpu-check)
        [[ -n $gpus ]] || gpu_flag_given "$@" || device_args=(--cpu)
        exec python tools/gpu_check.py --out "$RUNS/gpu-check" "${device_args[@]+"${device_args[@]}"}" "$@" ;;
    demo)      exec python tools/demo.py "$@" ;;
    test)      exec python -m pytest -m "not cuda_build" "$@" ;;
    fixations) exec python tools/seg_fixations.py "$@" ;;
    evaluate)  exec python tools/evaluate.py "$@" ;;
    caffe)     exec caffe "$@" ;;
    python)    exec python "$@" ;;
    bash)      exec bash "$@" ;;
    help|*)    sed -n '2,18p' "$0" ;;
esac
