"""Per-model (and, where the accuracy suite showed it, per-task) default overrides.

Each entry is a partial ``RunConfig`` mapping merged under the user's own options (an explicit
flag, config-file or API value always wins). ``MODEL_DEFAULTS`` apply when the config is built;
``TASK_DEFAULTS`` once the data is read and the task is known, and over them ``SHAPE_DEFAULTS`` by
the shape of the training ids (``id_shape``: a long tail, recurring ids or frequent ids; ``with_task_defaults``, for
keys the user left unset). Where ``PORTFOLIOS`` lists candidates for (model, task, id shape), a run trains
one model per candidate and validation keeps the best (``deepfm.portfolio``). Chosen on the validation splits of the accuracy suite (benchmarks/accuracy.py;
the test splits are never read for a choice); the evidence is in benchmarks/README.md, "Accuracy".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deepfm.recipes import DEEPFM_SEARCHED_RECIPE

if TYPE_CHECKING:
    from deepfm.config import RunConfig
    from deepfm.data.encoders import IdCounts

# FM (issue 12). Before: Adam lr 3e-2, batch 4096, k 10, lazy L2 1e-4 on the distinct rows of a batch,
# chosen on Frappe alone (valid AUC 0.9403); on ratings it overfit in 2-3 epochs and lost to LR on the
# MovieLens-1M sample. On the whole suite (validation metric; benchmarks/results/sweep_fm_round*.json):
# - the form of the regulariser matters most: per-occurrence L2 (libFM's: λ·mean over the batch of
#   Σ_f ‖v_f‖², so each feature is held back in proportion to how often it occurs) beats lazy L2 on the
#   distinct rows; with it, AdaGrad (per coordinate, lr 0.1, batch 512) beats Adam and row-wise AdaGrad
#   on Frappe (valid AUC 0.9510 vs 0.9492 vs 0.9487 at k 64, λ 1e-2);
# - k 64 beats k 32 and 10 on Frappe (0.9510 / 0.9498 / 0.9429 with AdaGrad, λ 1e-2) and on
#   MovieLens-100K (RMSE 0.9088 at k 64 vs 0.9132 at k 10, λ 0.1), ties on Adult (0.9109 / 0.9110);
# - the strength depends on the task: clicks want λ 1e-2 (Frappe 0.9510 at 1e-2, 0.9465 at 3e-2,
#   0.916 at 1e-1; Adult 0.9109 vs 0.9073 at 1e-1), ratings want ~10× more with a smaller step
#   (MovieLens-100K RMSE 0.953 at 1e-2, 0.9071 at 0.1 with lr 0.03; MovieLens-1M 0.9427 at 0.1,
#   0.9375 at 0.2, 0.9408 at 0.12; LR 0.9419). That is a documented rule by task, in TASK_DEFAULTS.
#   λ 0.1 is the one value that keeps FM ahead of LR on both rating sets once the plateau schedule
#   is on (reload the best epoch, lr ÷10, patience 3): MovieLens-1M 0.9415 (0.9427 without it),
#   MovieLens-100K 0.9071 (the same); λ 0.15 gave 0.9397 / 0.9175, λ 0.12 0.9408 / 0.9096.
# - refit "held-out" (third session): with rows held out of the training data (valid_fraction, no valid
#   file), train a new model on every row for the epochs validation chose, replaying its lr drops. A
#   nested split (epochs chosen on every 10th row of the suite's train, refitted on all of it, scored on
#   the suite's valid; benchmarks/refit_nested.py) gained RMSE 0.0076 / 0.0031 / 0.0045 on
#   MovieLens-100K ids / side / MovieLens-1M (0.9151 → 0.9075, 0.9055 → 0.9024, 0.9454 → 0.9409), at
#   up to 2× the training time. A validation file the user gave is never trained on by default. On
#   test (the suite with --set training.refit=on, results/accuracy_fm_ratings{,_linear}.md): u1 0.9277
#   → 0.9217, with linear_l2 0.01 (below) 0.9200; side 0.9162 → 0.9126; MovieLens-1M 0.9504 → 0.9446.
#   Averaging the weights or predictions of the last 2-8 epochs did not help (ML-100K ids valid 0.9071
#   at the last epoch, 0.9071-0.9076 averaged: AdaGrad's steps have shrunk by then).
# - regularising the first-order weights apart (linear_l2 1e-3 with λ 0.1 on V) changed nothing
#   measurable at lr 0.1 (MovieLens-100K 0.9073 vs 0.9088, MovieLens-1M 0.9680 vs 0.9680). At lr 0.03
#   with the plateau schedule (third session; results/sweep_fm_ratings_round1{0,1,2}.*) a weaker L2 on w
#   wins on all three rating sets: linear_l2 0.01 gives MovieLens-100K ids / side / MovieLens-1M
#   0.9054 / 0.9000 / 0.9404 against 0.9071 / 0.9005 / 0.9415 at λ 0.1 for both (0.03: 0.9057 / 0.9001 /
#   0.9413). Batch 256 with it gained more on two sets (0.9049 / 0.9385) but lost on the third (0.9007)
#   at twice the steps, so the batch stays 512 (lr 0.05: 0.9066, embed_l2 0.09: 0.9075, batch 128 at
#   lr 0.02: 0.9100 on MovieLens-100K ids).
# - the epoch cap (fourth session): with the plateau schedule the ratings runs ended at the cap of 20
#   still improving, so FM on ratings trains up to 80 epochs (early stopping ends it sooner where validation
#   stops improving). Caps 20 / 40 / 80, validation only: the nested refit (benchmarks/refit_nested.py --caps
#   20 40 80; results/refit_nested_caps.json) scored MovieLens-100K ids 0.9062 / 0.9056 / 0.9053, side
#   0.9023 / 0.9021 / 0.9019 (best inner epochs 20 / 40 / 53 and 20 / 40 / 80), MovieLens-1M 0.9404 at
#   every cap (its inner run stops at epoch 8); the suite's own validation split (no refit;
#   results/sweep_fm_ratings_caps.*) 0.9054 / 0.9050 / 0.9049, 0.9000 / 0.8999 / 0.8999 (best epoch 27
#   of 30 at 40 and 80) and 0.9404 at every cap (best epoch 29 of 32). A higher cap wins on two sets and
#   changes nothing on the third; the gains are small (≤ 0.0009) and cost up to 4× the epochs where a
#   run keeps improving. Other models and tasks keep 20 (not measured). Test, read once (refit on,
#   results/accuracy_fm_ratings_cap.md): u1 0.91996 → 0.91945, side 0.91265 → 0.91250, MovieLens-1M
#   0.94462 (the same).
# The long tail (the data rule below). On the 1M-row Criteo-shaped set (978k ids, ~1 new id per row)
# these settings collapsed (valid AUC 0.539, logloss 1.53, vs LR's 0.612), and so did Adam (0.523 at
# k 64; 0.568 with the former k-10 Adam defaults). The training loss itself was 1.4 in epoch 1: not
# overfitting but steps too large. Per-coordinate AdaGrad (and Adam) with an empty accumulator makes the
# first step of every coordinate lr·g/|g| = ±lr whatever the size of g: a rare id (its gradient is its
# 1/B share of a batch mean) moves as far as a frequent one, all rare ids of a row move together
# (each one's gradient is the sum of the others' vectors), and with ~20 such ids per row their
# pairwise products add up to logits of ±10 and more. Step sizes in proportion to the gradient fix
# it: on 200k training rows of that set (the suite's valid rows, 3 epochs; benchmarks/results/
# sweep_criteo_fm_g0.md) SGD lr 1 reached 0.6083, AdaGrad lr 0.01 (a smaller ±lr) 0.6050 then
# overfit, and AdaGrad lr 0.1 with its accumulators started at G0 (TensorFlow's
# initial_accumulator_value) 1e-3 / 1e-2 / 1e-1: 0.6156 / 0.6138 / 0.6048, against G0 = 0's 0.5306 and
# LR's 0.6037. G0 makes a rarely updated coordinate step lr·g/√G0 (SGD-like), a frequent one as
# AdaGrad. But where ids recur it costs: Frappe valid AUC 0.9237 (G0 1e-3) / 0.9222 (1e-2) against
# 0.9510 with G0 = 0. So G0 is a rule from the data: 1e-2 on a long tail (iPinYou 0.5640 vs 0.4876 at
# G0 = 0 and 0.5537 at 1e-3; Adult, not a long tail, 0.9107 vs 0.9109), 0 otherwise.
# FM's samples/s is lower than before (k 64 and batch 512 instead of k 10 and batch 4096): the price
# of +0.011 Frappe AUC and −0.04 MovieLens RMSE; benchmarks/run.py's "FM on Frappe" row measures it.
#
# LR keeps lazy L2 1e-4 at Adam lr 1e-2 (no candidate was better on the suite in the time available).
#
# FM and LR run one intra-op thread: their operators work on (batch, fields, k) tensors too small to
# split across cores, and waking a second thread for each costs more than it saves. On Frappe (2
# cores, OMP_WAIT_POLICY=PASSIVE) FM (k 10) trained at 1.84-1.88M samples/s with one thread against
# 1.37-1.41M with two, LR at 1.05-1.15M against 0.68M, with identical results. The other core
# prepares the next batches (distinct ids, design matrix) meanwhile. (Not re-measured at k 64.)
#
# Starting V at libFM's N(0, 0.1²) instead of N(0, 0.01²) helped FM on Frappe but hurt it on
# MovieLens ratings (earlier tuning), so the start stays 0.01 for every model.
#
# FM on clicks: the AdaGrad k-64 settings above (before: Adam lr 3e-2, batch 4096, k 10, lazy L2 1e-4,
# kept by the previous session because the AdaGrad settings lost on the long-tail sets). With the
# long-tail rule they win or tie on every click set (validation): Frappe 0.9510 vs 0.9403, Adult
# 0.9109 vs 0.9117 (a tie), the Criteo-shaped set (all 1M rows: valid 0.6355, test 0.6304 against
# LR's 0.6124 / 0.6055) and iPinYou (valid 0.5640, test 0.6010 against LR's 0.5537 / 0.5833), so FM is
# at least LR on every row of the suite (benchmarks/results/accuracy_{fm_rule,criteo_fm_rule}.md).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "fm": {"training": {"threads": 1}},
    "lr": {"training": {"embed_l2": 1e-4, "lr": 1e-2, "threads": 1}},
}
# DeepFM on clicks (the paper's other models keep the global lazy L2 0.1): per-occurrence L2 1e-2 instead of
# lazy L2 0.1 on the distinct rows of a batch. On the 1M-row Criteo-shaped set (3 epochs, Adam 1e-3,
# batch 512, k 10) validation AUC went from 0.6001 to 0.6346: lazy L2 pulls every row a batch touches
# by λ·v whatever its count, and in a long tail (most ids seen once or twice) that erases the rare
# ids; per occurrence, each id is held back in proportion to its share of the batch, as its data
# gradient is. On Frappe it is a tie (0.9472 vs 0.9481), k 64 with it changed nothing (0.9475), and only
# the all-AdaGrad k 64 recipe was clearly better there (0.9524, logloss 0.381) at several
# times the cost per step on Criteo-sized MLP inputs; not made the default. Again in the second session,
# for ids that recur only: Frappe 0.9504, but Adult 0.9152 against 0.9170 at these defaults (without
# batch norm: Frappe 0.9353). Ratings were not measured
# with the new form in the time available, so DeepFM on ratings kept lazy L2 0.1 (until _DEEPFM_RATINGS, below).
# Third session (benchmarks/results/sweep_deepfm_round{4..7}.*; valid AUC, seeds 2026 / 7): a larger step
# for the tables only (``dense_lr`` keeps the MLP's Adam at 1e-3) and k 64 win Frappe where ids recur
# and tie on Adult: Adam tables lr 1e-2, k 64: Frappe 0.9509 / 0.9484 against 0.9442 / 0.9446 (logloss
# 0.403 / 0.333 against 0.400 / 0.467), Adult 0.9165 / 0.9151 against 0.9173 / 0.9153 (seed spread 0.002).
# Lost or not better: tables lr 3e-2 (Frappe 0.9532, Adult 0.9133), 3e-3 (0.9469 / 0.9168), k 32 at 1e-2
# (0.9481 / 0.9162); the production hybrid, per-coordinate AdaGrad lr 0.1 on the tables and Adam 1e-3 on
# the MLP (``dense_optimizer``), k 64: Frappe 0.9517 / 0.9502 but Adult 0.9150 / 0.9148 (k 32, lr 0.05,
# lr 0.2 or L2 3e-2: Adult 0.9141-0.9151 each), like the all-AdaGrad recipe before it. On a long tail the
# larger step collapses as FM's AdaGrad did (an empty Adam moment makes every first step ±lr; see FM's rule
# above): Criteo-shaped, first 200k training rows, 3 epochs: 0.5409 (logloss 0.99) against 0.6085 at k 10,
# lr 1e-3 (the hybrid with G0 1e-2: 0.6075); iPinYou 0.5537 against 0.6100 (~25 clicks: noise-sized, but
# every new candidate lost there: 0.5375-0.5648). Hence DeepFM's data rule (SHAPE_DEFAULTS): on a long tail
# it keeps k 10 and lr 1e-3 for tables and MLP, the former click defaults. Two click sets with recurring
# ids (Frappe, Adult) and two long-tail sets (one clear, one noisy) support it; multiclass keeps the former.
# Neither model takes the plateau schedule on clicks (FM on ratings does, above): at patience 2 or 3,
# seeds 2026 / 7, it gains on Adult (FM +0.0008 / +0.0007, DeepFM +0.0014 / +0.0025 valid AUC) but
# loses on Frappe (FM 0.9500 / 0.9503 vs 0.9510 / 0.9509, DeepFM 0 / −0.0005) and on iPinYou for
# DeepFM (−0.026 / −0.011, ~25 clicks), and ties on the Criteo-shaped set (DeepFM 0.6346, epoch 1 either
# way); benchmarks/README.md, "The plateau schedule on clicks".
# Fourth session, round 8 (results/sweep_deepfm_round8_seed{2026,7}.*; valid AUC Frappe s2026 / s7, Adult
# s2026 / s7; defaults 0.9509 / 0.9484, 0.9165 / 0.9151): the MLP's global settings (dropout 0.2, batch
# norm, 400-400-400) stay. Dropout trades one set for the other at both seeds: 0.5 gives Frappe 0.9537 /
# 0.9487 but Adult 0.9149 / 0.9139; 0 gives Adult 0.9175 / 0.9161 but Frappe 0.9491 / 0.9473. Batch norm
# off (0.9508 / 0.9463, 0.9146 / 0.9136), MLP 200-200 (0.9500 / 0.9511, 0.9158 / 0.9140) and the paper's
# dropout 0.5 without batch norm (0.9499 / 0.9471, 0.9144 / 0.9133) lose on three or four of four.
# Seventh session, round 10 (results/sweep_deepfm_round10_*; valid AUC, seeds 2026 / 7 / 11): two more click
# sets with recurring ids, MovieLens ratings binarised as AutoInt/AFN do (accuracy.py's ml100k-clicks,
# ml1m-clicks: >= 4 -> 1, <= 2 -> 0, 3 dropped). Dropout 0.5 (all else the defaults) wins both MovieLens
# click sets at every seed, ties Frappe and loses Adult at every seed: MovieLens-100K clicks 0.8628 / 0.8627 /
# 0.8634 against 0.8587 / 0.8610 / 0.8606, MovieLens-1M clicks 0.8372 / 0.8411 / 0.8386 against 0.8359 /
# 0.8363 / 0.8348, Frappe 0.9537 / 0.9487 / 0.9493 against 0.9509 / 0.9484 / 0.9525 (means 0.95057 and
# 0.95060), Adult 0.9149 / 0.9139 / 0.9119 against 0.9165 / 0.9151 / 0.9172. The rule that separates Adult
# is the data's rows per id: Adult has ~385 training rows per distinct id (0.0026 ids per row; 8 categorical
# fields of 2-42 values, its 6 numeric fields hold no ids), the others 5-15 (0.066-0.21): where each id has
# few rows the model fits noise sooner and dropping more of the MLP's units helps; where every id has
# hundreds of rows, dropout costs fit. Hence the band "frequent ids" (< FREQUENT_IDS_PER_ROW, below) that
# keeps the global 0.2, and dropout 0.5 for DeepFM on clicks elsewhere (a long tail keeps 0.2 too: not
# measured there, and its defaults stay). Supported by three sets (two wins, Adult's loss), Frappe neutral.
# Test, read once after the choice: Frappe 0.9514 ± 0.0011 over seeds 2026 7 11 13 17 against 0.9483 ± 0.0019
# (results/accuracy_frappe_seeds_dropout.*), MovieLens-100K / 1M clicks 0.8694 / 0.8340 against 0.8611 / 0.8336;
# the suite's other DeepFM rows identical (results/accuracy_deepfm_{dropout_rule,base_7e46c11}.*).
# The Frappe-tuned recipes (tune's trial 17 = DEEPFM_SEARCHED_RECIPE, trial 42, trial 42 with batch norm
# or L2 1e-2) win Frappe (0.9530-0.9590) but lose both MovieLens click sets by 0.009-0.027 at both seeds and
# lose or tie Adult, so no rule from the data separates Frappe from the rest (its 10 rows per id lie between the
# MovieLens sets' 5 and 15): not the defaults, a candidate of the portfolio (PORTFOLIOS, below). The
# production hybrid (AdaGrad 0.1 tables, Adam 1e-3 MLP) and the former k 10 / lr 1e-3 tie or lose on the
# MovieLens click sets (0.8615 / 0.8600 and 0.8317 / 0.8328;
# 0.8595 / 0.8582 and 0.8350 / 0.8361), so the tables' step and k stay.
_FM_CLICKS = {"embed_dim": 64, "optimizer": "adagrad", "embed_reg": "occurrences", "lr": 0.1, "embed_l2": 1e-2,
              "batch_size": 512}
# Multiclass and ordinal FM were not measured on the suite: they keep the former click defaults.
_FM_CLASSES = {"embed_dim": 10, "optimizer": "adam", "embed_reg": "rows", "lr": 3e-2, "embed_l2": 1e-4,
               "batch_size": 4096}
_FM_RATINGS = {"embed_dim": 64, "optimizer": "adagrad", "embed_reg": "occurrences", "lr": 0.03, "embed_l2": 0.1,
               "linear_l2": 0.01, "lr_schedule": "plateau", "patience": 3, "refit": "held-out", "epochs": 80}
_DEEPFM_CLASSES = {"embed_reg": "occurrences", "embed_l2": 1e-2}
# The MLP's size where ids recur (2026-12-06, results/sweep_deepfm_mlp_size_recurring.*; valid AUC, mean ± sd over seeds
# 2026 / 7 / 11, these defaults with 400-400-400): 200-200 gave Frappe 0.9548 ± 0.0007 against 0.9520 ± 0.0006, and tied
# both MovieLens click sets within a seed's spread (MovieLens-100K 0.8624 ± 0.0011 against 0.8633 ± 0.0011, MovieLens-1M
# 0.8385 ± 0.0020 against 0.8391 ± 0.0021), at about a third of the MLP's products (trained in about half the time);
# 400-400 lost or tied all three. Adult (frequent ids, dropout 0.2) lost with it (0.9146 ± 0.0008 against 0.9163 ±
# 0.0006), so that band and the long tail (not measured) keep 400-400-400. Within one spread the cheaper model is kept,
# as the portfolio keeps the earlier recipe within one paired standard error; DeepFM on ratings chose 200-200 too.
_DEEPFM_CLICKS = _DEEPFM_CLASSES | {"embed_dim": 64, "lr": 1e-2, "dense_lr": 1e-3, "dropout": 0.5, "mlp": (200, 200)}
# DeepFM on ratings (2026-12-05; benchmarks/README.md, "DeepFM on ratings"; results/deepfm_ratings_round*): the
# global defaults (Adam 1e-3, k 10, lazy L2 0.1, dropout 0.2) stopped at epoch 3-6 and trailed FM on every rating set.
# Its tables trained as FM's on ratings (AdaGrad 0.03, k 64, L2 0.1 per occurrence, linear L2 0.01, the plateau
# schedule up to 80 epochs), its MLP by Adam 1e-3 with dropout 0.5, won two sets at every seed and tied the third
# (valid RMSE, seeds 2026 / 7 / 11; the former defaults in brackets): MovieLens-100K + side features 0.9083 / 0.9055 /
# 0.9101 (0.9186 / 0.9146 / 0.9158), the MovieLens-1M sample 0.9331 / 0.9338 / 0.9302 (0.9405 / 0.9427 / 0.9417),
# MovieLens-100K ids only (two fields) 0.9388 / 0.9351 / 0.9349 (0.9428 / 0.9358 / 0.9282; means 0.9363 / 0.9356).
# Dropout 0.5 alone won four of six cells at seeds 2026 / 7 (ids only 0.9250 / 0.9338, the best there); dropout 0.7,
# lazy L2 0.03 / 0.3, per-occurrence L2 alone, the plateau alone and the click recipe lost or tied. On seeded samples
# of 1k / 4k / 16k rows, whose ids fall in the long-tail band (0.6-2.3 distinct ids per row but ML-100K's 16k), it won
# every cell against the former defaults (valid RMSE, seeds 2026 / 7; results/deepfm_ratings_small_samples*): ML-1M
# 1.0884 / 1.0854 (1.1407 / 1.1185), 1.0716 / 1.0621 (1.1169 / 1.1086), 1.0160 / 1.0162 (1.0276 / 1.0249); ML-100K +
# side 1.0908 / 1.0937 (1.1357 / 1.1385), 1.0388 / 1.0493 (1.0887 / 1.0747), 16k 0.9679 / 0.9707 (0.9904 / 0.9890).
# So DeepFM's data rule, chosen on clicks, does not reach ratings (NO_SHAPE_RULE). FM's refit on the held-out rows
# too, on a nested split (benchmarks/refit_nested.py ml100k-ids ml100k-side ml1m --model deepfm --seeds 2026 7;
# results/refit_nested_deepfm_ratings_2026-12-05.*), gained on 5 of 6 runs, every set on average: ids only −0.0030 /
# +0.0066, + side +0.0012 / +0.0051, ML-1M +0.0061 / +0.0005 RMSE.
# Then the MLP (round 4 at seed 2026, round 5 at seeds 7 / 11; results/deepfm_ratings_round{4,5}_*): 200-200 instead of
# 400-400-400 won all nine cells: + side 0.9056 / 0.9031 / 0.9050, ML-1M 0.9316 / 0.9318 / 0.9293, ids only 0.9249 /
# 0.9258 / 0.9289 (seeds 2026 / 7 / 11; the 400³ recipe's above). L2 0.05 per occurrence, MLP lr 3e-4, tables lr 0.05,
# dropout 0.3 and MLP weight decay 1e-4 each lost a cell or more at seed 2026 or after.
# Then the MLP's output layer started at 0 (``mlp_output_init`` "zero": DeepFM starts as its FM part; 2026-12-05,
# results/deepfm_ratings_zero_output_*), valid RMSE, seeds 2026 / 7 / 11 (the recipe before in brackets): + side 0.9017 /
# 0.9031 / 0.9035 (0.9056 / 0.9031 / 0.9050), ML-1M 0.9304 / 0.9300 / 0.9298 (0.9316 / 0.9318 / 0.9293), ids only
# 0.9256 / 0.9199 / 0.9216 (0.9249 / 0.9258 / 0.9289): every set's mean lower (−0.0018, −0.0008, −0.0041), six cells
# of nine, two higher by 0.0007 at most; seeded samples of 1k / 4k / 16k rows (seeds 2026 / 7) eight cells of twelve,
# the four others higher by 0.0049 at most.
_DEEPFM_RATINGS = _FM_RATINGS | {"dense_optimizer": "adam", "dense_lr": 1e-3, "dropout": 0.5, "mlp": (200, 200),
                                 "mlp_output_init": "zero"}
_GLOBAL_DROPOUT = 0.2  # ModelConfig's dropout: DeepFM's on a long tail, on frequent ids and on other tasks
_GLOBAL_MLP = (400, 400, 400)  # ModelConfig's MLP (the paper's): DeepFM's on a long tail, on frequent ids and on other tasks
TASK_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "fm": {"binary": _FM_CLICKS, "multiclass": _FM_CLASSES, "regression": _FM_RATINGS,
           "ordinal": _FM_CLASSES},  # a likelihood over classes, as multiclass
    "deepfm": {"binary": _DEEPFM_CLICKS, "multiclass": _DEEPFM_CLASSES, "regression": _DEEPFM_RATINGS},
}

# The data rule (issue 12): the shape of the training ids, from the encoder fit (``IdCounts``), picks
# settings laid over the task's. A long tail is data with at least LONG_TAIL_IDS_PER_ROW distinct ids per
# training row (the suite: Criteo-shaped 0.98, iPinYou 0.57 against MovieLens-1M clicks 0.21, MovieLens-1M
# 0.16, Frappe 0.10, MovieLens-100K clicks 0.066, MovieLens-100K 0.04/0.05, Adult 0.003; the cut sits between,
# about 2× from each side, 1.4× from MovieLens-1M clicks).
LONG_TAIL_IDS_PER_ROW = 0.3
# Frequent ids: below FREQUENT_IDS_PER_ROW distinct ids per training row, i.e. over ~100 rows per id (the
# suite: Adult 0.0026, ~385 rows per id, against 0.066 / 0.10 / 0.21 for MovieLens-100K clicks, Frappe and
# MovieLens-1M clicks, 5-15 rows per id; the cut sits ~4x above Adult and ~7x below the nearest other set).
FREQUENT_IDS_PER_ROW = 0.01
SHAPE_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "fm": {"long tail": {"adagrad_init": 1e-2}},
    # DeepFM on a long tail keeps the global k 10, one step of 1e-3, dropout 0.2 and MLP (see _DEEPFM_CLICKS), on
    # frequent ids the global dropout 0.2 and MLP. Chosen on clicks: ratings take their own recipe in every band (NO_SHAPE_RULE).
    "deepfm": {"long tail": {"embed_dim": 10, "lr": 1e-3, "dropout": _GLOBAL_DROPOUT, "mlp": _GLOBAL_MLP},
               "frequent ids": {"dropout": _GLOBAL_DROPOUT, "mlp": _GLOBAL_MLP}},
}
SHAPE_BANDS = {"long tail": f"≥ {LONG_TAIL_IDS_PER_ROW:g}", "recurring ids": f"{FREQUENT_IDS_PER_ROW:g} to {LONG_TAIL_IDS_PER_ROW:g}",
               "frequent ids": f"< {FREQUENT_IDS_PER_ROW:g}"}  # distinct ids per training row
NO_SHAPE_RULE = {("deepfm", "regression")}  # (model, task) that a data rule chosen on another task does not reach


def shape_defaults(model: str, task: str, shape: str) -> dict[str, Any]:
    """The data rule's settings for ``model`` on ``task`` where the training ids are of ``shape`` (``id_shape``)."""
    return {} if (model, task) in NO_SHAPE_RULE else SHAPE_DEFAULTS.get(model, {}).get(shape, {})


