"""Prometheus metrics. Labels are bounded: policy names, scopes, APIs, outcomes, reasons,
status classes. Never an account, organization or cluster id.

With ``serve --workers N`` every worker writes its values to files in one directory the
parent made for this serve (prometheus-client's multiprocess mode), and a scrape, whichever
worker takes it, adds them up: counting each worker alone, successive scrapes disagreed.
Gauges say how they combine across workers (``multiprocess_mode``).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from gateway.admission import Admission
from gateway.answers import UPSTREAM_FAILURES, Answer
from gateway.budget.outage import Outage
from gateway.metering import Outcome, UsageRecord

SHARED_DIR = "PROMETHEUS_MULTIPROC_DIR"  # the variable prometheus-client itself reads

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_GAP_BUCKETS = (-10000, -1000, -100, 0, 100, 1000, 4000, 16000, 64000, 256000)


class Metrics:
    """One registry per running gateway, so tests and replays never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Set when this process writes its values where its sibling workers write theirs.
        self.shared_dir = os.environ.get(SHARED_DIR) if _values_shared() else None
        self.requests = Counter(
            "gateway_requests",
            "Requests the proxy answered, by who wrote the answer (gateway, upstream, none: "
            "the client left first) and status class.",
            ["answered_by", "status_class"],
            registry=r,
        )
        self.refusals = Counter(
            "gateway_refusals",
            "Answers the gateway wrote itself instead of forwarding, by reason and refusing "
            "policy (empty unless the reason is rate_limit).",
            ["reason", "policy"],
            registry=r,
        )
        self.upstream_failures = Counter(
            "gateway_upstream_failures",
            "Requests the upstream failed (unreachable, failed once sent, timeout: answered "
            "by the gateway; broken: a stream that broke after it began).",
            ["kind"],
            registry=r,
        )
        self.decisions = Counter(
            "gateway_decisions",
            "Budget decisions by policy, scope and result (admitted, refused, shadow_refused).",
            ["policy", "scope", "result"],
            registry=r,
        )
        self.exchanges = Counter(
            "gateway_exchanges",
            "Finished metered exchanges by API and outcome.",
            ["api", "outcome"],
            registry=r,
        )
        self.tokens_reserved = Counter(
            "gateway_tokens_reserved",
            "Tokens reserved at admission (input estimate + cap).",
            ["api"],
            registry=r,
        )
        self.tokens_settled = Counter(
            "gateway_tokens_settled", "Tokens actually used, as settled.", ["api"], registry=r
        )
        self.reservation_gap = Histogram(
            "gateway_reservation_gap_tokens",
            "Reserved minus actual tokens per exchange.",
            ["api"],
            buckets=_GAP_BUCKETS,
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "gateway_upstream_duration_seconds",
            "Duration of exchanges the upstream answered, by API and the upstream's status "
            "class (the gateway's own answers are not here).",
            ["api", "status_class"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.storage_errors = Counter(
            "gateway_storage_errors",
            "Counter-store calls that failed, by operation and kind (down: refused or broken "
            "connection; timeout: no answer in time; busy: shed while every connection was "
            "in use).",
            ["operation", "kind"],
            registry=r,
        )
        self.storage_up = Gauge(
            "gateway_storage_up",
            "1 while the counter store answers, 0 while the outage breaker is open (the "
            "lowest of the workers).",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.storage_up.set(1)
        self.reloads = Counter(
            "gateway_policy_reloads",
            "Policy reloads by result (ok, failed, unchanged).",
            ["result"],
            registry=r,
        )
        self.reload_failed = Gauge(
            "gateway_policy_reload_failed",
            "1 while the last reload of the policy files failed (an older set runs), 0 once "
            "one succeeds or the files are back to the running set.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.policy_info = Gauge(
            "gateway_policy_info",
            "1 for the policy set version running (0 for one that ran earlier).",
            ["version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._version = ""
        self.active_overrides = Gauge(
            "gateway_active_overrides",
            "Live overrides set through the admin API.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.store_resets = Counter(
            "gateway_store_resets",
            "Times the counter store was found emptied (restarted without its data) and the "
            "policy files' links were applied again.",
            registry=r,
        )
        self.cluster_merges = Counter(
            "gateway_cluster_merges",
            "Linked-account clusters merged by a shared signal or a manual link.",
            registry=r,
        )

    async def record_exchange(self, record: UsageRecord, admission: Admission | None) -> None:
        """A usage hook: count the exchange, its decision and its reservation gap."""
        api = record.api or "other"
        self.exchanges.labels(api, record.outcome.value).inc()
        if admission is not None:
            decision = admission.decision
            if decision.refusal is not None and not decision.admitted:
                refusal = decision.refusal
                self.decisions.labels(refusal.policy, refusal.scope.value, "refused").inc()
            elif decision.admitted:
                # One admitted count per (policy, scope), not per limit.
                for key in {(s.policy, s.scope.value) for s in decision.statuses}:
                    self.decisions.labels(*key, "admitted").inc()
            for refusal in decision.shadow_refusals:
                self.decisions.labels(refusal.policy, refusal.scope.value, "shadow_refused").inc()
        if record.estimate is not None and admission is not None and admission.decision.admitted:
            reserved = record.estimate.tokens
            actual = record.usage.tokens
            self.tokens_reserved.labels(api).inc(reserved)
            self.tokens_settled.labels(api).inc(actual)
            self.reservation_gap.labels(api).observe(reserved - actual)

    def record_answer(self, answer: Answer) -> None:
        """The proxy's answer hook: every request once, whoever answered it."""
        status_class = f"{answer.status // 100}xx" if answer.status else "none"
        self.requests.labels(answer.answered_by, status_class).inc()
        reason = answer.reason
        if reason is not None and reason in UPSTREAM_FAILURES:
            self.upstream_failures.labels(UPSTREAM_FAILURES[reason]).inc()
        elif reason is not None:
            self.refusals.labels(reason.value, answer.policy).inc()
        elif answer.status:
            api = answer.api or "other"
            self.upstream_seconds.labels(api, status_class).observe(answer.duration_s)
        if answer.outcome is Outcome.UPSTREAM_BROKE:
            self.upstream_failures.labels("broken").inc()

    def storage_state(self, kind: str, up: bool) -> None:
        """``Outage``'s listener, for the state only: ``CountedOutage`` counts failures."""
        if not kind:
            self.storage_up.set(1 if up else 0)

    def storage_failed(self, operation: str, exc: BaseException) -> None:
        """A failed store call off the engine's path (``operation`` a fixed name)."""
        self.storage_errors.labels(operation, str(getattr(exc, "kind", "down"))).inc()

    def policies_running(self, version: str) -> None:
        if version == self._version:
            return
        if self._version:
            self.policy_info.labels(self._version).set(0)
        self.policy_info.labels(version).set(1)
        self._version = version

    def reloaded(self, outcome: str, version: str) -> None:
        """A reload's outcome (ok, unchanged, failed) and the version running after it."""
        self.reloads.labels(outcome).inc()
        self.reload_failed.set(1 if outcome == "failed" else 0)
        self.policies_running(version)

    def render(self) -> bytes:
        if self.shared_dir is None:
            return generate_latest(self.registry)
        every_worker = CollectorRegistry()
        multiprocess.MultiProcessCollector(every_worker, path=self.shared_dir)  # type: ignore[no-untyped-call]
        return generate_latest(every_worker)


# The store's call sites name what failed in words; the label keeps a fixed set.
_OPERATIONS = {
    "reserve": "reserve",
    "settle": "settle",
    "upkeep": "upkeep",
    "cluster links": "cluster_links",
    "cluster epoch": "cluster_epoch",
    "cluster lookup": "cluster_lookup",
}


class CountedOutage(Outage):
    """The engine's outage breaker, counting every failure by operation and kind.

    ``Outage`` tells its listener a failure's kind but not which call failed; its callers
    (the engine, the cluster directory) name the call, so failures are counted here, where
    both are known. The engine calls ``busy`` itself only when a reserve is shed.
    """

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(listener=metrics.storage_state)
        self._errors = metrics.storage_errors

    def failed(self, what: str, exc: BaseException) -> None:
        kind = str(getattr(exc, "kind", "down"))
        self._errors.labels(_OPERATIONS.get(what, "other"), kind).inc()
        if kind != "busy":  # Outage.failed would count a busy call again through busy()
            super().failed(what, exc)

    def busy(self) -> None:
        self._errors.labels("reserve", "busy").inc()
        super().busy()


# prometheus-client's multiprocess functions carry no annotations (hence the ignores below).


def share_between_workers(directory: str) -> None:
    """Make every metric created from now on (in this process and the workers it forks)
    write its values under ``directory``. prometheus-client picks its value class when it is
    first imported; the serve command decides later, so the choice is made again here."""
    os.environ[SHARED_DIR] = directory
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def private_to_this_process() -> None:
    """One process: values in memory, whatever the environment says. prometheus-client
    turns multiprocess mode on at import when PROMETHEUS_MULTIPROC_DIR (or its lower-case
    name) is set; one inherited from elsewhere would add that directory's old files to
    this gateway's counts, and one that does not exist stopped the gateway at startup."""
    for name in (SHARED_DIR, SHARED_DIR.lower()):
        os.environ.pop(name, None)
    values.ValueClass = values.MutexValue


def worker_gone(pid: int, directory: str) -> None:
    """A worker exited: its gauges stop counting (its counters' totals stay)."""
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _values_shared() -> bool:
    return bool(getattr(values.ValueClass, "_multiprocess", False))
