"""One log, without noise: inside a Hydra app every message goes through Hydra's handlers (console and
``<run dir>/<job>.log``) once, in one format. Lightning adds console handlers of its own to its loggers, so
each of its messages printed twice; third-party tips and notices that say nothing about the run are dropped
(warnings that matter are kept). Progress lines a bar already shows go to the log file only (:data:`FILE_ONLY`)."""

from __future__ import annotations

import logging
import re
import warnings

#: loggers that print to the console themselves as well as through the root logger
SELF_PRINTING = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
#: messages that are advertising or notices about defaults, not about the run
NOISE = re.compile(
    r"💡 Tip:|litlogger|LitLogger|`weights_only` was not set|GPU available: |TPU available: |HPU available: "
    r"|LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES"
)
#: warnings of the same kind, by message
NOISY_WARNINGS = (
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*The anonymous setting has no effect.*",
)
#: chatty at INFO, useful at WARNING (Optuna's storage migrations)
CHATTY = ("alembic", "alembic.runtime.migration")


#: ``log.info(..., extra=FILE_ONLY)``: a line for the log file that a console showing a progress bar skips
FILE_ONLY = {"file_only": True}


class DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not NOISE.search(record.getMessage())


class FileOnly(logging.Filter):
    """At a console handler: drops the records logged with :data:`FILE_ONLY`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False)


def _add_filter(handler: logging.Handler, kind: type[logging.Filter]) -> None:
    if not any(isinstance(f, kind) for f in handler.filters):
        handler.addFilter(kind())


def quiet_logs() -> None:
    """Route Lightning through the root logger only and drop :data:`NOISE` at every handler that prints
    (a logger's own filter would miss its children's records); idempotent. Outside a Hydra app (no root
    handler) Lightning keeps its own console handlers, filtered."""
    root = logging.getLogger()
    printing = list(root.handlers)
    for name in SELF_PRINTING:
        lg = logging.getLogger(name)
        own = [h for h in lg.handlers if type(h) is logging.StreamHandler]
        if root.handlers:  # Lightning adds its own handler (and stops propagation) when imported before Hydra set up
            for h in own:
                lg.removeHandler(h)
            lg.propagate = True
        else:
            printing += own
    for h in printing:
        _add_filter(h, DropNoise)
        if not isinstance(h, logging.FileHandler):
            _add_filter(h, FileOnly)
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
