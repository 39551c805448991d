"""Portfolio: target weights to orders (allocator), positions and P&L (ledger), reports."""
