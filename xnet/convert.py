"""Published weights in their authors' formats → xnet state dicts (read by ``weights=`` directly,
or converted once with ``python -m xnet.convert SRC DST.safetensors``).

Formats (``--layout``; ``auto`` tells them apart by file type and content):

``srcnn_mat`` (the official SRCNN MATLAB release), ``matconvnet`` (a MatConvNet ``simplenn`` net: the
    official DnCNN models) — read by :mod:`xnet.deploy.matlab_weights`, whose docstring says exactly what
    layout is assumed.

``kair`` — KAIR's DnCNN ``.pth`` (``model.<i>.weight/bias``, the BNs merged into the convs): the
    ``model.`` prefix is stripped; load into ``model=dncnn model.net.bn_merged=true`` (biased convs
    and ReLUs at KAIR's indices). ``weights=`` reads these without conversion.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from xnet.deploy.matlab_weights import load_mat, read_mat
from xnet.deploy.weights import read_state_dict, save_state_dict

LAYOUTS = ("auto", "srcnn_mat", "matconvnet", "kair")


def from_kair(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """KAIR's ``model.<i>.*`` keys → ``<i>.*`` (the indices of DnCNN(bn_merged=True))."""
    return {k.removeprefix("module.").removeprefix("model."): v for k, v in state.items()}


def convert(src: str | os.PathLike, layout: str = "auto") -> dict[str, torch.Tensor]:
    """``src`` in ``layout`` as an xnet state dict."""
    src = Path(src)
    if layout not in LAYOUTS:
        raise ValueError(f"--layout must be one of {LAYOUTS}, got {layout!r}")
    if not src.is_file():
        raise FileNotFoundError(f"weights file not found: {src}")
    if layout == "auto":
        layout = "mat" if src.suffix == ".mat" else "kair"
    if layout in ("mat", "srcnn_mat", "matconvnet"):
        mat = load_mat(src)
        if (layout == "srcnn_mat" and "weights_conv1" not in mat) or (layout == "matconvnet" and "net" not in mat):
            raise ValueError(
                f"{src}: not a {layout} file (variables: {sorted(k for k in mat if not k.startswith('__'))})"
            )
        return read_mat(src)
    return from_kair(read_state_dict(src)[0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m xnet.convert",
        description=__doc__.split("\n\n")[0],
        epilog="Then: python -m xnet.evaluate model=... weights=DST (see README, reference rows).",
    )
    p.add_argument("src", help="the published weights (.mat, .pth)")
    p.add_argument("dst", help="the xnet state dict to write (.safetensors or .pth)")
    p.add_argument("--layout", default="auto", choices=LAYOUTS, help="the source's layout (auto: by file type)")
    args = p.parse_args(argv)
    try:
        state = convert(args.src, args.layout)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dst = save_state_dict(state, args.dst)
    print(f"{args.src} → {dst}: {len(state)} tensors ({', '.join(list(state)[:4])}{' ...' if len(state) > 4 else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
