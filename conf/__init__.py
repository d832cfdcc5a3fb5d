"""xnet's Hydra configs, installed as the package data ``xnet.conf`` (the entry points read them as
``pkg://xnet.conf``). Add your own config dir with ``--config-dir DIR`` or ``hydra.searchpath=[file://DIR]``:
its groups and files sit beside these."""
