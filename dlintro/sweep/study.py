"""The study: Optuna's record of every trial, in a database that several processes (on one
machine or many) share. SQLite in the sweep folder unless `--storage URL` names another.

Who counts against the budget: every trial except those *handed on* (a trial whose process
was stopped or killed is failed and enqueued again with the same parameters and a note of its
run directory, so the next trial resumes it from its checkpoint: the handed-on trial is then
replaced, and only its replacement counts) and those *void* (asked for after the budget was
spent by another process: trial numbers are handed out in order, so a trial with `trials`
counted trials below it is over the budget and is given back at once). That keeps the count
exact however many processes ask at the same moment.

A trial of a dead process is found in two ways: on this machine by its pid (at once), on
another by its heartbeat, which its process records every HEARTBEAT_SECONDS (stale after
GRACE_SECONDS). Optuna is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlintro import runs
from dlintro.errors import UserError
from dlintro.sweep import engines
from dlintro.sweep.space import Sweep

STORAGE_FILE = "study.db"
SPEC_FILE = "sweep.json"
HEARTBEAT_SECONDS = 20
GRACE_SECONDS = 120


def default_storage(out: Path) -> str:
    """SQLite in the sweep folder: nothing to start."""
    return f"sqlite:///{out.resolve() / STORAGE_FILE}"


def shown_url(url: str) -> str:
    """A storage URL without its password, for messages and sweep.json."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy can read: say it as given, without credentials
        return url.split("@")[-1]


def _quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*heartbeat.*")


def storage(url: str) -> Any:
    """The RDB storage at `url` with heartbeats; a bad URL or an unreachable database is a
    UserError naming it."""
    import optuna

    _quiet()
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 120}}  # several processes write one file
    from sqlalchemy.exc import IntegrityError

    def make() -> Any:
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS, heartbeat_stale_trial_callback=requeue,
            )  # fmt: skip
        except IntegrityError as exc:  # two processes made the tables at once: open again
            from sqlalchemy.exc import OperationalError

            raise OperationalError("creating the tables", None, exc) from exc

    try:
        return retry(make)
    except ImportError as exc:
        raise UserError(
            f"--storage {shown_url(url)}: no database driver for it ({exc}); for PostgreSQL: "
            "pip install 'psycopg[binary]'"
        ) from None
    except Exception as exc:  # sqlalchemy's many connection and URL errors
        msg = " ".join(str(exc).split())[:300]
        raise UserError(
            f"--storage {shown_url(url)}: cannot open the study database: {msg}"
        ) from None


@dataclass(frozen=True)
class Opened:
    """A study and the storage it lives in (the storage records heartbeats and hands trials
    on, which the Study object does not offer)."""

    study: Any
    storage: Any


def open_study(sweep: Sweep, url: str, seed_offset: int = 0, create: bool = True) -> Opened:
    """The sweep's study in `url`, created when missing (with the sweep recorded in it), with
    the sweep's sampler and pruner. A study made from another sweep is refused."""
    import optuna

    st = storage(url)
    pruner = engines.build("pruner", **sweep.pruner)
    if not create and sweep.name not in optuna.get_all_study_names(st):
        raise UserError(f"{shown_url(url)}: holds no study '{sweep.name}'")
    study = optuna.create_study(
        storage=st, study_name=sweep.name, direction=sweep.direction, pruner=pruner,
        load_if_exists=True,
    )  # fmt: skip
    # A seeded sampler starts past the trials already drawn (and past other processes'), so
    # that a resumed sweep or a second worker does not draw the same points again.
    offset = seed_offset + len(study.get_trials(deepcopy=False))
    study.sampler = engines.build("sampler", **sweep.sampler, seed_offset=offset)
    recorded = study.user_attrs.get("fingerprint")
    if recorded is None:
        study.set_user_attr("sweep", sweep.to_dict())
        study.set_user_attr("fingerprint", sweep.fingerprint())
    elif recorded != sweep.fingerprint():
        raise UserError(
            f"{shown_url(url)}: study '{sweep.name}' was started from another sweep "
            f"({_differences(study.user_attrs.get('sweep') or {}, sweep.to_dict())}); give "
            "another --out (or --storage) for a new sweep"
        )
    return Opened(study, st)


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = [k for k in ("base", "params", "trial_overrides", "objective") if old.get(k) != new[k]]
    return "different " + ", ".join(keys) if keys else "different settings"


def prepare(sweep: Sweep, out: Path, url: str | None) -> tuple[str, Opened]:
    """Make or reopen the sweep folder and its study; return (storage URL, the study). Nothing
    is written when the folder belongs to something else or the study to another sweep."""
    spec = out / SPEC_FILE
    ours = spec.is_file() or (out / STORAGE_FILE).is_file()  # (another process is making it)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not ours)):
        raise UserError(f"{out}: exists and is not a sweep folder; give a new --out")
    given = url is not None
    url = url or default_storage(out)
    if given:  # checked before the folder is made
        opened = open_study(sweep, url)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the sweep folder: {exc.strerror}") from None
    if not given:  # SQLite inside the folder; an existing study is checked before the spec
        opened = open_study(sweep, url)
    record = {"study": sweep.name, "storage": shown_url(url), "sweep": sweep.to_dict()}
    runs.write_json(spec, record)
    return url, opened


