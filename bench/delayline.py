#!/usr/bin/env python3
"""TCP delay line for WAN emulation (the kernel here has no netem).

Usage: delayline.py LISTEN_HOST:PORT TARGET_HOST:PORT DELAY_MS

Each accepted connection is relayed to TARGET. Every chunk read on one side is held until
DELAY_MS after it arrived, then written to the other side, so each direction gets a fixed
one-way delay while throughput stays unlimited (bandwidth limits come from tc on the link).
Order within a direction is kept; an EOF is delayed like data and forwarded as a half-close.
Python 3 standard library only. Prints "ready" on stdout once listening.
"""

import asyncio
import sys
import time

CHUNK = 1 << 16


def split_addr(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


async def relay(reader, writer, delay):
    """Copy reader -> writer, each chunk released `delay` seconds after it was read."""
    pending = asyncio.Queue()

    async def release():
        while True:
            due, data = await pending.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            pass

    sender = asyncio.create_task(release())
    try:
        while True:
            data = await reader.read(CHUNK)
            pending.put_nowait((time.monotonic() + delay, data))
            if not data:
                break
    except (ConnectionError, OSError):
        pending.put_nowait((0.0, b""))
    try:
        await sender
    except (ConnectionError, OSError):
        pass


async def serve_one(client_r, client_w, target, delay):
    try:
        server_r, server_w = await asyncio.open_connection(*target)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(
        relay(client_r, server_w, delay),
        relay(server_r, client_w, delay),
        return_exceptions=True,
    )
    for w in (client_w, server_w):
        w.close()


async def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    listen = split_addr(sys.argv[1])
    target = split_addr(sys.argv[2])
    delay = float(sys.argv[3]) / 1000.0
    server = await asyncio.start_server(
        lambda r, w: serve_one(r, w, target, delay), *listen, reuse_address=True
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
