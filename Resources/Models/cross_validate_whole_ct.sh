#!/usr/bin/env bash
# Whole-CT cross-validation over every measurable real bone (issue 22): each source CT and all its virtual patients
# held out together, once; and its learning curve, the same folds trained on 3 and 6 of their 9 training CTs for as
# many steps. The recipe is the shipped model's (--config cpu, Resources/Models/train_default.sh), so the pooled
# held-out figures and per-CT bias ($OUT/curve/all/pooled_metrics.json) say what the shipped model does on a bone it
# never saw, and its held-out predictions calibrate the shipped model's prediction intervals (bmdgan
# calibrate-confidence --cross-validation, issue 23). Run from the repository root with the .venv set up. Each fold
# run takes about 35 min on one core, 12 runs in all; killed at any point, it resumes where it stopped when started
# again. THREADS=1 FOLDS=0,1 and FOLDS=2,3 in two shells use both cores; a last run with all folds pools them.
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
DATA=${DATA:-../shared/data/ct}
OUT=${OUT:-out/whole_ct}
THREADS=${THREADS:-2}
CONFIG=${CONFIG:-cpu}         # cpu-cv: a fifth of the epochs, to compare cohorts within one session
PATIENTS=${PATIENTS:-4}       # virtual patients per bone
FOLDS=${FOLDS:-0,1,2,3}
ANATOMIES=${ANATOMIES:-0}     # virtual anatomies per CT (bmdgan.cohort.anatomy), each in its source CT's fold
TRANSPLANTS=${TRANSPLANTS:-0} # bodies of each whole pelvis with other CTs' femurs (bmdgan.cohort.transplant)
export OMP_NUM_THREADS=$THREADS
TS=$DATA/totalsegmentator_example
TS_MASKS="example_ct=right:$TS/masks_totalsegmentator_v1/femur_right.nii.gz,$TS/masks_totalsegmentator_v1/hip_right.nii.gz"

# 1. Every shared CT with a measurable proximal femur: the IBSI thigh crops (STS_001, 003, 007 and 048 are refused:
#    their scans cut off the femoral head), both hips of each whole-pelvis CT (AP pelvis views) and the
#    TotalSegmentator CT's implant-free right hip; $PATIENTS virtual patients x 4 poses of each bone and of each of its
#    $ANATOMIES virtual anatomies and $TRANSPLANTS transplant bodies, one site, four whole-CT folds.
bmdgan simulate-cohort "$DATA/ibsi_sts" "$DATA/pelvic_reference" "$TS/example_ct.nii.gz" --segmentation "$TS_MASKS" \
  --out "$OUT/cohort" --patients-per-ct "$PATIENTS" --anatomies "$ANATOMIES" --transplants "$TRANSPLANTS" \
  --image-size 256x128 --seed 0 --acquisition reference --fold-count 4 --fold-by ct --workers 1
bmdgan dataset-report "$OUT/cohort" --out "$OUT/cohort/report"
# 2. Each fold in turn: stages 1-2, stage 3 and the direct-regression baseline, evaluated on its unseen CTs; pooled
#    PCC/ICC/MAE/SEE per method and each CT's bias in $OUT/curve/all/pooled_metrics.json; then the same with 3 and 6
#    training CTs, and the curve ($OUT/curve/learning_curve.json and learning_curve_<target>.png). With virtual
#    bones every point is drawn twice, on the real bones alone and with the virtual ones ($OUT/curve/virtual/...),
#    both trained as many steps as the fold's real bones and tested on the held-out CTs' real bones.
bmdgan learning-curve "$OUT/cohort" --out "$OUT/curve" --config "$CONFIG" --sizes 3,6 --folds "$FOLDS"
