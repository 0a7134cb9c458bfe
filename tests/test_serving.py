"""``deepfm serve``: JSON rows predict exactly what the same rows in a CSV file predict; bad input is a
4xx naming the row and field, and the server keeps serving."""

from __future__ import annotations

import asyncio
import csv
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from deepfm.api import Estimator  # noqa: E402
from deepfm.serving.app import create_app  # noqa: E402
from deepfm.serving.backends import TorchPredictor  # noqa: E402
from deepfm.serving.batcher import MicroBatcher  # noqa: E402
from deepfm.serving.decode import RequestDecoder  # noqa: E402
from deepfm.serving.limits import Limits  # noqa: E402
from deepfm.serving.rows import RequestError  # noqa: E402
from deepfm.data.unseen import UnseenCounts  # noqa: E402
from deepfm.data.readers import read_frame  # noqa: E402
from deepfm.training.trainer import NOT_FINITE  # noqa: E402

HEADER = ["label", "user", "city", "price", "tags"]
CITIES = ["paris", "oslo", "lima", "rome"]


def _rows(n: int, seed: int) -> list[list[str]]:
    """user: integer ids (categorical), city: strings, price: floats with trailing zeros (numeric),
    tags: multi-valued; about 1 in 10 cells empty (missing)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        user, city, price = int(rng.integers(100, 130)), CITIES[int(rng.integers(0, 4))], f"{rng.uniform(1, 9):.2f}0"
        tags = "|".join(sorted({f"t{int(t)}" for t in rng.integers(0, 6, int(rng.integers(1, 3)))}))
        label = int((user % 3 == 0) ^ (city == "oslo") ^ (rng.random() < 0.2))
        row = [str(label), str(user), city, price, tags]
        rows.append([v if j == 0 or rng.random() > 0.1 else "" for j, v in enumerate(row)])
    return rows


def _write(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("serve")
    train = _write(root / "train.csv", _rows(400, 0))
    test_rows = _rows(40, 1) + [["0", "999", "atlantis", "2.50", "t0|never-seen"]]  # unseen values
    test = _write(root / "test.csv", test_rows)
    out = root / "model"
    Estimator(data={"multi": ("tags",), "numeric": ("price",)}, model={"mlp": (16,), "embed_dim": 4},
              training={"epochs": 1, "batch_size": 64}).fit(train, out=out, progress=False)
    return {"dir": out, "test": test, "rows": test_rows, "expected": Estimator.load(out).predict(test)}


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model["dir"], Limits(max_rows=64, max_bytes=20_000))) as client:
        yield client


def _as_json(rows: list[list[str]], numbers: bool) -> bytes:
    """CSV rows as a request body: cells as JSON strings, or (``numbers``) digits as bare JSON numbers;
    empty cells as null."""
    objects = []
    for row in rows:
        items = []
        for name, value in zip(HEADER, row):
            if value == "":
                text = "null"
            elif numbers and value.replace(".", "", 1).isdigit():
                text = value  # 2.500 stays 2.500, 123 stays 123
            else:
                text = json.dumps(value)
            items.append(f'"{name}": {text}')
        objects.append("{" + ", ".join(items) + "}")
    return ('{"rows": [' + ", ".join(objects) + "]}").encode()


@pytest.mark.parametrize("numbers", [False, True], ids=["strings", "numbers"])
def test_json_rows_predict_what_the_csv_file_predicts(client, model, numbers):
    response = client.post("/predict", content=_as_json(model["rows"], numbers))
    assert response.status_code == 200, response.text
    assert response.json()["kind"] == "probability"
    np.testing.assert_allclose(response.json()["predictions"], model["expected"], rtol=0, atol=1e-6)


def test_multi_valued_fields_take_a_list_and_missing_takes_null_or_empty(client, model):
    row = dict(zip(HEADER, model["rows"][-1]))
    as_list = client.post("/predict", json={"rows": [{**row, "tags": row["tags"].split("|")}]}).json()["predictions"]
    assert as_list == pytest.approx([model["expected"][-1]], abs=1e-6)
    nulls = client.post("/predict", json={"rows": [{**row, "city": None}, {**row, "city": ""}]}).json()["predictions"]
    assert nulls[0] == nulls[1]


BAD = [
    (b'{"rows": [', 400, "malformed JSON"),
    (b'{"rows": [{"user": NaN}]}', 400, "malformed JSON"),
    (b"\xff\xfe", 400, "the body is not UTF-8 text: byte 0 (b'\\xff')"),  # was read as UTF-16: "Expecting value"
    (b'{"rows": [{"user": "K\xf6ln"}]}', 400, "the body is not UTF-8 text: byte 21 (b'\\xf6')"),  # Latin-1
    (b'\xef\xbb\xbf{"rows": [{"user": "K\xf6ln"}]}', 400, "the body is not UTF-8 text: byte 24 (b'\\xf6')"),  # + a BOM
    (b'[1, 2]', 422, '{"rows"'),
    (b'{"rows": {"user": 1}}', 422, '"rows" must be a list'),
    (b'{"rows": []}', 422, "empty"),
    (b'{"rows": [7]}', 422, "rows[0]: expected an object"),
    (b'{"rows": [{"user": 1, "city": "oslo", "price": 2, "tags": "t1"}, {"user": 1, "price": 2, "tags": "t1"}]}',
     422, "rows[1].city: the field is missing ("),
    (b'{"rows": [{"user": 1, "price": 2, "tags": "t1"}, {"user": 1, "price": 2, "tags": "t1"}]}',
     422, "rows[0].city: the field is missing (and 1 more row) ("),
    (b'{"rows": [{"user": 1, "price": 2, "tags": "t1"}, {"user": 1, "price": 2, "tags": "t1"}, {"user": 2}]}',
     422, "rows[0].city: the field is missing (and 2 more rows);"),
    (b'{"rows": [{"user": 1, "cty": "oslo", "price": 2, "tags": "t1"}]}',  # a misspelt key (a new user's request)
     422, "rows[0].city: the field is missing (it has 'cty': rename it 'city') ("),
    (b'{"rows": [{"user": {"id": 1}, "city": "oslo", "price": 2, "tags": "t1"}]}', 422, "rows[0].user: expected"),
    (b'{"rows": [{"user": 1, "city": true, "price": 2, "tags": "t1"}]}', 422, "rows[0].city: got a boolean"),
    (b'{"rows": [{"user": 1, "city": ["oslo"], "price": 2, "tags": "t1"}]}', 422, "rows[0].city: expected"),
    (b'{"rows": [{"user": 1, "city": "oslo", "price": 2, "tags": "t1"}, '
     b'{"user": 1, "city": "oslo", "price": "cheap", "tags": "t1"}]}', 422, "rows[1]: column 'price' must be a number"),
    (b'{"rows": [{"user": 1, "city": "oslo", "price": 2, "tags": "t1"}, '
     b'{"user": 1, "city": "oslo", "price": 2, "tags": "t1|t2:1e30"}]}', 422,
     "rows[1]: multi-valued column 'tags': the weight in 't2:1e30' must be a finite number of magnitude at most 1.8e+19"),
    (b'{"rows": [' + b", ".join([b'{"user": 1, "city": "a", "price": 1, "tags": "t"}'] * 65) + b"]}", 413, "65 rows"),
    (b'{"rows": [{"user": "' + b"x" * 30_000 + b'"}]}', 413, "bytes"),
]


@pytest.mark.parametrize("body, status, message", BAD, ids=[f"{s}-{m[:24]}" for _, s, m in BAD])
def test_bad_requests_are_4xx_naming_row_and_field(client, body, status, message):
    response = client.post("/predict", content=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert client.get("/health").json() == {"status": "ok"}  # still serving


def test_an_unexpected_failure_is_a_500_for_that_request_alone(model):
    app = create_app(model["dir"])
    body, predictor = _as_json(model["rows"][:2], numbers=False), app.state.batcher.predictor
    failures = iter([RuntimeError("the model broke")])

    def fails_once(data):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return predictor(data)

    app.state.batcher.predictor = fails_once
    with TestClient(app) as client:
        broken = client.post("/predict", content=body)
        assert (broken.status_code, broken.json()) == (500, {"error": "internal error: RuntimeError: the model broke"})
        np.testing.assert_allclose(client.post("/predict", content=body).json()["predictions"], model["expected"][:2],
                                   atol=1e-6)
        assert client.get("/predict").status_code == 405
        assert client.post("/predict/x", content=body).status_code == 404  # other paths: FastAPI's answers


def test_a_row_whose_prediction_is_not_finite_is_a_422_naming_it_not_a_null(model):
    app = create_app(model["dir"])
    body, predictor = _as_json(model["rows"][:3], numbers=False), app.state.batcher.predictor

    def overflows_on_the_second_row(data):
        predictions = predictor(data)
        predictions[1] = np.nan
        return predictions

    app.state.batcher.predictor = overflows_on_the_second_row
    with TestClient(app) as client:
        response = client.post("/predict", content=body)
        assert (response.status_code, response.json()) == (422, {"error": f"rows[1]: {NOT_FINITE}"})


def test_health_is_503_naming_the_worker_while_its_forward_passes_keep_failing_and_ok_once_it_scores(model):
    """A load balancer polls /health: a worker that answers every request with a 500 is taken out, and back in
    once it scores again (its /health tries one row: a drained server gets no request to tell)."""
    import os

    from deepfm.serving.health import FAILING_PASSES

    app = create_app(model["dir"])
    body, predictor = _as_json(model["rows"][:2], numbers=False), app.state.batcher.predictor

    def broken(data):
        raise RuntimeError("the model broke")

    app.state.batcher.predictor = broken
    with TestClient(app) as client:
        for _ in range(FAILING_PASSES - 1):
            assert client.post("/predict", content=body).status_code == 500
        assert client.get("/health").json() == {"status": "ok"}  # a failure or two: those requests' alone
        assert client.post("/predict", content=body).status_code == 500
        failing = client.get("/health")
        assert failing.status_code == 503
        assert failing.json() == {"status": "failing", "failing": [
            f"worker {os.getpid()} is failing to score: {FAILING_PASSES} or more forward passes failed in a row, the "
            "last with RuntimeError: the model broke"]}
        app.state.batcher.predictor = predictor  # it scores again
        healthy = client.get("/health")
        assert (healthy.status_code, healthy.json()) == (200, {"status": "ok"})


def test_any_worker_answers_health_for_a_sibling_failing_to_score(tmp_path, monkeypatch):
    """Under --workers, a load balancer's /health reaches whichever worker accepts it."""
    import os

    from deepfm.serving.health import FAILING_PASSES, Health

    this = Health(tmp_path)
    monkeypatch.setattr(os, "getpid", os.getppid)  # the sibling: another process that runs
    sibling = Health(tmp_path)
    monkeypatch.undo()
    this.serving(), sibling.serving()
    for _ in range(FAILING_PASSES):
        sibling.scored(MemoryError("out of memory"))
    assert this.failing() == [f"worker {os.getppid()} is failing to score: {FAILING_PASSES} or more forward passes "
                              "failed in a row, the last with MemoryError: out of memory"]
    sibling.scored(None)
    assert this.failing() == []


