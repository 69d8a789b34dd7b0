import logging

import pytest

from dinolab.data import BadFileLog
from dinolab.errors import DataError

BAD = [("a.jpg", "empty file (0 bytes)"), ("b.png", "truncated or corrupt image data (x)"),
       ("c.jpg", "not an image file (unrecognised format)"), ("d.png", "file not found")]


def test_counts_each_file_once():
    log = BadFileLog()
    log.add(BAD[:2])
    log.add(BAD[1:])  # b.png again, e.g. seen in a second epoch
    assert log.count == 4 and log.paths == ["a.jpg", "b.png", "c.jpg", "d.png"]
    assert log.items == BAD


def test_check_raises_above_the_limit_with_a_useful_message(tmp_path):
    log = BadFileLog(max_bad_fraction=0.1, log_path=tmp_path / "bad_files.log", min_seen=0)
    log.add(BAD)
    log.check(40)  # 10% is not above the limit
    with pytest.raises(DataError) as e:
        log.check(39)
    msg = str(e.value)
    for part in ["4 of 39", "10.3%", "data.max_bad_fraction=0.1", "a.jpg (empty file (0 bytes))",
                 str(tmp_path / "bad_files.log"), "raise data.max_bad_fraction"]:
        assert part in msg


def test_check_waits_for_enough_files_unless_that_is_all_of_them():
    log = BadFileLog(max_bad_fraction=0.1, config_key="train.max_bad_fraction", min_seen=20)
    log.add(BAD[:3])
    log.check(10)  # 30% of the first 10: too early to judge
    log.check(10, total=1000)
    with pytest.raises(DataError, match="3 of 10 .*train.max_bad_fraction"):
        log.check(10, total=10)  # the whole data set was seen
    with pytest.raises(DataError, match="3 of 20"):
        log.check(20)


def test_write_one_line_per_file(tmp_path):
    log = BadFileLog(log_path=tmp_path / "run" / "bad_files.log")
    log.add(BAD)
    path = log.write()
    assert path.read_text().splitlines() == [f"{p}\t{r}" for p, r in BAD]


def test_warns_once_with_count_and_first_files(caplog, tmp_path):
    log = BadFileLog(log_path=tmp_path / "bad_files.log")
    with caplog.at_level(logging.WARNING, logger="dinolab.data"):
        log.warn()  # nothing to say yet
        log.add(BAD)
        log.warn()
        log.warn()
    assert len(caplog.records) == 1
    msg = caplog.records[0].getMessage()
    assert msg.startswith("skipped 4 unreadable files: a.jpg (empty file (0 bytes)); b.png")
    assert "and 1 more" in msg and "d.png" not in msg and str(tmp_path / "bad_files.log") in msg


def test_limit_must_be_a_fraction():
    with pytest.raises(DataError, match="between 0 and 1"):
        BadFileLog(max_bad_fraction=5)
