"""The data reader on real data (ISLP bike-share hours): formats, URIs, the holdout split, and bad input."""

from __future__ import annotations

import hashlib
import json

import fsspec
import numpy as np
import pandas as pd
import pytest

from modelreuse.api.spec import DataSpec, Holdout
from modelreuse.runtime.data import (
    DataReader,
    holdout_mask,
    infer_format,
    is_holdout,
    iter_batches,
    prefetch,
)
from modelreuse.runtime.errors import WorkloadError
from modelreuse.scenarios import bikeshare

FEATURES = ["hr", "temp", "hum", "windspeed", "workingday"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return bikeshare.load_frame()[[*FEATURES, "flow", "month"]]


@pytest.fixture(scope="module")
def files(frame, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bikes")
    paths = {"csv": folder / "bikes.csv", "parquet": folder / "bikes.parquet", "jsonl": folder / "bikes.jsonl"}
    frame.to_csv(paths["csv"], index=False)
    frame.to_parquet(paths["parquet"], index=False)
    frame.to_json(paths["jsonl"], orient="records", lines=True)
    return paths


def _spec(uri, **changes) -> DataSpec:
    body = {"uri": str(uri), "features": FEATURES, "target": "flow", "holdout": {"fraction": 0.3, "seed": 7}}
    body.update(changes)
    return DataSpec.model_validate(body)


def _collect(spec, part="holdout", batch_rows=1000, labels=("low", "high")):
    batches = list(iter_batches(spec, part=part, batch_rows=batch_rows, labels=labels))
    assert all(len(b) <= batch_rows for b in batches)
    rows = np.concatenate([b.row_index for b in batches])
    x = np.concatenate([b.features for b in batches])
    y = np.concatenate([b.y for b in batches])
    return rows, x, y


def test_scalar_and_vector_holdout_agree_and_hit_the_fraction():
    for fraction, seed in [(0.3, 7), (0.5, 0), (0.05, 123456789)]:
        holdout = Holdout(fraction=fraction, seed=seed)
        index = np.arange(200_000)
        mask = holdout_mask(index, holdout)
        assert abs(mask.mean() - fraction) < 0.01
        assert [is_holdout(i, holdout) for i in range(0, 200_000, 997)] == list(mask[::997])
    assert holdout_mask(np.arange(10), Holdout(fraction=1.0, seed=3)).all()
    # Different seeds give different splits; the same seed always the same one.
    a = holdout_mask(np.arange(1000), Holdout(fraction=0.3, seed=1))
    b = holdout_mask(np.arange(1000), Holdout(fraction=0.3, seed=2))
    assert (a != b).any()
    assert np.array_equal(a, holdout_mask(np.arange(1000), Holdout(fraction=0.3, seed=1)))


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_formats_read_the_same_rows(frame, files, fmt):
    rows, x, y = _collect(_spec(files[fmt]))
    holdout = holdout_mask(np.arange(len(frame)), Holdout(fraction=0.3, seed=7))
    assert np.array_equal(rows, np.flatnonzero(holdout))
    np.testing.assert_allclose(x, frame[FEATURES].to_numpy(np.float32)[holdout], rtol=1e-6)
    expected = (frame["flow"].to_numpy()[holdout] == "high").astype(np.int64)
    assert np.array_equal(y, expected)


def test_holdout_and_train_partition_the_rows(frame, files):
    spec = _spec(files["parquet"])
    held, _, _ = _collect(spec, "holdout")
    train, _, _ = _collect(spec, "train")
    every, _, _ = _collect(spec, "all")
    assert not set(held) & set(train)
    assert np.array_equal(np.sort(np.concatenate([held, train])), every)
    assert len(every) == len(frame)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_digest_is_the_files_sha256(files, fmt):
    reader = DataReader(_spec(files[fmt]), batch_rows=512)
    assert sum(len(b) for b in reader.batches("all")) == reader.rows_read
    assert reader.digest == "sha256:" + hashlib.sha256(files[fmt].read_bytes()).hexdigest()


def test_memory_uri_and_gzip(frame, files):
    payload = files["csv"].read_bytes()
    with fsspec.open("memory://bikes/hours.csv", "wb") as fh:
        fh.write(payload)
    rows_mem, x_mem, _ = _collect(_spec("memory://bikes/hours.csv"))
    rows_file, x_file, _ = _collect(_spec(files["csv"]))
    assert np.array_equal(rows_mem, rows_file) and np.array_equal(x_mem, x_file)
    with fsspec.open("memory://bikes/hours.csv.gz", "wb", compression="gzip") as fh:
        fh.write(payload)
    rows_gz, _, _ = _collect(_spec("memory://bikes/hours.csv.gz"))
    assert np.array_equal(rows_gz, rows_file)


def test_numeric_targets_match_labels_as_text(frame, tmp_path):
    numeric = frame.assign(flow=(frame["flow"] == "high").astype(float))  # 0.0 / 1.0
    numeric.to_parquet(tmp_path / "n.parquet", index=False)
    numeric.to_json(tmp_path / "n.jsonl", orient="records", lines=True)
    numeric.astype({"flow": int}).to_csv(tmp_path / "n.csv", index=False)
    for name in ("n.parquet", "n.jsonl", "n.csv"):
        _, _, y = _collect(_spec(tmp_path / name), labels=("0", "1"))
        assert set(np.unique(y)) == {0, 1}


def test_text_column(tmp_path):
    texts = pd.DataFrame({"text": ["great flight, thanks", 'delayed again, "ugh"\nnever again', "ok"],
                          "sentiment": ["positive", "negative", "neutral"]})
    texts.to_csv(tmp_path / "t.csv", index=False)
    spec = DataSpec.model_validate({"uri": str(tmp_path / "t.csv"), "textColumn": "text", "target": "sentiment",
                                    "holdout": {"fraction": 1.0}})
    (batch,) = list(iter_batches(spec, labels=["negative", "neutral", "positive"]))
    assert batch.texts == list(texts["text"]) and batch.features is None
    assert list(batch.y) == [2, 0, 1]


def _reason(spec, labels=("low", "high")) -> WorkloadError:
    with pytest.raises(WorkloadError) as info:
        list(iter_batches(spec, labels=labels))
    return info.value


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_missing_column_names_it(files, fmt):
    err = _reason(_spec(files[fmt], features=["hr", "temperature"]))
    assert err.reason == "MissingColumns" and "'temperature'" in err.message and "hum" in err.message


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_non_numeric_feature(frame, tmp_path, fmt):
    bad = frame.assign(hum=frame["hum"].astype(str))
    bad.loc[5, "hum"] = "humid"
    path = tmp_path / f"bad.{fmt}"
    {"csv": lambda: bad.to_csv(path, index=False), "parquet": lambda: bad.to_parquet(path, index=False),
     "jsonl": lambda: bad.to_json(path, orient="records", lines=True)}[fmt]()
    err = _reason(_spec(path, holdout={"fraction": 1.0}))
    assert err.reason == "InvalidFeatures"
    assert "hum" in err.message


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_nan_feature_names_row_and_column(frame, tmp_path, fmt):
    bad = frame.copy()
    bad.loc[42, "temp"] = np.nan
    path = tmp_path / f"nan.{fmt}"
    bad.to_csv(path, index=False) if fmt == "csv" else bad.to_parquet(path, index=False)
    err = _reason(_spec(path, holdout={"fraction": 1.0}))
    assert err.reason == "InvalidFeatures" and "Row 42" in err.message and "'temp'" in err.message


def test_unknown_label_named(files):
    err = _reason(_spec(files["csv"]), labels=("low", "medium"))
    assert err.reason == "UnknownLabels" and "'high'" in err.message


def test_missing_target_value(frame, tmp_path):
    bad = frame.copy()
    bad.loc[3, "flow"] = None
    bad.to_parquet(tmp_path / "t.parquet", index=False)
    err = _reason(_spec(tmp_path / "t.parquet", holdout={"fraction": 1.0}))
    assert err.reason == "InvalidData" and "Row 3" in err.message


def test_empty_and_unreadable(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    assert _reason(_spec(tmp_path / "empty.csv")).reason == "EmptyData"
    (tmp_path / "empty.jsonl").write_text("\n")
    assert _reason(_spec(tmp_path / "empty.jsonl")).reason == "EmptyData"
    assert _reason(_spec(tmp_path / "nowhere.csv")).reason == "UnreadableUri"
    assert _reason(_spec("nosuchscheme://bucket/x.csv")).reason == "UnreadableUri"
    with pytest.raises(WorkloadError) as info:
        infer_format("s3://bucket/data.xlsx")
    assert info.value.reason == "InvalidData"
    assert infer_format("s3://b/x.csv.gz") == "csv" and infer_format("x.ndjson") == "jsonl"
    (tmp_path / "header-only.csv").write_text(",".join([*FEATURES, "flow"]) + "\n")
    assert list(iter_batches(_spec(tmp_path / "header-only.csv"))) == []


def test_prefetch_hands_over_batches_and_errors(files):
    spec = _spec(files["csv"])
    direct = [b.row_index for b in iter_batches(spec, batch_rows=300)]
    ahead = [b.row_index for b in prefetch(iter_batches(spec, batch_rows=300))]
    assert all(np.array_equal(a, b) for a, b in zip(direct, ahead, strict=True))

    def failing():
        yield from iter_batches(spec, batch_rows=300)
        raise WorkloadError("InvalidData", "boom")

    with pytest.raises(WorkloadError, match="boom"):
        list(prefetch(failing()))
    # A consumer that stops early does not hang.
    for _ in prefetch(iter_batches(spec, batch_rows=10)):
        break


def test_jsonl_lines_must_be_objects(tmp_path):
    (tmp_path / "x.jsonl").write_text(json.dumps([1, 2]) + "\n")
    assert _reason(_spec(tmp_path / "x.jsonl")).reason == "InvalidData"


def test_small_blocks_cut_only_at_record_boundaries(frame, files, tmp_path):
    # Reading in tiny pieces must give the same rows: pieces end on record boundaries, quoted newlines too.
    whole = [b.row_index for b in DataReader(_spec(files["csv"])).batches("all")]
    tiny = DataReader(_spec(files["csv"]), block_bytes=100, labels=("low", "high"))
    pieces = list(tiny.batches("all"))
    assert np.array_equal(np.concatenate(whole), np.concatenate([b.row_index for b in pieces]))
    assert tiny.digest == "sha256:" + hashlib.sha256(files["csv"].read_bytes()).hexdigest()
    texts = pd.DataFrame({"text": [f'tweet {i}: "quoted"\nsecond line, {"x" * (i % 7)}' for i in range(50)],
                          "sentiment": ["positive", "negative"] * 25})
    texts.to_csv(tmp_path / "t.csv", index=False)
    spec = DataSpec.model_validate({"uri": str(tmp_path / "t.csv"), "textColumn": "text", "target": "sentiment",
                                    "holdout": {"fraction": 1.0}})
    got = [t for b in DataReader(spec, block_bytes=40).batches("all") for t in b.texts]
    assert got == list(texts["text"])
