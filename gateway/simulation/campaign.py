"""The simulated populations' numbers, without numpy, so the CLI can show defaults cheaply.

Where each comes from is in population.py's docstring and docs/distillation.md.
"""

DAY = 86_400.0
START = 1_776_816_000.0  # 2026-04-22T00:00:00Z, the campaign's first day
DAYS = 45
CAMPAIGN_ACCOUNTS = 25_000
CAMPAIGN_RATE = 25.6  # exchanges per account per day
LEGIT_ORGS = 5_000
LEGIT_MEAN_RATE = 20.0  # requests per organization per day, averaged over organizations
SIGMA = 2.0
SESSION_MEAN = 4.0  # requests per burst
SESSION_GAP = 30.0  # mean seconds between requests of a burst
SHARED_NAT_SHARE = 0.15  # organizations behind a NAT they share with other organizations
VERIFIED_SHARE = 0.2  # the busiest fifth of organizations are verified businesses
REASONING_SHARE = 0.2
MAX_TOKENS_CHAT = 1_024
MAX_TOKENS_LONG = 16_384
TOKENS_PER_SECOND = 60.0

# Quantiles (p50, p90, p99) at standard-normal z = 0, 1.2816, 2.3263.
CHAT_INPUT = (1_020.0, 2_730.0, 4_140.0)
CHAT_OUTPUT = (129.0, 424.0, 601.0)
REASONING_OUTPUT = (810.0, 4_170.0, 13_530.0)

# Scenarios (scenarios.py): campaign variants and customer shapes that look like a ring.
RING = 50  # one-org-rings: accounts per organization and card
WIDEN = 5  # wide-slow: accounts multiplied, each that much slower
UNLINKABLE_SHARE = 0.3  # unlinkable-30: share of accounts (and of volume) sharing nothing
CHAIN = 10  # chains: accounts per chain (the tuned ring's size)
AGENCIES = 5
AGENCY_CLIENTS = (5, 30)  # client organizations per agency, uniform, both ends included
CI_ORGS = 10
CI_RUNNERS = 2
LAB_STUDENTS = 40
LAB_DEVICES = 4
ENTERPRISE_ACCOUNTS = 2_000
ENTERPRISE_ACCOUNT_RATE = 20.0  # requests per account per day: each as busy as an average org
