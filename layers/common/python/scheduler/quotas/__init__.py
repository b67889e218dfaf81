"""Per-owner quotas: their limits, the per-minute counters, and the DynamoDB items behind them."""
