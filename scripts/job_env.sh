# Source from a job script: pins every cache and temporary file under one job folder.
#   TFBERT_JOB_DIR   the job's folder (default: ./jobs/<scheduler job id>); set it to move everything at once
# A requeued job keeps its job id, so it finds its folder, its caches and its interrupted run again.
job_id="${SLURM_JOB_ID:-${PBS_JOBID:-local}}"
export TFBERT_JOB_DIR="${TFBERT_JOB_DIR:-$PWD/jobs/${job_id%%.*}}"
export HF_HOME="$TFBERT_JOB_DIR/cache/huggingface"           # models and tokenizers from the Hub
export HF_DATASETS_CACHE="$TFBERT_JOB_DIR/cache/datasets"    # Hub datasets
export TFBERT_CACHE="$TFBERT_JOB_DIR/cache/tfbert"           # tokenised splits
export TMPDIR="$TFBERT_JOB_DIR/tmp"                          # scratch files, non-chief workers' run copies
mkdir -p "$HF_HOME" "$HF_DATASETS_CACHE" "$TFBERT_CACHE" "$TMPDIR"
# The training command of every template: --resume auto continues the newest interrupted run of the same
# data and model in the job's output folder, else starts a new one.
TFBERT_PYTHON="${TFBERT_PYTHON:-python}"
TFBERT_TRAIN=("$TFBERT_PYTHON" train.py --resume auto --output_dir "$TFBERT_JOB_DIR/output"
              --plots_dir "$TFBERT_JOB_DIR/plots")
# The run folder's name on a multi-worker job: the same on every worker and after a requeue, so that all of
# them find the chief's backups (tfbert.distribution.job_run_id).
[ "$job_id" = local ] || export TFBERT_RUN_ID="${TFBERT_RUN_ID:-${job_id%%.*}}"
# One port per job (from its id), so that two jobs sharing a node do not collide.
job_number="${job_id//[^0-9]/}"
export TFBERT_PORT="${TFBERT_PORT:-$((20000 + ${job_number:-0} % 20000))}"
