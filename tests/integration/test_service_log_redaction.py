"""The services' own HTTP server logs go through the redacting root handlers: an unhandled error's
traceback in the gateway or the paper broker (uvicorn's ``uvicorn.error`` logger) names no secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SECRET = "sk-uvicorn-secret-value-9"

#: A FastAPI app served with the logging options every service of ours uses (``uvicorn_logging``),
#: whose route fails with the secret and a database password in the message; the traceback goes to
#: stderr.
SCRIPT = """
import threading, time, socket
import httpx, uvicorn
from fastapi import FastAPI
from trader.config import configure_logging, load_settings, uvicorn_logging

configure_logging(load_settings())
app = FastAPI()

@app.get("/boom")
def boom():
    raise RuntimeError("SECRET and postgresql://u:dbpass123456@h/db")

sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **uvicorn_logging("info")))
threading.Thread(target=server.run, daemon=True).start()
while not server.started:
    time.sleep(0.05)
assert httpx.get(f"http://127.0.0.1:{port}/boom").status_code == 500
server.should_exit = True
time.sleep(0.3)
"""


def test_an_unhandled_error_in_a_service_is_logged_without_the_secret(tmp_path: Path) -> None:
    env = {**os.environ, "ALPACA_API_SECRET_KEY": SECRET, "LOG_LEVEL": "INFO"}
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.replace("SECRET", SECRET)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "RuntimeError: *** and postgresql://u:***@h/db" in done.stderr  # the traceback was logged
    assert SECRET not in done.stderr and "dbpass123456" not in done.stderr
