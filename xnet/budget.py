"""Deprecated: `python -m xnet.budget` is now `python -m xnet.figures.budget` (or `xnet-budget`)."""

import sys

from xnet.figures.budget import cli

if __name__ == "__main__":
    print("note: python -m xnet.budget is deprecated; use xnet-budget (python -m xnet.figures.budget)", file=sys.stderr)
    sys.exit(cli())
