"""profanity (the terminal client, Debian's package) as a new user would drive it, under tmux,
against an slixmpp contact.

profanity runs in a detached tmux session (200x50) with a throwaway HOME and XDG directories;
the test types into it with `tmux send-keys` and reads the screen with `tmux capture-pane`,
polling each expected line with a deadline. OpenSSL, under profanity's libstrophe, trusts the
generated certificate through SSL_CERT_FILE, so TLS is really verified (`tls force`: STARTTLS
required; a certificate prompt fails the test).

alice (profanity) connects and types her password at the prompt, adds bob to her roster and
asks to see his presence. bob (slixmpp, auto-approval off) approves and asks back; profanity
shows the approval, bob online and his request; alice allows it, and `/sub show` says "both"
(so does bob's roster). alice sends `/msg bob@localhost hello from profanity`: bob receives it
from alice's full JID as a chat message and answers "pong: <body>", which must appear in
profanity's chat window. alice quits: profanity exits with status 0 and bob sees her
unavailable. On failure the test prints profanity's XMPP log tail and the screen.
"""

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

from harness import (  # noqa: E402 (the path above comes first)
    C2S_PORT,
    CA_FILE,
    STEP_SECONDS,
    Peer,
    TestFailure,
    bare,
    check,
    check_equal,
    password,
    run_test,
)

ALICE, BOB = bare("alice"), bare("bob")
BODY = "hello from profanity"
EXIT_LINE = "profanity exited with status"

# What profanity reads at start ($XDG_CONFIG_HOME/profanity/profrc): no splash screen, no
# version check over the network, no desktop notifications.
PROFRC = """\
[ui]
splash=false
vercheck=false

[notifications]
message=false
typing=false
invite=false
sub=false
room=off
"""


class Terminal:
    """profanity in a tmux session of its own (a private tmux server on a socket in `home`)."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.socket = os.path.join(home, "tmux.sock")
        self.log = os.path.join(home, "data", "profanity", "logs", "profanity.log")
        self.started = False

    def _tmux(self, *args: str, env: dict | None = None) -> str:
        try:
            done = subprocess.run(
                ["tmux", "-S", self.socket, "-f", "/dev/null", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=5,
            )
        except subprocess.TimeoutExpired:
            raise TestFailure(f"tmux {args[0]} did not return within 5 s") from None
        if done.returncode != 0:
            raise TestFailure(f"tmux {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def start(self) -> None:
        for sub in ("config/profanity", "data", "cache", "state"):
            os.makedirs(os.path.join(self.home, sub), exist_ok=True)
        with open(os.path.join(self.home, "config", "profanity", "profrc"), "w") as f:
            f.write(PROFRC)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self.home,
            "XDG_CONFIG_HOME": os.path.join(self.home, "config"),
            "XDG_DATA_HOME": os.path.join(self.home, "data"),
            "XDG_CACHE_HOME": os.path.join(self.home, "cache"),
            "XDG_STATE_HOME": os.path.join(self.home, "state"),
            "LANG": "C.UTF-8",
            "TERM": "xterm-256color",
            "SSL_CERT_FILE": CA_FILE,  # OpenSSL's default trust store: only our certificate
        }
        # The shell stays after profanity so that its exit status shows on the screen.
        command = f'profanity --log DEBUG; echo "{EXIT_LINE} $?"; sleep 60'
        self._tmux(
            "new-session", "-d", "-s", "profanity", "-x", "200", "-y", "50", command, env=env
        )
        self.started = True

    def type(self, text: str) -> None:
        """Types a line: the text literally, then Enter."""
        self._tmux("send-keys", "-t", "profanity", "-l", text)
        self._tmux("send-keys", "-t", "profanity", "Enter")

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-J", "-t", "profanity")

    async def wait_for(self, pattern: str, what: str) -> re.Match:
        """Waits (bounded) until the screen matches `pattern` (a regular expression); fails
        at once when profanity reports a TLS or login failure."""
        deadline = time.monotonic() + STEP_SECONDS
        while True:
            screen = self.screen()
            found = re.search(pattern, screen)
            if found:
                return found
            for trouble in (
                "TLS certificate verification failed",
                "Login failed",
                "Lost connection",
                EXIT_LINE,
            ):
                if trouble in screen:
                    raise TestFailure(f"waiting for {what}, profanity said: {trouble}")
            if time.monotonic() > deadline:
                raise TestFailure(f"not on profanity's screen within {STEP_SECONDS}s: {what}")
            await asyncio.sleep(0.1)

    def dump(self) -> None:
        """Prints the end of profanity's XMPP log and the screen, for a failure report."""
        try:
            with open(self.log, errors="replace") as f:
                lines = [line.rstrip() for line in f if "SENT:" in line or "RECV:" in line]
            print("--- profanity's log (stanzas, last 20)")
            for line in lines[-20:]:
                print(line[:300])
        except OSError as e:
            print(f"--- no profanity log: {e}")
        if self.started:
            try:
                screen = self.screen()
            except TestFailure as e:
                screen = f"(no screen: {e})"
            print("--- profanity's screen")
            print("\n".join(line.rstrip() for line in screen.splitlines() if line.strip()))

    def stop(self) -> None:
        if self.started:
            self.started = False
            try:
                self._tmux("kill-server")
            except TestFailure:
                pass


