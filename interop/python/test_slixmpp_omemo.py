"""slixmpp-omemo: an OMEMO-encrypted message between two accounts through Starling.

alice and bob each load slixmpp-omemo (OMEMO 2 and legacy OMEMO, in-memory key storage,
blind trust before verification). On login each publishes its device list and bundle to its
own PEP service with publish-options (open access model, persistent items, max_items) and
subscribes to the other's device list through entity capabilities (+notify): this is the part
of the server the test exercises. alice then encrypts a message for bob — slixmpp-omemo
fetches bob's device list and bundle from bob's PEP node — and sends it; bob's copy must be
encrypted on the wire (no plaintext body) and decrypt to exactly what alice wrote. Then bob
answers the same way, which also proves the session alice's message started.
"""

import asyncio
import sys
from typing import Any, Dict, FrozenSet, Optional

from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import DeviceInformation, JSONType
from slixmpp import JID
from slixmpp.plugins import register_plugin
from slixmpp_omemo import TrustLevel, XEP_0384

from harness import STEP_SECONDS, Peer, TestFailure, bare, check, check_equal, run_test


class MemoryStorage(Storage):
    """Keys kept in memory: each test run starts with fresh identities."""

    def __init__(self) -> None:
        super().__init__()
        self.data: Dict[str, JSONType] = {}

    async def _load(self, key: str) -> Maybe[JSONType]:
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self.data[key] = value

    async def _delete(self, key: str) -> None:
        self.data.pop(key, None)


class TestOmemo(XEP_0384):
    """slixmpp-omemo with in-memory storage and blind trust before verification."""

    default_config = {"fallback_message": "This message is OMEMO encrypted."}

    def plugin_init(self) -> None:
        self._memory = MemoryStorage()
        super().plugin_init()

    @property
    def storage(self) -> Storage:
        return self._memory

    @property
    def _btbv_enabled(self) -> bool:
        return True

    async def _devices_blindly_trusted(
        self, blindly_trusted: FrozenSet[DeviceInformation], identifier: Optional[str]
    ) -> None:
        pass

    async def _prompt_manual_trust(
        self, manually_trusted: FrozenSet[DeviceInformation], identifier: Optional[str]
    ) -> None:
        session_manager = await self.get_session_manager()
        for device in manually_trusted:
            await session_manager.set_trust(
                device.bare_jid, device.identity_key, TrustLevel.TRUSTED.value
            )


register_plugin(TestOmemo)


def omemo_peer(user: str, resource: str) -> tuple[Peer, asyncio.Future]:
    peer = Peer(user, resource=resource)
    client = peer.client
    for plugin in ("xep_0030", "xep_0060", "xep_0163", "xep_0280", "xep_0334"):
        client.register_plugin(plugin)
    client.register_plugin("xep_0384", module=sys.modules[__name__])
    ready: asyncio.Future = asyncio.get_running_loop().create_future()
    client.add_event_handler(
        "omemo_initialized", lambda *_: ready.done() or ready.set_result(True)
    )
    return peer, ready


async def wait(what: str, fut: asyncio.Future, seconds: float = 3 * STEP_SECONDS) -> Any:
    try:
        return await asyncio.wait_for(fut, seconds)
    except asyncio.TimeoutError:
        raise TestFailure(f"not within {seconds}s: {what}") from None


async def send_encrypted(sender: Peer, recipient: str, text: str) -> None:
    xep = sender.client["xep_0384"]
    # The +notify event with the peer's device list may still be on its way; fetch the list
    # from the peer's PEP node as a client does when it first writes to someone.
    await xep.refresh_device_lists({JID(recipient)}, force_download=True)
    message = sender.client.make_message(mto=JID(recipient), mtype="chat")
    message["body"] = text
    encrypted, errors = await xep.encrypt_message(message, JID(recipient))
    check(not errors, f"{sender.full_jid}: encryption errors {errors}")
    check(encrypted is not None, f"{sender.full_jid}: nothing to send")
    encrypted.send()


async def receive_decrypted(receiver: Peer, sender_jid: str) -> str:
    xep = receiver.client["xep_0384"]
    while True:
        message = await receiver.next_message()
        if message["type"] == "error":
            raise TestFailure(f"error stanza instead of a message: {message}")
        if not xep.is_encrypted(message):
            continue  # e.g. a headline with a PEP event
        check_equal(str(message["from"].bare), sender_jid, "sender of the encrypted message")
        check(
            "secret" not in str(message["body"]),
            f"plaintext on the wire: {message['body']!r}",
        )
        decrypted, device = await xep.decrypt_message(message)
        check_equal(device.bare_jid, sender_jid, "sending device's account")
        return decrypted["body"]


async def main() -> None:
    alice, alice_ready = omemo_peer("alice", "phone")
    bob, bob_ready = omemo_peer("bob", "laptop")
    bob.client.roster.auto_authorize = True
    bob.client.roster.auto_subscribe = True
    alice.client.roster.auto_authorize = True
    alice.client.roster.auto_subscribe = True
    await alice.login(request_roster=True)
    await bob.login(request_roster=True)
    await wait("alice's OMEMO data published", alice_ready)
    await wait("bob's OMEMO data published", bob_ready)

    # Mutual presence subscription, as clients do before OMEMO.
    alice.client.send_presence(pto=bare("bob"), ptype="subscribe")
    deadline = asyncio.get_running_loop().time() + STEP_SECONDS
    while True:
        item = alice.client.client_roster[bare("bob")]
        if item["subscription"] == "both":
            break
        if asyncio.get_running_loop().time() > deadline:
            raise TestFailure(f"subscription is {item['subscription']!r}, not 'both'")
        await asyncio.sleep(0.05)

    await send_encrypted(alice, bare("bob"), "the secret is 42")
    got = await wait("bob's decrypted message", receive_decrypted(bob, bare("alice")))
    check_equal(got, "the secret is 42", "bob's decrypted text")

    await send_encrypted(bob, bare("alice"), "secret received")
    got = await wait("alice's decrypted answer", receive_decrypted(alice, bare("bob")))
    check_equal(got, "secret received", "alice's decrypted text")

    await alice.logout()
    await bob.logout()


run_test(main)