def _a_pid_that_does_not_run() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.skipif(sys.platform == "win32", reason="Windows does not tell a stopped worker apart")
def test_a_worker_that_starts_takes_the_place_of_one_stopped_worker_whatever_the_number_of_workers(tmp_path,
                                                                                                 monkeypatch):
    """uvicorn may change the number of workers as it runs (SIGTTIN, SIGTTOU): no fixed N tells when a stopped worker
    was replaced; each worker that starts serving removes one stopped worker's record, and failed starts' records."""
    import os

    from deepfm.serving.health import Health, clock

    def worker(pid: int, started: float | None = None) -> Health:
        with monkeypatch.context() as patched:
            patched.setattr(os, "getpid", lambda: pid)
            return Health(tmp_path, started)

    this = Health(tmp_path)
    this.serving()
    gone = sorted({_a_pid_that_does_not_run(), _a_pid_that_does_not_run()})
    for pid in gone:
        worker(pid)  # killed while it started
    assert sorted(this.failing()) == [f"worker {pid} stopped while starting, without saying why (killed, or out of "
                                      "memory?)" for pid in gone]
    worker(_a_pid_that_does_not_run()).failed_to_start(OSError("no such file"))
    assert len(this.failing()) == 3
    worker(os.getppid(), started=clock()).serving()  # a replacement (a process that runs), started after them
    assert len(this.failing()) == 1 and "stopped while starting" in this.failing()[0]  # one place filled, one empty


