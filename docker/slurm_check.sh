#!/usr/bin/env bash
# make slurm-check: docker/slurm_table31.sh, unchanged, on a real Slurm. Not part of CI.
#
# Installs Debian's slurm-wlm and munge when missing, starts a single-node cluster of its own
# (config, munge key and socket, state and spool folders in a temporary folder; munged,
# slurmctld and slurmd started directly, no systemd; proctrack/linuxproc, task/none,
# select/cons_tres, no accounting), submits the Slurm script as a 4-task array (CPU only:
# GPUS= and --gres=none, as its header says) on tiny generated data and random reduced-width
# weights, and checks that each run trained exactly once, that the table and every final
# weight file are byte-identical to one plain tools/reproduce_table.py process with the same
# settings, and that the header's --table-only rerun leaves the table as it is. Ends with one
# line, "slurm-check: pass (N s)" or "slurm-check: FAIL: <reason> (N s)"; exit status 0 only
# on pass. The daemons and jobs it started are stopped by PID when it ends, also when
# interrupted. Needs root (apt-get, slurmd) and `make setup` done.
#
#   SLURM_CHECK_KEEP=1   keep the temporary folder (logs, both sweeps) also on a pass (a failure
#                        keeps it anyway)
#   SLURM_CHECK_WAIT=S   seconds to wait for the array (default 1800)
set -euo pipefail

START=$SECONDS
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
WAIT=${SLURM_CHECK_WAIT:-1800}
# The tiny sweep: a stage-1 baseline (trained by one task while the others wait for it), then
# 2 seeds x (the control + 2 losses x 1 lambda): 7 runs over 4 tasks. Lambda 0.2 is none of
# the tool's default lambdas, so a bare --table-only that tabulated its defaults would show.
ITERATIONS=40
SWEEP=(--losses cosine,correlation --lambdas 0.2 --seeds 0,1 --iterations "$ITERATIONS"
       --snapshot-every 20 --batch-size 2 --crop 65 --test-size 65 --width-div 8
       --num-classes 5)
RUNS=7

T="" JOB="" PLAIN_PID="" FAILED="" VERDICT="" DAEMONS=() STOPPED=()

say() { echo "slurm-check: $*" >&2; }
fail() {  # the verdict is printed last, once everything is stopped (finish)
    VERDICT="FAIL: $*"
    FAILED=1
    exit 1
}

descendants() {  # the PIDs of every process below $1
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}

alive() {  # running, not a zombie
    local stat
    stat=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $stat != Z* ]]
}

