import json

import pytest

from dinolab.cli import main


def test_report_command_writes_refuses_and_forces(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 3.0 - s / 10}) for s in range(5)) + "\n")
    (run / "config.yaml").write_text("train:\n  epochs: 1\n")
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    assert "epochs: 1" in page
    # refuses to overwrite without --force
    before = (run / "report.html").stat().st_mtime_ns
    assert main(["report", str(run)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (run / "report.html").stat().st_mtime_ns == before
    assert main(["report", str(run), "--force"]) == 0
    out = tmp_path / "elsewhere" / "r.html"
    assert main(["report", str(run), "--out", str(out)]) == 0 and out.exists()


def test_report_command_empty_or_missing_run_dir(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "holds no metrics.jsonl" in err and "Traceback" not in err
    assert not (tmp_path / "empty" / "report.html").exists()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_report_help_renders(capsys):
    # help strings go through %-formatting: a stray % in the docstring's first line breaks dinolab --help
    for argv in (["--help"], ["report", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    assert "report" in capsys.readouterr().out
