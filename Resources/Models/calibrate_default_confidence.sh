#!/usr/bin/env bash
# Calibrates the shipped default model's confidence (issue 23) and measures it; writes the results into
# Resources/Models/default (model.json: intervals and out-of-distribution limits; MODEL_CARD.md: the tables).
# Run from the repository root with the .venv set up; about 40 minutes on a free 2-core CPU.
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
DATA=${DATA:-../shared/data/ct}
OUT=${OUT:-out/confidence}
MODEL=Resources/Models/default
TS=$DATA/totalsegmentator_example
TS_MASKS="example_ct=right:$TS/masks_totalsegmentator_v1/femur_right.nii.gz,$TS/masks_totalsegmentator_v1/hip_right.nii.gz"
UNSEEN=("$DATA/ibsi_sts/STS_012.nii.gz" "$DATA/pelvic_reference")  # the CTs the shipped model never saw

# 1. Held-out cohorts: virtual patients of the CTs it never saw (reference site, and another site), and new virtual
#    patients of its training CTs (train_default.sh's CTs, another seed).
bmdgan simulate-cohort "${UNSEEN[@]}" --out "$OUT/unseen_cts" --patients-per-ct 16 --image-size 256x128 --seed 11 \
  --acquisition reference
bmdgan simulate-cohort "${UNSEEN[@]}" --out "$OUT/unseen_cts_site7" --patients-per-ct 8 --image-size 256x128 \
  --seed 12 --acquisition site:7
bmdgan simulate-cohort "$DATA/ibsi_sts" "$TS/example_ct.nii.gz" --segmentation "$TS_MASKS" --exclude STS_012 \
  --out "$OUT/new_patients" --patients-per-ct 4 --image-size 256x128 --seed 1 --acquisition reference
# 2. Intervals (grouped by source CT) and out-of-distribution limits into model.json.
#    Each unseen CT is checked against the interval fitted without it, at both sites.
bmdgan calibrate-confidence "$MODEL" --out "$MODEL" --held-out-cts "$OUT/unseen_cts" --other-site "$OUT/unseen_cts_site7" \
  --new-patients "$OUT/new_patients"
# 3. What gets a trusted number and a category (paediatric, no hip, implant, familiar), into the model card.
python benchmarks/check_confidence.py --prepared "$OUT/unseen_cts/prepared" --out "$OUT/check" --update-card
