"""What Hydra knows about the running job — its overrides, the sweep's axes, the config-group
choices — and the resolvers the run-dir names use. Nothing here runs at import: the entry points
register the resolvers, and so does :class:`RegisterResolvers` wherever Hydra starts a job (a
joblib or submitit worker rebuilds it from its pickle)."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)

#: a run-dir name keeps these characters; anything else (``/`` included) would nest or break a folder
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")
MAX_DIRNAME = 120  # characters of overrides kept in a folder name; longer ones end in a hash

#: overrides that never name a run: where it writes, how it is launched and logged, what it resumes
#: (a key and everything under it: ``hydra`` covers ``hydra.run.dir`` and ``hydra/launcher``)
NEVER_IN_NAMES = (
    "hydra",
    "paths",
    "ckpt_path",
    "overwrite",
    "threads",
    "logger",
    "experiment",
    "trainer.enable_progress_bar",
)


def names_a_run(key: str) -> bool:
    return not any(key == k or key.startswith((f"{k}.", f"{k}/")) for k in NEVER_IN_NAMES)


def job_dirname(num: Any, override_dirname: str) -> str:
    """``<job number>_<overrides>`` as one flat folder name: ``data/test=set12`` → ``data.test=set12``,
    other unsafe characters → ``_``, too long a string shortened with a hash (still unique). Without a number
    (``num`` empty) the overrides alone: a job keeps its folder whatever else its sweep runs."""
    text = _UNSAFE.sub("_", str(override_dirname).replace("/", "."))
    if len(text) > MAX_DIRNAME:
        text = f"{text[: MAX_DIRNAME - 9]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    if num in (None, ""):  # a name that does not depend on the job's place in its sweep (resumable sweeps)
        return text or "no_overrides"
    return f"{num}_{text}" if text else str(num)


def register_resolvers() -> None:
    """``${xnet.job_dir:${hydra.job.num},${hydra.job.override_dirname}}`` (see :func:`job_dirname`)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("xnet.job_dir"):
        OmegaConf.register_new_resolver("xnet.job_dir", job_dirname)


class RegisterResolvers(Callback):
    """A Hydra callback (``hydra.callbacks``) whose only job is to register xnet's resolvers in every
    process that resolves a job's run dir: Hydra builds it before the first job, and a launcher's
    worker process unpickles it — through ``__init__`` again — before resolving its job's dir."""

    def __init__(self) -> None:
        register_resolvers()

    def __reduce__(self) -> tuple[type, tuple]:
        return (type(self), ())


@dataclass
class JobInfo:
    """The running Hydra job, or an empty one outside Hydra (a composed config in a test)."""

    multirun: bool = False
    overrides: list[str] = field(default_factory=list)  # this job's, as ``key=value``
    sweep_keys: set[str] = field(default_factory=set)  # the keys the multirun varies
    choices: dict[str, Any] = field(default_factory=dict)  # config-group choices (model: xnet, xunit: paper, ...)
    sweep_dir: str | None = None
    num: int | None = None


def job_info() -> JobInfo:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return JobInfo()
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    info = JobInfo(
        multirun=multirun,
        overrides=list(hc.overrides.task),
        choices={
            k: v
            for k, v in OmegaConf.to_container(hc.runtime.choices).items()
            if v is not None and not k.startswith("hydra/")
        },
    )
    if multirun:
        info.sweep_dir = str(hc.sweep.dir)
        info.num = OmegaConf.select(hc, "job.num", default=None)
        params = OmegaConf.select(hc, "sweeper.params", default=None)
        params = OmegaConf.to_container(params) if params else {}
        info.sweep_keys = swept_keys(Path(info.sweep_dir) / "multirun.yaml", params)
    return info


def swept_keys(multirun_yaml: Path, params: dict[str, Any] | None = None) -> set[str]:
    """The keys a multirun varies: those of the sweeper's ``params`` (the experiment's axes) and of its
    command line (``optim.lr=1e-3,1e-4``, from the ``multirun.yaml`` the sweeper saves in the sweep
    dir before launching), the command line winning as it does in the sweep — so
    ``model.net.xunit.kernel_size=9`` given to a sweep whose params list ``1,5,9`` is not an axis."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    raw = [f"{k}={v}" for k, v in (params or {}).items()]
    raw += [str(o) for o in command_line_overrides(multirun_yaml)]
    final = {}
    for override in raw:
        try:
            (parsed,) = OverridesParser.create().parse_overrides([override])
        except Exception:  # a value Hydra's grammar does not take here: not an axis
            continue
        final[parsed.get_key_element().lstrip("+~")] = parsed
    return {key for key, o in final.items() if varies(o)}


def command_line_overrides(multirun_yaml: Path) -> list[Any]:
    """The sweep command's overrides saved in ``multirun.yaml``; none when it is missing or unreadable — a
    second sweep into the same dir may be writing it this moment, and a run name is no reason to fail a job."""
    from omegaconf import OmegaConf

    try:
        return list(OmegaConf.select(OmegaConf.load(multirun_yaml), "hydra.overrides.task", default=None) or [])
    except Exception as e:  # yaml's ScannerError, a file cut short, a directory ...
        if multirun_yaml.exists():
            log.warning("%s: unreadable (%s); run names from the experiment's sweep axes only", multirun_yaml, e)
        return []


def varies(override: Any) -> bool:
    """Whether a parsed override takes more than one value across the sweep's jobs."""
    if not override.is_sweep_override():
        return False
    if override.is_interval_sweep():  # Optuna's interval(...): a range of values
        return True
    try:
        return len(set(override.sweep_string_iterator())) > 1
    except Exception:  # a sweep Hydra cannot list without the config (glob): assume it varies
        return True


def split_override(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def render_override(override: str, groups: set[str], value_keys: set[str]) -> str:
    """``model=xnet`` → ``xnet`` (a group choice), ``arch=xnet_d3_r9`` → ``xnet d3 r9`` (a key shown by
    its value), ``optim.lr=1e-4`` → ``lr=1e-4``."""
    key, value = split_override(override)
    if key in groups or key in value_keys:
        return value.replace("_", " ")
    return f"{key.rsplit('.', 1)[-1]}={value}"


def run_name(info: JobInfo, base: str, value_keys: set[str] = frozenset()) -> str:
    """A run's display name from its overrides: a multirun job by the axes its sweep varies
    (``xnet d3 r9``), a single run by ``base`` and what its command line changed."""
    keep = [o for o in info.overrides if names_a_run(split_override(o)[0])]
    groups = set(info.choices)
    if info.multirun:
        axes = [o for o in keep if split_override(o)[0] in info.sweep_keys] or keep
        return " ".join(render_override(o, groups, value_keys) for o in axes) or base
    return " ".join([base, *(render_override(o, groups, value_keys) for o in keep)])