# The portfolio rule (issue 12): where no single default wins every set of the suite, a few default
# recipes are trained from the same seed and the validation rows keep the best (Pfisterer et al. 2018,
# "Learning multiple defaults for machine learning algorithms"; the portfolios of FLAML and auto-sklearn).
# Frappe-tuned DeepFM (DEEPFM_SEARCHED_RECIPE) wins Frappe's validation split (0.9570 / 0.9575 at seeds
# 2026 / 7) but loses both MovieLens click sets by 0.009-0.027 and Adult by 0.002-0.004; FM at AdaGrad lr
# 0.03 for up to 40 epochs wins the MovieLens click sets (ml1m-clicks 0.8407 against 0.8200) and loses
# Frappe (0.9477 against 0.9510), and no statistic of the data separates the sets (see _FM_CLICKS and the
# DeepFM notes above). The first candidate is always {}: the defaults above. Binary tasks on recurring or
# frequent ids only: the recipes collapse on a long tail, and ratings were not measured. Validation kept
# DeepFM's searched on Frappe and the defaults elsewhere, FM's small step on the MovieLens click sets and Adult
# and the defaults on Frappe (the same at seeds 2026 and 7); test, read once after: Frappe DeepFM 0.9557 ±
# 0.0004 over 5 seeds (0.9514 before), FM at or over LR on every click row (ml1m-clicks 0.8364 against LR's
# 0.8306). The evidence: benchmarks/README.md, "The default portfolio".
Candidate = tuple[str, dict[str, Any]]  # (name, overrides of model or training keys)
_FM_CLICK_PORTFOLIO: tuple[Candidate, ...] = (("defaults", {}), ("small step", {"lr": 0.03, "epochs": 40}))
_DEEPFM_CLICK_PORTFOLIO: tuple[Candidate, ...] = (("defaults", {}), ("searched", DEEPFM_SEARCHED_RECIPE))
PORTFOLIOS: dict[str, dict[str, dict[str, tuple[Candidate, ...]]]] = {
    "fm": {"binary": {"recurring ids": _FM_CLICK_PORTFOLIO, "frequent ids": _FM_CLICK_PORTFOLIO}},
    "deepfm": {"binary": {"recurring ids": _DEEPFM_CLICK_PORTFOLIO, "frequent ids": _DEEPFM_CLICK_PORTFOLIO}},
}
# A small sample of data whose ids recur passes 0.3 distinct ids per row (its ids are spread over fewer rows: Frappe's
# 10 fields at 15k rows 0.32, MovieLens-1M clicks at 15k 0.64), and the long-tail branch then costs it dearly, while a
# small sample of a real long tail needs that branch (the Criteo-shaped set at 15k-200k rows, 3.5-11.5 ids per row). No
# statistic of the counts told them apart (iPinYou's 24k rows, 0.57 per row, want the long tail; ids per row, the
# share seen once, once per row, rare occurrences and new values in a second half all overlap), so below
# SMALL_LONG_TAIL_ROWS training rows (where two models cost little) validation chooses between the branches:
# the long tail's settings and the task's own (every value its own id). Valid AUC, long tail / recurring branch,
# seed 2026 (benchmarks/README.md, "Small samples: validation picks the branch"): FM Frappe 15k 0.836 / 0.901,
# 30k 0.890 / 0.934 (rows of the recurring band, the long tail's keys forced); MovieLens-1M clicks 15k 0.745 / 0.758,
# 30k 0.787 / 0.793; Criteo-shaped 15k 0.571 / 0.526, 30k 0.592 / 0.521, 200k 0.613 / 0.530. DeepFM likewise.
SMALL_LONG_TAIL_ROWS = 100_000
# Below 10k rows too (where the rare-value rule keeps every value; benchmarks/README.md, the same section): valid AUC
# long tail / recurring branch at 3k / 6k / 9k rows, FM: Frappe 0.764 / 0.802, 0.820 / 0.848, 0.852 / 0.870; MovieLens-1M
# clicks 0.649 / 0.663, 0.683 / 0.707, 0.705 / 0.725; Criteo-shaped 0.583 / 0.516, 0.586 / 0.522, 0.589 / 0.522. From
# PORTFOLIO_MIN_ROWS, so that the held-out rows (a tenth) can tell two models apart; tests and tiny demos train one.
PORTFOLIO_MIN_ROWS = 2_000
_RECURRING_BRANCH: dict[str, dict[str, Any]] = {  # the task's settings the long-tail branch replaces, and min_count 1
    "lr": {"min_count": 1},  # LR has no settings of its own there: only the rare-value rule (Frappe 12k: 0.824 / 0.894)
    "fm": {"adagrad_init": 0.0, "min_count": 1},
    # (the MLP's size as the long tail's, as the small samples measured it: so that a user's --mlp sets both branches)
    "deepfm": {key: _DEEPFM_CLICKS[key] for key in SHAPE_DEFAULTS["deepfm"]["long tail"] if key != "mlp"} | {"min_count": 1},
}


