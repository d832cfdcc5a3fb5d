"""Train any model on any task: ``python -m xnet.train task=denoise model=xdncnn``.

Writes to the Hydra run dir: ``checkpoints/{best-*,last}.ckpt``, logger output (CSV; W&B when
``logger=wandb``), validation image triplets, and ``metrics.json`` (test-set scores after fit).
Resume with ``ckpt_path=<path>`` (or ``ckpt_path=last`` inside ``hydra.run.dir=<the run dir>``);
``trainer.max_time`` is per chunk. A run dir is one run's: a second live training into it fails at
once, a fresh start into a finished one is refused unless ``overwrite=true`` (it moves aside).
Every file is written atomically; SIGTERM/SIGINT stop after the current step with ``last.ckpt``
saved (exit status 128 + the signal). With several processes (``trainer=ddp``) rank 0 alone
tests and writes the results.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

from xnet.protocol.errors import ConfigError, exit_on_config_error, exit_on_user_error
from xnet.utils.config import CONFIG_PATH
from xnet.utils.hydra_job import job_info

# Lightning, torch and the models are imported where they are used: `--help`, tab completion and
# config errors answer without waiting for their import.
if TYPE_CHECKING:
    import lightning as L

    from xnet.lit.module import RestorationModule

log = logging.getLogger(__name__)

#: ``ckpt_path`` values naming this run dir's ``checkpoints/last.ckpt``: ``last`` resumes it (and
#: fails if there is none); ``last_if_any`` resumes it if present, else starts fresh (chunked runs).
RESUME_LAST, RESUME_LAST_IF_ANY = "last", "last_if_any"


class TrainingStopped(SystemExit):
    """Training was stopped by a signal after saving ``last.ckpt``; exits with 128 + the signal
    (a SystemExit, so a sweep stops too instead of recording a failure and going on)."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """The checkpoint to resume from, or ``None`` for a fresh start (see :data:`RESUME_LAST`)."""
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path in (RESUME_LAST, RESUME_LAST_IF_ANY):
        last = output_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            return str(last)
        if ckpt_path == RESUME_LAST_IF_ANY:
            log.info("ckpt_path=%s: no %s yet, starting from step 0", ckpt_path, last)
            return None
        raise ConfigError(
            f"ckpt_path=last: nothing to resume, no checkpoints/last.ckpt in the run dir {output_dir} — "
            "pass the earlier run's folder as hydra.run.dir=..., a checkpoint file as ckpt_path=..., "
            f"or ckpt_path={RESUME_LAST_IF_ANY} to start fresh"
        )
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    return ckpt_path


def finished_run(cfg: DictConfig, output_dir: Path) -> dict[str, Any] | None:
    """The summary of the run this run dir already finished, when ``ckpt_path`` resumes it (``last``,
    ``last_if_any``): a figure sweep run again skips its finished jobs and resumes the others."""
    summary_file = output_dir / "metrics.json"
    if cfg.get("ckpt_path") not in (RESUME_LAST, RESUME_LAST_IF_ANY) or not summary_file.is_file():
        return None
    summary = json.loads(summary_file.read_text())
    if summary.get("model") not in (None, cfg.model.name):  # never skip a job because another model ran there
        raise RunDirTaken(
            f"{output_dir}: holds a run of model={summary['model']}, not model={cfg.model.name} — give each model "
            "its own hydra.run.dir (or hydra.sweep.subdir)"
        )
    finished = summary.get("status") == "ok" and summary.get("step") == cfg.trainer.max_steps
    return summary if finished else None


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The configured Trainer, saving checkpoints atomically (:class:`AtomicCheckpointIO`), with
    ``max_time`` per chunk (:class:`TimePerChunk`) and, where ``trainer.enable_progress_bar`` says so
    (``null``: on a terminal), a bar over the run's steps (:class:`StepProgressBar`)."""
    from hydra.errors import InstantiationException
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from xnet.lit.callbacks import PruneUntrackedBest, StepProgressBar, TimePerChunk
    from xnet.lit.checkpoint_io import AtomicCheckpointIO
    from xnet.utils.build import build_list, instantiate_config
    from xnet.utils.progress import progress_enabled

    bar = cfg.trainer.get("enable_progress_bar")
    bar = progress_enabled(sys.stdout) if bar is None else bool(bar)
    try:
        return instantiate_config(
            cfg.trainer,
            "trainer",
            logger=build_list(cfg.get("logger")) or False,
            callbacks=[
                *build_list(cfg.get("callbacks")),
                TimePerChunk(),
                PruneUntrackedBest(),
                *([StepProgressBar()] if bar else []),
            ],
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=bar,
        )
    except (MisconfigurationException, InstantiationException) as e:  # e.g. trainer=gpu without a GPU: one line
        cause = e.__cause__ if isinstance(e.__cause__, MisconfigurationException) else e
        if not isinstance(cause, MisconfigurationException):
            raise
        raise ConfigError(f"trainer: {' '.join(str(cause).split())}") from e


