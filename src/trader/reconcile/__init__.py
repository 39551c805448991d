"""Reconciliation: the broker's orders and positions against our database (see docs/reconciler.md)."""

from trader.reconcile.drift import DriftAlert, ReconcileConfig, ReconcileConfigError
from trader.reconcile.reconciler import Correction, Reconciler, ReconcileReport, boot_reconcile

__all__ = [
    "Correction",
    "DriftAlert",
    "ReconcileConfig",
    "ReconcileConfigError",
    "ReconcileReport",
    "Reconciler",
    "boot_reconcile",
]
