"""xnet: reference implementation of xUnit (Kligvasser, Rott Shaham, Michaeli, CVPR 2018)."""

__version__ = "0.1.0"
