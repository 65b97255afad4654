#!/usr/bin/env bash
# Reproduces the shipped default model (Resources/Models/default) on this project's 2-core CPU, from the real
# CTs in ../shared/data (see MODEL_CARD.md for what came out). Run from the repository root with the .venv set up.
# STS_012 is held out of everything: the bundled sample radiograph is simulated from it.
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
DATA=${DATA:-../shared/data/ct}
OUT=${OUT:-out}
HELD_OUT=STS_012
TS=$DATA/totalsegmentator_example
TS_MASKS="example_ct=right:$TS/masks_totalsegmentator_v1/femur_right.nii.gz,$TS/masks_totalsegmentator_v1/hip_right.nii.gz"

# 1. Virtual cohort of one site's protocol (--acquisition reference): 20 virtual patients x 4 poses per CT from
#    every shared CT with a measurable proximal femur (IBSI, and the TotalSegmentator CT's right hip from its
#    masks), 256 x 128 images, 5 patient-level folds.
bmdgan simulate-cohort "$DATA/ibsi_sts" "$TS/example_ct.nii.gz" --segmentation "$TS_MASKS" --exclude "$HELD_OUT" \
  --out "$OUT/cohort" --patients-per-ct 20 --image-size 256x128 --seed 0 --acquisition reference
# 2. Decomposition with hierarchical learning (stage 1 then 2), fold 0 held out; then stage 3 and the baseline.
TRAINING_STARTED=$SECONDS
FRESH_RUN=$([ -e "$OUT/runs/hl" ] && echo no || echo yes)  # a resumed run's time here is not its training time
bmdgan train "$OUT/cohort" --out "$OUT/runs/hl" --config cpu --fold 0
bmdgan train "$OUT/cohort" --out "$OUT/runs/hl" --config cpu --fold 0 --stages stage3
bmdgan train "$OUT/cohort" --out "$OUT/runs/hl" --config cpu --fold 0 --stages baseline
MINUTES_FILE="$OUT/runs/hl/training_minutes.txt"  # kept with the run, so a rerun still reports it
if [ "$FRESH_RUN" = yes ]; then echo $(( (SECONDS - TRAINING_STARTED) / 60 )) > "$MINUTES_FILE"; fi
TIMING=()
if [ -s "$MINUTES_FILE" ]; then TIMING=(--training-minutes "$(cat "$MINUTES_FILE")"); fi
# 3. Held-out evaluation: fold 0 of the training cohort, a fresh cohort of new virtual patients (seed 1), the same
#    patients at another site, and a CT it never saw.
bmdgan evaluate --model "$OUT/runs/hl/model" --dataset "$OUT/cohort" --fold 0 --out "$OUT/eval/fold0"
bmdgan simulate-cohort "$DATA/ibsi_sts" "$TS/example_ct.nii.gz" --segmentation "$TS_MASKS" --exclude "$HELD_OUT" \
  --out "$OUT/cohort_seed1" --patients-per-ct 4 --image-size 256x128 --seed 1 --acquisition reference
bmdgan evaluate --model "$OUT/runs/hl/model" --dataset "$OUT/cohort_seed1" --out "$OUT/eval/seed1"
#    The same new patients as another site would image them (its console, detector and processing).
bmdgan simulate-cohort "$DATA/ibsi_sts" "$TS/example_ct.nii.gz" --segmentation "$TS_MASKS" --exclude "$HELD_OUT" \
  --out "$OUT/cohort_site7" --patients-per-ct 4 --image-size 256x128 --seed 1 --acquisition site:7
bmdgan evaluate --model "$OUT/runs/hl/model" --dataset "$OUT/cohort_site7" --out "$OUT/eval/site7"
#    A bone it never saw: virtual patients of the held-out CT (the other folds share their CTs with training).
bmdgan simulate-cohort "$DATA/ibsi_sts/$HELD_OUT.nii.gz" --out "$OUT/cohort_unseen_ct" --patients-per-ct 36 \
  --image-size 256x128 --seed 3 --acquisition reference
bmdgan evaluate --model "$OUT/runs/hl/model" --dataset "$OUT/cohort_unseen_ct" --out "$OUT/eval/unseen_ct"
# 4. Ship it with its model card.
CT_IDS=$(python -c "import json; print(','.join(json.load(open('$OUT/cohort/dataset.json'))['ct_ids']))")
bmdgan package-model "$OUT/runs/hl" --out Resources/Models/default --overwrite \
  --evaluation "fold 0 of the training cohort (held-out virtual patients)=$OUT/eval/fold0" \
  --evaluation "a fresh cohort, seed 1 (new virtual patients, same site)=$OUT/eval/seed1" \
  --evaluation "another site's protocol (site:7, seed 1)=$OUT/eval/site7" \
  --evaluation "a CT it never saw ($HELD_OUT, 36 virtual patients)=$OUT/eval/unseen_ct" \
  --training-command "bash Resources/Models/train_default.sh" --cts "$CT_IDS" --held-out-cts "$HELD_OUT" \
  ${TIMING[@]+"${TIMING[@]}"}  # an empty array under set -u needs this form on bash < 4.4
