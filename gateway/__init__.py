"""A rate-limiting and quota-enforcement gateway for model APIs."""

__version__ = "0.1.0"
