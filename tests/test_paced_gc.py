"""Paced collection: the collector is off while a batch runs, cycles are still collected
every ``every`` exchanges, and the collector is as it was afterwards."""

from __future__ import annotations

import gc
import weakref

from gateway.paced_gc import PacedCollection


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cycle collector frees it


def test_a_cycle_is_collected_at_the_next_paced_collection_not_before() -> None:
    assert gc.isenabled()
    with PacedCollection(every=3) as paced:
        assert not gc.isenabled()
        garbage = weakref.ref(Node())
        paced.tick()
        paced.tick()
        assert garbage() is not None  # waits for the paced collection
        paced.tick()
        assert garbage() is None
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with PacedCollection(every=1) as paced:
            paced.tick()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_cycle_that_outlived_a_young_collection_goes_at_the_next_full_one() -> None:
    # Collections at ticks 2 and 4 (young) and 6 (the third: full).
    with PacedCollection(every=2, full_every=3) as paced:
        node = Node()
        garbage = weakref.ref(node)
        paced.tick()
        paced.tick()  # young: the cycle is alive, and moves to the old generation
        del node
        paced.tick()
        paced.tick()  # young again: old garbage is not looked at
        assert garbage() is not None
        paced.tick()
        paced.tick()  # full
        assert garbage() is None
