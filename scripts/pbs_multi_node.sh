#!/bin/bash
# Several nodes, one training process per node: MultiWorkerMirroredStrategy over TF_CONFIG. Submit with:
#   qsub -v TRAIN_ARGS="--train_file data.jsonl --epochs 3" scripts/pbs_multi_node.sh
#PBS -N tfbert
#PBS -l select=2:ncpus=16:ngpus=4
#PBS -l place=scatter
#PBS -l walltime=12:00:00
#PBS -r y
#PBS -j oe
set -euo pipefail
cd "${PBS_O_WORKDIR:-.}"
source scripts/job_env.sh
# $PBS_NODEFILE lists a host once per slot; tfbert.cluster keeps each host once, in order (rank 0: the chief).
"$TFBERT_PYTHON" -m tfbert.cluster tf-config --nodes-file "$PBS_NODEFILE" --rank 0 >/dev/null  # fail early
mapfile -t hosts < <(awk '!seen[$0]++' "$PBS_NODEFILE")
read -r -a train_args <<< "${TRAIN_ARGS:-}"
printf -v train_command '%q ' "${TFBERT_TRAIN[@]}" --strategy multi_worker "${train_args[@]}"
pids=()
for rank in "${!hosts[@]}"; do
  # pbs_tmrsh starts the process inside the job on that host (PBS accounts for it and kills it with the job).
  pbs_tmrsh "${hosts[$rank]}" bash -c "cd '$PWD' && export TFBERT_JOB_DIR='$TFBERT_JOB_DIR' TFBERT_PORT=$TFBERT_PORT TFBERT_RUN_ID='${TFBERT_RUN_ID:-}' &&
    source scripts/job_env.sh &&
    export TF_CONFIG=\$($TFBERT_PYTHON -m tfbert.cluster tf-config --nodes-file '$PBS_NODEFILE' \
                        --rank $rank --port $TFBERT_PORT) &&
    exec $train_command" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit "$status"