def fit(trainer: L.Trainer, module: RestorationModule, datamodule: Any, ckpt: str | None) -> None:
    """``trainer.fit``; a SIGTERM/SIGINT stop (``last.ckpt`` saved by :class:`SaveLastOnStop`)
    becomes :class:`TrainingStopped`."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from xnet.lit.callbacks import SaveLastOnStop

    try:
        trainer.fit(
            module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True
        )  # a checkpoint is data: no pickled code
    except SIGTERMException:
        saver = next((c for c in trainer.callbacks if isinstance(c, SaveLastOnStop)), None)
        signum = saver.stopped_by if saver is not None and saver.stopped_by else signal.SIGTERM
        where = f"; resume with ckpt_path=last hydra.run.dir={saver.dirpath.parent}" if saver is not None else ""
        log.warning("stopped by %s at step %d%s", signal.Signals(signum).name, trainer.global_step, where)
        raise TrainingStopped(signum) from None


def check_resumable(ckpt: str, module: RestorationModule) -> None:
    """``ckpt`` must be a readable training checkpoint (weights_only: pickled objects are refused)
    of this very model — a truncated file or another architecture is one error naming it, before
    Lightning reads it."""
    from xnet.deploy.weights import read_state_dict
    from xnet.protocol.errors import WeightsError

    state, extra = read_state_dict(ckpt)
    if "global_step" not in extra or "optimizer_states" not in extra:
        raise WeightsError(
            f"ckpt_path={ckpt}: not a training checkpoint (no step or optimiser state) — to start from its weights, "
            "use xnet.train's own last.ckpt or best-*.ckpt"
        )
    ours = module.state_dict()
    stored = (
        ((extra.get("xnet") or {}).get("config") or {}).get("model", {}) if isinstance(extra.get("xnet"), dict) else {}
    )
    missing, unexpected = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
    reshaped = sorted(k for k in set(ours) & set(state) if tuple(ours[k].shape) != tuple(state[k].shape))
    if missing or unexpected or reshaped:
        what = (
            f"missing {missing[:3]}"
            if missing
            else f"unexpected {unexpected[:3]}"
            if unexpected
            else f"other shapes for {reshaped[:3]}"
        )
        name = stored.get("name", "?") if isinstance(stored, dict) else "?"
        raise WeightsError(
            f"ckpt_path={ckpt}: saved by another model (model={name}; {what}) — resume with the options it was "
            "trained with, or start a fresh run in another hydra.run.dir"
        )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then (optionally) score the test set with the best weights. Returns the final metrics.
    The run dir is this process's alone meanwhile (:func:`claimed_run_dir`)."""
    from xnet.utils.validate import validate

    started = time.perf_counter()  # the times in metrics.json count from here, imports included
    validate(cfg, "train")
    output_dir = Path(cfg.paths.output_dir)
    done = finished_run(cfg, output_dir)
    if done is not None:
        log.info("already trained to step %d: %s (its metrics.json is kept)", done["step"], output_dir.resolve())
        return done
    with claimed_run_dir(cfg) as ckpt:
        return run(cfg, ckpt, started)


class RunDirTaken(ConfigError):
    """The run dir holds an earlier run that this one would write over."""


def is_rank_zero() -> bool:
    """The process that owns the run dir: rank 0 of a multi-process run (Lightning's own reading of
    the launcher's environment: RANK, LOCAL_RANK, SLURM_PROCID ...), or the only process."""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


@contextlib.contextmanager
def claimed_run_dir(cfg: DictConfig) -> Iterator[str | None]:
    """Lock the run dir for this run (a second live writer fails at once), remove what killed saves
    left there, and yield the checkpoint to resume (``None``: a fresh start). A fresh start into a
    folder that holds an earlier run is refused unless ``overwrite=true`` (or ``ckpt_path=last_if_any``,
    whose first chunk found no checkpoint): then the earlier run moves into ``replaced-<time>/``."""
    from xnet.protocol.atomic import remove_leftovers
    from xnet.utils.rundir import held_run, move_aside, run_dir_lock

    output_dir = Path(cfg.paths.output_dir)
    if not is_rank_zero():  # rank 0 holds the lock for every rank
        yield resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
        return
    with run_dir_lock(output_dir):
        for folder in (output_dir, output_dir / "checkpoints"):
            for tmp in remove_leftovers(folder):
                log.info("removed %s, left by a killed save", tmp)
        ckpt = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
        held = held_run(output_dir)
        if held and ckpt is None:
            if not (cfg.get("overwrite") or cfg.get("ckpt_path") == RESUME_LAST_IF_ANY):
                shown = ", ".join(held[:3]) + (" ..." if len(held) > 3 else "")
                raise RunDirTaken(
                    f"hydra.run.dir={output_dir} already holds a run ({shown}): resume it with ckpt_path=last, "
                    "move it aside with overwrite=true, or choose another hydra.run.dir"
                )
            log.warning("the earlier run in %s moved to %s", output_dir, move_aside(output_dir))
        yield ckpt


