"""``xnet.export``: ONNX of the whole restorer (parity with torch) and plain state dicts."""

import pytest
from conftest import compose

from xnet.export import export


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_state_dict_export_round_trips(tmp_path, tiny_run, fmt):
    from xnet.evaluate import evaluate

    ckpt = tiny_run[0] / "checkpoints" / "last.ckpt"
    out = export(
        compose(
            "export",
            [
                "experiment=demo",
                f"weights={ckpt}",
                f"format={fmt}",
                f"output={tmp_path / ('m.' + fmt)}",
                "paths.output_dir=/tmp/unused",
            ],
        )
    )
    base = ["experiment=demo", "data/test=sample"]
    a = evaluate(compose("eval", [*base, f"weights={ckpt}", f"paths.output_dir={tmp_path / 'a'}"]))
    b = evaluate(compose("eval", [*base, f"weights={out}", f"paths.output_dir={tmp_path / 'b'}"]))
    assert a["per_image"] == b["per_image"]


def test_onnx_export_matches_torch(tmp_path, tiny_run):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import numpy as np
    import torch

    ckpt = tiny_run[0] / "checkpoints" / "last.ckpt"
    out = export(
        compose(
            "export",
            ["experiment=demo", f"weights={ckpt}", f"output={tmp_path / 'm.onnx'}", "paths.output_dir=/tmp/unused"],
        )
    )
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 1, 37, 50)  # another size than the export example: height/width are dynamic
    (y,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    from xnet.deploy.inference import load_restorer

    cfg = compose("eval", ["experiment=demo", f"weights={ckpt}", "paths.output_dir=/tmp/unused"])
    restorer = load_restorer(cfg).restorer
    with torch.no_grad():
        ref = restorer.eval()(x).numpy()
    assert np.abs(y - ref).max() < 1e-4


def test_unknown_format_is_refused(tmp_path, tiny_run):
    with pytest.raises(ValueError, match="format=tflite"):
        export(compose("export", ["experiment=demo", "weights=x", "format=tflite", "paths.output_dir=/tmp/unused"]))


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_a_full_disk_names_the_export_and_keeps_the_earlier_one(tmp_path, fmt, request):
    from conftest import make_checkpoint

    from xnet.protocol.errors import OutputError

    ckpt = make_checkpoint(tmp_path / "run.ckpt")
    out = tmp_path / f"m.{fmt}"
    out.write_bytes(b"an earlier export")
    request.getfixturevalue("dev_full")  # write(2) fails with ENOSPC from here on
    with pytest.raises(OutputError, match=rf"m\.{fmt}: cannot write \(No space left on device\)"):
        export(
            compose(
                "export",
                [
                    "experiment=demo",
                    f"weights={ckpt}",
                    f"format={fmt}",
                    f"output={out}",
                    "paths.output_dir=/tmp/unused",
                ],
            )
        )
    assert out.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m." + fmt, "run.ckpt"]


def test_an_export_gets_the_users_usual_mode(tmp_path):
    import os

    from conftest import make_checkpoint

    previous = os.umask(0o022)
    try:
        out = export(
            compose(
                "export",
                [
                    "experiment=demo",
                    f"weights={make_checkpoint(tmp_path / 'run.ckpt')}",
                    "format=safetensors",
                    f"output={tmp_path / 'm.safetensors'}",
                    "paths.output_dir=/tmp/unused",
                ],
            )
        )
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == 0o644


def test_an_onnx_export_onto_a_full_filesystem_is_one_line(tmp_path, full_disk):
    """The ONNX writers write the path themselves: a real full tmpfs (the exporter is not retried)."""
    import subprocess
    import sys

    from conftest import REPO, make_checkpoint

    pytest.importorskip("onnx")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "xnet.export",
            "experiment=demo",
            f"weights={make_checkpoint(tmp_path / 'run.ckpt')}",
            f"output={full_disk / 'm.onnx'}",
            "check=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert (
        res.stderr.strip().splitlines()[-1] == f"error: {full_disk / 'm.onnx'}: cannot write (No space left on device)"
    )
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler", "zoo"]  # no temporary file left
