"""The RFC 3922 SIP/SIMPLE gateway between slixmpp and sipp (Debian's sip-tester) as the SIP
user agent, with the scenarios of interop/sip/:

1. sipp (UAC) sends a text/plain MESSAGE to sip:alice@localhost; alice receives it in slixmpp
   from bob%sip.example@sip.localhost, with its subject.
2. alice sends a chat message to bob%sip.example@sip.localhost; sipp (UAS) accepts it only if
   the Message/CPIM body carries her subject and text and the From is sip:alice@localhost.
3. sipp answers 404: alice gets the message back as an item-not-found error.
4. sipp SUBSCRIBEs to alice's presence: NOTIFY pending, then (alice's slixmpp approves the
   subscription) active with <basic>open</basic>, then closed when alice goes offline, and
   terminated when sipp unsubscribes.
"""

import asyncio
import os
import tempfile

from harness import STEP_SECONDS, Peer, TestFailure, check, check_equal, run_test

SIP_PORT = os.environ["STARLING_SIP_PORT"]
SIPP_PORT = os.environ["STARLING_SIPP_PORT"]
SCENARIOS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sip")
BOB = "bob%sip.example@sip.localhost"


async def sipp(scenario: str, *extra: str) -> asyncio.subprocess.Process:
    """Starts sipp with interop/sip/SCENARIO on 127.0.0.1:$STARLING_SIPP_PORT (one call)."""
    workdir = tempfile.mkdtemp(prefix="sipp-")
    return await asyncio.create_subprocess_exec(
        "sipp", "-sf", os.path.join(SCENARIOS, scenario),
        "-i", "127.0.0.1", "-p", SIPP_PORT,
        "-m", "1", "-nostdin", "-timeout", "25", "-timeout_error",
        *extra,
        cwd=workdir,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def succeeded(proc: asyncio.subprocess.Process, what: str) -> None:
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    except asyncio.TimeoutError:
        proc.kill()
        raise TestFailure(f"sipp ({what}) did not finish within 30 s") from None
    if proc.returncode != 0:
        raise TestFailure(f"sipp ({what}) failed with {proc.returncode}:\n{out.decode(errors='replace')[-3000:]}")


async def main() -> None:
    alice = Peer("alice", resource="phone")
    alice.client.roster.auto_authorize = True
    alice.client.roster.auto_subscribe = False
    await alice.login(request_roster=True)

    # 1. SIP -> XMPP
    await succeeded(await sipp("uac_message.xml", "-s", "alice", f"127.0.0.1:{SIP_PORT}"), "UAC MESSAGE")
    got = await alice.next_message()
    check_equal(str(got["from"]), BOB, "sender of the SIP message")
    check_equal(got["subject"], "Greetings", "subject of the SIP message")
    check_equal(got["body"].strip(), "Hello from SIP, alice.", "body of the SIP message")

    # 2. XMPP -> SIP, Message/CPIM checked by the UAS scenario
    uas = await sipp("uas_message.xml")
    await asyncio.sleep(0.5)  # sipp binds its port
    alice.client.send_message(mto=BOB, mbody="Noon at the usual place?", msubject="Lunch", mtype="chat")
    await succeeded(uas, "UAS MESSAGE")

    # 3. a SIP 404 comes back as item-not-found
    uas = await sipp("uas_404.xml")
    await asyncio.sleep(0.5)
    alice.client.send_message(mto=BOB, mbody="Anyone there?", mtype="chat")
    await succeeded(uas, "UAS 404")
    error = await alice.next_message()
    check_equal(error["type"], "error", "answer to the message the SIP side refused")
    check_equal(error["error"]["condition"], "item-not-found", "error condition")

    # 4. SIP presence subscription to alice: pending, open, closed, terminated
    watcher = await sipp("uac_subscribe.xml", "-s", "alice", f"127.0.0.1:{SIP_PORT}")
    deadline = asyncio.get_running_loop().time() + STEP_SECONDS
    while alice.client.client_roster[BOB]["subscription"] not in ("from", "both"):
        if asyncio.get_running_loop().time() > deadline:
            raise TestFailure("the SIP watcher never became a presence subscriber of alice")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the NOTIFY with <basic>open</basic> goes out
    await alice.logout()      # -> NOTIFY closed; then sipp unsubscribes
    await succeeded(watcher, "UAC SUBSCRIBE")


run_test(main)
