#!/usr/bin/env bash
# One optuna-mto worker per GPU as a SLURM job array; the workers share only the database.
#
#   export OPTUNA_STORAGE=postgresql+psycopg://user:pw@db-host:5432/mto
#   sbatch examples/deploy/slurm_array.sh        # from the directory with your code
#
# Each array task creates the study if it does not exist yet (the first one creates it,
# the others open it: the create_study arguments must be the same in every task), then
# claims unfinished splits until none is left and waits for the last ones to end. A
# task killed or preempted costs at most one report interval: another task (or its own
# requeued run) resumes the split from its last checkpoint. Keep --array at N_SPLITS
# tasks (0 to N_SPLITS-1); more tasks only wait, fewer run the splits in turn.
#
# Without sbatch the script runs as it is (`bash examples/deploy/slurm_array.sh`):
# one worker on this machine, which is how tests/test_deploy.py runs it.
#
#SBATCH --job-name=optuna-mto
#SBATCH --array=0-7
#SBATCH --ntasks=1
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --output=optuna-mto_%A_%a.log

set -euo pipefail

# What to run; each can also be set at submission (`sbatch --export=ALL,N_SPLITS=4 ...`).
: "${OPTUNA_STORAGE:?set OPTUNA_STORAGE to the database URL every task shares}"
STUDY_NAME="${STUDY_NAME:-mto}"
N_SPLITS="${N_SPLITS:-8}"                      # one array task per split: --array=0-7
OBJECTIVE="${OBJECTIVE:-my_training:trainer}"  # module:attr, importable from this directory
export OPTUNA_STORAGE STUDY_NAME N_SPLITS

# Your environment (module load ..., source .venv/bin/activate) goes here.

echo "job ${SLURM_JOB_ID:-none} task ${SLURM_ARRAY_TASK_ID:-none} on $(hostname):" \
    "study ${STUDY_NAME}, ${N_SPLITS} splits, CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}"

# 1. Create the study once: create_study(load_if_exists=True) opens it if another task
#    was first. Retried while the database starts or another task is creating it.
for wait_s in 5 10 20 40 0; do
    python -c 'import os, optuna_mto
optuna_mto.create_study(study_name=os.environ["STUDY_NAME"], storage=os.environ["OPTUNA_STORAGE"],
                        n_splits=int(os.environ["N_SPLITS"]), load_if_exists=True)' && break
    if [[ "$wait_s" == 0 ]]; then
        echo "could not create or open study ${STUDY_NAME}" >&2
        exit 1
    fi
    sleep "$wait_s"
done

# 2. The worker. --device auto takes the GPU SLURM_LOCALID names, cuda:0 with one GPU
#    per task (for several tasks per job, run this line under `srun`: each task gets
#    its own SLURM_LOCALID), and logs which variable chose it.
exec optuna-mto worker --storage "$OPTUNA_STORAGE" --study-name "$STUDY_NAME" \
    --objective "$OBJECTIVE" --device auto
