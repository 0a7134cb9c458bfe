#!/usr/bin/env bash
# Re-create every table and plot under docs/results/ (run from the repository root).
# DATA: the shared datasets; WORK: scratch space for the prepared splits (never committed).
# Four streams at once, one thread each (the machine these were made on has 2 cores shared with others).
set -euo pipefail
DATA=${DEEPFM_DATASETS:-../shared/datasets}
WORK=${DEEPFM_WORK:-/tmp/deepfm-results-data}
OUT=docs/results
export OMP_WAIT_POLICY=PASSIVE
deepfm="python -m deepfm"

python -m deepfm.experiments.prepare "$DATA" "$WORK"  # splits and joins, see its docstring
IPINYOU_COLUMNS=weekday,hour,useragent,IP,region,city,adexchange,domain,slotid,slotwidth,slotheight,slotvisibility,slotformat,creative,advertiser,slotprice
ML_COLUMNS=user,item,age,gender,occupation,zip,year

frappe() {
  $deepfm compare --train "$DATA/frappe/train.csv" --valid "$DATA/frappe/valid.csv" --test "$DATA/frappe/test.csv" \
    --models all --seeds 3 --epochs 10 --patience 2 --threads 1 --quiet --title "Frappe" --out $OUT/frappe
  # LR and FM again after FM's defaults changed (commit 034f708)
  $deepfm compare --train "$DATA/frappe/train.csv" --valid "$DATA/frappe/valid.csv" --test "$DATA/frappe/test.csv" \
    --models lr,fm --seeds 3 --epochs 10 --patience 2 --threads 2 --quiet \
    --title "Frappe, LR and FM at the defaults of commit 034f708" --out $OUT/frappe-fm-034f708
  # every model at the settings deepfm train gives it today (2026-12-06; each on its own training.threads)
  $deepfm compare --train "$DATA/frappe/train.csv" --valid "$DATA/frappe/valid.csv" --test "$DATA/frappe/test.csv" \
    --models all --seeds 2 --epochs 10 --patience 2 --quiet \
    --title "Frappe, each model at deepfm train's defaults for it (2026-12-06)" --out $OUT/frappe-2026-12-06
}

studies() {
  for study in dropout activation neurons layers shape; do
    $deepfm compare --train "$DATA/frappe/train.csv" --valid "$DATA/frappe/valid.csv" --test "$DATA/frappe/test.csv" \
      --study $study --epochs 4 --patience 2 --threads 1 --quiet --title "Frappe, DeepFM $study study" --out $OUT/frappe-studies/$study
  done
}

others() {
  $deepfm compare --train "$WORK/criteo/train.tsv" --valid "$WORK/criteo/valid.tsv" --test "$WORK/criteo/test.tsv" \
    --models all --seeds 3 --epochs 20 --batch-size 100 --patience 4 --threads 1 --quiet --title "Criteo head (1,000 rows)" --out $OUT/criteo-head
  $deepfm compare --train "$WORK/ipinyou/train.csv" --valid "$WORK/ipinyou/valid.csv" --test "$DATA/ipinyou/test.csv" \
    --categorical $IPINYOU_COLUMNS --models all --seeds 1 --epochs 5 --patience 2 --threads 1 --quiet --title "iPinYou sample (advertiser 2997)" --out $OUT/ipinyou
}

movielens() {
  $deepfm compare --train "$WORK/movielens/train_binary.csv" --valid "$WORK/movielens/valid_binary.csv" \
    --test "$WORK/movielens/test_binary.csv" --categorical $ML_COLUMNS --multi genres \
    --models all --seeds 3 --epochs 5 --patience 2 --threads 1 --quiet --title "MovieLens-100K u1, binary (rating >= 4)" --out $OUT/movielens-binary
  $deepfm compare --train "$WORK/movielens/train_binary.csv" --valid "$WORK/movielens/valid_binary.csv" \
    --test "$WORK/movielens/test_binary.csv" --categorical $ML_COLUMNS --multi genres --models lr,fm --seeds 3 \
    --epochs 5 --patience 2 --threads 2 --quiet --title "MovieLens-100K u1 binary, LR and FM at the defaults of commit 034f708" \
    --out $OUT/movielens-binary-fm-034f708
  $deepfm compare --train "$WORK/movielens/train_rating.csv" --valid "$WORK/movielens/valid_rating.csv" \
    --test "$WORK/movielens/test_rating.csv" --categorical $ML_COLUMNS --multi genres --task regression \
    --models all --seeds 1 --epochs 5 --patience 2 --threads 1 --quiet --title "MovieLens-100K u1, rating regression" --out $OUT/movielens-rating
}

# Usage: make_results.sh [frappe|studies|others|movielens ...] (default: all four, in parallel)
for stream in "${@:-frappe studies others movielens}"; do
  for name in $stream; do
    $name > "$WORK/$name.log" 2>&1 &
  done
done
wait
