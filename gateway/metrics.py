"""Prometheus metrics. Labels are bounded: policy names, scopes, APIs, outcomes, status
classes. Never an account, organization or cluster id."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.admission import Admission
from gateway.metering import UsageRecord

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_GAP_BUCKETS = (-10000, -1000, -100, 0, 100, 1000, 4000, 16000, 64000, 256000)


class Metrics:
    """One registry per running gateway, so tests and replays never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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
            "Exchange duration by API and status class.",
            ["api", "status_class"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.storage_errors = Counter(
            "gateway_storage_errors",
            "Counter-store calls that failed, by kind (down: refused or broken connection; "
            "timeout: no answer in time; busy: shed while every connection was in use).",
            ["kind"],
            registry=r,
        )
        self.storage_up = Gauge(
            "gateway_storage_up",
            "1 while the counter store answers, 0 while the outage breaker is open.",
            registry=r,
        )
        self.storage_up.set(1)
        self.reloads = Counter(
            "gateway_policy_reloads",
            "Policy reloads by result (ok, failed, unchanged).",
            ["result"],
            registry=r,
        )
        self.active_overrides = Gauge(
            "gateway_active_overrides", "Live overrides set through the admin API.", registry=r
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
        if record.status:
            status_class = f"{record.status // 100}xx"
            self.upstream_seconds.labels(api, status_class).observe(record.duration_s)

    def storage_event(self, kind: str, up: bool) -> None:
        """``Outage``'s listener: a failure of ``kind``, or a change of state (kind "")."""
        if kind:
            self.storage_errors.labels(kind).inc()
        else:
            self.storage_up.set(1 if up else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