def id_shape(id_counts: IdCounts | None) -> str:
    """``long tail``, ``recurring ids`` or ``frequent ids``, by distinct ids per training row (``SHAPE_BANDS``);
    ``recurring ids`` also when the counts are unknown (a model saved before them)."""
    if id_counts is None:
        return "recurring ids"
    if id_counts.ids_per_row >= LONG_TAIL_IDS_PER_ROW:
        return "long tail"
    return "frequent ids" if id_counts.ids_per_row < FREQUENT_IDS_PER_ROW else "recurring ids"


# The rare-value rule (issue 13): where the user set no ``data.min_count`` and the training ids are a long
# tail (``id_shape`` of the counts over every value seen, i.e. at min_count 1) of at least
# RARE_VALUE_RULE_ROWS rows, values seen fewer than LONG_TAIL_MIN_COUNT times share their field's rare id
# (the id that values unseen in training get at predict time), as Criteo's winners and BARS do (< 10).
# An id seen once gets one update and is almost never met again at test time, yet costs a table row and
# two Adam moments, and makes every batch touch ~all-distinct rows; the rare id, trained on all of them, is
# what the new ids of test rows meet. Chosen on validation (benchmarks/README.md, "The rare-value rule";
# results/sweep_rare_values_*): min_count 1 / 2 / 5 / 10, valid AUC,
# - criteo-synth, first 200k training rows (3 epochs), seed 2026: DeepFM 0.6085 / 0.6081 / 0.6075 / 0.6087,
#   FM 0.6143 / 0.6133 / 0.6132 / 0.6134, LR 0.6043 / 0.6041 / 0.6042 / 0.6046; seed 7 at 1 / 10, DeepFM 0.6093 /
#   0.6095, FM 0.6142 / 0.6138: a tie everywhere (≤ 0.001);
# - iPinYou (~25 valid clicks: noise-sized), mean of seeds 2026 / 7 / 11: DeepFM 0.5811 / 0.5926 / 0.6603 /
#   0.5995, FM 0.5504 / 0.5534 / 0.5383 / 0.5482, LR 0.5643 / 0.5647 / 0.5650 / 0.5725.
# 10 ties or wins on every cell but FM on iPinYou (−0.002, within its seed spread) and keeps the fewest rows;
# 5 lost FM on iPinYou by 0.012. Below RARE_VALUE_RULE_ROWS training rows (samples, demos, tests) every value
# keeps its id: the tables are small anyway, and the rule was measured on 24k (iPinYou) to 1M rows.
LONG_TAIL_MIN_COUNT = 10
RARE_VALUE_RULE_ROWS = 10_000


