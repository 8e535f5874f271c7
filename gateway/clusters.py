"""Linked-account clusters: which cluster a request's account is in, and linking.

``ClusterDirectory.resolve`` runs after identity and before the budget engine: it sets
``Subject.cluster`` and ``cluster_organizations`` (or ``cluster_exempt``) and records the
request's hashed link-signal values and its organization. An account's cluster (with its
organization count) is cached for ``cache_ttl`` seconds and recorded pairs for
``pair_ttl``, so a request whose account and values this replica saw recently costs no
round trip; a miss or a new pair costs one script call. docs/clusters.md says why.

``maintain`` (about once a second, off the request path) notices a store that came back
empty and applies the policy files' links to it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from gateway.budget.cluster_store import ClusterInfo, ClusterStore, Linked, Saturation
from gateway.budget.decision import Subject
from gateway.budget.outage import Outage
from gateway.errors import StorageError
from gateway.policy.model import ClusterConfig, PolicySet, Scope

log = logging.getLogger("gateway.clusters")

CACHE_TTL = 1.5  # seconds another replica's merge may go unseen here
PAIR_TTL = 300.0  # seconds before a recorded pair is sent again, refreshing its retention
MAX_CACHED = 100_000  # accounts, and (account, signal, value) pairs, held per replica
CHECK_EVERY = 1.0  # seconds between two looks at the store's epoch marker (``run``)
# The pair that records an account's organization; link signals are "header:…" or
# "client_ip:…", so this name never meets one.
ORGANIZATION = "organization"


class PolicySource(Protocol):
    @property
    def current(self) -> PolicySet: ...


def is_exempt(config: ClusterConfig, subject: Subject) -> bool:
    """Whether ``clusters.exempt`` keeps this subject out of linking and cluster policies."""
    if subject.organization is not None and subject.organization in config.exempt_organizations:
        return True
    pair = config.exempt_attribute
    return pair is not None and subject.attributes.get(pair[0]) == pair[1]


Known = tuple[str, int, int]  # (cluster id, its organizations, its accounts)


class _Cache:
    """account → (cluster id, organizations, accounts) until its deadline; (account,
    signal, value) pairs recorded."""

    def __init__(
        self, ttl: float, pair_ttl: float, size: int, monotonic: Callable[[], float]
    ) -> None:
        self.ttl, self.pair_ttl, self.size = ttl, pair_ttl, size
        self.monotonic = monotonic
        # OrderedDicts, not dicts: evicting the oldest entry again and again is O(1) there,
        # but O(n) on a dict, whose next(iter()) skips every deleted slot at the front (it
        # made long simulations quadratic).
        self.clusters: OrderedDict[str, tuple[str, int, int, float]] = OrderedDict()
        self.accounts: dict[str, set[str]] = {}  # cluster id → cached accounts, to invalidate
        self.pairs: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    def fresh(self, account: str) -> Known | None:
        held = self.clusters.get(account)
        if held is None or held[3] <= self.monotonic():
            return None
        return held[0], held[1], held[2]

    def stale(self, account: str) -> Known | None:
        held = self.clusters.get(account)
        return None if held is None else (held[0], held[1], held[2])

    def put(self, account: str, cluster: str, organizations: int, accounts: int) -> None:
        held = self.clusters.get(account)
        if held is not None and held[0] == cluster:  # the same cluster: only newer
            self.clusters[account] = (cluster, organizations, accounts, self.monotonic() + self.ttl)
            self.clusters.move_to_end(account)
            return
        self.forget_account(account)
        if len(self.clusters) >= self.size:  # oldest first (O(1) on an OrderedDict)
            self.forget_account(next(iter(self.clusters)))
        deadline = self.monotonic() + self.ttl
        self.clusters[account] = (cluster, organizations, accounts, deadline)
        if cluster != account:  # one on its own is found by its id: no set of one (~250 B)
            self.accounts.setdefault(cluster, set()).add(account)

    def forget_account(self, account: str) -> None:
        held = self.clusters.pop(account, None)
        if held is not None and (accounts := self.accounts.get(held[0])) is not None:
            accounts.discard(account)
            if not accounts:
                del self.accounts[held[0]]

    def forget_clusters(self, clusters: Sequence[str]) -> None:
        for cluster in clusters:
            for account in list(self.accounts.get(cluster, ())):
                self.forget_account(account)
            self.forget_account(cluster)  # an account that was on its own

    def unrecorded(self, pairs: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
        now = self.monotonic()
        return [pair for pair in pairs if self.pairs.get(pair, now) <= now]

    def record(self, pairs: Sequence[tuple[str, str, str]]) -> None:
        deadline = self.monotonic() + self.pair_ttl
        for pair in pairs:
            self.pairs.pop(pair, None)
            if len(self.pairs) >= self.size:
                self.pairs.popitem(last=False)
            self.pairs[pair] = deadline

    def clear(self) -> None:
        self.clusters.clear()
        self.accounts.clear()
        self.pairs.clear()


class ClusterDirectory:
    """Linked-account clusters over a ``ClusterStore``, cached per replica.

    ``clock`` (epoch seconds) must be the budget engine's: a merge drains the rolling
    budgets it moves at that time. ``outage`` may be the engine's, so one breaker guards
    the one store. ``on_merge`` is a hook (a metric) called with every link that merged.
    ``retention`` (seconds; None: the store's) is how long link data outlives its last
    use. ``store_resets`` counts the times ``maintain`` found the store emptied, and
    ``on_store_reset`` (a metric) is called each time.
    """

    def __init__(
        self,
        store: ClusterStore,
        policies: PolicySource,
        *,
        clock: Callable[[], float] | None = None,
        cache_ttl: float = CACHE_TTL,
        pair_ttl: float = PAIR_TTL,
        max_cached: int = MAX_CACHED,
        monotonic: Callable[[], float] = time.monotonic,
        outage: Outage | None = None,
        on_merge: Callable[[Linked], None] | None = None,
        retention: float | None = None,
        on_store_reset: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.policies = policies
        self.outage = outage if outage is not None else Outage()
        self.on_merge = on_merge
        self.on_store_reset = on_store_reset
        self.retention = store.retention if retention is None else retention
        self.store_resets = 0
        self._clock = clock
        # A cached account or pair is sent again (refreshing its keys' retention) once its
        # cache entry ends, so the entry must end well before the retention does.
        half = self.retention / 2
        self._cache = _Cache(min(cache_ttl, half), min(pair_ttl, half), max_cached, monotonic)
        self._epoch: str | None = None  # the store's marker as this replica last saw it
        self._applied: Mapping[str, tuple[str, ...]] | None = None
        self._applying = asyncio.Lock()
        self._uses: tuple[PolicySet, bool] | None = None
        self._caps_of: tuple[ClusterConfig, dict[str, int | None]] | None = None

    async def resolve(
        self,
        subject: Subject,
        signals: Sequence[tuple[str, str]],
        config: ClusterConfig | None = None,
    ) -> Subject:
        """``subject`` with its cluster set, or marked exempt. Never raises ``StorageError``:
        without the store it uses the last cluster this replica knew, else a cluster of one."""
        policy_set = self.policies.current
        config = policy_set.clusters if config is None else config
        if is_exempt(config, subject):
            return replace(subject, cluster=None, cluster_exempt=True)
        if not self._in_use(policy_set):
            return subject
        if config.links is not self._applied:
            await self.ensure_links(config)
        account = subject.account
        caps = self._caps(config)
        pairs = [(account, name, value) for name, value in signals if name in caps]
        if subject.organization:
            pairs.append((account, ORGANIZATION, subject.organization))
        new = self._cache.unrecorded(pairs)
        known = self._cache.fresh(account)
        if known is None or new:
            known = await self._observe(account, new, caps)
        cluster, organizations, size = known
        if cluster == account:  # on its own: its own organization, with or without an id
            return subject.in_cluster(None, 1, 1)
        return subject.in_cluster(cluster, organizations, size)

    def _caps(self, config: ClusterConfig) -> Mapping[str, int | None]:
        """Each link signal's ``max_accounts``, by name (built once per config)."""
        if self._caps_of is None or self._caps_of[0] is not config:
            caps = {signal.name: signal.max_accounts for signal in config.link_by}
            self._caps_of = (config, caps)
        return self._caps_of[1]

    async def link(self, cluster_id: str, *accounts: str) -> ClusterInfo:
        """Link ``accounts`` into ``cluster_id`` (merging their clusters); a new name is made."""
        linked = await self.store.link(
            cluster_id, accounts, now=self._now(), retention=self.retention
        )
        for account in accounts:
            self._cache.forget_account(account)
        self._learn(linked)
        return await self.store.members(linked.cluster)

    async def unlink(self, account: str) -> str | None:
        """Make ``account`` a cluster of one; returns the cluster it left. Its spend stays
        there; shared signals will not link it back (an explicit ``link`` does)."""
        left = await self.store.unlink(account)
        self._cache.forget_account(account)
        return left

    async def cluster_of(self, account: str) -> ClusterInfo:
        """The account's cluster as the store has it now (never the cache)."""
        return await self.store.cluster_of(account)

    async def members(self, cluster_id: str) -> tuple[str, ...]:
        """The accounts of a cluster, sorted; () for an id no account is linked to."""
        return (await self.store.members(cluster_id)).members

    async def saturated(self) -> list[Saturation]:
        """Signal values that reached ``max_accounts`` and stopped linking (bounded)."""
        return await self.store.saturated()

    async def apply_links(self, config: ClusterConfig) -> None:
        """Apply a policy set's ``clusters.links``; idempotent, so every load may call it.
        The store's epoch marker goes first: emptied before the links are in, it lacks the
        marker, and ``maintain`` applies them again."""
        self._epoch = await self.store.mark(uuid.uuid4().hex)
        for name, accounts in config.links.items():
            linked = await self.store.link(
                name, accounts, now=self._now(), retention=self.retention
            )
            for account in accounts:
                self._cache.forget_account(account)
            self._learn(linked)
        self._applied = config.links

    def _in_use(self, policy_set: PolicySet) -> bool:
        """Clusters matter when a cluster policy counts them or signals link accounts."""
        if self._uses is None or self._uses[0] is not policy_set:
            uses = bool(policy_set.clusters.link_by or policy_set.clusters.links) or any(
                policy.scope is Scope.CLUSTER for policy in policy_set.policies
            )
            self._uses = (policy_set, uses)
        return self._uses[1]

    async def ensure_links(self, config: ClusterConfig | None = None) -> None:
        """Apply the links of ``config`` (default: the current set's) unless applied
        already. Never raises: the first request after a swap, or after an outage that
        stopped them, applies them (the others wait for it)."""
        config = self.policies.current.clusters if config is None else config
        if not config.links and not self._in_use(self.policies.current):
            return  # nothing to apply, nor a marker to leave in a store clusters never use
        async with self._applying:
            if config.links is self._applied or self.outage.skip():
                return
            try:
                await self.apply_links(config)
            except StorageError as exc:
                self.outage.failed("cluster links", exc)

    async def maintain(self) -> None:
        """Apply the policy files' links again if the store lost them. Never raises.

        Call it about once a second (``run`` does): one GET, off the request path. A store
        that restarted empty, or was flushed, lacks the marker ``apply_links`` left (or holds
        another replica's newer one); then this replica forgets what it cached, re-applies
        the links at once, counts the reset and logs one warning."""
        if not self._in_use(self.policies.current) or self.outage.skip():
            return
        try:
            epoch = await self.store.epoch()
        except StorageError as exc:
            self.outage.failed("cluster epoch", exc)
            return
        self.outage.answered()
        if self._epoch is not None and epoch != self._epoch:
            self._epoch, self._applied = None, None
            self._cache.clear()
            self.store_resets += 1
            log.warning(
                "The cluster store lost its data (Redis restarted empty, or was flushed): "
                "applying the policy files' clusters.links again; links made through the "
                "admin API are gone."
            )
            if self.on_store_reset is not None:
                self.on_store_reset()
        await self.ensure_links()

    async def run(self, interval: float = CHECK_EVERY) -> None:
        """``maintain`` every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.maintain()

    async def _observe(
        self, account: str, new: list[tuple[str, str, str]], caps: Mapping[str, int | None]
    ) -> Known:
        fallback = self._cache.stale(account) or (account, 1, 1)
        if self.outage.skip():
            return fallback
        signals = [(name, value, caps[name]) for _, name, value in new if name != ORGANIZATION]
        organization = next((value for _, name, value in new if name == ORGANIZATION), None)
        try:
            linked = await self.store.observe(
                account,
                signals,
                now=self._now(),
                organization=organization,
                retention=self.retention,
            )
        except StorageError as exc:
            self.outage.failed("cluster lookup", exc)
            return fallback
        self.outage.answered()
        self._learn(linked)
        self._cache.put(account, linked.cluster, linked.organizations, linked.accounts)
        self._cache.record(new)
        for name in linked.saturated:
            # Never the value: it names a card, a device or an address, even hashed.
            log.warning(
                "Link signal %s: one value reached max_accounts=%s and links no more "
                "accounts (carrier NAT or a shared office?).",
                name,
                caps.get(name),
            )
        return linked.cluster, linked.organizations, linked.accounts

    def _learn(self, linked: Linked) -> None:
        if linked.absorbed:
            self._cache.forget_clusters(linked.absorbed)
            if self.on_merge is not None:
                self.on_merge(linked)

    def _now(self) -> float | None:
        return None if self._clock is None else self._clock()
