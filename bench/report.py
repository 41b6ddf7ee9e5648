#!/usr/bin/env python3
"""Turns the JSON figures of one bench/run into BENCHMARKS.md (printed on stdout).

    report.py RESULTS_DIR

RESULTS_DIR holds meta.json (machine, versions, settings) and SERVER-LABEL.json, one per
`starling bench --json` run (SERVER: starling, prosody, ejabberd, relay). One table per
scenario: the figures of each server side by side and the ratios Starling/Prosody,
Starling/ejabberd (and Starling/relay for chat). Then the issue 7 targets, each met or
missed. Figures missing from a run (a server failed to start, a scenario does not exist yet)
are shown as "-".
"""
import json
import os
import sys

PEERS = ["starling", "prosody", "ejabberd"]
TITLES = {"starling": "Starling", "prosody": "Prosody", "ejabberd": "ejabberd", "relay": "relay",
          "relayxml": "relay + client XML"}
# The relay twice: bytes only, and with the load generator doing chat's per-message XML work
# (building, serialising and parsing each message) so that it differs from chat only by the
# server.
RELAYS = ["relay", "relayxml"]

# Known figures per scenario: (label, path in the JSON, unit, "higher" or "lower" is better).
LAT = [
    ("latency p50", "p50_us", "ms", "lower"),
    ("latency p99", "p99_us", "ms", "lower"),
    ("latency p999", "p999_us", "ms", "lower"),
]
LOSS = [
    ("lost", "lost", "", None),
    ("duplicated", "duplicated", "", None),
    ("reordered", "reordered", "", None),
    ("errors", "errors", "", None),
]
ROWS = {
    "login": [
        ("logins/s", "logins_per_sec", "", "higher"),
        ("login p50", "p50_us", "ms", "lower"),
        ("login p99", "p99_us", "ms", "lower"),
        ("succeeded", "succeeded", "", None),
        ("failed", "failed", "", None),
    ],
    "idle": [
        ("sessions held", "sessions", "", None),
        ("failed", "failed", "", None),
        ("server RSS before", "rss_before_kib", "KiB", None),
        ("server RSS with sessions", "rss_after_kib", "KiB", None),
        ("RSS per session", "bytes_per_session", "KiB/session", "lower"),
    ],
    "chat": [("offered/s (paced)", "offered_per_sec", "", None),
             ("delivered/s", "messages_per_sec", "", "higher")] + LAT
    + [("delivered", "delivered", "", None)] + LOSS,
    "presence": [("presences delivered/s", "presences_per_sec", "", "higher")] + LAT[:2]
    + [
        ("subscriptions made (setup)", "subscriptions_made", "", None),
        ("setup time", "setup_s", "s", "lower"),
        ("login presences seen", "login_presences", "", None),
        ("login time (all)", "login_s", "s", "lower"),
        ("expected", "expected", "", None),
        ("delivered", "delivered", "", None),
    ] + LOSS,
    "archive": [
        ("chat delivered/s (MAM on)", "messages_per_sec", "", "higher"),
        ("chat latency p99", "p99_us", "ms", "lower"),
        ("MAM queries/s", "queries_per_sec", "", "higher"),
        ("archived messages returned/s", "archived_per_sec", "", "higher"),
        ("query p50", "query_p50_us", "ms", "lower"),
        ("query p99", "query_p99_us", "ms", "lower"),
        ("messages sent", "sent", "", None),
        ("first pass returned", "first_pass_messages", "", None),
        ("query errors", "query_errors", "", None),
    ] + LOSS,
    "muc": [
        ("deliveries/s", "deliveries_per_sec", "", "higher"),
    ] + LAT[:2] + [
        ("rooms x occupants", "rooms", "", None),
        ("join time", "join_s", "s", "lower"),
        ("expected", "expected", "", None),
        ("delivered", "delivered", "", None),
    ] + LOSS,
    "churn": [
        ("chat delivered/s before (mean)", "before_per_sec", "", "higher"),
        ("chat delivered/s after (mean)", "after_per_sec", "", "higher"),
        ("after / before", "ratio", "ratio", None),
        ("chat runs before", "before_runs", "", None),
        ("chat runs after", "after_runs", "", None),
        ("server CPU per message before", "server_us_per_msg_before", "us", "lower"),
        ("server CPU per message after", "server_us_per_msg_after", "us", "lower"),
        ("server CPU per message, after / before", "cpu_ratio", "ratio", None),
        ("logins and logouts", "logins", "", None),
        ("logins failed", "logins_failed", "", None),
        ("logins/s during churn", "logins_per_sec", "", "higher"),
        ("lost before / after", "before_lost", "", None),
        ("lost after", "after_lost", "", None),
    ],
}
SCENARIO_TEXT = {
    "login": "N accounts log in once each (STARTTLS, SASL, bind, presence, one ping), 32 at a time. "
    "The load generator shares the machine and derives the SCRAM salted password (4096 "
    "PBKDF2 iterations) for every login, so this is the throughput of client and server "
    "together, and the ratios understate the servers' differences.",
    "login-cached": "`login` as a returning client: each account first logs in once, untimed, "
    "and the load generator keeps its SCRAM salted password (RFC 5802 §5.1, as Conversations, "
    "Gajim and Dino do); the timed logins skip PBKDF2 in the client, so the figure is the "
    "servers' side of a login (TLS handshake, SASL, bind, presence, ping).",
    "idle": "N authenticated TLS sessions held; server memory (VmRSS from /proc) before and after.",
    "idle-max": "Starling only: as many sessions as the per-process descriptor limit allows, "
    "from two load generators (two virtual hosts). RSS before = the fresh server's, before "
    "the first idle run.",
    "chat": "P sender/receiver pairs, each sender with at most W messages in flight.",
    "chat-w1": "The same pairs with one message in flight each: latency at a lighter load.",
    "chat-half": "The same pairs and window, the senders paced (`--rate`) to half of Starling's "
    "`chat` figure in all, the same offered load for every server: latency at a fixed load "
    "(issue 7: p99 under 2 ms at half of the peak rate). A server that cannot keep up "
    "delivers less than offered.",
    "presence": "Groups of K+1 mutual contacts (subscriptions made first), all log in, then "
    "each changes status, with a bounded number of changes not yet seen by all its contacts.",
    "archive": "`chat` with MAM on (every server restarted with MAM archiving everything), "
    "then every account pages through its archive (XEP-0313, pages of 50).",
    "muc": "Rooms of this many occupants (about 100 occupants in all), two senders per room, "
    "each with at most 16 messages not yet delivered to every occupant; deliveries counted "
    "at the receivers, the sender's echo included.",
    "churn": "`chat` twice, then up to N logins and logouts (the login phase also ends after "
    "the duration), then `chat` twice again; each side's figure is the mean of its two runs "
    "(issue 7: within 5%). Two runs in a row with nothing between them differ by up to 9% on "
    "this machine, so the server's CPU time per delivered message on each side (from "
    "/proc/PID/stat) is given too: it shows whether the server does more work per message "
    "after the churn.",
}


