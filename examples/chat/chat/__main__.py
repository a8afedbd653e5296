"""``python -m chat``: serve the app with settings from the environment (``PORT``, default 8000)."""

from __future__ import annotations

import os

import uvicorn

from chat.app import create_app
from chat.settings import Settings

if __name__ == "__main__":
    uvicorn.run(
        create_app(Settings.from_env()),
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
    )
