#!/usr/bin/env bash
# Table 3.1 on a Slurm cluster: four array tasks split the sweep's runs
# (tools/reproduce_table.py --shard I/N: every N-th run) on a shared filesystem. The run
# folder's lock keeps two tasks off the same run; the baseline, when trained, belongs to
# every shard and is trained once. Each task writes the table of the runs finished so far;
# once all are done, the last task's table, or a later
#   python tools/reproduce_table.py --out "$SHARED" --table-only
# (it tabulates every finished run in the folder) is the whole table.
#
# The same file runs on GPU and on CPU nodes; adapt through the environment and sbatch's
# options, not by editing it:
#   sbatch docker/slurm_table31.sh [reproduce_table.py flags]              # one GPU per task
#   GPUS= sbatch --gres=none --cpus-per-task=2 --mem=4G docker/slurm_table31.sh [flags]  # CPUs
# Flags after the script's name go to tools/reproduce_table.py (after the ones below, so they
# override them). sbatch hands your environment to the tasks:
#   GPUS    device ids for --gpus as the task sees them (default 0: Slurm shows a task its
#           GPU as device 0); set but empty (GPUS=): no --gpus, the task runs on its CPUs
#   SHARED  the shared output folder (one for all tasks)
#   REPO    a clone on the shared filesystem with `make setup` done (or the CUDA image of
#           docker/Dockerfile through your cluster's container runtime)
#   VOC, TRAIN_LIST, VAL_LIST, INIT_WEIGHTS   the data and the initial weights (lists and
#           weights relative to REPO, or absolute)
# The #SBATCH lines below are the resource requests to adapt (partition, time, CPUs, memory);
# the same options given to sbatch override them. On a cluster without GPUs sbatch refuses
# --gres=gpu:1 ("Invalid generic resource (gres) specification"): pass --gres=none there.
# `make slurm-check` submits this file unchanged to a single-node Slurm (CPU only).
#SBATCH --job-name=table31
#SBATCH --array=1-4
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=24:00:00
#SBATCH --output=table31_%A_%a.log
set -euo pipefail

GPUS=${GPUS-0}
SHARED=${SHARED:-$HOME/pixelfeedback/table31}
REPO=${REPO:-$HOME/pixel-feedback}
VOC=${VOC:-$HOME/data/VOCdevkit/VOC2012}
TRAIN_LIST=${TRAIN_LIST:-data/lists/train.txt}
VAL_LIST=${VAL_LIST:-data/lists/val.txt}
INIT_WEIGHTS=${INIT_WEIGHTS:-weights/train2_iter_8000.caffemodel}

device=()
if [ -n "$GPUS" ]; then device=(--gpus "$GPUS"); fi
echo "table31 task ${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT} on $(hostname):" \
    "${device[*]:-CPU}, out $SHARED"

cd "$REPO"
source .venv/bin/activate
python tools/reproduce_table.py --out "$SHARED" \
    --shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}" "${device[@]}" \
    --data-root "$VOC" --train-list "$TRAIN_LIST" --val-list "$VAL_LIST" \
    --init-weights "$INIT_WEIGHTS" "$@"
