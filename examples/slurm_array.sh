#!/usr/bin/env bash
# A sharded tracegen run as ONE SLURM job array: task i answers shard i+1 of 8, in its own run directory,
# with its own budget. Submit:   sbatch examples/slurm_array.sh
# Resubmitting the same array resumes every shard where it stopped (each run directory keeps its ledger);
# `sbatch --array=3 examples/slurm_array.sh` redoes only shard 4/8. When all are done, merge them:
#   tracegen merge runs/shard-* -o runs/merged && tracegen push runs/merged me/my-orca
#SBATCH --job-name=tracegen
#SBATCH --array=0-7
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=24:00:00
#SBATCH --output=logs/tracegen-%A_%a.log
set -euo pipefail

# OPENAI_API_KEY comes from the environment (sbatch exports it by default); never put it in this file.
# --shard auto reads SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT: task 0 -> 1/8 ... task 7 -> 8/8.
rc=0
tracegen run \
  --config examples/config.yaml \
  --shard auto \
  --budget 60 \
  --output-dir "runs/shard-${SLURM_ARRAY_TASK_ID}" || rc=$?
# exit 3 = stopped by the budget with work left (raise --budget and resubmit); 4 = the teacher failed
exit $rc
