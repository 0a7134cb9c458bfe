"""Adult through scikit-learn pipelines whose output is a SciPy sparse matrix, against the DataFrame as it is.

    .venv/bin/python benchmarks/sklearn_sparse.py /work/shared/datasets/adult/adult.parquet

One stratified 80/20 split (random_state 0); every estimator at its defaults; test AUC and logloss, printed
one line each. What it shows: a sparse X reaches what the same representation reaches as columns.
"""

from __future__ import annotations

import sys
import time

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from deepfm.sklearn import DeepFMClassifier, FMClassifier


def main(path: str) -> None:
    frame = pd.read_parquet(path)
    y = frame.pop("income").str.startswith(">50K").astype(int).to_numpy()
    texts = list(frame.select_dtypes(exclude="number").columns)
    numbers = [name for name in frame.columns if name not in texts]
    X_train, X_test, y_train, y_test = train_test_split(frame, y, test_size=0.2, random_state=0, stratify=y)

    def one_hot_and_scaled():
        return ColumnTransformer([("ids", OneHotEncoder(handle_unknown="ignore"), texts),
                                  ("numbers", StandardScaler(), numbers)])

    def every_column_one_hot():  # each value an id, values seen under 10 times merged (deepfm's rare-value rule)
        return OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=10)

    runs = [(f"{model.__name__}, the DataFrame as it is", lambda model=model: model(random_state=0))
            for model in (FMClassifier, DeepFMClassifier)]
    runs += [(f"{model.__name__}, {prep.__name__}", lambda model=model, prep=prep: make_pipeline(prep(), model(random_state=0)))
             for prep in (one_hot_and_scaled, every_column_one_hot) for model in (FMClassifier, DeepFMClassifier)]
    runs += [("LogisticRegression, every_column_one_hot",
              lambda: make_pipeline(every_column_one_hot(), LogisticRegression(max_iter=2000)))]
    for name, build in runs:
        began = time.perf_counter()
        estimator = build().fit(X_train, y_train)
        p = estimator.predict_proba(X_test)[:, 1]
        print(f"{name:58s} test AUC {roc_auc_score(y_test, p):.4f}  logloss {log_loss(y_test, p):.4f}  "
              f"{time.perf_counter() - began:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