def get(doc, path):
    for key in path.split("."):
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def fmt(value, unit):
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value / 1000:.3f} ms"
    if unit == "KiB/session":
        return f"{value / 1024:.1f} KiB"
    if unit == "ratio":
        return f"{value:.3f}"
    if unit == "us":
        return f"{value:.2f} µs"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "KiB":
        return f"{value:,} KiB".replace(",", " ")
    if isinstance(value, float):
        return f"{value:,.1f}".replace(",", " ")
    if isinstance(value, int):
        return f"{value:,}".replace(",", " ")
    return str(value)


def ratio(a, b, better):
    if better is None or a is None or b is None or not b:
        return "-"
    r = a / b
    word = ""
    if better == "higher":
        word = " faster" if r > 1 else ""
    return f"{r:.2f}x{word}" if r < 100 else f"{r:.0f}x{word}"


def flatten(doc, prefix=""):
    """Numeric leaves of a scenario nobody described in ROWS."""
    skip = {"concurrency", "duration_s", "users"}
    out = []
    for key, value in doc.items():
        path = prefix + key
        if isinstance(value, dict):
            out.extend(flatten(value, path + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key not in skip:
            unit = "ms" if key.endswith("_us") else ""
            better = None
            if key.endswith("per_sec"):
                better = "higher"
            elif key.endswith("_us") or key == "bytes_per_session":
                better = "lower"
            out.append((path, path, unit, better))
    return out


def main():
    results = sys.argv[1]
    meta = json.load(open(os.path.join(results, "meta.json")))
    runs = {}
    for name in sorted(os.listdir(results)):
        if name == "meta.json" or not name.endswith(".json"):
            continue
        server, label = name[:-5].split("-", 1)
        try:
            runs[(server, label)] = json.load(open(os.path.join(results, name)))
        except (OSError, ValueError) as e:
            print(f"report: {name}: {e}", file=sys.stderr)
    merge_idle_max(runs)
    labels = []
    for _, label in runs:
        if label not in labels:
            labels.append(label)
    order = ["login", "login-cached", "idle", "idle-max", "chat", "chat-half", "chat-w1"]
    labels.sort(key=lambda l: (order.index(l) if l in order else len(order), l))

    out = []
    w = out.append
    w("# Benchmarks: Starling, Prosody and ejabberd side by side")
    w("")
    w("Generated by `bench/run` (issue 7); do not edit by hand, run it again. The ratios, not")
    w("the absolute figures, are the claim: every server ran on the same machine, in turn, on")
    w("loopback, driven by the same load generator (`starling bench`).")
    if meta.get("quick"):
        w("")
        w("**This is a `--quick` smoke run: the sizes are too small to compare servers.**")
    w("")
    w("## Run")
    w("")
    w("| | |")
    w("|---|---|")
    w(f"| date | {meta['date']} |")
    w(f"| commit | `{meta['commit']}` |")
    w(f"| machine | {meta['cpu']}, {meta['cores']} cores, {meta['ram_kib'] // 1024} MiB RAM, "
      f"Linux {meta['kernel']}, descriptor limit {meta['fd_limit']} per process |")
    w(f"| Starling | {meta['starling']} (release build) |")
    w(f"| Prosody | {meta['prosody']} (Lua {meta['lua']}, epoll backend) |")
    w(f"| ejabberd | {meta['ejabberd']} (Erlang/OTP {meta['erlang']}) |")
    w(f"| run time | {meta['elapsed_s'] // 60} min {meta['elapsed_s'] % 60} s |")
    w("")
    for note in meta.get("notes", []):
        w(f"- {note}")
    if meta.get("notes"):
        w("")
    w("## Settings (the same for every server)")
    w("")
    w(f"- TLS: STARTTLS required on c2s, one P-256 certificate for `bench.example` from a throwaway CA.")
    w(f"- SASL: {meta['mechanism']} for every login; accounts stored as SCRAM keys with "
      f"{meta['iterations']} PBKDF2 iterations (Starling: SHA-1 and SHA-256 keys; Prosody: "
      "`internal_hashed`; ejabberd: `auth_password_format: scram`). The load generator "
      "derives the salted password on every login (no client-side cache), except in "
      "`login-cached`.")
    w("- No rate limits or traffic shaping: Starling `[limits] session_stanzas_per_sec = 0`, "
      "`session_bytes_per_sec = 0`, no per-IP connection cap; Prosody without `mod_limits`; "
      "ejabberd c2s listener `shaper: none`, no shaper rules but `max_user_sessions`.")
    w("- Storage: each server's default embedded store (Starling SQLite, Prosody `internal` "
      "files, ejabberd Mnesia). MAM off except in the `archive` scenario, where every server "
      "is restarted with MAM on and archiving every message by default. MUC on "
      "`conference.bench.example`.")
    also = f" (Starling also {meta['idle_max']})" if meta["idle_max"] else ""
    w(f"- Sizes: login {meta['login_users']} accounts; idle {meta['idle_sessions']} sessions{also}; "
      f"chat {meta['pairs']} pairs, window {meta['window']}, {meta['duration_s']} s; churn "
      f"{meta.get('churn_logins', '-')} logins; MUC rooms of {meta.get('muc_sizes', '-')}; "
      f"presence {meta.get('contacts', '-')} contacts each.")
    w("- Memory: VmRSS of the server process from /proc (Starling: `starling`; Prosody: its "
      "`lua` process; ejabberd: `beam.smp`).")
    w("")

    for label in labels:
        scenario = label.split("-")[0]
        servers = [s for s in PEERS + RELAYS if (s, label) in runs]
        if not servers:
            continue
        rows = ROWS.get(scenario)
        if rows is None:
            rows = []
            for s in servers:
                for r in flatten(runs[(s, label)]):
                    if r[0] not in [x[0] for x in rows]:
                        rows.append(r)
        w(f"## {label}")
        w("")
        sample = runs[(servers[0], label)]
        text = SCENARIO_TEXT.get(label)
        if text:
            w(text)
            w("")
        keys = ("users", "pairs", "window", "rooms", "occupants", "senders", "contacts", "logins", "concurrency", "duration_s")
        setting = ", ".join(f"{k} {sample[k]}" for k in keys if k in sample)
        if setting:
            w(f"Settings: {setting}.")
            w("")
        cols = [TITLES[s] for s in servers]
        ratio_cols = [(p, f"Starling/{TITLES[p]}") for p in servers if p != "starling"] if "starling" in servers else []
        w("| figure | " + " | ".join(cols + [c for _, c in ratio_cols]) + " |")
        w("|---|" + "---:|" * (len(cols) + len(ratio_cols)))
        for name, path, unit, better in rows:
            values = [get(runs[(s, label)], path) for s in servers]
            if path == "rooms":
                values = [None if v is None else f"{v} x {get(runs[(s, label)], 'occupants')}"
                          for s, v in zip(servers, values)]
            if all(v is None for v in values):
                continue
            cells = [fmt(v, unit) for v in values]
            if ratio_cols:
                mine = get(runs[("starling", label)], path)
                for p, _ in ratio_cols:
                    cells.append(ratio(mine, get(runs[(p, label)], path), better))
            w(f"| {name} | " + " | ".join(cells) + " |")
        w("")

    w("## Targets (issue 7)")
    w("")
    w("| target | measured | |")
    w("|---|---|---|")
    for row in targets(runs):
        w("| " + " | ".join(row) + " |")
    w("")
    print("\n".join(out))


def merge_idle_max(runs):
    """The two generators of Starling's idle-max run count as one run."""
    a, b = runs.get(("starling", "idle-max-a")), runs.get(("starling", "idle-max-b"))
    if a is None:
        return
    runs.pop(("starling", "idle-max-a"))
    runs.pop(("starling", "idle-max-b"), None)
    merged = dict(a)
    other_sessions = b["sessions"] if b else 0
    merged["sessions"] = a["sessions"] + other_sessions
    merged["failed"] = a["failed"] + (b["failed"] if b else 0)
    # The baseline is the fresh server's RSS before the first idle run: when idle-max starts,
    # memory from earlier scenarios may not have gone back to the system, and the other
    # generator is already connecting.
    base = get(runs.get(("starling", "idle"), {}), "rss_before_kib")
    if base is None:
        base = a.get("rss_before_kib")
    if a.get("rss_after_kib") is not None and base is not None and merged["sessions"]:
        merged["rss_before_kib"] = base
        merged["bytes_per_session"] = (a["rss_after_kib"] - base) * 1024 / merged["sessions"]
    runs[("starling", "idle-max")] = merged


def targets(runs):
    def v(server, label, path):
        doc = runs.get((server, label))
        return None if doc is None else get(doc, path)

    def verdict(ok):
        return "-" if ok is None else ("met" if ok else "**missed**")

    rows = []
    s_chat = v("starling", "chat", "messages_per_sec")
    for relay in RELAYS:
        relay_chat = v(relay, "chat", "messages_per_sec")
        if relay_chat is None and relay != "relay":
            continue
        share = s_chat / relay_chat if s_chat and relay_chat else None
        rows.append([f"chat >= 25% of the {TITLES[relay]}'s messages/s",
                     f"{share * 100:.1f}% ({s_chat:,.0f} of {relay_chat:,.0f}/s)" if share else "-",
                     verdict(None if share is None else share >= 0.25)])
    p99, rate = v("starling", "chat-half", "p99_us"), v("starling", "chat-half", "messages_per_sec")
    offered = v("starling", "chat-half", "offered_per_sec")
    # Met only when the paced run kept up with the offered half of the peak.
    kept_up = rate is not None and offered and s_chat and rate >= 0.98 * offered and offered <= 0.5 * s_chat * 1.01
    rows.append(["chat p99 < 2 ms at half of the peak rate (`chat-half`: senders paced to half of `chat`)",
                 f"p99 {p99 / 1000:.3f} ms at {rate:,.0f}/s delivered of {offered:,}/s offered ({offered / s_chat * 100:.0f}% of peak)" if p99 is not None and rate and offered and s_chat else "-",
                 verdict(None if p99 is None or not offered else (kept_up and p99 < 2000))])
    p99w, ratew = v("starling", "chat-w1", "p99_us"), v("starling", "chat-w1", "messages_per_sec")
    if p99w is not None and ratew and s_chat:
        rows.append(["(for comparison) chat p99 with one message in flight per pair",
                     f"p99 {p99w / 1000:.3f} ms at {ratew:,.0f}/s ({ratew / s_chat * 100:.0f}% of peak)", "-"])
    per, n = v("starling", "idle", "bytes_per_session"), v("starling", "idle", "sessions")
    rows.append(["idle <= 10 KiB per authenticated TLS session at 10,000 sessions",
                 f"{per / 1024:.1f} KiB at {n:,} sessions" if per is not None else "-",
                 verdict(None if per is None or n < 10000 else per <= 10 * 1024)])
    held, failed = v("starling", "idle-max", "sessions"), v("starling", "idle-max", "failed")
    rows.append(["sessions held up to the descriptor limit without error",
                 f"{held:,} held, {failed} failed" if held is not None else "-",
                 verdict(None if held is None else failed == 0 and held >= 19000)])
    s_login, e_login = v("starling", "login", "logins_per_sec"), v("ejabberd", "login", "logins_per_sec")
    rows.append(["SCRAM login >= 5x ejabberd",
                 f"{s_login / e_login:.1f}x ({s_login:,.0f} vs {e_login:,.0f}/s)" if s_login and e_login else "-",
                 verdict(None if not (s_login and e_login) else s_login >= 5 * e_login)])
    s_cached, e_cached = v("starling", "login-cached", "logins_per_sec"), v("ejabberd", "login-cached", "logins_per_sec")
    rows.append(["SCRAM login >= 5x ejabberd, salted password cached by the client",
                 f"{s_cached / e_cached:.1f}x ({s_cached:,.0f} vs {e_cached:,.0f}/s)" if s_cached and e_cached else "-",
                 verdict(None if not (s_cached and e_cached) else s_cached >= 5 * e_cached)])
    ratio_after = v("starling", "churn", "ratio")
    cpu_after = v("starling", "churn", "cpu_ratio")
    churn_text = "-"
    if ratio_after is not None:
        churn_text = f"after/before {ratio_after:.3f} ({v('starling', 'churn', 'logins')} logins)"
        if cpu_after is not None:
            churn_text += f"; server CPU per message after/before {cpu_after:.3f}"
    rows.append(["chat after 10,000 logins and logouts within 5% of before", churn_text,
                 verdict(None if ratio_after is None else ratio_after >= 0.95)])
    for label, path in [("presence", "presences_per_sec"), ("archive", "queries_per_sec"),
                        ("archive", "messages_per_sec")] + [
                            (l, "deliveries_per_sec") for l in sorted({l for (_, l) in runs if l.startswith("muc")})]:
        mine = v("starling", label, path)
        peers = [(p, v(p, label, path)) for p in ("prosody", "ejabberd")]
        if mine is None or any(x is None for _, x in peers):
            shown = "-" if mine is None else f"{mine:,.0f}/s; a peer has no figure"
            rows.append([f"{label} {path}: ahead of both peers", shown, "-"])
            continue
        shown = ", ".join(f"{mine / x:.1f}x {TITLES[p]}" if x else f"{TITLES[p]} 0" for p, x in peers)
        rows.append([f"{label} {path}: ahead of both peers", shown,
                     verdict(all(x == 0 or mine > x for _, x in peers))])
    return rows


if __name__ == "__main__":
    main()
