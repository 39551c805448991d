"""Small typed values shared by every stage of the pipeline."""

from trader.domain.enums import (
    ModelStage,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionSide,
    TimeInForce,
)

__all__ = ["ModelStage", "OrderSide", "OrderStatus", "OrderType", "PositionSide", "TimeInForce"]
