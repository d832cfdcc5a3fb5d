"""What a user waiting on a long command sees: progress bars (evaluate, restore), the run dir's
files named (export). Bars go to stderr, on a terminal or with XNET_PROGRESS=1."""

from __future__ import annotations

import logging

import pytest
from conftest import compose

from xnet.utils.progress import progress, progress_enabled


@pytest.fixture
def forced(monkeypatch):
    monkeypatch.setenv("XNET_PROGRESS", "1")


def test_progress_follows_the_terminal_unless_forced(monkeypatch):
    monkeypatch.delenv("XNET_PROGRESS", raising=False)
    assert not progress_enabled()  # pytest's stderr is not a terminal
    monkeypatch.setenv("XNET_PROGRESS", "1")
    assert progress_enabled()
    monkeypatch.setenv("XNET_PROGRESS", "0")
    with progress(total=3) as bar:  # off: still a bar object that counts nothing on screen
        bar.update(3)
    assert bar.disable


def test_evaluate_says_what_it_scores_and_shows_a_bar(tmp_path, tiny_run, forced, capfd, caplog):
    from xnet.evaluate import evaluate

    ckpt = tiny_run[0] / "checkpoints" / "last.ckpt"
    with caplog.at_level(logging.INFO, logger="xnet.deploy.inference"):
        report = evaluate(
            compose("eval", [f"paths.output_dir={tmp_path}", "experiment=demo", f"weights={ckpt}", "data/test=sample"])
        )
    n = report["images"]
    assert f"scoring {report['dataset']}: {n} images" in caplog.text
    assert f"{n}/{n}" in capfd.readouterr().err


def test_restore_shows_a_bar_over_the_files(tmp_path, tiny_run, forced, capfd):
    from PIL import Image

    from xnet.restore import restore

    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.new("L", (24, 20), color=40 * i).save(src / f"{i}.png")
    ckpt = tiny_run[0] / "checkpoints" / "last.ckpt"
    written = restore(
        compose(
            "restore",
            [
                "experiment=demo",
                f"weights={ckpt}",
                f"input={src}",
                f"output={tmp_path / 'out'}",
                f"paths.output_dir={tmp_path}",
            ],
        )
    )
    assert len(written) == 3 and "3/3" in capfd.readouterr().err


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_export_prints_its_output_path(tmp_path, tiny_run, capsys, fmt):
    from xnet.export import export

    out = tmp_path / f"m.{fmt}"
    export(
        compose(
            "export",
            [
                "experiment=demo",
                f"weights={tiny_run[0] / 'checkpoints' / 'last.ckpt'}",
                f"format={fmt}",
                f"output={out}",
                "paths.output_dir=/tmp/unused",
            ],
        )
    )
    assert f"wrote {out}" in capsys.readouterr().out