@pytest.mark.skipif(sys.platform == "win32", reason="Windows does not tell a stopped worker apart")
def test_a_sibling_that_was_starting_when_a_worker_stopped_does_not_take_its_place(tmp_path, monkeypatch):
    """uvicorn starts the workers together: one may die (killed, out of memory) while another still loads the model.
    That one serving later is no replacement, and /health goes on naming the dead worker until uvicorn's is serving."""
    import os

    from deepfm.serving.health import Health, clock

    sibling = Health(tmp_path, started=clock() - 1)  # started with the other, a second before it served
    with monkeypatch.context() as patched:
        gone = _a_pid_that_does_not_run()
        patched.setattr(os, "getpid", lambda: gone)
        Health(tmp_path).serving()  # it served, then died
        patched.setattr(os, "getpid", os.getppid)
        replacement = Health(tmp_path, started=clock())  # uvicorn's, started after the death
    sibling.serving()
    assert sibling.failing() == [f"worker {gone} stopped while serving, without saying why (killed, or out of memory?)"]
    replacement.serving()
    assert sibling.failing() == []


def test_a_records_folder_that_cannot_be_written_fails_no_request_or_start(tmp_path):
    """The records are best effort: a folder removed under the server (a /tmp cleaner) leaves /health knowing less."""
    from deepfm.serving.health import FAILING_PASSES, Health

    folder = tmp_path / "removed"
    health = Health(folder)  # the worker starts
    health.serving()
    for _ in range(FAILING_PASSES + 1):
        health.scored(RuntimeError("the forward pass's own error"))
    health.scored(None)
    health.failed_to_start(ValueError("changed"))
    health.stopped()
    assert health.failing() == []


def test_a_missing_field_error_names_every_missing_field(client):
    body = {"rows": [{"user": 1, "city": "oslo", "price": 2, "tags": "t1"}, {"user": 1, "tags": "t1"},
                     {"price": 2, "city": "rome", "tags": "t1"}]}
    response = client.post("/predict", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    for where in ("rows[1].city", "rows[1].price", "rows[2].user"):
        assert where in error
    assert "send null for a missing value" in error


def _as_columns(rows: list[list[str]]) -> dict:
    """CSV rows as a columnar body; empty cells as null."""
    return {"columns": {name: [row[j] or None for row in rows] for j, name in enumerate(HEADER) if name != "label"}}


def test_a_columnar_body_predicts_what_the_rows_predict(client, model):
    response = client.post("/predict", json=_as_columns(model["rows"]))
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"], model["expected"], rtol=0, atol=1e-6)


BAD_COLUMNS = [
    ({"columns": {"user": [1], "tags": ["t"]}}, "columns.city, columns.price: missing"),
    ({"columns": {"user": [1], "ctiy": ["a"], "price": [1], "tags": ["t"]}},  # a misspelt key (a new user's request)
     "columns.city: missing (it has 'ctiy': rename it 'city') (send null"),
    ({"columns": {"user": [1, 2], "city": ["a"], "price": [1, 2], "tags": ["t", "t"]}},  # the odd one named, not all
     "the columns differ in length: columns.city has 1, against 2 in the 3 others"),
    ({"columns": {"user": 1, "city": ["a"], "price": [1], "tags": ["t"]}}, "columns.user: expected a list"),
    ({"columns": {"user": [1, True], "city": ["a", "b"], "price": [1, 2], "tags": ["t", "t"]}}, "columns.user[1]: got a boolean"),
    ({"columns": {"user": [], "city": [], "price": [], "tags": []}}, '"columns" is empty'),
    ({"rows": [], "columns": {}}, '{"rows"'),
    ({"columns": {"user": [1, 2], "city": ["a", "b"], "price": [1, 2], "tags": ["t", "t:1e999"]}},
     "rows[1]: multi-valued column 'tags': the weight in 't:1e999' must be a finite number"),
]


@pytest.mark.parametrize("body, message", BAD_COLUMNS, ids=[m[:24] for _, m in BAD_COLUMNS])
def test_bad_columnar_bodies_are_422_naming_column_and_row(client, body, message):
    response = client.post("/predict", json=body)
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]


