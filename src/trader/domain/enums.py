"""Enumerations whose values are stored in the database and sent to the broker.

The string values are Alpaca's own spelling where Alpaca has the concept, so a value read from the
broker can be stored unchanged and the database check constraints can be generated from these enums.
"""

from enum import StrEnum


class OrderSide(StrEnum):
    BUY = "buy"
    SELL = "sell"


class PositionSide(StrEnum):
    LONG = "long"
    SHORT = "short"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"
    TRAILING_STOP = "trailing_stop"


class TimeInForce(StrEnum):
    DAY = "day"
    GTC = "gtc"
    OPG = "opg"
    CLS = "cls"
    IOC = "ioc"
    FOK = "fok"


class OrderStatus(StrEnum):
    """Every status an order row can have.

    The first group exists only on our side: an order row is written *before* it is sent
    (``pending_submit``), orders recorded under ``DRY_RUN`` never leave the process, and orders that the
    pre-trade risk check refused never reach the broker. The rest are Alpaca's statuses, verbatim.
    """

    PENDING_SUBMIT = "pending_submit"
    DRY_RUN = "dry_run"
    RISK_REJECTED = "risk_rejected"
    SUBMIT_FAILED = "submit_failed"

    ACCEPTED = "accepted"
    PENDING_NEW = "pending_new"
    ACCEPTED_FOR_BIDDING = "accepted_for_bidding"
    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    DONE_FOR_DAY = "done_for_day"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REPLACED = "replaced"
    PENDING_CANCEL = "pending_cancel"
    PENDING_REPLACE = "pending_replace"
    PENDING_REVIEW = "pending_review"
    STOPPED = "stopped"
    REJECTED = "rejected"
    SUSPENDED = "suspended"
    CALCULATED = "calculated"
    HELD = "held"


class ModelStage(StrEnum):
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"
