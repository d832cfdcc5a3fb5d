"""A fault run: xnet's commands driven the way a demanding user would, each case judged from outside.

    python scripts/fault_run.py [--only SUBSTRING] [--out results/fault_run.json]

Every case runs the real command line (``python -m xnet.<command>``) in a fresh folder and is
*handled* when the exit status is the expected one, an error is one ``error: ...`` line on stderr
saying what the case expects (a folder's failed images may follow it, indented; no traceback) and
every file the user had is still there, byte for byte; *data loss* when a file of the user's
changed or vanished; *wrong* otherwise (a traceback, another status, a silent success). Cases that
need root (a tmpfs filled to ENOSPC, a read-only mount) are skipped elsewhere. The totals are
printed and written as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "experiment=demo",
    "debug=tiny",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "data.val_limit=1",
    "test_after_fit=false",
    "trainer.enable_progress_bar=false",
    "threads=1",
]


@dataclass
class Case:
    name: str
    prepare: Callable[[Path], list[str]]  # folder → the command (module + args)
    status: int = 2
    message: str | None = "error: "  # in stderr's one error line (None: not checked)
    check: Callable[[Path], str | None] | None = None  # folder → a problem, or None
    root: bool = False  # needs a tmpfs mount
    kept: list[str] = field(default_factory=list)  # files (relative) that must stay byte for byte


def run(cmd: list[str], cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *cmd], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- fixtures ---------------------------------------------------------------------------------------
_BASE: Path | None = None


def base_run() -> Path:
    """One tiny real training run (4 steps), copied for each case that needs an earlier run."""
    global _BASE
    if _BASE is None:
        _BASE = Path(tempfile.mkdtemp(prefix="xnet-fault-base-")) / "run"
        res = run(["xnet.train", *TINY, f"hydra.run.dir={_BASE}"])
        if res.returncode:
            raise SystemExit(f"the base run failed:\n{res.stderr[-3000:]}")
    return _BASE


def copy_run(d: Path) -> Path:
    shutil.copytree(base_run(), d / "run")
    return d / "run"


def checkpoint(d: Path, config_edit: Callable[[dict], None] | None = None, name: str = "c.ckpt") -> Path:
    import torch

    ckpt = torch.load(base_run() / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    if config_edit:
        config_edit(ckpt["xnet"]["config"])
    torch.save(ckpt, d / name)
    return d / name


def copyfile_net(d: Path) -> Callable[[dict], None]:
    (d / "secret").write_text("secret")

    def edit(config: dict) -> None:
        config["model"]["net"] = {"_target_": "shutil.copyfile", "_args_": [str(d / "secret"), str(d / "stolen")]}

    return edit


def not_stolen(d: Path) -> str | None:
    return "a crafted config ran code (the file was copied)" if (d / "stolen").exists() else None


def images(folder: Path, names=("a.png", "b.png"), side: int = 40) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for n in names:
        Image.fromarray(rng.integers(0, 255, (side, side), dtype=np.uint8)).save(folder / n)
    return folder


def mount(folder: Path, options: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True, capture_output=True)


def full_tmpfs(d: Path) -> Path:
    mnt = d / "full"
    mount(mnt, "size=256k")
    return fill(mnt)


def fill(mnt: Path) -> Path:
    fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return mnt


def readonly_tmpfs(d: Path) -> Path:
    mnt = d / "ro"
    mount(mnt, "size=64k,ro")
    return mnt


def eval_args(d: Path, weights: Any, *more: str) -> list[str]:
    return [
        "xnet.evaluate",
        "experiment=demo",
        f"weights={weights}",
        "data/test=sample",
        f"hydra.run.dir={d / 'eval'}",
        *more,
    ]


def set12_copy(d: Path) -> Path:
    data = Path(os.environ.get("XNET_DATA", REPO.parent / "shared" / "data"))
    shutil.copytree(data / "Set12", d / "data" / "Set12")
    return d / "data"


def zoo_report(d: Path, name: str = "r.json", dataset: str = "Set12") -> Path:
    (d / name).write_text(
        json.dumps({"dataset": dataset, "sigma": 25, "psnr": 29.0, "ssim": 0.8, "images": 12, "per_image": []})
    )
    return d / name


def zoo_add(d: Path, name: str, *more: Any) -> list[str]:
    return ["xnet.zoo", "add", name, "--ckpt", str(checkpoint(d)), *map(str, more)]


# --- the cases --------------------------------------------------------------------------------------
def cases() -> list[Case]:
    out: list[Case] = []

    def train(*a):
        return lambda d: ["xnet.train", *TINY, *a, f"hydra.run.dir={d / 'run'}"]

    for args, says in (
        (["data.patch_size=0"], "data.patch_size=0: must be >= 1"),
        (["optim.lr=nan"], "optim.lr=nan: must be a finite"),
        (["optim.lr=inf"], "optim.lr=inf: must be a finite"),
        (["optim.lr=-1"], "optim.lr=-1: must be > 0"),
        (["optim.weight_decay=inf"], "optim.weight_decay=inf: must be a finite"),
        (["model.net.kernel_size=4"], "kernel_size=4: must be odd"),
        (["no_such_key=1"], "Could not override 'no_such_key'"),
        (["trainer=nope"], "Could not find 'trainer/nope'"),
        (["model=nope"], "Could not find 'model/nope'"),
        (["optim.lr=[1"], "no viable alternative"),
        (["trainer=gpu"], "trainer: "),
        (["task=sr", "model=xdncnn"], "data.patch_size=40: must be a multiple of the SR scale"),
        (["data.batch_size=abc"], "data.batch_size='abc': must be an integer"),
        (["ckpt_path=last"], "ckpt_path=last: nothing to resume"),
        (["ckpt_path=/nonexistent.ckpt"], "no such checkpoint file"),
        (["trainer.max_steps=0"], "trainer.max_steps=0: must be"),
        (["model=bm3d"], "nothing to train"),
        (["data.samples_per_epoch=-1"], "data.samples_per_epoch=-1: must be >= 1"),
    ):
        if args == ["trainer=gpu"] and __import__("torch").cuda.is_available():
            continue
        out.append(Case(f"train {' '.join(args)}", train(*args), message=says))
    out.append(
        Case(
            "train into a read-only run dir",
            lambda d: ["xnet.train", *TINY, f"hydra.run.dir={readonly_tmpfs(d) / 'run'}"],
            root=True,
            message="Read-only file system",
        )
    )

    # earlier runs and resumes
    run_files = ["run/checkpoints/last.ckpt", "run/csv/metrics.csv", "run/metrics.json"]
    out.append(
        Case(
            "train again into a run dir without ckpt_path",
            lambda d: (copy_run(d), train()(d))[1],
            kept=run_files,
            message="already holds a run",
        )
    )

    def moved_aside(d: Path) -> str | None:
        old = list((d / "run").glob("replaced-*/checkpoints/last.ckpt"))
        return (
            None
            if old and digest(old[0]) == digest(base_run() / "checkpoints" / "last.ckpt")
            else "the earlier run is not in replaced-*/"
        )

    out.append(
        Case(
            "overwrite=true",
            lambda d: (copy_run(d), train("overwrite=true")(d))[1],
            status=0,
            message=None,
            check=moved_aside,
        )
    )

    def stepped(d: Path) -> str | None:
        import torch

        step = torch.load(d / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
        return None if step == 6 else f"resumed to step {step}, not 6"

    out.append(
        Case(
            "resume ckpt_path=last",
            lambda d: (copy_run(d), train("ckpt_path=last", "trainer.max_steps=6")(d))[1],
            status=0,
            message=None,
            check=stepped,
        )
    )

    def truncate(d: Path) -> list[str]:
        run_dir = copy_run(d)
        last = run_dir / "checkpoints" / "last.ckpt"
        last.write_bytes(last.read_bytes()[:4000])
        return train("ckpt_path=last", "trainer.max_steps=6")(d)

    out.append(
        Case("resume a truncated last.ckpt", truncate, message="last.ckpt: cannot read the weights file, truncated")
    )
    out.append(
        Case(
            "resume another model's last.ckpt",
            lambda d: (copy_run(d), train("ckpt_path=last", "model.net.width=16")(d))[1],
            kept=run_files[:1],
            message="saved by another model",
        )
    )

    def malicious(d: Path) -> list[str]:
        class Payload:
            def __reduce__(self):
                return (os.system, (f"touch {d / 'pwned'}",))

        (d / "evil.ckpt").write_bytes(
            pickle.dumps({"state_dict": {}, "global_step": 1, "optimizer_states": [], "x": Payload()})
        )
        return train(f"ckpt_path={d / 'evil.ckpt'}")(d)

    out.append(
        Case(
            "resume a pickle that runs code",
            malicious,
            check=lambda d: "the pickle ran" if (d / "pwned").exists() else None,
            message="not a loadable state dict with weights_only=True",
        )
    )
    out.append(
        Case(
            "resume a text file",
            lambda d: ((d / "t.ckpt").write_text("text"), train(f"ckpt_path={d / 't.ckpt'}")(d))[1],
            message="t.ckpt: cannot read the weights file",
        )
    )

    def locked(d: Path) -> list[str]:
        code = (
            "from xnet.utils.rundir import run_dir_lock\n"
            f"with run_dir_lock({str(d / 'run')!r}):\n"
            "    import time; time.sleep(120)\n"
        )
        holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
        time.sleep(3)
        HOLDERS.append(holder)
        return train()(d)

    out.append(
        Case("a second training into a live run dir", locked, message="another xnet run is writing into it (pid ")
    )

    def leftovers(d: Path) -> list[str]:
        run_dir = copy_run(d)
        (run_dir / "checkpoints" / ".last.ckpt.4242-deadbeef.tmp").write_bytes(b"cut")
        return train("ckpt_path=last", "trainer.max_steps=6")(d)

    out.append(
        Case(
            "leftover temp files of a killed save",
            leftovers,
            status=0,
            message=None,
            check=lambda d: "a leftover .tmp stayed" if list((d / "run" / "checkpoints").glob("*.tmp")) else None,
        )
    )

    def chunks(d: Path) -> list[str]:
        steps = []
        chunk = [
            *TINY,
            "trainer.max_steps=100000",
            "trainer.val_check_interval=1000",
            "data.samples_per_epoch=100000",
            "trainer.max_time=00:00:00:03",
            "ckpt_path=last_if_any",
            f"hydra.run.dir={d / 'run'}",
        ]
        import torch

        for _ in range(2):
            run(["xnet.train", *chunk])
            steps.append(torch.load(d / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"])
        CHUNK_STEPS[str(d)] = steps
        return ["xnet.train", *chunk]

    def chunk_rose(d: Path) -> str | None:
        import torch

        steps = [
            *CHUNK_STEPS[str(d)],
            torch.load(d / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"],
        ]
        return None if steps[0] < steps[1] < steps[2] else f"chunk steps {steps}"

    out.append(Case("three chunks with the same max_time command", chunks, status=0, message=None, check=chunk_rose))

    # evaluate and restore: weights and stored configs
    out += [
        Case(
            "evaluate weights=missing",
            lambda d: eval_args(d, "no_such_model"),
            message="weights=no_such_model: no such file",
        ),
        Case(
            "evaluate a text .pth",
            lambda d: ((d / "w.pth").write_text("x"), eval_args(d, d / "w.pth"))[1],
            message="w.pth: not a loadable state dict",
        ),
        Case(
            "evaluate a text .mat",
            lambda d: ((d / "w.mat").write_text("x"), eval_args(d, d / "w.mat"))[1],
            message="w.mat: not a readable MATLAB .mat file",
        ),
        Case(
            "evaluate a truncated .safetensors",
            lambda d: ((d / "w.safetensors").write_bytes(b"\x10\0\0\0"), eval_args(d, d / "w.safetensors"))[1],
            message="w.safetensors: not a readable .safetensors file",
        ),
        Case(
            "evaluate a checkpoint whose net is shutil.copyfile",
            lambda d: eval_args(d, checkpoint(d, copyfile_net(d))),
            check=not_stolen,
            message="model.net._target_='shutil.copyfile': not one of xnet's classes",
        ),
        Case(
            "evaluate a checkpoint with a nested target",
            lambda d: eval_args(
                d,
                checkpoint(
                    d,
                    lambda c: c["model"]["net"].update(
                        xunit={"_target_": "subprocess.call", "_args_": [["touch", str(d / "stolen")]]}
                    ),
                ),
            ),
            check=not_stolen,
            message="model.net.xunit._target_='subprocess.call'",
        ),
        Case(
            "evaluate a checkpoint with an attribute chain",
            lambda d: eval_args(
                d,
                checkpoint(
                    d,
                    lambda c: c["model"]["net"].update(
                        _target_="xnet.data.sources.os.system", _args_=[f"touch {d / 'stolen'}"]
                    ),
                ),
            ),
            check=not_stolen,
            message="resolves to builtin_function_or_method posix.system",
        ),
        Case(
            "evaluate a checkpoint with _partial_",
            lambda d: eval_args(d, checkpoint(d, lambda c: c["model"]["net"].update(_partial_=True))),
            message="_partial_",
        ),
        Case("evaluate device=cuda", lambda d: eval_args(d, "xdncnn_s25_cpu", "device=cuda"), message="device=cuda: "),
        Case(
            "evaluate device=gpu",
            lambda d: eval_args(d, "xdncnn_s25_cpu", "device=gpu"),
            message="device=gpu: not a device name",
        ),
        Case("evaluate limit=0", lambda d: eval_args(d, "xdncnn_s25_cpu", "limit=0"), message="limit=0: must be >= 1"),
        Case(
            "evaluate 1x1 images",
            lambda d: [
                "xnet.evaluate",
                "weights=xdncnn_s25_cpu",
                "data/test=folder",
                f"data.test.path={images(d / 'in', side=1)}",
                f"hydra.run.dir={d / 'eval'}",
            ],
            message="1×1 px to score",
        ),
        Case(
            "evaluate 3x3 images",
            lambda d: [
                "xnet.evaluate",
                "weights=xdncnn_s25_cpu",
                "data/test=folder",
                f"data.test.path={images(d / 'in', side=3)}",
                f"hydra.run.dir={d / 'eval'}",
            ],
            message="3×3 px to score",
        ),
        Case(
            "evaluate Set12 with an image replaced under its name",
            lambda d: (
                images(set12_copy(d) / "Set12", ["05.png"], side=256),
                [
                    "xnet.evaluate",
                    "weights=xdncnn_s25_cpu",
                    "data/test=set12",
                    f"paths.data_dir={d / 'data'}",
                    f"hydra.run.dir={d / 'eval'}",
                ],
            )[1],
            message="05.png: other content than its manifest's sha256",
        ),
        Case(
            "evaluate Set12 with an extra image",
            lambda d: (
                images(set12_copy(d) / "Set12", ["13.png"]),
                [
                    "xnet.evaluate",
                    "weights=xdncnn_s25_cpu",
                    "data/test=set12",
                    f"paths.data_dir={d / 'data'}",
                    f"hydra.run.dir={d / 'eval'}",
                ],
            )[1],
            message="not in it: 13.png",
        ),
        Case(
            "evaluate into a read-only run dir",
            lambda d: [
                "xnet.evaluate",
                "weights=xdncnn_s25_cpu",
                "data/test=sample",
                "experiment=demo",
                f"hydra.run.dir={readonly_tmpfs(d) / 'eval'}",
            ],
            root=True,
            message="Read-only file system",
        ),
    ]

    def restore(d, *a):
        return ["xnet.restore", "weights=xdncnn_s25_cpu", f"hydra.run.dir={d / 'r'}", *a]

    inputs = ["in/a.png", "in/b.png"]
    out += [
        Case("restore a missing input", lambda d: restore(d, f"input={d / 'nope'}"), message="no such file or folder"),
        Case(
            "restore into the input folder",
            lambda d: restore(d, f"input={images(d / 'in')}", f"output={d / 'in'}"),
            kept=inputs,
            message="is the input folder",
        ),
        Case(
            "restore over existing outputs",
            lambda d: (images(d / "out", ["a.png"]), restore(d, f"input={images(d / 'in')}", f"output={d / 'out'}"))[1],
            kept=[*inputs, "out/a.png"],
            message="already holds a.png",
        ),
        Case(
            "restore a text file named .png",
            lambda d: ((d / "x.png").write_text("x"), restore(d, f"input={d / 'x.png'}"))[1],
            message="x.png: not an image",
        ),
        Case(
            "restore onto a full disk",
            lambda d: restore(d, f"input={images(d / 'in')}", f"output={full_tmpfs(d) / 'out'}"),
            root=True,
            kept=inputs,
            message="No space left on device",
        ),
        Case(
            "restore onto a read-only mount",
            lambda d: restore(d, f"input={images(d / 'in')}", f"output={readonly_tmpfs(d) / 'out'}"),
            root=True,
            kept=inputs,
            message="Read-only file system",
        ),
        Case(
            "restore with a crafted checkpoint",
            lambda d: [
                "xnet.restore",
                f"weights={checkpoint(d, copyfile_net(d))}",
                f"input={images(d / 'in')}",
                f"output={d / 'out'}",
                f"hydra.run.dir={d / 'r'}",
            ],
            check=not_stolen,
            kept=inputs,
            message="'shutil.copyfile': not one of xnet's classes",
        ),
    ]

    def racing(d: Path) -> list[str]:
        images(d / "in", [f"{i:02d}.png" for i in range(12)], side=64)
        args = [f"input={d / 'in'}", f"output={d / 'out'}"]
        other = ["xnet.restore", "weights=xdncnn_s25_cpu", f"hydra.run.dir={d / 'r2'}", *args]
        HOLDERS.append(
            subprocess.Popen(
                [sys.executable, "-m", *other], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
        return restore(d, *args)

    def race_ok(d: Path) -> str | None:
        from PIL import Image

        for h in HOLDERS:
            h.wait(timeout=300)
        outs = sorted((d / "out").glob("*.png"))
        if len(outs) != 12 or list((d / "out").glob(".*.tmp")):
            return f"{len(outs)} outputs, leftovers {list((d / 'out').glob('.*.tmp'))}"
        for p in outs:
            Image.open(p).verify()
        return None

    out.append(Case("two restores into one folder at once", racing, status=-1, message=None, check=race_ok))

    # export and the zoo
    out += [
        Case(
            "export format=tflite",
            lambda d: ["xnet.export", "weights=xdncnn_s25_cpu", "format=tflite", f"hydra.run.dir={d / 'x'}"],
            message="format=tflite: choose one of",
        ),
        Case(
            "export onto a full disk (safetensors)",
            lambda d: [
                "xnet.export",
                "weights=xdncnn_s25_cpu",
                "format=safetensors",
                f"output={full_tmpfs(d) / 'm.safetensors'}",
                f"hydra.run.dir={d / 'x'}",
            ],
            root=True,
            message="m.safetensors: cannot write (No space left on device)",
        ),
        Case(
            "export onto a full disk (onnx)",
            lambda d: [
                "xnet.export",
                "weights=xdncnn_s25_cpu",
                "check=false",
                f"output={full_tmpfs(d) / 'm.onnx'}",
                f"hydra.run.dir={d / 'x'}",
            ],
            root=True,
            message="m.onnx: cannot write (No space left on device)",
        ),
        Case(
            "export mode follows the umask",
            lambda d: [
                "xnet.export",
                "weights=xdncnn_s25_cpu",
                "format=safetensors",
                f"output={d / 'm.safetensors'}",
                f"hydra.run.dir={d / 'x'}",
            ],
            status=0,
            message=None,
            check=lambda d: (
                None
                if (d / "m.safetensors").stat().st_mode & 0o777 == 0o666 & ~UMASK
                else "export mode is not the umask's"
            ),
        ),
        Case(
            "zoo add onto a taken name",
            lambda d: (make_zoo(d), zoo_add(d, "mine", "--metrics", zoo_report(d)))[1],
            kept=["zoo/mine/weights.safetensors", "zoo/zoo.json"],
            message="zoo name 'mine' is taken",
        ),
        Case(
            "zoo add ../name",
            lambda d: (make_zoo(d), zoo_add(d, "../outside"))[1],
            check=lambda d: "wrote outside the zoo" if (d / "outside").exists() else None,
            message="use letters, digits",
        ),
        Case(
            "zoo add with a training metrics.json",
            lambda d: (make_zoo(d), zoo_add(d, "new", "--metrics", base_run() / "metrics.json"))[1],
            message="a training run's metrics.json",
        ),
        Case(
            "zoo add --force replaces the entry whole",
            lambda d: (make_zoo(d), zoo_add(d, "mine", "--force", "--metrics", zoo_report(d, "b.json", "BSD68")))[1],
            status=0,
            message=None,
            check=lambda d: (
                None
                if sorted(p.name for p in (d / "zoo" / "mine" / "metrics").iterdir()) == ["BSD68_25.json"]
                else "old reports left beside the new weights"
            ),
        ),
        Case(
            "zoo add with a crafted checkpoint",
            lambda d: ["xnet.zoo", "add", "evil", "--ckpt", str(checkpoint(d, copyfile_net(d)))],
            check=not_stolen,
            message="'shutil.copyfile': not one of xnet's classes",
        ),
        Case(
            "zoo add onto a full disk",
            zoo_on_full_disk,
            root=True,
            kept=["full/zoo/mine/weights.safetensors", "full/zoo/zoo.json"],
            message="No space left on device",
        ),
    ]
    return out


HOLDERS: list[subprocess.Popen] = []
CHUNK_STEPS: dict[str, list[int]] = {}
UMASK = os.umask(0o022)
os.umask(UMASK)


def make_zoo(d: Path, zoo: Path | None = None) -> Path:
    """A zoo (``d/zoo`` unless given) holding an entry ``mine``; the commands use it (XNET_ZOO)."""
    from xnet.zoo import add

    zoo = zoo or d / "zoo"
    add("mine", checkpoint(d, name="z.ckpt"), [zoo_report(d, "z.json")], zoo_dir=zoo)
    os.environ["XNET_ZOO"] = str(zoo)
    return zoo


def zoo_on_full_disk(d: Path) -> list[str]:
    """An entry ``mine`` on a tmpfs that is then filled up; ``--force`` re-adds it."""
    mnt = d / "full"
    mount(mnt, "size=2m")
    make_zoo(d, mnt / "zoo")
    fill(mnt)
    return ["xnet.zoo", "add", "mine", "--ckpt", str(checkpoint(d)), "--force"]


def judge(case: Case, d: Path, res: subprocess.CompletedProcess, before: dict[str, str]) -> tuple[str, str]:
    for rel, h in before.items():
        if not (d / rel).is_file() or digest(d / rel) != h:
            return "data loss", f"{rel} changed or vanished"
    lines = res.stderr.strip().splitlines()
    if case.status >= 0 and res.returncode != case.status:
        return "wrong", f"exit {res.returncode}, expected {case.status}: {(lines or [''])[-1][:200]}"
    if "Traceback" in res.stderr and case.status != 0:
        return "wrong", "a traceback"
    if case.message is not None and case.status == 2:
        # one ``error:`` line, last — or followed only by its indented list (restore's failed images)
        errors = [i for i, ln in enumerate(lines) if ln.startswith("error:")]
        tail = lines[errors[-1] :] if errors else []
        listed = all(ln.startswith("  ") for ln in tail[1:])
        if len(errors) != 1 or not listed or case.message not in "\n".join(tail):
            return "wrong", f"stderr ends {(lines or [''])[-1][:200]!r}"
    problem = case.check(d) if case.check else None
    if problem:
        return ("data loss" if "lost" in problem else "wrong"), problem
    errors = [ln for ln in lines if ln.startswith("error:")]
    return "handled", (errors or lines or [""])[-1][:160]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="run the cases whose name contains this")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = ap.parse_args(argv)
    root = os.geteuid() == 0
    results = []
    for case in [c for c in cases() if args.only in c.name]:
        if case.root and not root:
            results.append({"case": case.name, "verdict": "skipped", "detail": "needs root (tmpfs)"})
            continue
        d = Path(tempfile.mkdtemp(prefix="xnet-fault-"))
        os.environ.pop("XNET_ZOO", None)  # the shipped zoo, unless a case makes its own
        t0 = time.time()
        try:
            cmd = case.prepare(d)
            before = {rel: digest(d / rel) for rel in case.kept}
            res = run(cmd)
            verdict, detail = judge(case, d, res, before)
        except Exception as e:
            verdict, detail = "wrong", f"{type(e).__name__}: {e}"
        finally:
            for h in HOLDERS:
                if h.poll() is None:
                    h.kill()
                h.wait()
            HOLDERS.clear()
            for mnt in (d / "full", d / "ro"):
                subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
            shutil.rmtree(d, ignore_errors=True)
        results.append({"case": case.name, "verdict": verdict, "detail": detail, "seconds": round(time.time() - t0, 1)})
        print(f"{verdict:>9}  {case.name}: {detail}", flush=True)
    totals = {v: sum(r["verdict"] == v for r in results) for v in ("handled", "wrong", "data loss", "skipped")}
    print(f"\n{len(results)} cases: {totals}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"totals": {"cases": len(results), **totals}, "cases": results}, indent=2) + "\n"
        )
    return 0 if totals["wrong"] == totals["data loss"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
