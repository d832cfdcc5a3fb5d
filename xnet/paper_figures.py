"""Deprecated: `python -m xnet.paper_figures` is now `python -m xnet.figures.paper_figures` (or `xnet-figures`)."""

import sys

from xnet.figures.paper_figures import main

if __name__ == "__main__":
    print(
        "note: python -m xnet.paper_figures is deprecated; use xnet-figures (python -m xnet.figures.paper_figures)",
        file=sys.stderr,
    )
    sys.exit(main())
