"""ASGI entry point: HTTP goes to Django, websockets through the URL router."""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbase.settings.local")

from django.core.asgi import get_asgi_application

# Django must be set up before anything imports models (the routes do).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

# Load the query-embedding model now, in the background, not on the first question.
from bots.embeddings import warm_up_in_background  # noqa: E402
from chatbase.core.bodylimit import BodySizeLimitMiddleware  # noqa: E402
from chatbase.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": BodySizeLimitMiddleware(django_asgi_app),
        # Each websocket consumer checks its own Origin policy (the chat socket has a
        # per-bot allow-list), so no blanket AllowedHostsOriginValidator here.
        "websocket": URLRouter(websocket_urlpatterns),
    }
)


# What the server loaded to start (Django, the SDKs, the embedding model: about a million
# objects) lives as long as the process. Left to the cyclic collector, every full
# collection walked all of it and stopped every socket for 200-300 ms (bench/streaming.py);
# frozen, collections only walk what requests create.
def _freeze_heap() -> None:
    gc.collect()  # garbage made so far is freed first: what is frozen is never collected
    gc.freeze()


_freeze_heap()
warm_up_in_background(then=_freeze_heap)
