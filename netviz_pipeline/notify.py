"""Tell a person, once per incident: a Slack-compatible webhook when a check fails, a remediation gives
up, a subject recovers, or a netviz run fails.

The payload is `{"text": fallback, "blocks": [mrkdwn sections]}`, which Slack, Mattermost and most
"Slack-compatible" receivers accept. The webhook URL is a secret (a Slack one carries its token in the
path): it is read from the environment variable `notify.webhook_url_env` names at send time and never
written to settings, logs, metadata or exception messages. Delivery is best effort: it never raises into
a sensor, and the check evaluations in Dagster stay the record.
"""
from __future__ import annotations

import logging
import os
import time
from functools import cached_property
from typing import Any
from urllib.parse import quote, urlsplit

import dagster as dg
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import remediation
from .findings import Finding
from .jobs import REMEDIATION_TAG, netviz_deploy, netviz_router, netviz_verify
from .resources.config import NetvizConfig
from .settings import SettingsError, url_join

_LOG = logging.getLogger(__name__)

NETVIZ_JOBS = (netviz_deploy.name, netviz_router.name, netviz_verify.name)
# subject kind -> the asset check the flow_freshness sensor records it under (see sensors._evaluation)
_CHECK = {"router": "netflow_arriving", "caretta": "caretta_links_present"}

MAX_OUTBOX = 20  # notifications a silent receiver leaves for later ticks; older ones are dropped
_MIN_ATTEMPT_SECONDS = 0.5
_MAX_REASON = 600  # chars: a chat message is a pointer to Dagster, not the full diagnosis
_MAX_ERROR = 900