stop_all() {
    # Jobs first (scancel needs the controller), then what is left of them, then the daemons.
    set +e
    trap - EXIT INT TERM ERR
    trap '' INT TERM  # the stop itself is not interrupted
    if [ -n "$PLAIN_PID" ] && kill -0 "$PLAIN_PID" 2>/dev/null; then
        kill -TERM "$PLAIN_PID"; wait "$PLAIN_PID" 2>/dev/null
    fi
    if [ -n "$JOB" ]; then
        scancel "$JOB" 2>/dev/null
        for _ in $(seq 60); do
            [ -z "$(squeue -h -j "$JOB" 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    if [ -n "$T" ]; then
        # A job still running from our spool (the controller gone before scancel): its
        # slurmstepd and everything below it, by PID.
        local script step
        for script in $(pgrep -f -- "$T/spool/job" 2>/dev/null); do
            step=$(awk '/^PPid:/ {print $2}' "/proc/$script/status" 2>/dev/null)
            [ -n "$step" ] || continue
            kill -TERM $(descendants "$step") "$step" 2>/dev/null
        done
    fi
    local daemon i
    STOPPED=("${DAEMONS[@]}")
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do kill -TERM "${DAEMONS[i]}" 2>/dev/null; done
    for daemon in "${DAEMONS[@]}"; do
        for _ in $(seq 50); do alive "$daemon" || break; sleep 0.2; done
        kill -KILL "$daemon" 2>/dev/null
        wait "$daemon" 2>/dev/null
    done
    if [ -n "$T" ]; then
        # A failure keeps the folder: its message names the logs in it.
        if [ -n "${SLURM_CHECK_KEEP:-}$FAILED" ]; then say "kept $T"; else rm -rf "$T"; fi
    fi
}
finish() {
    local status=$?
    stop_all
    local daemon
    for daemon in "${STOPPED[@]}"; do
        if alive "$daemon"; then
            VERDICT="FAIL: daemon $daemon still runs after the stop"
            status=1
        fi
    done
    [ "$status" = 0 ] || [ "$VERDICT" != pass ] || VERDICT="FAIL: exit status $status"
    echo "slurm-check: ${VERDICT:-FAIL: stopped (exit status $status)} ($((SECONDS - START)) s)"
    exit "$status"
}
trap finish EXIT
trap 'fail "line $LINENO: $BASH_COMMAND failed"' ERR
trap 'VERDICT="FAIL: interrupted"; exit 130' INT TERM

[ "$(id -u)" = 0 ] || fail "needs root (apt-get, and slurmd launching the jobs); run it as root"
[ -x "$PY" ] || fail "$PY is missing: run make setup first"

# --- Slurm and munge ---------------------------------------------------------------------
if ! command -v sbatch >/dev/null || ! command -v slurmctld >/dev/null \
        || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
        || ! command -v mungekey >/dev/null; then
    say "installing slurm-wlm and munge (apt-get)"
    apt-get update -qq >&2 || fail "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge >&2 || fail "apt-get install slurm-wlm munge failed"
fi
SLURM_VERSION=$(dpkg-query -W -f '${Version}' slurm-wlm 2>/dev/null || sbatch -V)

T=$(mktemp -d "${TMPDIR:-/tmp}/slurm-check.XXXXXX")
chmod 711 "$T"   # munged wants its socket's folders searchable
mkdir -p "$T/munge" "$T/state" "$T/spool" "$T/log" "$T/data" "$T/init"
chmod 700 "$T/munge"

# --- Tiny data and random reduced-width initial weights -----------------------------------
say "generating tiny data and random weights in $T"
(cd "$REPO" && "$PY" tools/synthetic.py --out "$T/data" --train 12 --val 4 --size 65 --quiet) \
    > "$T/log/data.log" 2>&1 || fail "tools/synthetic.py failed (see $T/log/data.log)"
INIT=$T/init/init.caffemodel
GLOG_minloglevel=2 "$PY" - "$T/init" <<'PYTHON' > "$T/log/init.log" 2>&1 \
    || fail "random initial weights failed (see $T/log/init.log)"
import os
import sys

import caffe

from pixelfeedback.nets import largefov
from pixelfeedback.nets.weights import fill_random_weights

folder = sys.argv[1]
deploy = os.path.join(folder, "deploy.prototxt")
with open(deploy, "w") as f:
    f.write(str(largefov.deploy_net(width_div=8, num_classes=5, size=65)))
net = caffe.Net(deploy, caffe.TEST)
fill_random_weights(net, seed=0)
net.save(os.path.join(folder, "init.caffemodel"))
PYTHON
SWEEP+=(--baseline-from "$INIT" --baseline-list "$T/data/lists/train.txt"
        --baseline-iterations "$ITERATIONS")
DATA=(--data-root "$T/data" --train-list "$T/data/lists/train.txt"
      --val-list "$T/data/lists/val.txt" --init-weights "$INIT")

# --- The cluster --------------------------------------------------------------------------
free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
HOST=$(hostname -s)
NODE=$(slurmd -C | head -1)   # NodeName=... CPUs=... RealMemory=...
case "$NODE" in NodeName=*) ;; *) fail "slurmd -C gave no node line: $NODE" ;; esac
export SLURM_CONF=$T/slurm.conf
cat > "$SLURM_CONF" <<EOF
ClusterName=slurmcheck
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$T/munge/munge.socket
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
$NODE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=check Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

say "starting munged, slurmctld and slurmd (Slurm $SLURM_VERSION)"
mungekey --create --keyfile="$T/munge/munge.key" 2>"$T/log/mungekey.log" \
    || fail "mungekey failed (see $T/log/mungekey.log)"
# setsid: a Ctrl-C in the terminal reaches this script, which stops the jobs through the
# controller before the daemons; the daemons themselves do not see it.
setsid munged --foreground --force --socket="$T/munge/munge.socket" \
    --key-file="$T/munge/munge.key" --pid-file="$T/munge/munged.pid" \
    --seed-file="$T/munge/munged.seed" --log-file="$T/log/munged.log" \
    > "$T/log/munged.out" 2>&1 &
