#!/usr/bin/env bash
# Calibrates the shipped default model's confidence (issue 23) and measures it; writes the results into
# Resources/Models/default (model.json: intervals and out-of-distribution limits; MODEL_CARD.md: the tables).
# The model trained on every CT but STS_012, so its intervals come from the whole-CT cross-validation of its recipe
# (Resources/Models/cross_validate_whole_ct.sh, in $CV): each CT there was predicted by a model that never saw it.
# Run from the repository root with the .venv set up, after train_default.sh; about 30 minutes on a free 2-core CPU.
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
DATA=${DATA:-../shared/data/ct}
OUT=${OUT:-out/confidence}
CV=${CV:-out/whole_ct}
MODEL=Resources/Models/default
TS=$DATA/totalsegmentator_example
TS_MASKS="example_ct=right:$TS/masks_totalsegmentator_v1/femur_right.nii.gz,$TS/masks_totalsegmentator_v1/hip_right.nii.gz"
SOURCES=("$DATA/ibsi_sts" "$DATA/pelvic_reference" "$TS/example_ct.nii.gz")  # train_default.sh's
[ -s "$CV/curve/all/pooled_metrics.json" ] || { echo "run Resources/Models/cross_validate_whole_ct.sh first (CV=$CV)"; exit 2; }

# 1. Cohorts for the out-of-distribution limits: virtual patients of the one CT the model never saw (STS_012), and
#    new virtual patients of its training CTs (another seed).
bmdgan simulate-cohort "$DATA/ibsi_sts/STS_012.nii.gz" --out "$OUT/unseen_ct" --patients-per-ct 16 \
  --image-size 256x128 --seed 11 --acquisition reference
bmdgan simulate-cohort "${SOURCES[@]}" --segmentation "$TS_MASKS" --exclude STS_012 --out "$OUT/new_patients" \
  --patients-per-ct 4 --image-size 256x128 --seed 1 --acquisition reference
# 2. Intervals from the cross-validation's held-out predictions (grouped by source CT, each CT checked against the
#    interval fitted without it) and the limits from both cohorts, into model.json.
bmdgan calibrate-confidence "$MODEL" --out "$MODEL" --cross-validation "$CV/curve/all" \
  --held-out-cts "$OUT/unseen_ct" --new-patients "$OUT/new_patients"
# 3. What gets a trusted number and a category (paediatric, no hip, implant, familiar), into the model card.
python benchmarks/check_confidence.py --prepared "$OUT/unseen_ct/prepared" "$OUT/new_patients/prepared" \
  --out "$OUT/check" --update-card
# 4. AP pelvis radiographs of the two whole-pelvis CTs through `estimate` (for each CT the fold model of the
#    cross-validation that never saw it; the hip detector of a `train-detector --cross-validate` folder in
#    $DETECTOR_CV that never saw it either, else the bundled one), each hip against its CT-aBMD, into the model card.
#    The card's table of 2026-12-06 took DETECTOR_CV=detector/cross_validation from docs/hip-detection.md, "Hips
#    with screws" (simulate-landmarks --allow-metal --ct-views 8, then --screw-views 8; train-detector
#    --cross-validate --folds 0,1,3 --members 3 --hold-out STS_012).
DETECTOR_FOLDS=()
if [ -n "${DETECTOR_CV:-}" ]; then DETECTOR_FOLDS=(--detector-folds "$DETECTOR_CV"); fi
python benchmarks/check_ap_pelvis.py --prepared "$OUT/new_patients/prepared" --out "$OUT/ap_pelvis" \
  --model-folds "$CV/curve/all" --dataset "$CV/cohort" --positions 3 --update-card \
  ${DETECTOR_FOLDS[@]+"${DETECTOR_FOLDS[@]}"}
