"""Chaos tests: real gateway replicas, a real Redis (or Redis Cluster) and the mock upstream
as separate processes, load against them, faults injected, and the mock's ledger of what
was really served held against the limits."""
