"""B1's baseline: a bare Starlette POST endpoint, served exactly like the gateway.

It reads the body and answers 202 with a small JSON body: the cost of the HTTP
server and the framework alone, which the full admission path is divided by.

    python loadtest/bare_app.py --port 8099 [--server hypercorn|uvicorn]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ANSWER = b'{"order_id":"01M877WDJG0AMZ2ZWZ16SZFPPE","status":"accepted"}'


async def create_order(request: Request) -> Response:
    await request.body()
    return Response(ANSWER, 202, media_type="application/json")


app = Starlette(routes=[Route("/v1/orders", create_order, methods=["POST"])])


async def serve_hypercorn(port: int) -> None:
    from hypercorn.asyncio import serve

    from gateway.main import hypercorn_config

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(app, hypercorn_config("127.0.0.1", port), shutdown_trigger=stop.wait)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server", choices=["hypercorn", "uvicorn"], default="hypercorn")
    args = parser.parse_args()
    if args.server == "uvicorn":
        import uvicorn

        uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                    access_log=False, log_level="warning")  # fmt: skip
    else:
        uvloop.run(serve_hypercorn(args.port))


if __name__ == "__main__":
    main()