def run(cfg: DictConfig, ckpt: str | None, started: float) -> dict[str, Any]:
    """:func:`train` in its claimed run dir. Every logger gets the whole resolved config; a W&B run
    is finished when the job ends, failed or not, so the next job of a multirun gets its own."""
    import lightning as L

    from xnet.archs.init import initialise
    from xnet.lit.module import RestorationModule
    from xnet.lit.tracking import finish_runs, run_config
    from xnet.utils.build import build_net, build_task, instantiate_config, setup_runtime, to_container

    output_dir = Path(cfg.paths.output_dir)
    setup_runtime(cfg)
    L.seed_everything(cfg.seed, workers=True)
    task = build_task(cfg)
    net = initialise(build_net(cfg, task), cfg.init)
    module = RestorationModule(
        net, task, **to_container(cfg.optim), **to_container(cfg.module), config=to_container(cfg)
    )
    if ckpt:
        check_resumable(ckpt, module)
    datamodule = instantiate_config(cfg.data, "data", task=task)
    trainer = build_trainer(cfg)
    if trainer.is_global_zero:
        announce(cfg, module, trainer, ckpt)
        if ckpt:
            keep_previous_logs(output_dir)
        for logger in trainer.loggers:
            logger.log_hyperparams(run_config(cfg))
    try:
        fit(trainer, module, datamodule, ckpt)
        summary = finish(cfg, trainer, module, task, output_dir, started)
    except BaseException as e:
        finish_runs(trainer.loggers, exit_code=e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 1)
        raise
    finish_runs(trainer.loggers)
    if trainer.is_global_zero:
        log.info("done: %s", output_dir.resolve())
    return summary


def announce(cfg: DictConfig, module: RestorationModule, trainer: L.Trainer, ckpt: str | None) -> None:
    """The start header (:func:`xnet.lit.report.header_lines`); the resolved config goes to
    ``<run dir>/config.yaml``, and to the console with ``print_config=true``."""
    from xnet.lit.report import header_lines
    from xnet.protocol.atomic import write_text
    from xnet.utils.build import to_container

    output_dir = Path(cfg.paths.output_dir)
    resolved = OmegaConf.to_yaml(OmegaConf.create(to_container(cfg)))
    write_text(output_dir / "config.yaml", resolved)
    log.info("run dir: %s", output_dir.resolve())
    for line in header_lines(cfg, module, trainer, job_info().choices, ckpt):
        log.info(line)
    if cfg.get("print_config"):
        print(resolved, end="", flush=True)
    else:
        log.info("config: %s (print_config=true prints it)", output_dir / "config.yaml")


def finish(
    cfg: DictConfig, trainer: L.Trainer, module: RestorationModule, task: Any, output_dir: Path, started: float
) -> dict[str, Any]:
    """After fit: the test set (rank 0), then the summary — scores, times, the best validation —
    in ``metrics.json``, every logger and the end of the log."""
    from xnet.lit.report import best_validation, run_times, summary_lines
    from xnet.lit.tracking import results_loggers
    from xnet.protocol.atomic import write_json
    from xnet.utils.build import to_container

    if not trainer.is_global_zero:  # other DDP ranks: rank 0 tests and writes the results
        return {"name": cfg.name, "status": "ok", "step": trainer.global_step, "rank": trainer.global_rank}
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics.update(module.params)
    metrics.update(module.compile_status)  # a compile that failed and fell back to eager says so
    report, best = None, best_checkpoint(trainer)
    test_start = time.perf_counter()
    if cfg.get("test_after_fit") and cfg.data.get("test") and not trainer.fast_dev_run:
        report = test_best(cfg, module, task, best)
        metrics.update({f"test/{k}": report[k] for k in ("psnr", "ssim")})
        metrics.update({"test/dataset": report["dataset"], "test/images": report["images"]})
        for logger in trainer.loggers:  # the CSV log too: it was written when fit ended, so save again
            logger.log_metrics({f"test/{k}": report[k] for k in ("psnr", "ssim")}, step=trainer.global_step)
            logger.save()
    test_s = time.perf_counter() - test_start
    summary = {
        "name": cfg.name,
        "model": cfg.model.name,
        "status": "ok",
        **task.describe(),
        "step": trainer.global_step,
        **metrics,
        **best_validation(trainer),
        **paper_gap(cfg.get("paper_psnr"), metrics.get("test/psnr")),
        **run_times(trainer, time.perf_counter() - started, test_s),
        "config": to_container(cfg),
    }
    write_json(output_dir / "metrics.json", summary)
    for logger in results_loggers(trainer.loggers):  # W&B: summary, per-image table, best checkpoint
        logger.log_results(summary, report, best or None)
    for line in summary_lines(summary):
        log.info(line)
    return summary


