"""A permessage-deflate client for tests/integration/deflate.rs (websockets).

    deflate_client.py < plan.json

The plan: {"url": ..., "offer": null | {"server_no_context_takeover": bool,
"client_no_context_takeover": bool, "server_max_window_bits": int|null,
"client_max_window_bits": int|true|null}, "send": [text, ...],
"expect": n}: connect (offering permessage-deflate with those parameters,
or nothing when "offer" is null), send the texts one by one, after each
read the replies ("expect" replies per text), then close.

Prints one JSON object: the server's Sec-WebSocket-Extensions answer, the
replies, and the bytes on the wire for each text sent and each reply
received (counted below the protocol, so compressed sizes), and the close
code when the server closed the connection.
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory


async def main(plan):
    offer = plan.get("offer")
    extensions = None
    if offer is not None:
        extensions = [
            ClientPerMessageDeflateFactory(
                server_no_context_takeover=offer.get("server_no_context_takeover", False),
                client_no_context_takeover=offer.get("client_no_context_takeover", False),
                server_max_window_bits=offer.get("server_max_window_bits"),
                client_max_window_bits=offer.get("client_max_window_bits", True),
            )
        ]
    result = {"extensions": None, "replies": [], "sent_bytes": [], "received_bytes": [],
              "close_code": None}
    async with connect(plan["url"], compression=None, extensions=extensions,
                       max_size=None, ping_interval=None) as ws:
        result["extensions"] = ws.response.headers.get("Sec-WebSocket-Extensions")
        protocol = ws.protocol
        counts = {"in": 0, "out": 0}
        receive_data = protocol.receive_data
        data_to_send = protocol.data_to_send

        def counting_receive(data):
            counts["in"] += len(data)
            return receive_data(data)

        def counting_send():
            chunks = data_to_send()
            counts["out"] += sum(len(chunk) for chunk in chunks)
            return chunks

        protocol.receive_data = counting_receive
        protocol.data_to_send = counting_send
        try:
            for text in plan["send"]:
                before_out = counts["out"]
                await ws.send(text)
                result["sent_bytes"].append(counts["out"] - before_out)
                for _ in range(plan.get("expect", 1)):
                    before_in = counts["in"]
                    reply = await ws.recv()
                    result["received_bytes"].append(counts["in"] - before_in)
                    result["replies"].append(reply)
        except ConnectionClosed as closed:
            result["close_code"] = closed.rcvd.code if closed.rcvd else None
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main(json.load(sys.stdin)))
