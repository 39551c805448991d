"""The signal service: production model → scores for a trading date → target weights → published intent."""