def best_checkpoint(trainer: L.Trainer) -> str:
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best and not Path(best).is_file():  # e.g. the run dir was moved between chunks
        log.warning("best checkpoint %s is gone: testing the final weights", best)
        return ""
    return best


def test_best(cfg: DictConfig, module: RestorationModule, task: Any, best: str) -> dict[str, Any]:
    """The test set's report (per-image scores and means) with the best checkpoint's weights, loaded
    as ``xnet.evaluate`` loads them (the final weights when there is no best checkpoint)."""
    from xnet.deploy.inference import evaluate_module, load_run
    from xnet.utils.build import instantiate_config
    from xnet.utils.trust import modules_of

    # the run's own best checkpoint may build what its command line built (a --config-dir model too)
    trusted = modules_of({k: cfg.get(k) for k in ("task", "model")})
    restorer = load_run(best, trusted).restorer.to(memory_format=module.memory_format) if best else module.restorer
    test_source = instantiate_config(cfg.data.test, "data.test")
    return evaluate_module(
        restorer, task, test_source, seed=cfg.seed, device=module.device, limit=cfg.get("test_limit")
    )


def paper_gap(paper_psnr: float | None, psnr: float | None) -> dict[str, float]:
    """``paper/psnr`` (the published figure for this run's test set) and ``paper/gap`` (ours − the
    paper's, dB) where the experiment states one."""
    if paper_psnr is None:
        return {}
    return {
        "paper/psnr": float(paper_psnr),
        **({"paper/gap": float(psnr) - float(paper_psnr)} if psnr is not None else {}),
    }


def keep_previous_logs(output_dir: Path) -> None:
    """A resumed run writes its CSV log afresh: move the earlier chunk's aside so none is lost."""
    for log_file in output_dir.glob("csv/metrics.csv"):
        n = len(list(log_file.parent.glob("metrics.chunk*.csv")))
        log_file.rename(log_file.with_name(f"metrics.chunk{n:02d}.csv"))


def record_failure(cfg: DictConfig, error: BaseException) -> dict[str, Any]:
    """A failed sweep job leaves a metrics.json saying so, for the collectors (xnet.figures.sweep_plots)."""
    from xnet.protocol.atomic import write_json
    from xnet.utils.build import to_container

    try:
        config = to_container(cfg)
    except Exception:  # the failure may be in resolving the config itself
        config = OmegaConf.to_container(cfg, resolve=False)
    summary = {
        "name": cfg.get("name"),
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
        "config": config,
    }
    write_json(Path(cfg.paths.output_dir) / "metrics.json", summary)
    return summary


def optimized_value(summary: dict[str, Any], metric: str | None) -> float | None:
    """The value a sweeper optimises, read as lightning-hydra-template's ``get_metric_value`` does:
    ``None`` when no ``optimized_metric`` is named (or on DDP ranks other than 0, which report
    nothing); a named metric the run did not log is a config error."""
    if not metric or summary.get("rank"):
        return None
    if metric not in summary:
        logged = sorted(k for k in summary if "/" in k)
        raise ConfigError(f"optimized_metric={metric}: this run logged no such metric (it logged {logged})")
    return float(summary[metric])


@exit_on_config_error
@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    """Returns the value of ``optimized_metric`` (what an Optuna sweep maximises, see
    ``hparams_search/optuna.yaml``), or None when none is named. With ``sweep_continue_on_error``
    a failing job is recorded and returns None so the other jobs of a multirun go on."""
    from xnet.lit.module import NonFiniteLossError

    try:
        summary = train(cfg)
    except Exception as e:
        if not cfg.get("sweep_continue_on_error"):
            if isinstance(e, NonFiniteLossError) and not job_info().multirun:
                log.error("stopped: %s", e)
                sys.exit(1)
            raise  # in a multirun, Hydra's per-job handling reports it
        from xnet.utils.rundir import RunDirBusy

        if isinstance(e, (RunDirTaken, RunDirBusy)):  # the folder is another run's: write nothing there
            log.error("job not run: %s", e)
            return None
        log.exception("job failed; recorded in metrics.json and the sweep goes on")
        record_failure(cfg, e)
        return None
    return optimized_value(summary, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