def _encoder(tmp_path: Path, data: dict):
    """An encoder fitted on ``_rows(300, 0)`` and a user ``-0`` with the data options ``data``."""
    from deepfm.config import DataConfig
    from deepfm.data.encoders import FeatureEncoder

    frame = read_frame(_write(tmp_path / "train.csv", _rows(300, 0) + [["1", "-0", "oslo", "1.0", "t1"]]), multi=("tags",))
    return FeatureEncoder.fit([frame], DataConfig(multi=("tags",), **data))


def _cell_as_json(rng: np.random.Generator, name: str, text: str, style: str) -> object:
    """One raw cell as a client may send it: null or "" when missing (or now and then), else as text
    (``style`` "text"), numbers as JSON numbers and tags as a list ("numbers"), or either ("mixed")."""
    draw = rng.random()
    if text == "" or draw < 0.05:
        return None if draw < 0.5 or style == "numbers" else ""
    if style == "text" or (style == "mixed" and draw < 0.5):
        return text
    if name == "tags":
        return text.split("|")
    if name in ("user", "price"):
        return float(text) if "." in text else int(text)
    return text


@pytest.mark.parametrize("data", [{"numeric": ("price",)},
                                  {"numeric": ("price",), "numeric_encoding": "bucket", "hash_buckets": 10},
                                  {"categorical": ("price",)}],
                         ids=["scaled", "bucketed-hashed", "price-categorical"])
def test_the_columnar_path_encodes_exactly_as_the_validating_path(tmp_path, data):
    """Same ids, values and bags from both paths, for bodies of text, of JSON numbers and of both; the
    columnar path serves every body but those whose JSON numbers' text matters (price as a category, -0)."""
    encoder = _encoder(tmp_path, data)
    decoder = RequestDecoder(encoder, limits=Limits(max_rows=1000))
    exact, exact_calls = decoder.decode_exactly, []
    decoder.decode_exactly = lambda body: exact_calls.append(body) or exact(body)
    rng = np.random.default_rng(7)
    names = [n for n in HEADER if n != "label"]
    rows = [dict(zip(HEADER, r)) for r in _rows(200, 3)] + [{"user": "-0", "city": "x", "price": "-0", "tags": "t1"}]
    rows += [{"user": "9999", "city": "atlantis", "price": "95.5", "tags": "t1|never"}] * 20  # unseen, hashed or not
    for trial in range(18):
        style = ("text", "numbers", "mixed")[trial % 3]
        chosen = [rows[i] for i in rng.choice(len(rows), size=int(rng.integers(1, 60)))]
        cells = [{n: _cell_as_json(rng, n, row[n], style) for n in names} for row in chosen]
        if trial % 6 == 4:  # JSON -0 (Python writes 0), which a fast parser reads as the integer 0
            cells.append({"user": "NEGATIVE_ZERO", "city": "x", "price": "NEGATIVE_ZERO", "tags": None})
        for body in ({"rows": cells}, {"columns": {n: [c[n] for c in cells] for n in names}}):
            raw = json.dumps(body).encode().replace(b'"NEGATIVE_ZERO"', b"-0")
            calls = len(exact_calls)
            fast, reference = decoder.decode(raw), exact(raw)
            if style == "text" or (style == "numbers" and "price" not in data.get("categorical", ()) and b"-0" not in raw):
                assert len(exact_calls) == calls, f"{style} body took the exact path"
            np.testing.assert_array_equal(fast.ids, reference.ids)
            np.testing.assert_array_equal(fast.dense_values(), reference.dense_values())
            for a, b in zip(fast.bags, reference.bags, strict=True):
                for part in ("offsets", "ids", "weights"):
                    np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    if data.get("hash_buckets"):
        assert any(spec.hash_buckets for spec in encoder.fields)


def test_plain_requests_take_the_columnar_path(model):
    """Strings, nulls and integers need no second, validating parse."""
    decoder = RequestDecoder(Estimator.load(model["dir"]).encoder)
    decoder.decode_exactly = None  # would fail if called
    decoder.decode(_as_json(model["rows"], numbers=False))
    decoder.decode(json.dumps(_as_columns(model["rows"])).encode())
    decoder.decode(json.dumps({"rows": [{"user": 12, "city": "oslo", "price": 2.5, "tags": None}]}).encode())


def test_metadata_describes_model_fields_version_and_metrics(client):
    meta = client.get("/metadata").json()
    assert meta["model"] == "deepfm" and meta["task"] == "binary"
    assert {f["name"]: f["kind"] for f in meta["fields"]} == {
        "user": "categorical", "city": "categorical", "price": "numeric", "tags": "multi"}
    assert meta["version"]["model_format"] == 1 and meta["version"]["trained_with"]
    assert meta["metrics"]["epochs"] == 1 and meta["limits"] == {"max_rows": 64, "max_bytes": 20_000}


