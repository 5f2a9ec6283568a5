"""Communication: secure aggregation through TFF's secure sums, and the byte ledger."""
