"""The Hydra configs, shipped inside the package (``pkg://xnet.conf``; the entry points'
``config_path="conf"``). Add your own config dir with ``--config-dir DIR`` or
``hydra.searchpath=[file://DIR]``: its groups and files sit beside these."""
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent
