"""Deprecated: `python -m xnet.activation_maps` is now `python -m xnet.figures.activation_maps`
(or `xnet-visualize`)."""

import sys

from xnet.figures.activation_maps import main

if __name__ == "__main__":
    print(
        "note: python -m xnet.activation_maps is deprecated; "
        "use xnet-visualize (python -m xnet.figures.activation_maps)",
        file=sys.stderr,
    )
    sys.exit(main())
