"""The admin API: health, readiness, metrics, and the live-operations routes (overrides,
usage, policies, clusters, audit), served on the admin listener. docs/admin.md is its guide."""
