"""An slixmpp peer for tests written with other libraries: it answers every chat or normal
message that has a body with a chat message "echo: <body>" to the sender's full JID.

`interop/run` starts it beside the server as the `echo` account (resource `bot`) and waits
for the line "echo_bot: ready <full JID>" on its standard output, printed once the server
has processed its initial presence. It runs until SIGTERM or SIGINT, then closes its stream.
"""

import asyncio
import signal
import sys

from harness import Peer, TestFailure, run_test


async def main() -> None:
    bot = Peer("echo", resource="bot")

    def answer(message) -> None:
        if message["type"] in ("chat", "normal") and message["body"]:
            bot.client.send_message(
                mto=message["from"], mbody=f"echo: {message['body']}", mtype="chat"
            )

    bot.client.add_event_handler("message", answer)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)

    await bot.login()
    gone = asyncio.Event()
    bot.client.add_event_handler("disconnected", lambda _event: gone.set())
    print(f"echo_bot: ready {bot.client.boundjid}", flush=True)
    waiting = [asyncio.ensure_future(stopped.wait()), asyncio.ensure_future(gone.wait())]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    for task in waiting:
        task.cancel()
    if gone.is_set():
        raise TestFailure("the server closed the echo bot's stream")
    await bot.logout()


if __name__ == "__main__":
    sys.argv[0] = "echo_bot.py"
    run_test(main)
