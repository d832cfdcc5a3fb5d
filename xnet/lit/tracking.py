"""Weights & Biases: one run per job, named by its overrides, grouped by experiment, holding the
whole resolved config, the test set's per-image scores and the paper's figure beside the result.

* A multirun's jobs share one process (or a few pooled ones): each job *finishes* its run, so the
  next job starts its own instead of writing into it.
* The run id is kept in the run dir (``wandb_run.json``): a resumed chunk (``ckpt_path=last``)
  continues the same run, offline or online.
* Offline runs sit in ``<run dir>/wandb/offline-run-*`` (see the README for syncing them all).

Loggers other than W&B only see the resolved config (``log_hyperparams``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from xnet.protocol.atomic import write_json
from xnet.utils.build import build_list, to_container
from xnet.utils.hydra_job import JobInfo, job_info, run_name

log = logging.getLogger(__name__)

RUN_FILE = "wandb_run.json"  # in the run dir: the W&B run this dir logs to
TABLE_KEY = "test/per_image"


@runtime_checkable
class ResultsLogger(Protocol):
    """A logger that records a job's results itself (W&B), beyond the metrics Lightning sends it."""

    def log_results(
        self, summary: dict[str, Any], report: dict[str, Any] | None = None, best_checkpoint: str | None = None
    ) -> None: ...

    def finish_run(self, exit_code: int = 0) -> None: ...


def run_config(cfg: DictConfig, info: JobInfo | None = None) -> dict[str, Any]:
    """The resolved config plus what only Hydra knows: the group choices (``xunit: paper``,
    ``recipe: fast``, ``data/test: bsd68``) and the job's overrides — the axes runs are filtered by."""
    info = info or job_info()
    return {
        **to_container(cfg),
        "choices": info.choices,
        "overrides": info.overrides,
        **({"sweep": {"dir": info.sweep_dir, "job": info.num}} if info.multirun else {}),
    }


def read_run_file(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}


def per_image_table(report: dict[str, Any]):
    """The report's per-image scores as a ``wandb.Table`` (image, psnr, ssim, ...)."""
    import wandb

    rows = report["per_image"]
    columns = list(rows[0])
    return wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])


def summary_fields(summary: dict[str, Any]) -> dict[str, Any]:
    """What goes into the run's summary: the scalars of ``summary`` (the config is the run's config)."""
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}


class WandbRunLogger(WandbLogger):
    """Lightning's :class:`WandbLogger` with one run per job (see the module doc).

    Args:
        run_dir: the job's run dir; the offline files go to ``<run_dir>/wandb`` and the run id to
            ``<run_dir>/wandb_run.json``.
        base_name: the name of a single run with no overrides (the config's ``name``).
        name: a fixed run name; ``None`` names it by its overrides (:func:`xnet.utils.hydra_job.run_name`).
        value_keys: override keys shown by their value alone (``arch=xnet_d3_r9`` → ``xnet d3 r9``).
        log_best_checkpoint: upload the best checkpoint as a ``model`` artifact (online runs only).
        The rest (project, group, job_type, tags, ...) goes to ``wandb.init``.
    """

    def __init__(
        self,
        run_dir: str | Path,
        base_name: str = "xnet",
        name: str | None = None,
        group: str | None = None,
        job_type: str = "train",
        tags: Sequence[str] = (),
        value_keys: Sequence[str] = (),
        log_best_checkpoint: bool = False,
        project: str = "xnet",
        **kwargs: Any,
    ) -> None:
        self.run_dir = Path(run_dir)
        info = job_info()
        tags = [*tags, job_type, *(["multirun"] if info.multirun else [])]
        super().__init__(
            name=name or run_name(info, base_name, set(value_keys)),
            save_dir=str(self.run_dir),
            project=project,
            id=read_run_file(self.run_dir).get("id"),
            group=group,
            job_type=job_type,
            tags=list(dict.fromkeys(str(t)[:64] for t in tags if t)),
            **kwargs,
        )
        self.log_best_checkpoint = bool(log_best_checkpoint)
        self._recorded = False

    @property
    def experiment(self):
        run = super().experiment
        if not self._recorded and rank_zero_only.rank == 0:
            self._recorded = True
            self._record(run)
        return run

    def _record(self, run: Any) -> None:
        mode = getattr(getattr(run, "settings", None), "mode", None)
        if mode not in ("online", "offline", "shared"):  # disabled: nothing to resume
            return
        write_json(
            self.run_dir / RUN_FILE,
            {
                "id": run.id,
                "project": run.project,
                "name": run.name,
                "group": run.group,
                "job_type": run.job_type,
                "mode": mode,
            },
        )

    @rank_zero_only
    def log_results(
        self, summary: dict[str, Any], report: dict[str, Any] | None = None, best_checkpoint: str | None = None
    ) -> None:
        run = self.experiment
        run.summary.update(summary_fields(summary))
        if report and report.get("per_image"):
            run.log({TABLE_KEY: per_image_table(report)})
        if best_checkpoint and self.log_best_checkpoint:
            upload_checkpoint(run, best_checkpoint, summary)

    @rank_zero_only
    def finish_run(self, exit_code: int = 0) -> None:
        """End this job's run (the next job of a multirun starts its own)."""
        if self._experiment is not None:
            self._experiment.finish(exit_code=exit_code)
            self._experiment = None


def upload_checkpoint(run: Any, path: str | Path, summary: dict[str, Any]) -> bool:
    """The best checkpoint as a ``model`` artifact (aliases ``best`` and ``step-N``); an offline run
    would copy it into its folder to upload later, so it is only uploaded online."""
    if getattr(run, "offline", True):
        log.info("W&B is offline: the best checkpoint is not uploaded (%s)", path)
        return False
    import wandb

    meta = {k: summary.get(k) for k in ("model", "step", "val/psnr", "test/psnr", "test/dataset", "params_paper")}
    artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata=meta)
    artifact.add_file(str(path), name="best.ckpt")
    run.log_artifact(artifact, aliases=["best", f"step-{summary.get('step')}"])
    return True


def results_loggers(loggers: Iterable[Any]) -> list[ResultsLogger]:
    return [lg for lg in loggers if isinstance(lg, ResultsLogger)]


def finish_runs(loggers: Iterable[Any], exit_code: int = 0) -> None:
    for lg in results_loggers(loggers):
        lg.finish_run(exit_code)


def log_evaluation(cfg: DictConfig, result: dict[str, Any]) -> None:
    """An ``evaluate`` run in W&B (``logger=wandb``): its config, the summary and the per-image table."""
    loggers = results_loggers(build_list(cfg.get("logger")))
    config = run_config(cfg)
    for lg in loggers:
        try:
            lg.log_hyperparams(config)
            lg.log_results({k: v for k, v in result.items() if k not in ("per_image", "config")}, report=result)
        finally:
            lg.finish_run()
