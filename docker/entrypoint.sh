#!/usr/bin/env bash
# The images' entrypoint: runs the project's tools inside the venv.
#   reproduce [ARGS]   Table 3.1 with the control (tools/reproduce_table.py); expects VOC at
#                      /data/VOCdevkit and the trained LargeFOV under /workspace/weights
#   demo [ARGS]        the synthetic end-to-end run (tools/demo.py)
#   test               the test suite, without the CUDA compile check and the GPU bundle
#                      (make cuda-check builds those on a development machine, not in an image)
#   fixations | evaluate [ARGS]; caffe ARGS | python ARGS | bash   the tools themselves
# The CUDA image without a usable GPU (no `docker run --gpus all`) runs on the CPU and says so;
# there --gpu/--gpus are refused.
set -euo pipefail
cd "${PIXELFEEDBACK_WORKSPACE:-/workspace}"
source .venv/bin/activate
cmd=${1:-help}; shift || true

gpu_visible() {  # a GPU that nvidia-smi lists (the NVIDIA container toolkit mounts it)
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '
}

gpu_args=()
if [[ $cmd != help ]] && gpu_visible; then
    gpu_args=(--gpu 0)
elif [[ $cmd != help && ${PIXELFEEDBACK_CUDA_IMAGE:-} == 1 ]]; then
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

case $cmd in
    reproduce)
        voc=/data/VOCdevkit/VOC2012
        [[ -d $voc/JPEGImages ]] || { echo "mount PASCAL VOC: -v /path/to/VOCdevkit:/data/VOCdevkit" >&2; exit 2; }
        python tools/fetch_voc.py --lists-only "$voc" --lists-dir data/lists
        exec python tools/reproduce_table.py --data-root "$voc" "${gpu_args[@]}" "$@" ;;
    demo)      exec python tools/demo.py "$@" ;;
    test)      exec python -m pytest -m "not cuda_build" "$@" ;;
    fixations) exec python tools/seg_fixations.py "$@" ;;
    evaluate)  exec python tools/evaluate.py "$@" ;;
    caffe)     exec caffe "$@" ;;
    python)    exec python "$@" ;;
    bash)      exec bash "$@" ;;
    help|*)    sed -n '2,10p' "$0" ;;
esac
