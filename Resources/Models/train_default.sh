#!/usr/bin/env bash
# Reproduces the shipped default model (Resources/Models/default) on this project's 2-core CPU, from the real CTs in
# ../shared/data (see MODEL_CARD.md for what came out). Run from the repository root with the .venv set up.
# STS_012 is held out of everything: the bundled sample radiograph is simulated from it.
# The card leads with the recipe's figures on bones it never saw: the whole-CT cross-validation and learning curve
# of Resources/Models/cross_validate_whole_ct.sh, run first into $CV. Afterwards,
# Resources/Models/calibrate_default_confidence.sh fits the model's intervals (from that cross-validation) and its
# out-of-distribution limits.
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
DATA=${DATA:-../shared/data/ct}
OUT=${OUT:-out}
CV=${CV:-out/whole_ct}
HELD_OUT=STS_012
TS=$DATA/totalsegmentator_example
TS_MASKS="example_ct=right:$TS/masks_totalsegmentator_v1/femur_right.nii.gz,$TS/masks_totalsegmentator_v1/hip_right.nii.gz"
SOURCES=("$DATA/ibsi_sts" "$DATA/pelvic_reference" "$TS/example_ct.nii.gz")
[ -s "$CV/curve/all/pooled_metrics.json" ] || { echo "run Resources/Models/cross_validate_whole_ct.sh first (CV=$CV)"; exit 2; }

# 1. Virtual cohort of one site's protocol (--acquisition reference) from every measurable bone but STS_012's: the
#    IBSI thigh crops, both hips of each whole-pelvis CT (AP pelvis views) and the TotalSegmentator CT's right hip;
#    14 virtual patients x 4 poses per bone, 256 x 128 images.
bmdgan simulate-cohort "${SOURCES[@]}" --segmentation "$TS_MASKS" --exclude "$HELD_OUT" --out "$OUT/cohort" \
  --patients-per-ct 14 --image-size 256x128 --seed 0 --acquisition reference
# 2. Decomposition with hierarchical learning (stage 1 then 2) on every case, then stage 3 and the baseline.
TRAINING_STARTED=$SECONDS
FRESH_RUN=$([ -e "$OUT/runs/hl" ] && echo no || echo yes)  # a resumed run's time here is not its training time
bmdgan train "$OUT/cohort" --out "$OUT/runs/hl" --config cpu
bmdgan train "$OUT/cohort" --out "$OUT/runs/hl" --config cpu --stages stage3
bmdgan train "$OUT/cohort" --out "$OUT/runs/hl" --config cpu --stages baseline
MINUTES_FILE="$OUT/runs/hl/training_minutes.txt"  # kept with the run, so a rerun still reports it
if [ "$FRESH_RUN" = yes ]; then echo $(( (SECONDS - TRAINING_STARTED) / 60 )) > "$MINUTES_FILE"; fi
TIMING=()
if [ -s "$MINUTES_FILE" ]; then TIMING=(--training-minutes "$(cat "$MINUTES_FILE")"); fi
# 3. Evaluations on bones it knows, reported after the whole-CT figures: new virtual patients of its CTs (seed 1), the
#    same patients at another site; and the one CT it never saw.
bmdgan simulate-cohort "${SOURCES[@]}" --segmentation "$TS_MASKS" --exclude "$HELD_OUT" --out "$OUT/cohort_seed1" \
  --patients-per-ct 3 --image-size 256x128 --seed 1 --acquisition reference
bmdgan evaluate --model "$OUT/runs/hl/model" --dataset "$OUT/cohort_seed1" --out "$OUT/eval/seed1"
bmdgan simulate-cohort "${SOURCES[@]}" --segmentation "$TS_MASKS" --exclude "$HELD_OUT" --out "$OUT/cohort_site7" \
  --patients-per-ct 3 --image-size 256x128 --seed 1 --acquisition site:7
bmdgan evaluate --model "$OUT/runs/hl/model" --dataset "$OUT/cohort_site7" --out "$OUT/eval/site7"
bmdgan simulate-cohort "$DATA/ibsi_sts/$HELD_OUT.nii.gz" --out "$OUT/cohort_unseen_ct" --patients-per-ct 36 \
  --image-size 256x128 --seed 3 --acquisition reference
bmdgan evaluate --model "$OUT/runs/hl/model" --dataset "$OUT/cohort_unseen_ct" --out "$OUT/eval/unseen_ct"
# 4. Ship it with its model card.
CT_IDS=$(python -c "import json; print(','.join(json.load(open('$OUT/cohort/dataset.json'))['ct_ids']))")
bmdgan package-model "$OUT/runs/hl" --out Resources/Models/default --overwrite \
  --cross-validation "the 12 real CTs, 4 whole-CT folds, 4 virtual patients x 4 poses per bone=$CV/curve/all" \
  --learning-curve "$CV/curve" \
  --evaluation "new virtual patients of its CTs (seed 1, same site)=$OUT/eval/seed1" \
  --evaluation "the same patients at another site (site:7)=$OUT/eval/site7" \
  --evaluation "a CT it never saw ($HELD_OUT, 36 virtual patients)=$OUT/eval/unseen_ct" \
  --training-command "bash Resources/Models/train_default.sh" --cts "$CT_IDS" --held-out-cts "$HELD_OUT" \
  ${TIMING[@]+"${TIMING[@]}"}  # an empty array under set -u needs this form on bash < 4.4
