#!/bin/bash
# One node, all its GPUs: MirroredStrategy (--strategy auto picks it). Submit from the repository:
#   sbatch scripts/slurm_single_node.sh --train_file data.jsonl --epochs 3
#SBATCH --job-name=tfbert
#SBATCH --nodes=1
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=16
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --signal=B:TERM@120
set -euo pipefail
source scripts/job_env.sh
# exec: Slurm's TERM before a preemption or the time limit reaches train.py, which saves a backup and stops.
exec "${TFBERT_TRAIN[@]}" --strategy mirrored "$@"
