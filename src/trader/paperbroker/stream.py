"""The ``trade_updates`` websocket at ``/stream``, speaking Alpaca's protocol.

Client → ``{"action":"authenticate","data":{"key_id":..,"secret_key":..}}``, server →
``{"stream":"authorization","data":{"status":"authorized","action":"authenticate"}}``; then
``{"action":"listen","data":{"streams":["trade_updates"]}}`` → ``{"stream":"listening",...}`` and every
order event as ``{"stream":"trade_updates","data":{"event":..,"order":{..},"timestamp":..}}``. Like
Alpaca's paper server, frames are binary (JSON bytes). Fault injection may drop or repeat events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from trader.paperbroker.auth import credentials_match
from trader.paperbroker.events import EventHub
from trader.paperbroker.faults import FaultInjector

router = APIRouter()
TRADE_UPDATES = "trade_updates"


def _frame(stream: str, data: dict[str, Any]) -> bytes:
    return json.dumps({"stream": stream, "data": data}).encode()


def _authorization(status: str, action: str) -> bytes:
    return _frame("authorization", {"status": status, "action": action})


@router.websocket("/stream")
async def trade_updates(websocket: WebSocket) -> None:
    """One client: authenticate, listen, then receive events until either side closes."""
    await websocket.accept()
    settings = websocket.app.state.settings
    hub: EventHub = websocket.app.state.hub
    faults: FaultInjector = websocket.app.state.faults
    queue: asyncio.Queue[dict[str, Any]] | None = None
    sender: asyncio.Task[None] | None = None
    authorized = False
    try:
        while True:
            message = await _receive(websocket)
            if message is None:
                continue
            action, data = message.get("action"), message.get("data")
            if not isinstance(data, dict):
                data = {}
            if action in ("authenticate", "auth"):
                key, secret = data.get("key_id"), data.get("secret_key")
                authorized = (
                    isinstance(key, str)
                    and isinstance(secret, str)
                    and credentials_match(key, secret, settings.api_key_id, settings.api_secret_key)
                )
                await websocket.send_bytes(
                    _authorization("authorized" if authorized else "unauthorized", "authenticate")
                )
                if not authorized:
                    await websocket.close(code=1008)
                    return
            elif action == "listen":
                if not authorized:
                    await websocket.send_bytes(_authorization("unauthorized", "listen"))
                    continue
                wanted = data.get("streams")
                streams = [TRADE_UPDATES] if isinstance(wanted, list) and TRADE_UPDATES in wanted else []
                if streams and queue is None:
                    queue = hub.subscribe()
                    sender = asyncio.create_task(_forward(websocket, queue, faults))
                elif not streams and queue is not None:
                    hub.unsubscribe(queue)
                    queue = None
                    if sender is not None:
                        sender.cancel()
                await websocket.send_bytes(_frame("listening", {"streams": streams}))
            else:
                await websocket.send_bytes(_frame("error", {"message": f"unknown action: {action}"}))
    except WebSocketDisconnect:
        pass
    finally:
        if queue is not None:
            hub.unsubscribe(queue)
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender


async def _receive(websocket: WebSocket) -> dict[str, Any] | None:
    """The next client message as a dict (``None`` for anything that is not a JSON object)."""
    raw = await websocket.receive()
    if raw.get("type") == "websocket.disconnect":
        raise WebSocketDisconnect(raw.get("code", 1000))
    payload = raw.get("text") if raw.get("text") is not None else raw.get("bytes")
    try:
        message = json.loads(payload) if payload else None
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


async def _forward(websocket: WebSocket, queue: asyncio.Queue[dict[str, Any]], faults: FaultInjector) -> None:
    while True:
        event = await queue.get()
        copies = faults.event_copies()
        for _ in range(copies):
            await websocket.send_bytes(_frame(TRADE_UPDATES, event))