def read_spec(out: Path) -> dict[str, Any]:
    """sweep.json of a sweep folder: the study's name, its storage and the sweep."""
    path = out / SPEC_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{out}: not a sweep folder (no {SPEC_FILE}); give one that `dlintro "
                        "sweep` wrote") from None  # fmt: skip
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable: {exc}") from None


# --------------------------------------------------------------------------- the budget


def _replaced(trials: list[Any]) -> set[int]:
    return {int(t.user_attrs["replaces"]) for t in trials if "replaces" in t.user_attrs}


def counted(trials: list[Any]) -> list[Any]:
    """The trials that count against the budget (not handed on, not void)."""
    replaced = _replaced(trials)
    return [t for t in trials if t.number not in replaced and not t.user_attrs.get("void")]


def budget_left(study: Any, trials: int) -> bool:
    """Whether a process should ask for another trial: one waits to be resumed, or fewer than
    `trials` count so far (running ones included)."""
    from optuna.trial import TrialState

    everything = study.get_trials(deepcopy=False)
    waiting = any(t.state == TrialState.WAITING for t in counted(everything))
    return waiting or len(counted(everything)) < trials


def over_budget(study: Any, number: int, trials: int) -> bool:
    """Whether trial `number` came after the budget was spent (it is then given back)."""
    below = [t for t in counted(study.get_trials(deepcopy=False)) if t.number < number]
    return len(below) >= trials


# --------------------------------------------------------------------------- stale trials


def retry(fn: Callable[[], Any], attempts: int = 20) -> Any:
    """`fn()`, again after a pause while the database is busy (SQLite refuses a write that
    meets another process's at once, whatever the timeout)."""
    from sqlalchemy.exc import OperationalError

    for i in range(attempts):
        try:
            return fn()
        except OperationalError:
            if i == attempts - 1:
                raise
            time.sleep(0.25 + 0.25 * i)
    return None


def _replacement(study: Any, number: int) -> Any:
    """The trial enqueued to continue trial `number`, if there is one."""
    return next((t for t in study.get_trials(deepcopy=False)
                 if t.user_attrs.get("replaces") == number
                 and not t.user_attrs.get("void")), None)  # fmt: skip


def requeue(study: Any, frozen: Any) -> None:
    """Enqueue a stopped trial again (unless that was done): the same parameters, and where
    its run directory is, so that the process that takes it resumes that run."""
    if _replacement(study, frozen.number) is not None:
        return
    attrs = frozen.user_attrs
    retry(lambda: study.enqueue_trial(
        dict(frozen.params),
        user_attrs={"replaces": frozen.number, "resume": attrs.get("run_dir"),
                    "resume_host": attrs.get("host")},
    ))  # fmt: skip


def trial_id(opened: Opened, number: int) -> int:
    st = opened.storage
    return st.get_trial_id_from_study_id_trial_number(
        st.get_study_id_from_name(opened.study.study_name), number
    )


def hand_on(opened: Opened, number: int) -> bool:
    """Enqueue running trial `number` again (it was stopped, or its process died), then fail
    it; False when another process got there first. In this order a process killed in
    between leaves a replacement (the next reclaim only fails the original), never a trial
    failed without one. Two processes that enqueue at the same moment keep the first
    replacement: the others are given back (void)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    st, tid, study = opened.storage, trial_id(opened, number), opened.study
    frozen = st.get_trial(tid)
    if frozen.state.is_finished():
        return False
    requeue(study, frozen)
    try:
        won = bool(retry(lambda: st.set_trial_state_values(tid, state=TrialState.FAIL)))
    except UpdateFinishedTrialError:
        won = False
    extra = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("replaces") == number and not t.user_attrs.get("void")
    ][1:]
    for dup in extra:  # fmt: skip
        dup_id = trial_id(opened, dup.number)
        with contextlib.suppress(UpdateFinishedTrialError):  # done meanwhile: it stays
            retry(lambda i=dup_id: st.set_trial_user_attr(i, "void", "a second replacement"))
            retry(lambda i=dup_id: st.set_trial_state_values(i, state=TrialState.FAIL))
    return won


def reclaim(opened: Opened) -> list[int]:
    """Hand on the running trials whose process is gone: on this host by pid, elsewhere by a
    stale heartbeat. Returns their numbers."""
    import optuna
    from optuna.trial import TrialState

    study, host, found = opened.study, socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid, where = t.user_attrs.get("pid"), t.user_attrs.get("host")
        since = t.datetime_start.timestamp() if t.datetime_start else None
        dead = where == host and runs.process_alive(pid, host, since) is False
        if dead and pid != os.getpid() and hand_on(opened, t.number):
            found.append(t.number)
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)  # other hosts: heartbeat older than the grace
    after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    return found + sorted(before - after)


class Heartbeat:
    """While a trial runs: its heartbeat in the storage every HEARTBEAT_SECONDS."""

    def __init__(self, opened: Opened, number: int) -> None:
        self.storage, self.id = opened.storage, trial_id(opened, number)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(Exception):  # a busy database: again at the next beat
                self.storage.record_heartbeat(self.id)
            self.stop.wait(HEARTBEAT_SECONDS)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
