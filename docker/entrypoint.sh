#!/usr/bin/env bash
# The images' entrypoint: runs the project's tools inside the venv.
#   reproduce [ARGS]   Table 3.1 with the control (tools/reproduce_table.py); expects VOC at
#                      /data/VOCdevkit and the trained LargeFOV under /workspace/weights
#   demo [ARGS]        the synthetic end-to-end run (tools/demo.py)
#   test               the test suite, without the CUDA compile check and the GPU bundle
#                      (make test builds those on a development machine, not in an image)
#   caffe ARGS | python ARGS | bash   the tools themselves
set -euo pipefail
cd /workspace
source .venv/bin/activate
gpu_args=()
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && gpu_args=(--gpu 0)
cmd=${1:-help}; shift || true
case $cmd in
    reproduce)
        voc=/data/VOCdevkit/VOC2012
        [[ -d $voc/JPEGImages ]] || { echo "mount PASCAL VOC: -v /path/to/VOCdevkit:/data/VOCdevkit" >&2; exit 2; }
        python tools/fetch_voc.py --lists-only "$voc" --lists-dir data/lists
        exec python tools/reproduce_table.py --data-root "$voc" "${gpu_args[@]}" "$@" ;;
    demo)      exec python tools/demo.py "$@" ;;
    test)      exec python -m pytest --ignore=tests/test_cuda_build.py --ignore=tests/test_gpu_bundle.py "$@" ;;
    fixations) exec python tools/seg_fixations.py "$@" ;;
    evaluate)  exec python tools/evaluate.py "$@" ;;
    caffe)     exec caffe "$@" ;;
    python)    exec python "$@" ;;
    bash)      exec bash "$@" ;;
    help|*)    sed -n '2,8p' "$0" ;;
esac