DAEMONS+=("$!")
for _ in $(seq 50); do [ -S "$T/munge/munge.socket" ] && break; sleep 0.1; done
[ -S "$T/munge/munge.socket" ] || fail "munged did not start (see $T/log/munged.out)"
setsid slurmctld -D -f "$SLURM_CONF" > "$T/log/slurmctld.log" 2>&1 &
DAEMONS+=("$!")
setsid slurmd -D -f "$SLURM_CONF" > "$T/log/slurmd.log" 2>&1 &
DAEMONS+=("$!")
state=""
for _ in $(seq 60); do
    state=$(sinfo -h -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 0.5
done
[ "$state" = idle ] || fail "the node did not come up idle (sinfo: '$state'; see $T/log/slurm*.log)"

# --- The array, unchanged script ----------------------------------------------------------
SCRIPT=$REPO/docker/slurm_table31.sh
if git -C "$REPO" diff --quiet HEAD -- docker/slurm_table31.sh 2>/dev/null; then
    as="as committed"
else
    as="WITH UNCOMMITTED CHANGES"
fi
SHARED=$T/slurm
say "submitting $SCRIPT ($as) as a 4-task array: GPUS= sbatch --gres=none ..."
JOB=$(cd "$T" && GPUS= SHARED=$SHARED REPO=$REPO VOC="$T/data" \
      TRAIN_LIST="$T/data/lists/train.txt" VAL_LIST="$T/data/lists/val.txt" INIT_WEIGHTS="$INIT" \
      sbatch --parsable --gres=none --cpus-per-task=1 --mem=1G --time=1:00:00 \
      --output="$T/log/task_%a.log" "$SCRIPT" "${SWEEP[@]}" 2>"$T/log/sbatch.err") \
    || fail "sbatch refused the script: $(tail -1 "$T/log/sbatch.err")"
JOB=${JOB%%;*}
deadline=$((SECONDS + WAIT))
while [ -n "$(squeue -h -j "$JOB" 2>/dev/null)" ]; do
    # Reasons a pending task never runs (the node cannot hold what the task asks for).
    never=$(squeue -h -j "$JOB" -t PD -o '%i %r' 2>/dev/null \
            | grep -E 'PartitionConfig|PartitionNodeLimit|PartitionTimeLimit|BadConstraints' || true)
    [ -z "$never" ] || fail "array tasks can never start on this node: $(echo "$never" | tr '\n' ';')"
    if [ $SECONDS -ge $deadline ]; then
        fail "the array was not done after $WAIT s: $(squeue -h -j "$JOB" -o '%i %T %r' | tr '\n' ';')"
    fi
    sleep 2
done
say "array $JOB done after $((SECONDS - START)) s"
# Completed jobs stay in the controller's memory for MinJobAge (300 s): each task's state.
states=$(scontrol -o show job "$JOB" | awk '{
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    print "task " v["ArrayTaskId"] " " v["JobState"] " " v["ExitCode"] }')
[ "$(echo "$states" | grep -c '^task [0-9]')" = 4 ] \
    || fail "the controller knows these tasks of array $JOB, not 4: $(echo "$states" | tr '\n' ';')"
bad=$(echo "$states" | grep -v ' COMPLETED 0:0$' || true)
[ -z "$bad" ] || fail "array tasks did not complete: $(echo "$bad" | tr '\n' ';') (see $T/log/task_*.log)"
for task in 1 2 3 4; do
    grep -q "^table31 task $task/4 on .*: CPU," "$T/log/task_$task.log" \
        || fail "task $task's log does not say it ran shard $task/4 on the CPU ($T/log/task_$task.log)"
done

# --- One plain process, the same settings -------------------------------------------------
say "the same sweep in one plain process"
(cd "$REPO" && exec "$PY" tools/reproduce_table.py --out "$T/plain" "${DATA[@]}" "${SWEEP[@]}") \
    > "$T/log/plain.log" 2>&1 &
PLAIN_PID=$!
wait "$PLAIN_PID" || fail "the plain sweep failed (see $T/log/plain.log)"
PLAIN_PID=""

# --- Checks -------------------------------------------------------------------------------
for results in "$SHARED/results" "$T/plain/results"; do
    count=$(find "$results" -name '*.json' | wc -l)
    [ "$count" = "$RUNS" ] || fail "$count results in $results, not $RUNS"
done
for result in "$T/plain/results/"*.json; do
    run=$(basename "$result" .json)
    [ -f "$SHARED/results/$run.json" ] || fail "no result for $run from the array"
    log=$SHARED/runs/$run/train.log
    sessions=$(grep -c '^\$ ' "$log" || true)
    [ "$sessions" = 1 ] || fail "$run was trained in $sessions caffe sessions, not 1 ($log)"
    grep -q '"resumed": false' "$SHARED/results/$run.json" \
        || fail "$run's record says it resumed ($SHARED/results/$run.json)"
    final=("$T/plain/runs/$run/"*"_iter_$ITERATIONS.caffemodel")
    [ -f "${final[0]}" ] || fail "no final weights for $run in the plain sweep"
    cmp -s "${final[0]}" "$SHARED/runs/$run/$(basename "${final[0]}")" \
        || fail "$run's final weights differ from the plain process's"
done
cmp -s "$SHARED/table31.csv" "$T/plain/table31.csv" \
    || fail "table31.csv of the array differs from the plain process's"

# The header's rerun: with the flags given to the script, then bare.
cp "$SHARED/table31.csv" "$T/table31.before.csv"
(cd "$REPO" && "$PY" tools/reproduce_table.py --out "$SHARED" --table-only "${SWEEP[@]}") \
    > "$T/log/table_only.log" 2>&1 || fail "--table-only failed (see $T/log/table_only.log)"
cmp -s "$SHARED/table31.csv" "$T/table31.before.csv" \
    || fail "--table-only with the script's flags changed table31.csv"
(cd "$REPO" && "$PY" tools/reproduce_table.py --out "$SHARED" --table-only) \
    > "$T/log/table_only_bare.log" 2>&1 \
    || fail "--table-only without flags failed (see $T/log/table_only_bare.log)"
cmp -s "$SHARED/table31.csv" "$T/table31.before.csv" \
    || fail "--table-only without flags changed table31.csv (from the command line's default losses and lambdas?)"
! grep -q "not finished yet" "$T/log/table_only_bare.log" \
    || fail "--table-only without flags says runs are not finished: $(grep "not finished yet" "$T/log/table_only_bare.log")"

say "4 tasks, $RUNS runs each trained once; table and final weights identical to one process; --table-only kept the table (Slurm $SLURM_VERSION)"
VERDICT=pass
exit 0
