"""xnet.lit.callbacks: what the training callbacks log."""

import logging
import time
from types import SimpleNamespace

import torch
from lightning.pytorch.callbacks import Timer

from xnet.lit.callbacks import GradNormLog, ProgressLog


class Recorder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.frozen = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
        self.logged: dict[str, float] = {}

    def log(self, key: str, value: torch.Tensor) -> None:
        self.logged[key] = float(value)


def test_grad_norm_is_the_l2_norm_of_all_gradients_on_logged_steps_only():
    module = Recorder()
    module.a.grad, module.b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])  # `frozen` has none
    GradNormLog().on_before_optimizer_step(SimpleNamespace(global_step=100, log_every_n_steps=50), module, None)
    assert module.logged == {"train/grad_norm": 5.0}
    module.logged.clear()
    GradNormLog().on_before_optimizer_step(SimpleNamespace(global_step=101, log_every_n_steps=50), module, None)
    assert module.logged == {}


def fake_trainer(step: int, max_steps: int = 1000, callbacks=(), bar=None, **metrics) -> SimpleNamespace:
    return SimpleNamespace(
        global_step=step,
        max_steps=max_steps,
        callbacks=list(callbacks),
        is_global_zero=True,
        progress_bar_callback=bar,
        sanity_checking=False,
        optimizers=[SimpleNamespace(param_groups=[{"lr": 1e-3}])],
        callback_metrics={k.replace("__", "/"): torch.tensor(v) for k, v in metrics.items()},
    )


def test_the_eta_is_the_pace_so_far_to_max_steps_or_the_chunk_s_max_time_whichever_comes_first():
    log = ProgressLog()
    log._start = (100, 0.0)  # resumed at step 100: the pace counts this process's steps only
    assert log.time_left(fake_trainer(200, max_steps=1000), 200, now=50.0) == "ETA 6 min 40 s (max_steps)"
    timer = Timer(duration={"minutes": 5})  # a chunk of 5 minutes, started 40 s ago
    timer._start_time["train"] = time.monotonic() - 40
    assert log.time_left(fake_trainer(200, callbacks=[timer]), 200, now=50.0) == "ETA 4 min 20 s (max_time)"
    assert log.time_left(fake_trainer(200, max_steps=-1), 200, now=50.0) == ""  # neither: no ETA


def test_step_lines_every_n_steps_or_seconds_and_validation_lines_with_the_best(caplog, monkeypatch):
    clock = iter([0.0, 10.0, 20.0, 100.0])
    monkeypatch.setattr("xnet.lit.callbacks.time.perf_counter", lambda: next(clock))
    log = ProgressLog(every=50, every_s=60)
    trainer = fake_trainer(0, max_steps=200, train__loss=0.5)
    log.on_train_start(trainer, None)  # t = 0
    with caplog.at_level(logging.INFO, logger="xnet.train"):
        for step in (49, 50, 51):  # t = 10, 20, 100: step 50 is due by steps, 51 by time
            trainer.global_step = step
            log.on_train_batch_end(trainer, None, None, None, step)
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "step 50/200  loss 5.000e-01  lr 1.00e-03  2.50 steps/s  ETA 1 min 00 s (max_steps)",
        "step 51/200  loss 5.000e-01  lr 1.00e-03  0.01 steps/s  ETA 4 min 52 s (max_steps)",
    ]
    caplog.clear()
    monkeypatch.setattr("xnet.lit.callbacks.time.perf_counter", lambda: 0.0)
    with caplog.at_level(logging.INFO, logger="xnet.train"):
        for step, psnr in ((100, 27.0), (200, 26.5)):
            log.on_validation_end(fake_trainer(step, val__psnr=psnr, val__psnr_input=20.0), None)
    assert [r.getMessage() for r in caplog.records] == [
        "validation at step 100: PSNR 27.00 dB (input 20.00 dB); best 27.00 dB at step 100",
        "validation at step 200: PSNR 26.50 dB (input 20.00 dB); best 27.00 dB at step 100",
    ]
    resumed = ProgressLog()
    resumed.load_state_dict(log.state_dict())  # the best survives a resume
    assert resumed.best == (27.0, 100)


class Records(logging.Handler):
    """Every record, unfiltered (pytest's caplog handler is the session's: a training run in an earlier
    test gave it xnet's console filters)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_with_a_bar_the_lines_are_for_the_log_file_only():
    from xnet.utils.logs import FileOnly

    log, seen, logger = ProgressLog(), Records(), logging.getLogger("xnet.train")
    logger.addHandler(seen)
    level, logger.level = logger.level, logging.INFO
    try:
        log.on_validation_end(fake_trainer(10, bar=object(), val__psnr=25.0), None)
        log.on_validation_end(fake_trainer(20, val__psnr=26.0), None)
    finally:
        logger.removeHandler(seen)
        logger.setLevel(level)
    assert [FileOnly().filter(r) for r in seen.records] == [False, True]  # the console shows the second only