def rare_value_threshold(min_count: int | None, seen: IdCounts) -> int:
    """The ``min_count`` the encoder applies: the user's; else LONG_TAIL_MIN_COUNT on a long tail of at least
    RARE_VALUE_RULE_ROWS training rows; else 1 (every value its own id)."""
    if min_count is not None:
        return min_count
    long_tail = id_shape(seen) == "long tail" and seen.rows >= RARE_VALUE_RULE_ROWS
    return LONG_TAIL_MIN_COUNT if long_tail else 1


def model_defaults(name: str, solver: str = "gradient") -> dict[str, Any]:
    """The tuned overrides for model ``name`` (an empty mapping when it has none). They were tuned for
    gradient training: the sampling and ALS solvers keep the global defaults (k 10, as libFM and myFM)."""
    return MODEL_DEFAULTS.get(name, {}) if solver == "gradient" else {}


# Small samples (benchmarks/README.md, "Small samples: steps an epoch"): at batch 512 a sample of a few thousand rows
# is a few steps an epoch, and LR and FM stop early before they fit. So where the user set no batch size, LR and FM on
# binary and regression labels take the largest power of two at most rows / SMALL_SAMPLE_STEPS[model] (at least
# SMALL_SAMPLE_MIN_BATCH) where that is below the task's batch: LR from 8,192 rows on and FM from 32,768 keep it, as
# does every data set of the accuracy suite but iPinYou's 24k rows for FM. Valid AUC / RMSE at batch 512 and at the
# rule's batch, seeded samples of the suite's training rows (accuracy.py --train-rows; means of seeds 2026 and 7):
# - FM (34 of 42 samples better): Frappe 1k 0.632 / 0.712, 4k 0.787 / 0.846, 8k 0.842 / 0.872, 32k 0.9367 / 0.9366;
#   MovieLens-100K clicks 4k 0.702 / 0.761, 16k 0.7998 / 0.7994, 32k 0.8370 / 0.8411; MovieLens-1M clicks 4k 0.663 /
#   0.708, 32k 0.7889 / 0.8015; ML-100K ratings 8k 1.047 / 1.033, ML-1M 4k 1.0505 / 1.0527, 16k 1.0229 / 1.0168; Adult
#   1k 0.892 / 0.881 (its worst sample), 32k 0.9106 / 0.9109; iPinYou's 24k rows 0.5543 / 0.5525 (~20 valid clicks).
# - LR (24 of 30 samples up to 8k better, one tie): Frappe 1k 0.6145 / 0.7180, 4k 0.814 / 0.836; Adult 1k 0.894 / 0.904;
#   MovieLens-100K clicks 400 rows 0.643 / 0.639; ML-1M ratings 1k 1.082 / 1.086. From 16k rows a smaller batch
#   was a wash (256: Frappe +0.0026, the other five sets 0.0002-0.0013 worse).
# DeepFM keeps its batch: smaller ones lost on every rating sample (ML-1M 400 rows RMSE 1.134 at 512, 1.187 at 32)
# and split the click samples.
SMALL_SAMPLE_STEPS = {"lr": 16, "fm": 64}
SMALL_SAMPLE_MIN_BATCH = 32
_SMALL_SAMPLE_TASKS = ("binary", "regression")


