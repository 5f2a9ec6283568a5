"""Secure aggregation with real masking (see `protocol`)."""