def test_metadata_counts_each_fields_unseen_values_beside_the_training_share(model):
    """Drift shows: the served share of values the model never saw, per categorical or multi-valued field."""
    known = ["0", "101", "oslo", "2.50", "t1|t2"]
    with TestClient(create_app(model["dir"])) as client:
        before = client.get("/metadata").json()["served"]["values"]
        assert all(v["values"] == 0 and v["unseen_share"] is None for v in before.values())
        rows = [known, ["1", "999", "atlantis", "2.50", "t0|never-seen"], ["0", "", "oslo", "", "zzz"]]
        assert client.post("/predict", content=_as_json(rows, numbers=False)).status_code == 200
        assert client.post("/predict", json={"columns": {"user": [7777], "city": ["lima"], "price": [1.0],
                                                          "tags": ["t1"]}}).status_code == 200
        served = client.get("/metadata").json()["served"]["values"]
        missing = client.get("/metadata").json()["served"]["missing"]  # rows without a value, numeric fields too
    assert set(served) == {"user", "city", "tags"}  # price is numeric
    assert {name: (v["values"], v["unseen"]) for name, v in served.items()} == {
        "user": (3, 2), "city": (4, 1), "tags": (6, 2)}  # a missing value is not a value
    assert served["user"]["unseen_share"] == pytest.approx(2 / 3, abs=1e-4)
    assert {name: (v["rows"], v["missing"]) for name, v in missing.items()} == {
        "user": (4, 1), "city": (4, 0), "price": (4, 1)}
    assert missing["price"]["missing_share"] == 0.25
    assert missing["price"]["missing_share_in_training"] == next(
        f for f in Estimator.load(model["dir"]).encoder.fields if f.name == "price").missing_share
    encoder = Estimator.load(model["dir"]).encoder
    assert served["city"]["unseen_share_in_training"] == next(f for f in encoder.fields if f.name == "city").unseen_share
    for spec in encoder.fields:  # a model directory of a version that did not record the training share
        spec.unseen_share = None
    older = UnseenCounts(encoder)
    older.add(encoder.transform(read_frame(model["test"], multi=("tags",))))
    assert set(older.report()) == {"user", "city", "tags"}
    assert {v["unseen_share_in_training"] for v in older.report().values()} == {None}