def small_sample_batch(model: str, task: str, rows: int | None, batch: int) -> int | None:
    """The batch size the small-sample rule gives ``model`` on ``task`` with ``rows`` training rows, where it is below
    ``batch`` (the batch the defaults give otherwise); else None."""
    if model not in SMALL_SAMPLE_STEPS or task not in _SMALL_SAMPLE_TASKS or not rows:
        return None
    fitting = max(SMALL_SAMPLE_MIN_BATCH, 1 << max(0, (rows // SMALL_SAMPLE_STEPS[model]).bit_length() - 1))
    return fitting if fitting < batch else None


def describe_small_sample(config: RunConfig, task: str, id_counts: IdCounts | None) -> str | None:
    """One line for the run's log where the small-sample rule sets the batch size (``config`` as the user gave it)."""
    if id_counts is None or config.training.solver != "gradient" or "batch_size" in config.training.model_fields_set:
        return None
    model, batch = config.model.name, _task_batch(config, task)
    small = small_sample_batch(model, task, id_counts.rows, batch)
    return None if small is None else (f"small sample: {id_counts.rows:,} training rows, so batches of {small} rather "
                                       f"than {batch} (a power of two up to rows / {SMALL_SAMPLE_STEPS[model]}, at "
                                       f"least {SMALL_SAMPLE_MIN_BATCH}: more steps an epoch; deepfm.defaults; "
                                       "--batch-size sets one)")


def _task_batch(config: RunConfig, task: str) -> int:
    """The batch size ``config`` trains ``task`` at without the small-sample rule."""
    return TASK_DEFAULTS.get(config.model.name, {}).get(task, {}).get("batch_size", config.training.batch_size)


def with_task_defaults(config: RunConfig, task: str, id_counts: IdCounts | None = None) -> RunConfig:
    """``config`` with the training defaults of its model for ``task`` (known once the data is read), for the shape
    of its ids (``id_shape`` of the encoder's ``id_counts``) and for a small sample (``small_sample_batch``), where
    neither the user nor ``MODEL_DEFAULTS`` set that key."""
    if config.training.solver != "gradient":
        return config  # tuned for gradient training (see model_defaults)
    model = config.model.name
    defaults = TASK_DEFAULTS.get(model, {}).get(task, {}) | shape_defaults(model, task, id_shape(id_counts))
    small = small_sample_batch(model, task, id_counts.rows if id_counts else None, _task_batch(config, task))
    return _with_keys(config, defaults | ({"batch_size": small} if small else {}), only_unset=True)


def _with_keys(config: RunConfig, values: dict[str, Any], only_unset: bool) -> RunConfig:
    """``config`` with flat ``values`` set in the section (data, model or training) that has each key; ``only_unset``:
    only where neither the user nor ``MODEL_DEFAULTS`` set it."""
    updates = {}
    for name in ("data", "model", "training"):
        section = getattr(config, name)
        chosen = {key: value for key, value in values.items() if key in type(section).model_fields
                  and not (only_unset and key in section.model_fields_set)}
        if chosen:
            updates[name] = section.model_copy(update=chosen)
    return config.model_copy(update=updates) if updates else config


def portfolio(model: str, task: str, id_counts: IdCounts | None) -> tuple[Candidate, ...]:
    """The default candidates for ``model`` on ``task`` and training ids counted as ``id_counts``: ``PORTFOLIOS``
    for their shape; on clicks, from PORTFOLIO_MIN_ROWS to SMALL_LONG_TAIL_ROWS rows of a long tail, both branches
    of the data rule (under RARE_VALUE_RULE_ROWS, where every value keeps its id anyway, without ``min_count``: LR's
    branches are then one model, trained once); just the defaults, ``(("defaults", {}),)``, where none are listed."""
    shape = id_shape(id_counts)
    listed = PORTFOLIOS.get(model, {}).get(task, {}).get(shape)
    if (listed is None and shape == "long tail" and task == "binary" and model in _RECURRING_BRANCH
            and id_counts is not None and PORTFOLIO_MIN_ROWS <= id_counts.rows < SMALL_LONG_TAIL_ROWS):
        recurring = {key: value for key, value in _RECURRING_BRANCH[model].items()
                     if not (key == "min_count" and rare_value_threshold(None, id_counts) == value)}
        if recurring:
            return ("long tail", {}), ("recurring ids", recurring)
    return listed or (("defaults", {}),)


def with_candidate(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """``config`` with a candidate's ``overrides`` (flat data, model or training keys) set, as a user's would be."""
    return _with_keys(config, overrides, only_unset=False)


def describe_shape_rule(config: RunConfig, id_counts: IdCounts | None, task: str) -> str | None:
    """One line for the run's log: the ids' shape and what its rule set, for a model that has a data rule on ``task``;
    ``config`` as the user gave it (before ``with_task_defaults``), so that a key they set is said to be theirs."""
    model = config.model.name
    has_rule = model in SHAPE_DEFAULTS and (model, task) not in NO_SHAPE_RULE
    if id_counts is None or config.training.solver != "gradient" or (not has_rule and id_counts.min_count <= 1):
        return None
    shape = id_shape(id_counts)
    chosen = shape_defaults(model, task, shape)
    sections = (config.model, config.training)
    settings = ", ".join(
        f"{key} as you set it" if any(key in section.model_fields_set for section in sections)
        else f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in chosen.items()) or "those of the task"
    threshold = id_counts.min_count
    rare = ("every value keeps its own id" if threshold <= 1 else
            f"values seen fewer than {threshold} times share their field's rare id")
    rare += f" (data.min_count {threshold}{' as you set it' if config.data.min_count is not None else ''})"
    return (f"ids: {id_counts.describe()}: {shape} ({SHAPE_BANDS[shape]} distinct ids per row); "
            f"{config.model.name} defaults for it (deepfm.defaults): {settings}; {rare}")
