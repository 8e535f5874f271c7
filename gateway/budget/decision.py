"""What the engine decides, as small frozen values the proxy and the wire formats read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field

from gateway.policy.model import Limit, Metric, Scope
from gateway.values import value


@value
class Subject:
    """Who is asking, as the identity layer established it from trusted sources only."""

    account: str
    organization: str | None = None
    cluster: str | None = None  # resolved by the cluster layer; None means "a cluster of one"
    attributes: Mapping[str, str] = field(default_factory=dict)  # includes "model"
    # Exempt by ``clusters.exempt``: no cluster-scope policy applies (scope id None).
    cluster_exempt: bool = False
    # Distinct organizations among the cluster's accounts, as the cluster layer last saw
    # them (capped); an account on its own counts its own organization, even without one.
    cluster_organizations: int = 1
    # Accounts in the cluster, as the cluster layer last saw them (1 on its own).
    cluster_accounts: int = 1

    def scope_id(self, scope: Scope) -> str | None:
        """The id counted in ``scope``; None means no policy of that scope applies."""
        if scope is Scope.ACCOUNT:
            return self.account
        if scope is Scope.ORGANIZATION:
            return self.organization
        if self.cluster_exempt:
            return None
        return self.cluster if self.cluster is not None else self.account

    def in_cluster(self, cluster: str | None, organizations: int, accounts: int) -> Subject:
        """This subject in ``cluster`` (None: on its own), as the cluster layer found it.
        Built directly: ``dataclasses.replace`` showed in replay profiles."""
        return Subject(
            self.account,
            self.organization,
            cluster,
            self.attributes,
            self.cluster_exempt,
            organizations,
            accounts,
        )

    def with_attributes(self, attributes: Mapping[str, str]) -> Subject:
        """This subject with ``attributes`` instead of its own (built directly, as above)."""
        return Subject(
            self.account,
            self.organization,
            self.cluster,
            attributes,
            self.cluster_exempt,
            self.cluster_organizations,
            self.cluster_accounts,
        )


@value
class LimitStatus:
    """Where one limit stands after a decision, for the rate-limit response headers."""

    policy: str
    scope: Scope
    limit: Limit
    remaining: int
    reset_seconds: float  # until the limit is whole again (rolling) or resets (calendar)

    @property
    def metric(self) -> Metric:
        return self.limit.metric


@value
class Refusal:
    """One limit that lacked room. ``retry_after`` is None when the request can never fit."""

    policy: str
    scope: Scope
    scope_id: str
    limit: Limit
    requested: int
    retry_after: float | None
    shadow: bool = False


@value
class Decision:
    request_id: str
    admitted: bool
    refusal: Refusal | None = None
    shadow_refusals: tuple[Refusal, ...] = ()
    statuses: tuple[LimitStatus, ...] = ()
    degraded: bool = False  # decided by the per-replica fallback while storage was down
    # Admitted by an ``action: cap`` policy with this output cap (all choices together)
    # instead of the request's own, which did not fit.
    capped_output: int | None = None
    # Every enforced limit that lacked room, ``refusal`` (the one that binds) among them;
    # admitted with ``capped_output``, the limits the lower cap answered.
    refusals: tuple[Refusal, ...] = ()
