#!/bin/bash
# Submits a Refract run split into N parts: the job array of decompose.sbatch (tasks 0 ... N-1),
# then merge.sbatch, which starts only when every task has succeeded (docs/Cluster.md).
#
#   N=16 MODEL=laion/CLIP-ViT-L-14-laion2B-s32B-b82K DATA=/shared/imagenet/val \
#   PARTS=/shared/parts/vit-l-14-val RUN=/shared/runs/vit-l-14-val \
#   EXTRA="--dtype float16" examples/cluster/slurm/submit.sh [further sbatch options for the array]
#
# Further arguments go to the array's sbatch (e.g. --partition=cpu --account=proj --cpus-per-task=8
# --time=04:00:00); they override the #SBATCH lines of decompose.sbatch. N is passed once, to both
# the array (--array=0-(N-1)) and the tasks (PARTS_TOTAL), so the two cannot disagree.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
N="${N:-16}"
: "${MODEL:?set MODEL to a model directory or Hugging Face hub id}"
: "${DATA:?set DATA to the image folders, files or CSV/TSV lists (separated by spaces)}"
: "${PARTS:?set PARTS to a directory on a file system every node shares}"
: "${RUN:?set RUN to the run directory the merge makes}"
if ! [[ "$N" =~ ^[1-9][0-9]*$ ]]; then
  echo "submit.sh: N must be a positive integer, not '$N'" >&2
  exit 64
fi

# sbatch passes the submitting environment on to the jobs (--export=ALL is its default).
export MODEL DATA PARTS RUN PARTS_TOTAL="$N"
export EXTRA="${EXTRA:-}" REFRACT="${REFRACT:-refract}"

# --parsable prints "jobid" or "jobid;cluster".
array=$(sbatch --parsable --array=0-$((N-1)) "$@" "$here/decompose.sbatch")
array=${array%%;*}
# afterok on an array job waits for all of its tasks; --kill-on-invalid-dep=yes cancels the merge
# instead of leaving it pending for ever when a task fails.
merge=$(sbatch --parsable --dependency=afterok:"$array" --kill-on-invalid-dep=yes "$here/merge.sbatch")
merge=${merge%%;*}

echo "decompose: job array $array, parts 0-$((N-1)) into $PARTS"
echo "merge:     job $merge into $RUN, after every task of $array succeeds"
echo "a failed task K: fix the cause, then, with the same MODEL, DATA, PARTS, RUN and EXTRA exported,"
echo "  PARTS_TOTAL=$N sbatch --array=K $here/decompose.sbatch   and, once it succeeded,   sbatch $here/merge.sbatch"
