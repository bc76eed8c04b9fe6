"""The baseline of bench/streaming.py: a bare ASGI websocket relay, run under uvicorn.

It does the least a relay can: on `message.send` it streams a completion from the
same (fake) OpenAI endpoint with httpx and forwards every token as an
`answer.delta` frame. No Django, no database, no retrieval.

    uvicorn bench._relay:app --port 9000   (with RELAY_UPSTREAM=http://127.0.0.1:PORT/v1)
"""

import json
import os

import httpx

UPSTREAM = os.environ.get("RELAY_UPSTREAM", "http://127.0.0.1:8765/v1")
_client: httpx.AsyncClient | None = None


def client() -> httpx.AsyncClient:
    global _client
    if _client is None:
        _client = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=1000))
    return _client


async def relay(send, text: str) -> None:
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": text}]}
    headers = {"Authorization": "Bearer sk-relay"}
    async with client().stream("POST", f"{UPSTREAM}/chat/completions", json=body, headers=headers) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or []
            delta = choices[0].get("delta", {}).get("content") if choices else None
            if delta:
                await send({"type": "websocket.send", "text": json.dumps({"type": "answer.delta", "delta": delta})})
    await send({"type": "websocket.send", "text": json.dumps({"type": "answer.done"})})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps({"type": "session.ready"})})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        frame = json.loads(message.get("text") or "{}")
        if frame.get("type") == "message.send":
            await relay(send, frame.get("text", ""))
