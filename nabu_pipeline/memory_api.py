"""The family's window on Warren's memory: list, add, edit and forget what Nabu keeps.

    GET    /api/memory            {"facts": [fact, ...]}   facts and preferences, oldest first
    POST   /api/memory            {"words": "..."}          201 {"fact": ..., "replaced": ...}
                                  {"kind": "preference", "subject": "temperature_unit",
                                   "value": "C"}             (speech_rate, address_as, home_town)
    PATCH  /api/memory/{id}       {"words": "..."}          200 {"fact": ...}
    DELETE /api/memory/{id}                                 204 (the words are erased)

(The family's page that uses it, /memory.html and /memory.js, is served with the app's
other static files: phone_app.py.)

The same rules as the phone's WebSocket: a browser page from another origin is
refused (403), and when `nabu serve` has a token every call must present it
(`Authorization: Bearer ...`, or `?token=` as on /ws); missing or wrong is 401.
The server passes its own check in (`authorize`), so there is one rule.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nabu_pipeline.memory_store import PREFERENCES, MemoryStore, MemoryStoreError

MAX_WORDS_CHARS = 500
# What a family member may set, and how it reads back to Warren.
PREFERENCE_WORDS = {
    "speech_rate": "I like you to speak slower",
    "temperature_unit": "I like temperatures in {unit}",
    "address_as": "I like to be called {value}",
    "home_town": "I live in {value}",
}


class NewFact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = "fact"
    words: str = Field(default="", max_length=MAX_WORDS_CHARS)
    subject: str = ""
    value: str = Field(default="", max_length=100)


class Edit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    words: str = Field(min_length=1, max_length=MAX_WORDS_CHARS)


Authorize = Callable[[Request], Awaitable["tuple[int, str] | None"]]


def _error(status: int, text: str) -> JSONResponse:
    return JSONResponse({"error": text}, status_code=status)


def _preference(body: NewFact) -> tuple[str, str] | str:
    """(words, value) for a preference, or what is wrong with it."""
    value = " ".join(body.value.split())
    if body.subject not in PREFERENCES:
        return f"subject must be one of {', '.join(PREFERENCES)}"
    if body.subject == "temperature_unit":
        unit = {"c": "C", "celsius": "C", "f": "F", "fahrenheit": "F"}.get(value.lower())
        if unit is None:
            return "temperature_unit is C or F"
        name = "Celsius" if unit == "C" else "Fahrenheit"
        return PREFERENCE_WORDS["temperature_unit"].format(unit=name), unit
    if body.subject == "speech_rate":
        try:
            scale = float(value)
        except ValueError:
            return "speech_rate is Piper's length scale, a number from 0.5 to 2.5 (>1 is slower)"
        if not 0.5 <= scale <= 2.5:
            return "speech_rate must be from 0.5 to 2.5"
        return PREFERENCE_WORDS["speech_rate"], f"{scale:.2f}"
    if not value:
        return f"{body.subject} needs a value"
    return PREFERENCE_WORDS[body.subject].format(value=value), value


def memory_router(store: Callable[[], MemoryStore], authorize: Authorize) -> APIRouter:
    """The routes; `store()` gives the open store, `authorize(request)` a refusal or None."""
    router = APIRouter()

    async def refused(request: Request) -> JSONResponse | None:
        refusal = await authorize(request)
        if refusal is None:
            return None
        status, text = refusal
        peer = f"{request.client.host}" if request.client else "unknown"
        logger.warning(f"Refused memory API {request.method} from {peer}: {text}")
        return _error(status, text)

    @router.get("/api/memory")
    async def list_facts(request: Request) -> Response:
        if (no := await refused(request)) is not None:
            return no
        facts = await store().alive()
        return JSONResponse({"facts": [f.as_json() | {"spoken": f.spoken} for f in facts]})

    @router.post("/api/memory")
    async def add_fact(request: Request) -> Response:
        if (no := await refused(request)) is not None:
            return no
        try:
            body = NewFact.model_validate(await request.json())
        except (ValidationError, ValueError) as e:
            return _error(422, f"bad request body: {str(e)[:200]}")
        try:
            if body.kind == "preference":
                checked = _preference(body)
                if isinstance(checked, str):
                    return _error(422, checked)
                words, value = checked
                saved = await store().asave(
                    words, source="family", kind="preference", subject=body.subject, value=value
                )
            elif body.kind == "fact":
                saved = await store().asave(body.words, source="family")
            else:
                return _error(422, "kind is fact or preference")
        except MemoryStoreError as e:
            return _error(422, str(e))
        return JSONResponse(
            {
                "fact": saved.fact.as_json(),
                "replaced": saved.replaced.as_json() if saved.replaced else None,
            },
            status_code=201,
        )

    @router.patch("/api/memory/{fact_id}")
    async def edit_fact(fact_id: int, request: Request) -> Response:
        if (no := await refused(request)) is not None:
            return no
        try:
            body = Edit.model_validate(await request.json())
        except (ValidationError, ValueError) as e:
            return _error(422, f"bad request body: {str(e)[:200]}")
        try:
            fact = await store().aedit(fact_id, body.words)
        except MemoryStoreError as e:
            return _error(404 if "no fact" in str(e) else 422, str(e))
        return JSONResponse({"fact": fact.as_json()})

    @router.delete("/api/memory/{fact_id}")
    async def delete_fact(fact_id: int, request: Request) -> Response:
        if (no := await refused(request)) is not None:
            return no
        if not await store().aforget(fact_id):
            return _error(404, f"no fact {fact_id}")
        return Response(status_code=204)

    return router
