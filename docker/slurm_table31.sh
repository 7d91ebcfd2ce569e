#!/usr/bin/env bash
# Table 3.1 on a Slurm cluster: four array tasks, one GPU each, split the sweep's runs
# (tools/reproduce_table.py --shard I/N: every N-th run) on a shared filesystem. The run
# folder's lock keeps two tasks off the same run; the baseline, when trained, belongs to
# every shard and is trained once. Any task, or a later
#   python tools/reproduce_table.py --out "$SHARED" --table-only
# writes the whole table once all runs are done.
#   sbatch docker/slurm_table31.sh
# Adapt the partition, time, paths and the environment (a clone with `make setup` done, or
# the CUDA image of docker/Dockerfile through your cluster's container runtime).
#SBATCH --job-name=table31
#SBATCH --array=1-4
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=24:00:00
#SBATCH --output=table31_%A_%a.log
set -euo pipefail

SHARED=${SHARED:-$HOME/pixelfeedback/table31}      # the shared output folder (one for all tasks)
REPO=${REPO:-$HOME/pixel-feedback}                  # a clone on the shared filesystem
VOC=${VOC:-$HOME/data/VOCdevkit/VOC2012}

cd "$REPO"
source .venv/bin/activate
# Slurm makes the task's one GPU visible as device 0.
python tools/reproduce_table.py --out "$SHARED" \
    --shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}" --gpus 0 \
    --data-root "$VOC" --train-list data/lists/train.txt --val-list data/lists/val.txt \
    --init-weights weights/train2_iter_8000.caffemodel "$@"
