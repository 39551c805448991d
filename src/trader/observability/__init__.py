"""Observability: Prometheus metrics of the services (see ``docs/observability.md``)."""
