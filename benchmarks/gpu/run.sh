#!/usr/bin/env bash
# One GPU run (one H100/H200-class GPU, meant to finish within 10 minutes): Latte-1-size and Wan-2.1-1.3B-size
# random-weight transformers, bf16, 50 guided steps, keras_vdiff on JAX and TensorFlow (compiled loop) against
# diffusers eager and torch.compile on the same weights and inputs, plus fit / training-loop steps/s.
# Needs torch with CUDA, diffusers, jax[cuda] and tensorflow with GPU in $PYTHON's environment; a step that fails
# (e.g. a backend missing) is reported as FAILED, the others still run, and the exit status is 1. The table goes to stdout and to
# $OUT (or benchmarks/results)/gpu_results_<time>.md and .jsonl.
#
#   bash benchmarks/gpu/run.sh               # on the GPU machine
#   bash benchmarks/gpu/run.sh --dry-run     # tiny configs on the CPU: checks the script
#
# Environment: PYTHON (default python3), MODELS ("latte1 wan1_3b"), BACKENDS ("jax tensorflow"), STEPS (50),
# TRAIN_MODELS (models whose training steps/s are measured; default "latte1": Wan's compiles are the long part),
# WAN_FRAMES (17; 81 = Wan's default 480x832 video, several times longer), REFERENCE_COMPILE (1: also time
# diffusers under torch.compile), WORKDIR (scratch for the bf16 checkpoints; default a new temp folder, removed at
# the end; a given one is kept).
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
MODELS=${MODELS:-latte1 wan1_3b}
BACKENDS=${BACKENDS:-jax tensorflow}
TRAIN_MODELS=${TRAIN_MODELS:-latte1}
REFERENCE_COMPILE=${REFERENCE_COMPILE:-1}
DRY=""
if [ "${1:-}" = "--dry-run" ]; then DRY="--dry-run"; fi
STEPS_ARG=""
if [ -n "${STEPS:-}" ]; then STEPS_ARG="--steps $STEPS"; fi
CREATED_WORKDIR=""
if [ -z "${WORKDIR:-}" ]; then WORKDIR=$(mktemp -d); CREATED_WORKDIR=$WORKDIR; fi  # a given WORKDIR is kept
trap '[ "$CREATED_WORKDIR" != "" ] && rm -rf "$CREATED_WORKDIR"' EXIT
export TF_CPP_MIN_LOG_LEVEL=3 XLA_PYTHON_CLIENT_PREALLOCATE=false TF_FORCE_GPU_ALLOW_GROWTH=true
[ -z "$DRY" ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
status=0
step() {  # one measured process; a failure is reported, the rest still run
  echo "--- $*" >&2
  if ! "$@"; then echo "FAILED: $*" >&2; status=1; fi
}
for model in $MODELS; do
  common="--model $model --workdir $WORKDIR $DRY $STEPS_ARG"
  train=""
  case " $TRAIN_MODELS " in *" $model "*) train="--train";; esac
  frames=""
  [ "$model" = wan1_3b ] && [ -n "${WAN_FRAMES:-}" ] && frames="--frames $WAN_FRAMES"
  step $PYTHON benchmarks/gpu/compare.py prepare $common $frames || continue
  step $PYTHON benchmarks/gpu/compare.py diffusers $common $train
  [ "$REFERENCE_COMPILE" = 1 ] && step $PYTHON benchmarks/gpu/compare.py diffusers $common --compile $train
  for backend in $BACKENDS; do
    step env KERAS_BACKEND=$backend $PYTHON benchmarks/gpu/compare.py keras $common $train
  done
  rm -rf "$WORKDIR/$model/transformer"  # the checkpoint this script wrote; the next model's needs the disk
done
table=$($PYTHON benchmarks/gpu/compare.py report --workdir "$WORKDIR")
echo "$table"
if [ -z "$DRY" ]; then  # a dry run only prints
  dest=${OUT:-benchmarks/results}
  stamp=$(date +%Y%m%dT%H%M%S)
  mkdir -p "$dest"
  echo "$table" > "$dest/gpu_results_$stamp.md"
  cp "$WORKDIR/results.jsonl" "$dest/gpu_results_$stamp.jsonl" 2>/dev/null || true
fi
exit $status
