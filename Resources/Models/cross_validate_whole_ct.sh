#!/usr/bin/env bash
# Whole-CT cross-validation over every measurable real bone (issue 22): each source CT and all its virtual patients
# held out together, once. The recipe is the shipped model's (--config cpu, Resources/Models/train_default.sh), so its
# pooled held-out figures and per-CT bias say what the shipped model does on a bone it never saw, and its held-out
# predictions calibrate the shipped model's prediction intervals (bmdgan calibrate-confidence, issue 23).
# Run from the repository root with the .venv set up. About 1.5 h per fold on a free 2-core CPU; killed at any
# point, it resumes where it stopped when started again (THREADS=1 leaves a core to other work).
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
DATA=${DATA:-../shared/data/ct}
OUT=${OUT:-out/whole_ct}
THREADS=${THREADS:-2}
CONFIG=${CONFIG:-cpu}         # cpu-cv: a fifth of the epochs, to compare cohorts within one session
PATIENTS=${PATIENTS:-12}      # virtual patients per bone
ANATOMIES=${ANATOMIES:-0}     # virtual anatomies per bone (bmdgan.cohort.anatomy), each in its source CT's fold
export OMP_NUM_THREADS=$THREADS
TS=$DATA/totalsegmentator_example
TS_MASKS="example_ct=right:$TS/masks_totalsegmentator_v1/femur_right.nii.gz,$TS/masks_totalsegmentator_v1/hip_right.nii.gz"

# 1. Every shared CT with a measurable proximal femur: the IBSI thigh crops (STS_001, 003, 007 and 048 are refused:
#    their scans cut off the femoral head), both hips of each whole-pelvis CT (AP pelvis views) and the
#    TotalSegmentator CT's implant-free right hip; $PATIENTS virtual patients x 4 poses of each bone and of each of its
#    $ANATOMIES virtual anatomies, one site, four whole-CT folds.
bmdgan simulate-cohort "$DATA/ibsi_sts" "$DATA/pelvic_reference" "$TS/example_ct.nii.gz" --segmentation "$TS_MASKS" \
  --out "$OUT/cohort" --patients-per-ct "$PATIENTS" --anatomies "$ANATOMIES" --image-size 256x128 --seed 0 \
  --acquisition reference --fold-count 4 --fold-by ct --workers 1
bmdgan dataset-report "$OUT/cohort" --out "$OUT/cohort/report"
# 2. Each fold in turn: stages 1-2, stage 3 and the direct-regression baseline, evaluated on its unseen CTs; pooled
#    PCC/ICC/MAE/SEE per method and each CT's bias in $OUT/cv/pooled_metrics.json.
bmdgan cross-validate "$OUT/cohort" --out "$OUT/cv" --config "$CONFIG" --folds 0,1,2,3
