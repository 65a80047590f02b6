"""Driver-side Tune callbacks that keep a search's cluster clean and its clock honest.

Freeing worker groups: Ray Train frees a finished trial's group through its own cleaner,
which needs the dashboard (state API) and only knows a group once its workers started.
Timing: each trial's wall time against the time its folds computed; the difference is
what a trial costs beyond the work (actors and workers starting, imports, model load).
"""

from __future__ import annotations

import time

import ray
from ray import tune


def release_placement_group(pg_hex: str | None) -> bool:
    """Remove a finished trial's worker placement group; False if it is already gone.

    Ray Train's own cleaner asks the state API, which needs the dashboard, whether the
    controller is still alive. Without the dashboard (`--no-dashboard`) a finished or
    ASHA-stopped trial's workers kept their CPUs reserved, and the next trial's workers
    waited for them until the start-up timeout failed the trial.
    """
    from ray.util.placement_group import (
        PlacementGroup,
        placement_group_table,
        remove_placement_group,
    )

    if not pg_hex:
        return False
    group = PlacementGroup(ray.PlacementGroupID.from_hex(pg_hex))
    if placement_group_table(group).get("state", "REMOVED") == "REMOVED":
        return False
    remove_placement_group(group)
    return True


class ReleaseWorkerGroups(tune.Callback):
    """Driver side: frees each ended trial's worker group, stopped ones included, and the
    group of a trial Tune restarts: when a lost node takes the trial's driver, Ray
    reschedules the old group's bundles onto the surviving nodes and nothing frees them
    (seen: the restarted trial waited for those CPUs until its start-up timeout).

    Each group is freed `RELEASE_DELAY_S` after its trial ended, not at once: a Train
    controller still alive takes a vanished group for a failure and starts a new one, and
    if it dies while it does so, Ray keeps that new group reserved for good (seen: it
    starved every later search on the cluster). By then the trial has aborted its
    controller (`run_trial`) or the controller died with the trial's actor."""

    RELEASE_DELAY_S = 5.0

    def __init__(self):
        self._due: dict[str, float] = {}  # worker group id -> when to free it

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._schedule(trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._schedule(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._schedule(trial)

    def on_step_begin(self, iteration, trials, **info):
        now = time.monotonic()
        for pg_hex in [pg for pg, due in self._due.items() if due <= now]:
            del self._due[pg_hex]
            try:
                release_placement_group(pg_hex)
            except Exception as err:  # never let clean-up break the search
                print(f"note: could not free worker group {pg_hex} ({err})", flush=True)

    def _schedule(self, trial) -> None:
        pg_hex = (trial.last_result or {}).get("worker_pg")
        if pg_hex:
            self._due[pg_hex] = time.monotonic() + self.RELEASE_DELAY_S


def sweep_orphan_placement_groups(rounds: int = 3) -> None:
    """At the end of a search: trials killed while their worker group was starting can
    leave placement groups.

    Only this search's own (its Ray job's) groups: on a shared cluster other jobs' groups
    are theirs to keep. A group is freed only after `ReleaseWorkerGroups.RELEASE_DELAY_S`,
    once the Train controller that made it has died with its trial (freed under a live
    controller, it would be replaced by a new one); a later round frees any such group.
    """
    import ray
    from ray.util.state import list_placement_groups

    context = ray.get_runtime_context()
    job = context.get_job_id()
    # The state API, left to find a cluster itself, takes the newest on this machine, which
    # need not be ours; job ids repeat across clusters (each one's first job is 01000000).
    cluster = context.gcs_address

    def leftovers() -> list[str]:
        found = list_placement_groups(
            address=cluster, filters=[("state", "!=", "REMOVED")], limit=1000
        )
        return [
            pg.placement_group_id for pg in found if pg.creator_job_id == job and not pg.is_detached
        ]

    freed, delay = 0, ReleaseWorkerGroups.RELEASE_DELAY_S
    try:
        due = time.monotonic() + delay
        while left := leftovers():  # most go by themselves: aborting trials free their own
            if time.monotonic() >= due:
                freed += sum(release_placement_group(pg) for pg in left)
                rounds -= 1
                if rounds == 0:
                    break
                due = time.monotonic() + delay
            time.sleep(1.0)
    except Exception as err:  # no dashboard (state API) -> nothing to sweep with
        print(f"note: could not sweep placement groups ({type(err).__name__})")
    if freed:  # each one held CPUs or GPUs until now: worth knowing (the load test looks)
        print(f"note: freed {freed} placement group(s) that ended trials had left behind")


class TrialClock(tune.Callback):
    """Each trial's wall time, from Tune starting it to its end, as the driver sees it.
    A resumed search's Tune runs a restored copy of its callbacks, so it is only known for
    trials of a search that ran uninterrupted."""

    def __init__(self):
        self._started: dict[str, float] = {}
        self._wall: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._started.setdefault(trial.trial_id, time.monotonic())

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._stop(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._stop(trial)

    def _stop(self, trial) -> None:
        if trial.trial_id in self._started:
            self._wall[trial.trial_id] = time.monotonic() - self._started[trial.trial_id]

    def wall_s(self, trial_id: str) -> float | None:
        return self._wall.get(trial_id)
