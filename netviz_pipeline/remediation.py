"""Bounded self-healing: which step to re-run for what the health sensor saw, with back-off.

The usual causes of stale data are fixed by re-running the step that owns them: softflowd died or lost
its config (router_softflowd re-converges and restarts it), the collector is gone (goflow2), a scrape
job vanished (prometheus_scrape_config), a dashboard was edited by hand (its dashboard asset). Each
subject gets at most `max_attempts` re-runs per incident, spaced by an exponential back-off; after that
it stays red with a diagnosis of what was tried and seen. An incident ends only when the subject has
stayed healthy for `settle_seconds`: one that fails, heals and fails again within that window (a
crash-looping exporter) keeps its attempt count and back-off, so a flapping subject cannot cause a storm
of runs. Pure functions over plain data: the sensor keeps the state in its cursor.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .findings import Finding

# subject prefix -> assets that own it. A collector that is down may be a replaced pod whose new IP
# file_sd targets do not know yet: re-running the scrape config refreshes them.
# A lost collector node is healed by moving GoFlow2 (placement.py) and re-pointing every router at it.
ROUTER_ASSET = "router_softflowd"  # partitioned by router: a router is healed alone
OWNER = {"router": (ROUTER_ASSET,), "collector": ("goflow2", "prometheus_scrape_config"),
         "collector-node": ("goflow2", "prometheus_scrape_config", ROUTER_ASSET),
         "scrape": ("prometheus_scrape_config",), "caretta": ("caretta", "prometheus_scrape_config")}


@dataclass(frozen=True)
class Policy:
    """The bounds (settings' `healing` section; these defaults are its defaults)."""
    max_attempts: int = 3
    backoff_seconds: float = 120.0  # before the 2nd attempt; doubles each time
    backoff_max_seconds: float = 3600.0
    settle_seconds: float = 600.0  # healthy this long ends the incident; a failure before is the same one

    @classmethod
    def of(cls, healing) -> Policy:
        """From the settings' `healing` section (settings.Healing)."""
        return cls(healing.max_attempts, healing.backoff_seconds, healing.backoff_max_seconds, healing.settle_seconds)


@dataclass
class SubjectState:
    failing_since: float | None = None
    attempts: int = 0
    last_attempt: float | None = None
    tried: list[str] = field(default_factory=list)
    healthy_since: float | None = None  # healthy again, but not yet for settle_seconds
    flaps: int = 0  # failures after a recovery within this incident


@dataclass(frozen=True)
class Plan:
    assets: tuple[str, ...]  # to re-run now, in one run
    diagnoses: dict[str, str]  # unhealthy subject -> what was tried and seen
    state: dict[str, SubjectState]


def owners(subject: str) -> tuple[str, ...]:
    kind, _, name = subject.partition(":")
    if kind == "dashboard":
        return (f"{name}_dashboard",)
    return OWNER[kind]


def root_causes(observations: list[Finding]) -> list[Finding]:
    """Drop symptoms explained by a broken shared part: a missing scrape job or a dead collector makes
    every exporter look stale; re-running every router then would be a storm for nothing. A lost (or
    suspect) collector node explains a dead collector too: re-running GoFlow2 on that node cannot help."""
    bad = {o.subject for o in observations if not o.healthy}
    shared_broken = bad & {"scrape", "collector", "collector-node"}

    def symptom(o: Finding) -> bool:  # a lost node's pods are scrape targets too: down for the same reason
        return (o.subject.startswith("router:") and bool(shared_broken)) or (
            o.subject in ("collector", "scrape") and "collector-node" in bad)
    return [o for o in observations if o.healthy or not symptom(o)]


def backoff(policy: Policy, attempts: int) -> float:
    return 0.0 if attempts == 0 else min(policy.backoff_seconds * 2 ** (attempts - 1), policy.backoff_max_seconds)


def plan(observations: list[Finding], state: dict[str, SubjectState], now: float,
         policy: Policy = Policy(), busy: bool = False, undeployed: frozenset[str] = frozenset()) -> Plan:
    """`busy`: a deploy or remediation run is still in flight; observe, but launch nothing.
    `undeployed`: assets this Dagster instance never materialised. Re-running one of them alone is not
    healing, it is a partial first deploy (seen: a fresh in-cluster service re-ran only the scrape config
    of a never-deployed lab; its check waited minutes for targets nobody had created, holding the run
    queue before the user's own netviz_deploy), so such subjects wait for a deploy instead."""
    new: dict[str, SubjectState] = {}
    assets: list[str] = []
    diagnoses: dict[str, str] = {}
    for o in root_causes(observations):
        old = state.get(o.subject)
        if o.healthy:
            # the incident ends once healthy for settle_seconds; until then a failure continues it
            if old is not None:
                since = old.healthy_since if old.healthy_since is not None else now
                if now - since < policy.settle_seconds:
                    new[o.subject] = replace(old, tried=list(old.tried), healthy_since=since)
            continue
        st = old or SubjectState(failing_since=now)
        flapped = st.healthy_since is not None
        st = replace(st, failing_since=now if st.failing_since is None else st.failing_since,
                     tried=list(st.tried), healthy_since=None,
                     flaps=st.flaps + flapped)
        new[o.subject] = st
        if not o.heal:
            diagnoses[o.subject] = o.reason if o.details.get("waiting") else \
                f"{o.reason}; no re-run can fix this, a person must look"
            continue
        targets = owners(o.subject)
        target = " + ".join(targets)
        if o.confirm_after_s and now - st.failing_since < o.confirm_after_s:
            diagnoses[o.subject] = f"{o.reason}; watching: re-runs {target} if it lasts {o.confirm_after_s:.0f}s"
            continue
        never = [a for a in targets if a in undeployed]
        if never:
            diagnoses[o.subject] = (f"{o.reason}; not healed: this Dagster instance never materialised "
                                    f"{', '.join(never)}: run netviz_deploy first")
            continue
        due = st.last_attempt is None or now - st.last_attempt >= backoff(policy, st.attempts)
        if not busy and st.attempts < policy.max_attempts and due:
            st.attempts += 1
            st.last_attempt = now
            st.tried.append(f"re-ran {target} (attempt {st.attempts})")
            assets += [a for a in targets if a not in assets]
        if st.attempts >= policy.max_attempts and not (st.last_attempt == now):
            flapping = f" (failed again {st.flaps} time(s) after recovering)" if st.flaps else ""
            diagnoses[o.subject] = (f"still unhealthy after {st.attempts} re-runs of {target}{flapping}: "
                                    f"{o.reason}; tried: {'; '.join(st.tried)}")
        else:
            diagnoses[o.subject] = f"{o.reason}; " + (f"re-running {target}" if st.last_attempt == now
                                                      else f"waiting for back-off before re-running {target}"
                                                      if not busy else "a deploy or remediation run is in flight")
    return Plan(tuple(assets), diagnoses, new)


@dataclass(frozen=True)
class Rerun:
    """One remediation run: these assets, for one router's partition or for everything (None)."""

    assets: tuple[str, ...]
    partition: str | None
    subjects: tuple[str, ...]


def reruns(p: Plan, now: float) -> list[Rerun]:
    """The plan's re-runs as runs to request: each router heals alone (its partition of router_softflowd,
    so one router's re-run never touches another), the shared steps together in one run. A moved
    collector re-points every router in that same run (router_softflowd without a partition, after
    goflow2 as in a deploy), which covers any router's own re-run."""
    due = sorted(s for s, st in p.state.items() if st.last_attempt == now)
    shared_subjects = tuple(s for s in due if not s.startswith("router:"))
    wanted = {a for s in shared_subjects for a in owners(s)}
    shared = tuple(a for a in p.assets if a in wanted)
    out = [Rerun(shared, None, tuple(due) if ROUTER_ASSET in shared else shared_subjects)] if shared else []
    if ROUTER_ASSET not in shared:
        out += [Rerun((ROUTER_ASSET,), s.partition(":")[2], (s,)) for s in due if s.startswith("router:")]
    return out


def dump(state: dict[str, SubjectState]) -> dict:
    return {k: asdict(v) for k, v in state.items()}


def load(data: dict | None) -> dict[str, SubjectState]:
    return {k: SubjectState(**v) for k, v in (data or {}).items()}
