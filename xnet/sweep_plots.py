"""Deprecated: `python -m xnet.sweep_plots` is now `python -m xnet.figures.sweep_plots` (or `xnet-plots`)."""

import sys

from xnet.figures.sweep_plots import main

if __name__ == "__main__":
    print(
        "note: python -m xnet.sweep_plots is deprecated; use xnet-plots (python -m xnet.figures.sweep_plots)",
        file=sys.stderr,
    )
    sys.exit(main())