def test_concurrent_requests_each_get_their_own_rows(client, model):
    bodies = [_as_json([row], numbers=False) for row in model["rows"][:16]]
    results: dict[int, list[float]] = {}

    def call(i: int) -> None:
        results[i] = client.post("/predict", content=bodies[i]).json()["predictions"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose([results[i][0] for i in range(len(bodies))], model["expected"][:16], atol=1e-6)


@pytest.fixture(params=[0, 1], ids=["all-queued", "inline-up-to-1-row"])
def gated_batcher(request):
    """A batcher whose model's first forward pass waits for ``release``, so requests queue behind it;
    the model predicts the fused-table id of field ``x``. Regression: no sigmoid. Requests of up to
    ``request.param`` rows may run inline when the model is idle."""
    import pyarrow as pa
    import torch

    from deepfm.config import DataConfig
    from deepfm.data.encoders import FeatureEncoder
    from deepfm.data.readers import frame_from_table

    table = pa.table({"label": ["1.5", "3.0"], "x": ["a", "b"], "n": ["0.5", "1.5"]})
    encoder = FeatureEncoder.fit([frame_from_table(table, "t")], DataConfig(numeric=("n",)))
    decoder = RequestDecoder(encoder)
    release, entered = threading.Event(), threading.Event()

    class Gated(torch.nn.Module):
        def forward(self, batch):
            entered.set()
            release.wait(5)
            return batch.ids[:, [s.name for s in encoder.fields].index("x")].double()

    batcher = MicroBatcher(TorchPredictor(Gated(), encoder.task), max_rows=100, inline_rows=request.param)

    def run(*requests: tuple[list[str], str]) -> list:
        """Send ``(xs, n)`` requests: the first alone, the rest while the first is in its forward pass."""
        async def scenario() -> list:
            def ask(xs, n):
                body = json.dumps({"rows": [{"x": x, "n": n} for x in xs]}).encode()
                return asyncio.ensure_future(batcher.predict(decoder.decode(body)))

            first = ask(*requests[0])
            await asyncio.get_running_loop().run_in_executor(None, entered.wait, 5)
            queued = [ask(*r) for r in requests[1:]]
            await asyncio.sleep(0.05)
            release.set()
            return await asyncio.gather(first, *queued, return_exceptions=True)

        return asyncio.run(scenario())

    offset = next(s.offset for s in encoder.fields if s.name == "x")
    yield batcher, run, {"a": offset + 2.0, "b": offset + 3.0, "zzz": offset + 1.0}
    batcher.close()


def test_requests_queued_during_a_forward_pass_share_the_next_one(gated_batcher):
    """Even requests small enough to run inline wait for the busy model thread and share its next pass."""
    batcher, run, ids = gated_batcher
    results = run((["a", "a"], "1"), (["b", "a"], "1"), (["zzz"], "2"), (["b"], "3"))
    assert [r.tolist() for r in results] == [[ids["a"]] * 2, [ids["b"], ids["a"]], [ids["zzz"]], [ids["b"]]]
    assert batcher.batches == 2 and batcher.rows == 6


def _threads_that_ran_the_model(batcher: MicroBatcher, data, times: int = 1) -> set[str]:
    """The names of the threads whose forward passes answered ``times`` requests of ``data`` sent one after another."""
    ran, model = set(), batcher.predictor.model
    forward = model.forward

    def spy(batch):
        ran.add(threading.current_thread().name)
        return forward(batch)

    model.forward = spy

    async def requests() -> list:
        return [await batcher.predict(data) for _ in range(times)]

    try:
        predictions = asyncio.run(requests())
    finally:
        del model.forward
    assert all(np.array_equal(p, predictions[0]) for p in predictions)
    return ran


@pytest.mark.parametrize("inline_rows", [64, 0], ids=["inline", "queued"])
def test_a_request_that_finds_the_model_idle_runs_on_the_callers_thread(model, inline_rows):
    estimator = Estimator.load(model["dir"])
    data = RequestDecoder(estimator.encoder).decode(_as_json(model["rows"], numbers=False))
    batcher = MicroBatcher(TorchPredictor(estimator.model, estimator.encoder.task), inline_rows=inline_rows)
    try:
        ran = _threads_that_ran_the_model(batcher, data, times=3)
    finally:
        batcher.close()
    assert ran == ({threading.main_thread().name} if inline_rows else {"deepfm-serve-model"})
    assert batcher.batches == 3 and batcher.rows == 3 * len(model["rows"])


def test_inline_and_queued_forward_passes_give_the_same_predictions(model):
    estimator = Estimator.load(model["dir"])
    data = RequestDecoder(estimator.encoder).decode(_as_json(model["rows"], numbers=False))
    answers = {}
    for inline_rows in (len(data), 0):
        batcher = MicroBatcher(TorchPredictor(estimator.model, estimator.encoder.task), inline_rows=inline_rows)
        answers[inline_rows] = asyncio.run(batcher.predict(data))
        batcher.close()
    np.testing.assert_array_equal(answers[len(data)], answers[0])
    np.testing.assert_allclose(answers[0], model["expected"], rtol=0, atol=1e-6)


def test_a_request_larger_than_inline_rows_goes_to_the_model_thread(model):
    estimator = Estimator.load(model["dir"])
    data = RequestDecoder(estimator.encoder).decode(_as_json(model["rows"], numbers=False))
    batcher = MicroBatcher(TorchPredictor(estimator.model, estimator.encoder.task), inline_rows=len(data) - 1)
    try:
        assert _threads_that_ran_the_model(batcher, data) == {"deepfm-serve-model"}
    finally:
        batcher.close()


def test_a_bad_request_among_concurrent_ones_fails_alone(client, model):
    bodies = [_as_json([row], numbers=False) for row in model["rows"][:8]]
    bodies[3] = b'{"rows": [{"user": 1, "city": "oslo", "price": "cheap", "tags": "t1"}]}'
    responses: dict[int, httpx.Response] = {}

    def call(i: int) -> None:
        responses[i] = client.post("/predict", content=bodies[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert responses[3].status_code == 422 and "rows[0]: column 'price' must be a number" in responses[3].json()["error"]
    good = [i for i in range(len(bodies)) if i != 3]
    np.testing.assert_allclose([responses[i].json()["predictions"][0] for i in good], model["expected"][good], atol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_url(model):
    """The app served by uvicorn on a loopback port, in a thread of this process (real sockets)."""
    import uvicorn

    app = create_app(model["dir"], Limits(max_rows=64, max_bytes=20_000))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_oversize_body_still_being_sent_gets_413_not_a_reset(live_url, declared):
    """urllib sends the whole body before it reads, and asks to close the connection after: it must read the 413
    (closing the socket while the client still sends resets the connection and the answer is lost)."""
    import urllib.error
    import urllib.request

    body = b'{"rows": [' + b", ".join([b'{"user": 1, "city": "a", "price": 1, "tags": "t"}'] * 400_000) + b"]}"
    data = body if declared else (body[i : i + (1 << 16)] for i in range(0, len(body), 1 << 16))
    headers = {} if declared else {"Transfer-Encoding": "chunked"}
    request = urllib.request.Request(f"{live_url}/predict", data=data, headers=headers, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert "the limit is 20000" in json.loads(refused.value.read())["error"]
    assert httpx.get(f"{live_url}/health", timeout=5).json() == {"status": "ok"}


@pytest.mark.parametrize("workers", [1, 2])
def test_the_real_server_answers_over_http_and_stops(model, workers):
    port = _free_port()
    logged = ["--access-log"] if workers == 2 else []  # a line per request asked for, the other not
    server = subprocess.Popen([sys.executable, "-m", "deepfm", "serve", str(model["dir"]), "--port", str(port),
                               "--workers", str(workers), *logged], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.stderr.read().decode()
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        for _ in range(2 * workers):  # each worker (the kernel spreads connections over them) answers alike
            with httpx.Client(base_url=url, timeout=20) as client:
                response = client.post("/predict", content=_as_json(model["rows"], numbers=True))
                assert response.status_code == 200
                np.testing.assert_allclose(response.json()["predictions"], model["expected"], atol=1e-6)
                assert client.post("/predict", content=b"{").status_code == 400
    finally:
        server.terminate()
        server.wait(timeout=30)  # uvicorn shuts down, then re-raises SIGTERM (exit status -15)
    assert server.stdout.read() == b""  # every log line, the access log's too, on stderr
    said = server.stderr.read().decode()
    assert "Finished server process" in said  # a graceful shutdown (of every worker)
    assert ('"POST /predict HTTP/1.1" 400' in said) == bool(logged), said  # --access-log: uvicorn's line per request
    served = re.findall(r"INFO: +serving a (\w+) model \((\w+)\) with (\S+) on \d+ thread", said)
    assert len(served) == workers, said  # each worker says what it serves and by which backend
    assert {model_name for model_name, _, _ in served} == {"deepfm"} and {backend for _, _, backend in served} <= {"onnxruntime", "torch"}


@pytest.mark.parametrize("model_name", ["deepfm", "wide_deep", "pnn", "fm"])
def test_the_served_model_predicts_what_the_trained_one_does(model_name):
    """Batch norm folded into the linear layers and dropout removed: the same function (float32 rounding)."""
    import copy

    import torch

    from deepfm.config import ModelConfig
    from deepfm.data.batch import Batch
    from deepfm.models.registry import build_model
    from deepfm.serving.inference import for_inference

    torch.manual_seed(0)
    config = ModelConfig(name=model_name, embed_dim=4, mlp=(8, 8), dropout=0.3, batch_norm=True)
    model = build_model(config, num_features=50, num_fields=4).train()
    ids = torch.randint(0, 50, (64, 4))
    for _ in range(3):  # running statistics away from their start
        model(Batch(ids, None, [], None))
    model.eval()
    served = for_inference(copy.deepcopy(model))
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.Dropout)) for m in served.modules())
    with torch.inference_mode():
        batch = Batch(torch.randint(0, 50, (16, 4)), None, [], None)
        torch.testing.assert_close(served(batch), model(batch), rtol=0, atol=1e-5)


def test_a_worker_process_takes_the_commands_malloc_setting_itself(model, monkeypatch):
    """uvicorn starts each ``--workers`` process afresh: what ``mallopt`` set in the command is not inherited."""
    import deepfm.runtime as runtime
    from deepfm.serving.app import WORKER_SETTINGS, manifest_digest, worker_app

    calls = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: calls.append("keep") or True)
    monkeypatch.setattr(runtime, "configure", lambda threads: calls.append(f"threads {threads}"))
    monkeypatch.setenv(WORKER_SETTINGS, json.dumps({"model_dir": str(model["dir"]), "max_rows": 64, "max_bytes": 20_000,
                                                    "batching": False, "threads": 1, "backend": "torch",
                                                    "manifest": manifest_digest(model["dir"])}))
    assert worker_app() is not None
    assert calls == ["keep", "threads 1"]


def test_a_worker_restarted_after_its_model_directory_changed_refuses_to_serve_another_model(model, tmp_path,
                                                                                               monkeypatch):
    """uvicorn restarts a dead worker, which loaded whatever the folder held then: two models behind one port."""
    import shutil

    from deepfm.errors import ModelDirError
    from deepfm.serving.app import WORKER_SETTINGS, manifest_digest, worker_app

    served = shutil.copytree(model["dir"], tmp_path / "live")
    settings = {"model_dir": str(served), "max_rows": 64, "max_bytes": 20_000, "batching": False, "threads": 1,
                "backend": "torch", "manifest": manifest_digest(served)}
    manifest = json.loads((served / "manifest.json").read_text())
    (served / "manifest.json").write_text(json.dumps(manifest | {"deepfm_version": "another model"}))  # replaced
    monkeypatch.setenv(WORKER_SETTINGS, json.dumps(settings))
    with pytest.raises(ModelDirError, match="the model directory changed after 'deepfm serve' started"):
        worker_app()


def _worker_pids(server_pid: int) -> list[int]:
    """The ``--workers`` processes of the server ``server_pid`` (uvicorn's spawned children), from /proc."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    return [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def _all_serving(log: Path, workers: list[int]) -> bool:
    """Whether each of ``workers`` has loaded its model (its line in the server's log) and every worker that loaded one
    has finished starting (uvicorn's lines, which name no process)."""
    text = log.read_text()
    loaded = text.count("serving a deepfm model")
    return all(f", process {pid}\n" in text for pid in workers) and text.count("Application startup complete") >= loaded


def _wait_for_health(url: str, server: subprocess.Popen, log: Path, done, seconds: float = 120) -> httpx.Response:
    """The first /health answer for which ``done(answer)`` holds (``log``: the server's output)."""
    deadline = time.monotonic() + seconds
    while True:
        assert server.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "/health never answered as expected"
        try:
            answer = httpx.get(f"{url}/health", timeout=2)
            if done(answer):
                return answer
        except httpx.TransportError:
            pass
        time.sleep(0.2)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers in /proc (Linux)")
def test_health_is_503_naming_a_killed_worker_until_it_is_replaced_and_while_it_keeps_failing_to_start(model, tmp_path):
    """uvicorn starts a dead worker again, and one that finds the model directory changed refuses, again and again,
    while its sibling answers /health: the instance runs on fewer workers than asked and must leave the pool."""
    import os
    import shutil
    import signal

    served, log = shutil.copytree(model["dir"], tmp_path / "live"), tmp_path / "server.log"
    port = _free_port()
    with log.open("wb") as output:  # a file, not a pipe: the failing workers' tracebacks could fill one
        server = subprocess.Popen([sys.executable, "-m", "deepfm", "serve", str(served), "--port", str(port),
                                   "--workers", "2"], stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def kill_a_worker() -> int:
        """One of two serving workers (both past loading the model, so that the test's waits time uvicorn's restart
        alone)."""
        deadline = time.monotonic() + 120
        while len(workers := _worker_pids(server.pid)) < 2 or not _all_serving(log, workers):
            assert time.monotonic() < deadline, "the second worker never started"
            time.sleep(0.2)
        os.kill(workers[0], signal.SIGKILL)
        return workers[0]

    try:
        assert _wait_for_health(url, server, log, lambda answer: answer.status_code == 200).json() == {"status": "ok"}
        killed = kill_a_worker()
        gone = _wait_for_health(url, server, log, lambda answer: answer.status_code != 200)
        assert gone.status_code == 503 and gone.json()["status"] == "failing"
        assert [line.startswith(f"worker {killed} stopped while ") for line in gone.json()["failing"]] == [True]
        replaced = _wait_for_health(url, server, log, lambda answer: answer.status_code == 200)
        assert replaced.json() == {"status": "ok"}  # its replacement serves

        manifest = json.loads((served / "manifest.json").read_text())
        (served / "manifest.json").write_text(json.dumps(manifest | {"deepfm_version": "another model"}))  # replaced
        killed = kill_a_worker()
        failing = _wait_for_health(url, server, log, lambda answer: "failed to start" in answer.text)
        assert failing.status_code == 503
        said = "\n".join(failing.json()["failing"])
        assert f"worker {killed} stopped while " in said
        assert "the model directory changed after 'deepfm serve' started" in said
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_serve_on_a_port_in_use_says_so_before_loading_the_model(tmp_path, capsys):
    """It loaded the model (seconds) and then exited 3 with uvicorn's 'address already in use'."""
    import socket

    from deepfm.cli import main

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert main(["serve", str(tmp_path / "no-model"), "--port", str(port)]) == 2
    error = capsys.readouterr().err
    assert f"serve: cannot listen on 127.0.0.1:{port}" in error and "no-model" not in error


def test_serve_of_a_missing_model_directory_says_so_before_the_server_starts(tmp_path, capfd):
    """It started the server, logged 'loading DIR' and only then failed on the directory."""
    from deepfm.cli import main

    assert main(["serve", str(tmp_path / "no-model"), "--port", "0"]) == 2
    error = capfd.readouterr().err
    assert f"{tmp_path / 'no-model'}: not a model directory (it does not exist)" in error
    assert "loading" not in error


def test_a_libfm_models_value_the_model_cannot_square_is_a_422_naming_row_and_field(tmp_path):
    (tmp_path / "train.libfm").write_text("".join(f"{i % 2} {i % 5}:1 {5 + i % 3}:{1 + i % 4}\n" for i in range(200)))
    Estimator(model={"mlp": (8,), "embed_dim": 4}, training={"epochs": 1}).fit(tmp_path / "train.libfm", progress=False,
                                                                              out=tmp_path / "m")
    with TestClient(create_app(tmp_path / "m")) as client:
        assert client.post("/predict", json={"rows": [{"f1": "1:1", "f2": "6:2"}]}).status_code == 200
        response = client.post("/predict", json={"rows": [{"f1": "1:1", "f2": "6:2"}, {"f1": "1:1", "f2": "6:1e30"}]})
        assert (response.status_code, response.json()) == (422, {"error": "rows[1].f2: the value after ':' in '6:1e30' "
                                                                 "must be a finite number of magnitude at most 1.8e+19 "
                                                                 "(the model squares it in float32)"})


def test_a_libfm_field_whose_values_differ_from_1_only_after_the_first_chunk_is_served_with_its_values(tmp_path):
    """Whether a field is weighted was the first chunk's say: a field valued 1 in the first 65,536 rows and 0.5 later
    trained on its values, and the server refused them ("the field's training values were all 1")."""
    rows = [f"{i % 2} {i % 5}:{0.5 if i >= 150 and i % 2 else 1} {5 + i % 3}:1\n" for i in range(200)]
    (tmp_path / "train.libfm").write_text("".join(rows))
    (tmp_path / "score.libfm").write_text("0 1:0.5 6:1\n")
    estimator = Estimator(model={"name": "fm", "embed_dim": 4}, training={"epochs": 1}, data={"chunk_rows": 50})
    estimator.fit(tmp_path / "train.libfm", progress=False, out=tmp_path / "m")
    assert [field.weighted for field in estimator.encoder.fields] == [True, False]  # f2's values are all 1
    with TestClient(create_app(tmp_path / "m")) as client:
        response = client.post("/predict", json={"rows": [{"f1": "1:0.5", "f2": "6"}]})
        assert response.status_code == 200, response.json()
        assert response.json()["predictions"] == pytest.approx(estimator.predict(tmp_path / "score.libfm").tolist())


def test_a_libfm_model_whose_values_were_all_1_reads_index_colon_1_as_the_index_and_refuses_another_value(tmp_path):
    (tmp_path / "train.libfm").write_text("".join(f"{i % 2} {i % 5}:1 {5 + i % 3}:1\n" for i in range(200)))
    Estimator(model={"name": "fm", "embed_dim": 4}, training={"epochs": 1}).fit(tmp_path / "train.libfm", progress=False,
                                                                                out=tmp_path / "m")
    with TestClient(create_app(tmp_path / "m")) as client:
        def predict(body):
            response = client.post("/predict", json=body)
            assert response.status_code == 200, response.json()
            return response.json()["predictions"]

        bare = predict({"rows": [{"f1": "1", "f2": "6"}, {"f1": "3", "f2": "7"}]})
        assert predict({"rows": [{"f1": "1:1", "f2": "6:1"}, {"f1": "3:1", "f2": "7"}]}) == bare  # the scanned path
        assert predict({"columns": {"f1": ["1:1", "3:1.0"], "f2": ["6:1", "7:1"]}}) == bare  # the columnar path
        assert predict({"rows": [{"f1": "zzz", "f2": "zzz"}, {"f1": "3", "f2": "7"}]})[0] != bare[0]
        response = client.post("/predict", json={"rows": [{"f1": "1:1", "f2": "6:1"}, {"f1": "3:2", "f2": "7"}]})
        assert (response.status_code, response.json()) == (422, {"error": "rows[1].f1: the field's training values "
                                                                 "were all 1, so it takes an index alone or 'index:1', "
                                                                 "not 3:2"})
