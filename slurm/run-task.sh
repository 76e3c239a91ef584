#!/bin/bash
# One SLURM array task of a sparse-ticket study: runs line $SLURM_ARRAY_TASK_ID of a tasks file,
# a command that runs one node of the study's DAG (`mlflow run . -e <entry point> --run-id <id>`).
#
# Preemption: SIGTERM to this script (sbatch --signal=B:TERM@<seconds> before the time limit, or
# `scancel --batch --signal=TERM`) is passed on to the node's whole process group; the entry
# point writes a checkpoint and ends its run KILLED. Once every process of the node has exited,
# the task requeues itself; when it runs again, the same command resumes the run from that
# checkpoint (the entry points resume a run that has one).
#
# Usage (from a generated sbatch script): run-task.sh TASKS_FILE [CONTAINER PREFIX ...]
set -uo pipefail

tasks_file=$1
shift
index=${SLURM_ARRAY_TASK_ID:-0}
command=$(sed -n "$((index + 1))p" "$tasks_file")
if [ -z "$command" ]; then
    echo "run-task: no task $index in $tasks_file" >&2
    exit 2
fi
echo "run-task: task $index, restart ${SLURM_RESTART_COUNT:-0}, on $(hostname): $command"

set -m  # job control: the node gets a process group of its own, to signal as a whole
"$@" bash -c "exec $command" &
node=$!
stopped=0
trap 'stopped=1; kill -TERM -- "-$node" 2>/dev/null || kill -TERM "$node"' TERM
wait "$node"
status=$?
while kill -0 -- "-$node" 2>/dev/null; do  # `mlflow run` may exit before the entry point
    sleep 1
done

if [ "$stopped" = 1 ]; then
    task="${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-}}${SLURM_ARRAY_TASK_ID:+_$SLURM_ARRAY_TASK_ID}"
    echo "run-task: stopped by SIGTERM; checkpoint written, requeueing $task to resume"
    scontrol requeue "$task"
    exit 0
fi
exit "$status"
