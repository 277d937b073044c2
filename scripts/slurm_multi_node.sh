#!/bin/bash
# Several nodes, one training process per node: MultiWorkerMirroredStrategy over TF_CONFIG. Submit with:
#   sbatch scripts/slurm_multi_node.sh --train_file data.jsonl --epochs 3
#SBATCH --job-name=tfbert
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=16
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --signal=B:TERM@120
set -euo pipefail
source scripts/job_env.sh
# Worker addresses in rank order: Slurm numbers the tasks in the order of this list (rank 0 is the chief).
scontrol show hostnames "$SLURM_JOB_NODELIST" > "$TFBERT_JOB_DIR/nodes"
printf -v train_command '%q ' "${TFBERT_TRAIN[@]}" --strategy multi_worker "$@"
srun --kill-on-bad-exit=1 bash -c "
  export TF_CONFIG=\$($TFBERT_PYTHON -m tfbert.cluster tf-config --nodes-file '$TFBERT_JOB_DIR/nodes' \
                      --rank \$SLURM_PROCID --port $TFBERT_PORT)
  exec $train_command"
