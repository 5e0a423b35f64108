"""A small JSON API: a greeting set in fly.toml, the version baked into the image, and a
health check the platform polls."""

import logging
import os
import time

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

logging.basicConfig(level=os.environ.get("LOG_LEVEL", "info").upper())
log = logging.getLogger("fastapi-site")

STARTED_AT = time.time()
app = FastAPI(title="fastapi-site", version=os.environ.get("APP_VERSION", "dev"))

ITEMS: dict[int, dict] = {}


class Item(BaseModel):
    name: str
    price: float


@app.get("/")
def index(request: Request) -> dict:
    return {
        "greeting": os.environ.get("GREETING", "Hello"),
        "version": os.environ.get("APP_VERSION", "dev"),
        "machine": os.environ.get("FLY_MACHINE_ID"),
        "region": os.environ.get("FLY_REGION"),
        "client": request.headers.get("fly-client-ip") or request.client.host,
    }


@app.get("/health")
def health() -> dict:
    return {"status": "ok", "uptime_s": round(time.time() - STARTED_AT, 1)}


@app.put("/items/{item_id}")
def put_item(item_id: int, item: Item) -> dict:
    ITEMS[item_id] = item.model_dump()
    log.info("stored item %s", item_id)
    return {"id": item_id, **ITEMS[item_id]}


@app.get("/items/{item_id}")
def get_item(item_id: int) -> dict:
    if item_id not in ITEMS:
        raise HTTPException(status_code=404, detail="no such item")
    return {"id": item_id, **ITEMS[item_id]}