class Bob(Peer):
    """bob on slixmpp: answers nothing by himself; remembers every presence he receives."""

    def __init__(self) -> None:
        super().__init__("bob", resource="home")
        self.client.roster.auto_authorize = None
        self.client.roster.auto_subscribe = False
        self.presences: list = []
        self.client.add_event_handler("presence", self.presences.append)

    async def presence_from(self, what: str, pred) -> object:
        deadline = time.monotonic() + STEP_SECONDS
        while True:
            for stanza in self.presences:
                if pred(stanza):
                    return stanza
            if time.monotonic() > deadline:
                seen = "\n  ".join(str(p) for p in self.presences) or "(none)"
                raise TestFailure(f"bob did not see {what}; presence received:\n  {seen}")
            await asyncio.sleep(0.05)

    def subscription(self, contact: str) -> str:
        roster = self.client.client_roster
        return roster[contact]["subscription"] if contact in roster else "(no item)"


async def conversation(term: Terminal, bob: Bob) -> None:
    await term.wait_for(r"\[offline\]", "profanity started (offline)")

    term.type(f"/connect {ALICE} server 127.0.0.1 port {C2S_PORT} tls force")
    await term.wait_for(r"Enter password:", "the password prompt")
    term.type(password("alice"))
    login = await term.wait_for(
        rf"{re.escape(ALICE)}/(\S+) logged in successfully", "alice logged in"
    )
    alice_full = f"{ALICE}/{login.group(1)}"

    term.type(f"/roster add {BOB}")
    await term.wait_for(rf"Roster item added: {re.escape(BOB)}", "the roster push for bob")
    term.type(f"/sub request {BOB}")
    await term.wait_for(rf"Sent subscription request to {re.escape(BOB)}", "/sub request")
    await bob.presence_from(
        "alice's subscription request",
        lambda p: p["type"] == "subscribe" and str(p["from"]) == ALICE,
    )

    await bob.ping_server()
    leaked = [str(p) for p in bob.presences if str(p["from"]).startswith(ALICE + "/")]
    check(not leaked, f"bob saw alice's presence before he approved: {leaked}")
    bob.client.send_presence(pto=ALICE, ptype="subscribed")
    await term.wait_for(rf"Subscription received from {re.escape(BOB)}", "bob's approval")
    await term.wait_for(rf"{re.escape(BOB)} \(home\) is online", "bob/home online")
    bob.client.send_presence(pto=ALICE, ptype="subscribe")
    await term.wait_for(
        rf"Received authorization request from {re.escape(BOB)}", "bob's subscription request"
    )
    term.type(f"/sub allow {BOB}")
    await bob.presence_from(
        "alice's approval", lambda p: p["type"] == "subscribed" and str(p["from"]) == ALICE
    )
    await bob.presence_from(
        f"{alice_full} available",
        lambda p: p["type"] == "available" and str(p["from"]) == alice_full,
    )
    term.type(f"/sub show {BOB}")
    await term.wait_for(rf"{re.escape(BOB)} subscription status: both", "/sub show: both")
    check_equal(bob.subscription(ALICE), "both", "alice's subscription in bob's roster")

    term.type(f"/msg {BOB} {BODY}")
    got = await bob.next_message()
    check_equal(
        (str(got["from"]), str(got["to"]), got["type"], got["body"]),
        (alice_full, BOB, "chat", BODY),
        "profanity's message to bob (from, to, type, body)",
    )
    reply = f"pong: {BODY}"
    bob.client.send_message(mto=got["from"], mbody=reply, mtype="chat")
    await term.wait_for(
        rf"{re.escape(bob.full_jid)}: {re.escape(reply)}", "bob's answer in the chat window"
    )

    term.type("/quit")
    done = await term.wait_for(rf"{EXIT_LINE} (\d+)", "profanity's exit")
    check_equal(done.group(1), "0", "profanity's exit status")
    await bob.presence_from(
        f"{alice_full} unavailable",
        lambda p: p["type"] == "unavailable" and str(p["from"]) == alice_full,
    )
    check(bob.messages.empty(), "bob got more than the one message")


async def main() -> None:
    if shutil.which("profanity") is None or shutil.which("tmux") is None:
        raise TestFailure("profanity and tmux must be installed (scripts/test installs them)")
    home = tempfile.mkdtemp(prefix="starling-profanity.")
    term = Terminal(home)
    bob = Bob()
    try:
        await bob.login(request_roster=True)
        term.start()
        await conversation(term, bob)
        await bob.logout()
    except BaseException:
        term.dump()
        raise
    finally:
        term.stop()
        if os.environ.get("INTEROP_KEEP"):
            print(f"profanity's home kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    run_test(main)
