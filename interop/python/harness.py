"""What the slixmpp interop tests and the echo bot share.

`interop/run` starts a fresh Starling for each test and exports where it listens and which
accounts it has; this module reads that, builds slixmpp clients that talk only to that server
(an explicit host and port, so slixmpp never asks DNS; the generated certificate trusted as
the only CA, so TLS is really verified, name included), and waits for their events with
deadlines, so that a server that stays silent fails a test instead of hanging it.

A test is a script: `run_test(main)` runs the coroutine `main`, prints PASS or the reason it
failed, and sets the exit status that `interop/run` counts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterable

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

DOMAIN = os.environ["STARLING_DOMAIN"]
C2S_PORT = int(os.environ["STARLING_C2S_PORT"])
DIRECT_TLS_PORT = int(os.environ["STARLING_DIRECT_TLS_PORT"])
CA_FILE = os.environ["STARLING_CA"]

# One step (connect and log in, a message to arrive, a ping to be answered) waits this long
# at most; `interop/run` also kills the whole test after its hard timeout.
STEP_SECONDS = 10.0


class TestFailure(Exception):
    """A check failed: the message says what was expected and what came."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise TestFailure(message)


def check_equal(actual: object, expected: object, what: str) -> None:
    if actual != expected:
        raise TestFailure(f"{what}: expected {expected!r}, got {actual!r}")


def password(user: str) -> str:
    """The password `interop/run` gave `user` when it created the account."""
    return os.environ["INTEROP_PASSWORD_" + user.upper()]


def bare(user: str) -> str:
    return f"{user}@{DOMAIN}"


