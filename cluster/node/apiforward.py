"""Forward TCP from the node bridge's address to the API server on 127.0.0.1 (cluster/node/up.sh runs it).

The local control plane binds 127.0.0.1 only, which a pod cannot reach. Pods reach the API server the usual
way, through the `kubernetes` Service: kube-proxy rewrites 10.0.0.1:443 to the endpoint up.sh publishes,
BRIDGE_ADDRESS:API_PORT, and this process carries those connections on to 127.0.0.1:API_PORT. TLS passes
through untouched (the serving certificate names 10.0.0.1).

    python3 cluster/node/apiforward.py --listen 10.234.0.1:26443 --to 127.0.0.1:26443
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


async def serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    server = await asyncio.start_server(handle, *listen)
    async with server:
        await server.serve_forever()


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=address, required=True, help="HOST:PORT to listen on")
    parser.add_argument("--to", type=address, required=True, help="HOST:PORT to forward to")
    parser.add_argument("--tag", help="ignored: names the node's folder, so down.sh can tell the process is its own")
    options = parser.parse_args()
    asyncio.run(serve(options.listen, options.to))


if __name__ == "__main__":
    main()
