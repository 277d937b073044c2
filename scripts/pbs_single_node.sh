#!/bin/bash
# One node, all its GPUs: MirroredStrategy (--strategy auto picks it). Submit from the repository:
#   qsub -v TRAIN_ARGS="--train_file data.jsonl --epochs 3" scripts/pbs_single_node.sh
#PBS -N tfbert
#PBS -l select=1:ncpus=16:ngpus=4
#PBS -l walltime=12:00:00
#PBS -r y
#PBS -j oe
set -euo pipefail
cd "${PBS_O_WORKDIR:-.}"
source scripts/job_env.sh
read -r -a train_args <<< "${TRAIN_ARGS:-}"
# exec: PBS's TERM before a kill (qdel, preemption) reaches train.py, which saves a backup and stops.
exec "${TFBERT_TRAIN[@]}" --strategy mirrored "${train_args[@]}"