def trusting_context(max_tls: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client TLS context that trusts only the server's generated certificate."""
    context = ssl.create_default_context(cafile=CA_FILE)
    if max_tls is not None:
        context.maximum_version = max_tls
    return context


class Peer:
    """One slixmpp client, and what a test wants to know about its connection.

    transport is "starttls" (plain TCP upgraded with STARTTLS, RFC 6120 §5) or "direct-tls"
    (TLS from the first byte, XEP-0368); slixmpp would otherwise try both in turn, and the
    test would not know which one it exercised.
    """

    def __init__(
        self,
        user: str,
        *,
        resource: str,
        secret: str | None = None,
        transport: str = "starttls",
        mechanisms: Iterable[str] | None = None,
        max_tls: ssl.TLSVersion | None = None,
    ) -> None:
        check(transport in ("starttls", "direct-tls"), f"unknown transport {transport}")
        self.transport = transport
        self.full_jid = f"{user}@{DOMAIN}/{resource}"
        plugin_config = {}
        if mechanisms is not None:
            plugin_config["feature_mechanisms"] = {"use_mechs": list(mechanisms)}
        self.client = slixmpp.ClientXMPP(
            self.full_jid,
            secret if secret is not None else password(user),
            plugin_config=plugin_config,
        )
        client = self.client
        client.enable_plaintext = False
        client.enable_starttls = transport == "starttls"
        client.enable_direct_tls = transport == "direct-tls"
        client.ssl_context = trusting_context(max_tls)
        client.register_plugin("xep_0199")  # ping, for round trips to the server

        # What happened, for the test's assertions.
        self.messages: asyncio.Queue[slixmpp.Message] = asyncio.Queue()
        self.mechanism: str | None = None  # the SASL mechanism that succeeded
        self.offered_mechanisms: set[str] = set()
        self.failure_condition: str | None = None  # the SASL <failure/> condition
        self.tls_version: str | None = None
        self.stream_features: list = []  # every <stream:features/> received, as stanzas
        self._outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        client.add_event_handler("auth_success", self._on_auth_success)
        client.add_event_handler("failed_auth", self._on_failed_auth)
        client.add_event_handler("failed_all_auth", lambda _e: self._settle("auth-failed"))
        client.add_event_handler("no_auth", lambda _e: self._settle("no-mechanism"))
        client.add_event_handler("session_start", lambda _e: self._settle("session"))
        client.add_event_handler("connection_failed", self._on_connection_failed)
        client.add_event_handler("ssl_invalid_chain", self._on_invalid_chain)
        client.add_event_handler("disconnected", lambda _e: self._settle("disconnected"))
        client.add_event_handler("message", self.messages.put_nowait)
        client.register_handler(
            Callback(
                "interop: record stream features",
                MatchXPath("{http://etherx.jabber.org/streams}features"),
                self.stream_features.append,
            )
        )

    def _settle(self, outcome: str) -> None:
        if not self._outcome.done():
            self._outcome.set_result(outcome)

    def _mechanisms_plugin(self):
        return self.client.plugin["feature_mechanisms"]

    def _on_auth_success(self, _stanza) -> None:
        plugin = self._mechanisms_plugin()
        self.mechanism = plugin.mech.name if plugin.mech is not None else None
        self.offered_mechanisms = set(plugin.mech_list)
        self.tls_version = self._negotiated_tls_version()

    def _on_failed_auth(self, failure) -> None:
        plugin = self._mechanisms_plugin()
        self.offered_mechanisms = set(plugin.mech_list)
        self.failure_condition = failure["condition"]

    def _on_connection_failed(self, error) -> None:
        self.client.cancel_connection_attempt()  # no retry loop: a test connects once
        self._settle(f"connection-failed: {error}")

    def _on_invalid_chain(self, error) -> None:
        self.client.abort()
        self._settle(f"certificate rejected: {error}")

    def _negotiated_tls_version(self) -> str | None:
        socket = self.client.socket
        if isinstance(socket, (ssl.SSLSocket, ssl.SSLObject)):
            return socket.version()
        return None

    def _port(self) -> int:
        return DIRECT_TLS_PORT if self.transport == "direct-tls" else C2S_PORT

    async def _connect_and_wait(self) -> str:
        self.client.connect(host="127.0.0.1", port=self._port())
        try:
            return await asyncio.wait_for(asyncio.shield(self._outcome), STEP_SECONDS)
        except asyncio.TimeoutError:
            self.client.abort()
            raise TestFailure(
                f"{self.full_jid}: no session and no failure within {STEP_SECONDS}s "
                f"(SASL offered {sorted(self.offered_mechanisms)})"
            ) from None

    async def login(self, *, request_roster: bool = False):
        """Connects, authenticates, binds, sends initial presence, and waits until the server
        has processed that presence (a ping round trip: a session's stanzas are handled in
        order), so that messages to this account's bare JID reach it from now on.

        With request_roster, first gets the roster as a client does (RFC 6121 §2.2), which
        makes the session an "interested resource" that receives roster pushes; returns the
        roster result."""
        outcome = await self._connect_and_wait()
        if outcome != "session":
            raise TestFailure(
                f"{self.full_jid}: login ended with {outcome} "
                f"(SASL failure: {self.failure_condition}, mechanism: {self.mechanism})"
            )
        check_equal(str(self.client.boundjid), self.full_jid, "bound JID")
        roster = None
        if request_roster:
            try:
                roster = await self.client.get_roster(timeout=STEP_SECONDS)
            except IqError as e:
                raise TestFailure(f"roster get answered with an error: {e.iq}") from None
            except IqTimeout:
                raise TestFailure(f"roster get not answered in {STEP_SECONDS}s") from None
        self.client.send_presence()
        await self.ping_server()
        return roster

    async def login_refused(self) -> str:
        """Connects and expects authentication to fail; returns the SASL failure condition."""
        outcome = await self._connect_and_wait()
        if outcome == "session":
            await self.logout()
            raise TestFailure(f"{self.full_jid}: logged in, but the server should refuse")
        check(
            self.failure_condition is not None,
            f"{self.full_jid}: expected a SASL <failure/>, connection ended with {outcome}",
        )
        self.client.abort()
        return self.failure_condition

    async def ping_server(self) -> None:
        try:
            await self.client.plugin["xep_0199"].send_ping(DOMAIN, timeout=STEP_SECONDS)
        except IqError as e:
            raise TestFailure(f"ping to {DOMAIN} answered with an error: {e.iq}") from None
        except IqTimeout:
            raise TestFailure(f"ping to {DOMAIN} not answered in {STEP_SECONDS}s") from None

    def send_chat(self, to: str, body: str) -> None:
        self.client.send_message(mto=to, mbody=body, mtype="chat")

    async def next_message(self) -> slixmpp.Message:
        try:
            return await asyncio.wait_for(self.messages.get(), STEP_SECONDS)
        except asyncio.TimeoutError:
            raise TestFailure(f"{self.full_jid}: no message within {STEP_SECONDS}s") from None

    async def logout(self) -> None:
        """Closes the stream and waits (bounded) for the server to close its side."""
        try:
            await asyncio.wait_for(self.client.disconnect(wait=2.0), STEP_SECONDS)
        except asyncio.TimeoutError:
            self.client.abort()
            raise TestFailure(f"{self.full_jid}: the stream did not close") from None


def run_test(main: Callable[[], Awaitable[None]]) -> None:
    """Runs one test coroutine; exit status 0 when it passed, 1 when it failed."""
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("INTEROP_VERBOSE") else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    name = os.path.basename(sys.argv[0])
    try:
        asyncio.run(main())
    except TestFailure as e:
        print(f"{name}: FAILED: {e}", flush=True)
        sys.exit(1)
    except Exception:  # a library error is a failure too, with its trace
        traceback.print_exc()
        print(f"{name}: FAILED with an exception", flush=True)
        sys.exit(1)
    print(f"{name}: ok", flush=True)
