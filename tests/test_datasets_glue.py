"""MRPC / QQP / STS-B adapters on GLUE TSV fixtures with the real headers (and MRPC's original msr files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedcache.datasets import DatasetFormatError, DatasetNotFoundError, create_dataset, glue
from embedcache.datasets import fixtures as fx

QQP_HEADER = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"


_write = fx.write_lines  # the layout writers' own line writer (bytes kept as given)


def write_qqp(parent: Path) -> Path:
    root = parent / "QQP"
    _write(root / "train.tsv", [
        QQP_HEADER,
        "133273\t213221\t213222\tHow is the life of a math student?\tWhich level of prepration is enough?\t0",
        "402555\t536040\t536041\tHow do I control my horny emotions?\tHow do you control your horniness?\t1",
        "360472\t536040\t364012\tHow do I control my horny emotions?\tWhat is \"horny\"?\t1",  # qid repeats
        "150662\t155721\t7256\tWhat can one do after MBBS?\t0",  # a field missing: malformed row
        b"999\t1\t2\tna\xefve question?\tsecond?\t0",  # not UTF-8
    ])
    _write(root / "dev.tsv", [QQP_HEADER, "201359\t303345\t303346\tWhy are African-Americans so beautiful?\t"
                                          "Why are hispanics so beautiful?\t0"])
    _write(root / "test.tsv", ["id\tquestion1\tquestion2", "0\tWhat?\tWhy?"])  # unlabelled: not a split
    return parent


def test_qqp_pairs_ids_and_row_errors(tmp_path: Path) -> None:
    ds = create_dataset("qqp", root=write_qqp(tmp_path))
    assert ds.splits() == ["train", "dev"] and ds.modalities == ("text",)
    train = ds.load_split("train")
    assert [(p.a, p.b, p.score) for p in train.pairs] == [
        ("213221", "213222", 0.0), ("536040", "536041", 1.0), ("536040", "364012", 1.0)]
    ok = {it.id: it.text for it in train.texts if not it.error}
    assert ok["536040"] == "How do I control my horny emotions?" and len(ok) == 5  # 536040 kept once
    assert ok["364012"] == 'What is "horny"?'  # bare quotes kept: no CSV quoting
    errors = {it.id: it.error for it in train.texts if it.error}
    assert set(errors) == {"train.tsv:5", "train.tsv:6"}
    assert "malformed row: 5 fields" in errors["train.tsv:5"] and "UTF-8" in errors["train.tsv:6"]
    assert len(ds.load_split("dev").pairs) == 1


def test_stsb_scores_from_the_last_column(tmp_path: Path) -> None:
    root = tmp_path / "STS-B"
    _write(root / "train.tsv", [
        STSB_HEADER,
        "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\t"
        "An air plane is taking off.\t5.000",
        "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man is playing a flute.\t"
        "A man plays a \"flute\".\t3.800",
        "2\tmain-news\theadlines\t2013\t0005\tnone\tnone\tBad score row.\tStill bad.\thigh",
        "3\tmain-forums\tanswers-forums\t2015\t0007\tnone\tnone\tX.\tY.\t1.250\tsrc-a\tsrc-b",  # trailing extras
    ])
    _write(root / "dev.tsv", [STSB_HEADER, "0\tmain-news\theadlines\t2015\t0001\tnone\tnone\tA.\tB.\t0.000"])
    ds = create_dataset("stsb", root=root)
    train = ds.load_split("train")
    assert [(p.a, p.b, p.score) for p in train.pairs] == [
        ("0-1", "0-2", 5.0), ("1-1", "1-2", 3.8), ("3-1", "3-2", 1.25)]
    assert {it.id: it.text for it in train.texts}["1-2"] == 'A man plays a "flute".'
    assert [it.error for it in train.texts if it.error] == ["score is 'high', expected a number"]


def test_wrong_header_is_a_format_error(tmp_path: Path) -> None:
    _write(tmp_path / "train.tsv", ["id\tq1\tq2\tlabel", "1\ta\tb\t0"])
    _write(tmp_path / "dev.tsv", [QQP_HEADER])
    with pytest.raises(DatasetFormatError, match=r"train.tsv, line 1: header lacks column\(s\) 'qid1'"):
        create_dataset("qqp", root=tmp_path).load_split("train")


def test_mrpc_glue_layout(tmp_path: Path) -> None:
    root = tmp_path / "MRPC"
    # GLUE's script copies the msr header line into train.tsv, UTF-8 byte-order mark included
    _write(root / "train.tsv", [b"\xef\xbb\xbf" + MRPC_HEADER.encode(),
                                "1\t702876\t702977\tAmrozi accused his brother .\tReferring to him .",
                                "0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought it ."])
    _write(root / "dev.tsv", [MRPC_HEADER, "1\t1355540\t1355592\tHe said .\tHe says ."])
    _write(root / "test.tsv", ["index\t#1 ID\t#2 ID\t#1 String\t#2 String", "0\t1\t2\ta\tb"])
    ds = create_dataset("mrpc", root=tmp_path)
    assert ds.splits() == ["train", "dev"]
    assert [(p.a, p.b, p.score) for p in ds.load_split("train").pairs] == [
        ("702876", "702977", 1.0), ("2108705", "2108831", 0.0)]
    assert ds.load_split("dev").texts[0].text == "He said ."


def test_mrpc_original_release_with_glue_dev_ids(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    _write(tmp_path / "msr_paraphrase_train.txt", [
        bom + MRPC_HEADER.encode(), "1\t702876\t702977\tAmrozi accused his brother .\tReferring to him .",
        "0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought it .",
        "1\t1355540\t1355592\tHe said .\tHe says ."])
    _write(tmp_path / "msr_paraphrase_test.txt", [bom + MRPC_HEADER.encode(),
                                                  "1\t1089874\t1089925\tPCCW 's chief .\tHe ."])
    ds = create_dataset("mrpc", root=tmp_path)
    assert ds.splits() == ["train", "test"]  # no dev ids yet
    assert len(ds.load_split("train").pairs) == 3
    (tmp_path / "mrpc_dev_ids.tsv").write_text("1355540\t1355592\n")
    assert ds.splits() == ["train", "dev", "test"]
    assert [p.a for p in ds.load_split("train").pairs] == ["702876", "2108705"]
    assert [(p.a, p.score) for p in ds.load_split("dev").pairs] == [("1355540", 1.0)]
    assert [(p.a, p.b, p.score) for p in ds.load_split("test").pairs] == [("1089874", "1089925", 1.0)]


def test_hugging_face_rows_convert_like_the_tsv(tmp_path: Path) -> None:
    rows = [{"sentence1": "A.", "sentence2": "B.", "label": 4.2, "idx": 0},
            {"sentence1": "C.", "sentence2": "D.", "label": -1.0, "idx": 1}]  # unlabelled test row: dropped
    split = glue.rows_to_split("dev", rows, glue.HF_SPEC["stsb"])
    assert [(p.a, p.b, p.score) for p in split.pairs] == [("0-1", "0-2", 4.2)]
    assert [it.text for it in split.texts] == ["A.", "B."]


def test_not_found_offers_download_and_hf(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        create_dataset("stsb", root=tmp_path).load_split("train")
    msg = str(err.value)
    assert "embedcache download stsb" in msg and "source=hf" in msg and str(tmp_path / "STS-B") in msg