# ---------------------------------------------------------------- payloads (pure)
def escape(text: Any) -> str:
    """Slack mrkdwn treats &, < and > as control characters (links, mentions): escape them."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: Any, limit: int) -> str:
    text = str(text).strip()
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _link_markup(link: str | None) -> str:
    # '|' and '>' end Slack's <url|label>; a validated URL has neither, but a path appended to it might.
    return f"<{quote(link, safe=':/?&=#%@+,;~')}|Open in Dagster>" if link else ""


def _payload(fallback: str, body: str, link: str | None) -> dict:
    more = _link_markup(link)
    return {"text": fallback + (f" {more}" if more else ""),
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": body + (f"\n{more}" if more else "")}}]}


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 90:
        return f"{s} s"
    if s < 90 * 60:
        return f"{round(s / 60)} min"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m} min" if m else f"{h} h"


def check_failed(subject: str, reason: str, details: dict | None = None, link: str | None = None) -> dict:
    reason = escape(_clip(reason, _MAX_REASON))
    lines = "".join(f"\n• *{escape(k)}*: {escape(_clip(v, 200))}" for k, v in (details or {}).items())
    return _payload(f":red_circle: netviz: {escape(subject)} is unhealthy: {reason}",
                    f":red_circle: *netviz: {escape(subject)} is unhealthy*\n{reason}{lines}", link)


def remediation_gave_up(subject: str, tried: list[str], reason: str, link: str | None = None) -> dict:
    reason = escape(_clip(reason, _MAX_REASON))
    steps = "".join(f"\n• {escape(_clip(t, 200))}" for t in tried[-5:])
    return _payload(f":warning: netviz: gave up healing {escape(subject)} after {len(tried)} re-run(s): {reason}",
                    f":warning: *netviz: gave up healing {escape(subject)}*: it needs a person\n{reason}"
                    f"\n_tried:_{steps or ' nothing'}", link)


def recovered(subject: str, after_seconds: float, link: str | None = None) -> dict:
    text = f":large_green_circle: netviz: {escape(subject)} recovered after {_duration(after_seconds)}"
    return _payload(text, text, link)


def flapping(subject: str, reason: str, settle_seconds: float, link: str | None = None) -> dict:
    reason = escape(_clip(reason, _MAX_REASON))
    head = f"netviz: {escape(subject)} failed again after recovering (flapping)"
    tail = (f"Re-runs continue within the same incident's bound; no further message until it has stayed "
            f"healthy for {_duration(settle_seconds)}.")
    return _payload(f":large_orange_circle: {head}: {reason}", f":large_orange_circle: *{head}*\n{reason}\n{tail}",
                    link)


def stable(subject: str, after_seconds: float, settle_seconds: float, link: str | None = None) -> dict:
    text = (f":large_green_circle: netviz: {escape(subject)} stable again: healthy for {_duration(settle_seconds)} "
            f"after flapping (incident of {_duration(after_seconds)})")
    return _payload(text, text, link)


def run_failed(job_name: str, run_id: str, error: str, link: str | None = None) -> dict:
    error = escape(_clip(error, _MAX_ERROR))
    return _payload(f":x: netviz: run of {escape(job_name)} failed: {error}",
                    f":x: *netviz: run of {escape(job_name)} failed* (run `{escape(run_id[:8])}`)\n{error}", link)


# ---------------------------------------------------------------- what to announce (pure)
def transitions(announced: dict[str, dict], observations: list[Finding], plan: remediation.Plan,
                now: float, *, policy: remediation.Policy = remediation.Policy(), busy: bool = False,
                link: str | None = None) -> tuple[list[dict], dict[str, dict]]:
    """What to tell a person this tick, so each incident is announced once. Returns (payloads, announced').

    Contract, for the flow_freshness sensor (call it after `remediation.plan`, with the same
    observations, `now`, policy and `busy`; keep `announced'` in the cursor next to the remediation
    state, as sensors.flow_freshness does):

    - `announced` is plain JSON data: subject -> {"stage": "failing" | "recovered", "since": epoch
      seconds the incident began, "gave_up": told that re-runs gave up, "flapped": told it flaps}.
      Start with {}. (A cursor's older stage "gave_up" reads as failing with gave_up.)
    - An incident is remediation's: it ends once the subject has stayed healthy for
      `policy.settle_seconds` (its state leaves the plan), so each message below is sent at most once
      per incident, however often the subject flaps.
    - check_failed: a subject that is unhealthy, a root cause (remediation.root_causes: routers hidden by
      a broken scrape job or collector are not announced one by one) and not yet announced. The reason
      is the plan's diagnosis (what is seen and what is being re-run). A subject no re-run can fix
      (Finding.heal False) gets only this message: it has nothing to give up on.
    - remediation_gave_up: an announced (or new) subject whose re-runs are exhausted
      (SubjectState.attempts >= policy.max_attempts), once the last re-run is no longer the one launched
      this tick and no deploy or remediation run is in flight (`busy`), i.e. it had its chance. A
      subject first seen in that state gets only this message.
    - recovered: an announced subject observed healthy for the first time in its incident (with how long
      it was unhealthy). A subject never announced recovers silently.
    - flapping: a recovered subject failing again within the incident, once; further flaps are silent.
    - stable: the end of an incident that flapped (healthy for settle_seconds), once.
    - Nothing otherwise: steady state (still failing, still healthy, masked by a shared cause) sends
      nothing. A subject no longer observed at all (removed from the settings) is forgotten silently.

    Delivery is best effort: the state moves on whether or not `send` succeeds, so a webhook outage
    loses those messages instead of repeating them every tick.
    """
    seen = {o.subject: o for o in observations}
    out: list[dict] = []
    new: dict[str, dict] = {}
    for subject, entry in announced.items():
        o = seen.get(subject)
        if o is None:
            continue
        entry = _entry(entry)
        open_incident = subject in plan.state  # remediation keeps it until settled
        if o.healthy:
            if entry["stage"] == "failing" and not entry.get("flapped"):
                out.append(recovered(subject, now - entry["since"], link))
            if open_incident:
                new[subject] = entry | {"stage": "recovered"}
            elif entry.get("flapped"):
                out.append(stable(subject, now - entry["since"], policy.settle_seconds, link))
        elif entry["stage"] == "recovered":  # failed again within the incident
            new[subject] = entry | {"stage": "failing", "flapped": True}
            if not entry.get("flapped"):
                out.append(flapping(subject, plan.diagnoses.get(subject, o.reason), policy.settle_seconds, link))
        else:
            new[subject] = entry  # still failing, or hidden behind a shared cause: already told
    for o in remediation.root_causes(observations):
        if o.healthy:
            continue
        st = plan.state.get(o.subject)
        gave_up = (st is not None and st.attempts >= policy.max_attempts and st.last_attempt != now
                   and not busy)
        entry = new.get(o.subject)
        if entry is None:
            since = st.failing_since if st is not None and st.failing_since is not None else now
            entry = new[o.subject] = {"stage": "failing", "since": since}
            if not gave_up:
                out.append(check_failed(o.subject, plan.diagnoses.get(o.subject, o.reason),
                                        _details(o, st, policy), link))
        if gave_up and not entry.get("gave_up"):
            entry["gave_up"] = True
            out.append(remediation_gave_up(o.subject, list(st.tried), o.reason, link))
    return out, new


def _entry(entry: dict) -> dict:
    """An announced entry in today's shape (a cursor may hold the older stage "gave_up")."""
    entry = dict(entry)
    entry["since"] = float(entry.get("since", 0))
    if entry.get("stage") == "gave_up":
        entry.update(stage="failing", gave_up=True)
    return entry


def _details(o: Finding, st: remediation.SubjectState | None, policy: remediation.Policy) -> dict:
    kind = o.subject.partition(":")[0]
    details = {"check": _CHECK[kind]} if kind in _CHECK else {}
    if not o.heal:  # the planner never re-runs these (e.g. an unreachable router)
        details["re-runs"] = "none: a re-run cannot fix this"
        return details
    details["owner"] = " + ".join(remediation.owners(o.subject))
    details["re-runs"] = f"{st.attempts if st else 0} of {policy.max_attempts}"
    return details


# ---------------------------------------------------------------- delivery
def _scrub(text: str, url: str) -> str:
    """Remove the webhook URL and the parts that carry its token (path, query) from a message."""
    parts = urlsplit(url)
    secrets = {url, url.rstrip("/"), requests.utils.requote_uri(url), parts.path, parts.query,
               parts.path + "?" + parts.query, parts.netloc}
    for s in sorted((s for s in secrets if len(s) > 1), key=len, reverse=True):
        text = text.replace(s, "<redacted>")
    return text


class _RedactWebhooks(logging.Filter):
    """urllib3 logs the request path on every retry (WARNING) and request (DEBUG): for a webhook that
    is the token. Scrubs the webhook URLs this process sends to from urllib3's records."""

    urls: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.urls:
            return True
        try:  # a filter that raises would break urllib3's request, not just the log line
            msg = clean = record.getMessage()
        except Exception:
            return True
        for url in self.urls:
            clean = _scrub(clean, url)
        if clean != msg:
            record.msg, record.args = clean, ()
        return True


_REDACT = _RedactWebhooks()
for _name in ("urllib3.connectionpool", "urllib3.util.retry"):  # the loggers that name request URLs
    if not any(isinstance(f, _RedactWebhooks) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(_REDACT)


def _timed_out(exc: BaseException) -> bool:
    """requests raises a read timeout that urllib3's Retry gave up on as a ConnectionError: look inside."""
    inner = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.Timeout) or isinstance(inner, urllib3.exceptions.TimeoutError)


def _why(exc: BaseException, url: str) -> str:
    # requests' ConnectionError text embeds the request path (the token); the innermost reason does not,
    # but scrub it anyway.
    inner = getattr(exc.args[0], "reason", None) if exc.args else None
    return f"{type(exc).__name__}: {_scrub(str(inner or exc), url)[:200]}"


class Notifier:
    """POSTs payloads to the webhook in env `url_env`. `send` returns whether it was delivered and never
    raises; with no webhook configured it is a no-op returning False."""

    def __init__(self, url_env: str | None, timeout_seconds: float = 5.0, dagster_url: str | None = None,
                 retries: int = 2, backoff_seconds: float = 0.2):
        self.url_env, self.timeout_seconds, self.dagster_url = url_env, timeout_seconds, dagster_url
        self.retries, self.backoff_seconds = retries, backoff_seconds

    @property
    def enabled(self) -> bool:
        return bool(self.url_env)

    def link(self, path: str = "") -> str | None:
        """A link into the Dagster UI, when notify.dagster_url is set."""
        return url_join(self.dagster_url, path) if self.dagster_url and path else self.dagster_url

    @cached_property
    def _session(self) -> requests.Session:
        # Retry refused connections and 5xx; not read timeouts (the receiver may have posted already).
        # Retry-After is ignored: a rate-limited webhook must not stall the sensor for its full wait.
        retry = Retry(total=self.retries, connect=self.retries, status=self.retries, read=0, other=0,
                      status_forcelist=(500, 502, 503, 504), allowed_methods=frozenset({"POST"}),
                      backoff_factor=self.backoff_seconds, raise_on_status=False, respect_retry_after_header=False)
        s = requests.Session()
        s.mount("http://", HTTPAdapter(max_retries=retry))
        s.mount("https://", HTTPAdapter(max_retries=retry))
        return s

    def send(self, payload: dict, log: Any = None) -> bool:
        return self._post(payload, log, self.timeout_seconds) == "sent"

    def send_within(self, payloads: list[dict], budget_seconds: float, log: Any = None) -> list[dict]:
        """Send in order, spending at most `budget_seconds` in all: each attempt's timeout is cut to what
        is left (shared by its retries), and a receiver that does not answer in time ends this round.
        Returns the payloads not attempted, for the caller to carry to its next round (a sensor tick
        must end well inside Dagster's limit, or it loses its cursor)."""
        deadline = time.monotonic() + budget_seconds
        for i, payload in enumerate(payloads):
            left = deadline - time.monotonic()
            if left < _MIN_ATTEMPT_SECONDS:
                return payloads[i:]
            if self._post(payload, log, min(self.timeout_seconds, left / (self.retries + 1))) == "timeout":
                (log or _LOG).warning(f"webhook receiver did not answer in time: {len(payloads) - i - 1} "
                                      "notification(s) kept for the next tick")
                return payloads[i + 1:]
        return []

    def _post(self, payload: dict, log: Any, timeout: float) -> str:
        """One POST with its retries: "sent", "failed" (refused, an error status, an unusable URL),
        "timeout" (no answer in time) or "off" (no webhook configured)."""
        log = log or _LOG
        if not self.url_env:
            return "off"
        url = os.environ.get(self.url_env, "").strip()
        where = f"webhook from ${self.url_env}"
        if not url:
            log.warning(f"notification not sent: {self.url_env} is not set")
            return "failed"
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            log.warning(f"notification not sent: {self.url_env} does not hold an http(s) URL")
            return "failed"
        _RedactWebhooks.urls.add(url)
        try:
            resp = self._session.post(url, json=payload, timeout=timeout, allow_redirects=False)
        except (requests.RequestException, ValueError) as exc:  # ValueError: e.g. an unparsable port
            log.warning(f"notification not delivered ({where}): {_why(exc, url)}")
            return "timeout" if _timed_out(exc) else "failed"
        if not 200 <= resp.status_code < 300:
            log.warning(f"notification not delivered ({where}): HTTP {resp.status_code} "
                        f"{_scrub(resp.text.strip(), url)[:200]!r}")
            return "failed"
        return "sent"


class NotifierResource(dg.ConfigurableResource):
    """The Notifier for the settings' `notify` section. Unusable settings make `send` log and return False:
    a notification must never break the sensor that sends it."""

    config: NetvizConfig

    @cached_property
    def notifier(self) -> Notifier:
        n = self.config.settings.notify
        return Notifier(n.webhook_url_env, n.timeout_seconds, n.dagster_url)

    def _get(self, log: Any) -> Notifier | None:
        try:
            return self.notifier
        except SettingsError as exc:
            (log or _LOG).warning(f"notification not sent: settings unusable ({len(exc.errors)} problem(s))")
            return None

    def send(self, payload: dict, log: Any = None) -> bool:
        n = self._get(log)
        return n.send(payload, log) if n else False

    def deliver(self, outbox: list[dict], payloads: list[dict], log: Any = None) -> list[dict]:
        """This tick's payloads after those an earlier tick could not attempt, within the settings'
        `notify.send_budget_seconds`; returns the new outbox (at most MAX_OUTBOX, oldest dropped)."""
        n = self._get(log)
        if n is None or not n.enabled:
            return []
        left = n.send_within(list(outbox) + list(payloads), self.config.settings.notify.send_budget_seconds, log)
        if len(left) > MAX_OUTBOX:
            (log or _LOG).warning(f"{len(left) - MAX_OUTBOX} notification(s) dropped: the receiver is behind")
        return left[-MAX_OUTBOX:]

    def link(self, path: str = "") -> str | None:
        n = self._get(None)
        return n.link(path) if n else None


# ---------------------------------------------------------------- failed runs
def _innermost(err: Any) -> Any:
    while getattr(err, "cause", None) is not None:
        err = err.cause
    return err


def run_error(context: dg.RunFailureSensorContext, max_steps: int = 3) -> str:
    """The failed steps and their innermost error (the user's exception, not Dagster's wrapper)."""
    steps = context.get_step_failure_events()
    parts = []
    for ev in steps[:max_steps]:
        err = getattr(ev.event_specific_data, "error", None)
        msg = _innermost(err).message.strip() if err is not None else (ev.message or "failed")
        parts.append(f"{ev.step_key}: {msg}")
    if len(steps) > max_steps:
        parts.append(f"and {len(steps) - max_steps} more failed step(s)")
    return "\n".join(parts) or (context.failure_event.message or "the run failed")


def is_netviz_run(run: Any) -> bool:
    return run.job_name in NETVIZ_JOBS or run.tags.get(REMEDIATION_TAG) == "true"


@dg.run_failure_sensor(name="netviz_run_failure", default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Posts failed netviz_deploy, netviz_router, netviz_verify and remediation runs to the "
                                   "notify webhook (no-op when none is configured)")
def netviz_run_failure(context: dg.RunFailureSensorContext, notifier: NotifierResource):
    run = context.dagster_run
    if not is_netviz_run(run):
        return dg.SkipReason(f"{run.job_name} is not a netviz job")
    # Remediation runs use the sensor's anonymous asset job: name them by what they heal instead.
    name = (f"remediation of {run.tags.get('netviz/remediates') or 'health'}"
            if run.tags.get(REMEDIATION_TAG) == "true" else run.job_name)
    notifier.send(run_failed(name, run.run_id, run_error(context), notifier.link(f"runs/{run.run_id}")),
                  log=context.log)
    return None
