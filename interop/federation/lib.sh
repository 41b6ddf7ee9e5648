#!/usr/bin/env bash
# One federation interop test: Starling (starling.example on 127.0.0.1) and a peer server from
# Debian (prosody.example on 127.0.0.2, or ejabberd.example on 127.0.0.3), each with a certificate
# from a test CA made here by openssl, then federation/im_check.py (slixmpp) with a user on
# each side.
#
#   federation/lib.sh PEER MODE [CHECK]
#       PEER: prosody | ejabberd    MODE: certs | dialback | bidi | bidi-inbound
#       CHECK: im (default: im_check.py) | muc (muc_check.py: the peer's user joins a room
#              on Starling's conference.starling.example, which the DNS stub and Starling's
#              certificate also cover)
#
# certs:    both servers trust the test CA and insist on valid certificates (Starling
#           policy "verify", Prosody s2s_secure_auth): streams authenticate with SASL
#           EXTERNAL. One stream per direction (the peer does not offer XEP-0288).
# dialback: both trust only an unrelated CA, so no certificate verifies; Starling's policy is
#           "dialback" and the peer allows it: streams authenticate with Server Dialback.
# bidi:     certs, and the peer offers bidirectional streams (XEP-0288; Prosody's bundled
#           mod_s2s_bidi): Starling's one outbound stream carries the peer's stanzas too, and
#           the peer never opens a stream to Starling.
# bidi-inbound: bidi, but the peer's user speaks first: the peer opens the one stream and
#           Starling sends its stanzas back on it (the inbound side of XEP-0288).
#
# Name resolution never touches the machine's resolver: Starling reaches the peer through a
# static route; the peer asks dns_stub.py on 127.0.0.9:53 (Prosody: a private resolv.conf
# for libunbound; ejabberd: ERL_INETRC), which knows only starling.example. Logs stay in
# $FED_DIR (kept when INTEROP_KEEP is set). Needs STARLING_BIN and the venv's python in
# PYTHON. Exit status 0 when the test passed.
set -euo pipefail

PEER=$1 MODE=$2 CHECK=${3:-im}
HERE=$(cd "$(dirname "$0")" && pwd)
FED_DIR=$(mktemp -d "${TMPDIR:-/tmp}/starling-fed.XXXXXX")
PIDS=()
: "${STARLING_BIN:?}" "${PYTHON:?}"

cleanup() {
    local pid
    if [ "$(type -t "${PEER}_stop")" = function ]; then
        "${PEER}_stop" >/dev/null 2>&1 || true
    fi
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [ -z "${INTEROP_KEEP:-}" ]; then
        rm -rf "$FED_DIR"
    else
        echo "federation: logs kept in $FED_DIR" >&2
    fi
}
trap cleanup EXIT

fail() {
    echo "federation: $*" >&2
    for log in "$FED_DIR"/*.log; do
        [ -s "$log" ] || continue
        echo "--- $(basename "$log") (last 40 lines)" >&2
        tail -n 40 "$log" >&2
    done
    exit 1
}

case "$PEER" in
prosody) PEER_DOMAIN=prosody.example PEER_IP=127.0.0.2 ;;
ejabberd) PEER_DOMAIN=ejabberd.example PEER_IP=127.0.0.3 ;;
*) fail "unknown peer $PEER" ;;
esac
DNS_IP=127.0.0.9
# Not .test: libunbound answers NXDOMAIN for the special-use .test itself (RFC 6761 zones)
# without asking any server.
STARLING_DOMAIN=starling.example
# Starling's chat-room domain: in its certificate and in the DNS stub too, so that a peer can
# authenticate it (by certificate, or by dialback when it rides Starling's stream).
STARLING_MUC=conference.$STARLING_DOMAIN

# --- certificates ----------------------------------------------------------------------------
make_ca() { # NAME FILEBASE
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=$1" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$FED_DIR/$2.key" -out "$FED_DIR/$2.pem" 2>>"$FED_DIR/openssl.log"
}
issue() { # DOMAIN [MORE_NAMES...]
    local d=$1 san="DNS:$1" extra
    shift
    for extra in "$@"; do san="$san,DNS:$extra"; done
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$d" \
        -keyout "$FED_DIR/$d.key" -out "$FED_DIR/$d.csr" 2>>"$FED_DIR/openssl.log"
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n' \
        "$san" >"$FED_DIR/$d.ext"
    openssl x509 -req -in "$FED_DIR/$d.csr" -CA "$FED_DIR/ca.pem" -CAkey "$FED_DIR/ca.key" \
        -CAcreateserial -days 2 -extfile "$FED_DIR/$d.ext" -out "$FED_DIR/$d.crt" \
        2>>"$FED_DIR/openssl.log"
}
make_ca "Federation Test CA" ca || fail "openssl CA"
make_ca "Unrelated CA" other || fail "openssl CA"
issue "$STARLING_DOMAIN" "$STARLING_MUC" || fail "openssl certificate"
issue "$PEER_DOMAIN" || fail "openssl certificate"
case "$MODE" in
certs | bidi | bidi-inbound) TRUST=$FED_DIR/ca.pem ;;
dialback) TRUST=$FED_DIR/other.pem ;;
*) fail "unknown mode $MODE" ;;
esac
# Clients always verify the servers with the test CA.
export FED_CA=$FED_DIR/ca.pem

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() { # IP PORT PID
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
password() { head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# --- DNS stub --------------------------------------------------------------------------------
STARLING_C2S=$(free_port)
STARLING_S2S=$(free_port)
export FED_STARLING_C2S_PORT=$STARLING_C2S
# ejabberd resolves SRV targets with the system's getaddrinfo (not its inetrc), so for it the
# SRV record names the address itself, which getaddrinfo takes without asking anyone.
SRV_TARGET=$STARLING_DOMAIN
[ "$PEER" = ejabberd ] && SRV_TARGET=127.0.0.1
python3 "$HERE/dns_stub.py" "$DNS_IP" 53 \
    "A:$STARLING_DOMAIN:127.0.0.1" \
    "SRV:_xmpp-server._tcp.$STARLING_DOMAIN:0:0:$STARLING_S2S:$SRV_TARGET" \
    "A:$STARLING_MUC:127.0.0.1" \
    "SRV:_xmpp-server._tcp.$STARLING_MUC:0:0:$STARLING_S2S:$SRV_TARGET" \
    >"$FED_DIR/dns.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do
    grep -qs "^dns_stub: ready" "$FED_DIR/dns.log" && break
    sleep 0.1
done
grep -q "^dns_stub: ready" "$FED_DIR/dns.log" || fail "the DNS stub did not start"

# --- Starling --------------------------------------------------------------------------------
if [ "$MODE" = dialback ]; then POLICY=dialback; else POLICY=verify; fi
mkdir -p "$FED_DIR/starling"
cat >"$FED_DIR/starling.toml" <<TOML
[server]
hosts = ["$STARLING_DOMAIN"]
data_dir = "$FED_DIR/starling"

[tls]
cert = "$FED_DIR/$STARLING_DOMAIN.crt"
key = "$FED_DIR/$STARLING_DOMAIN.key"

[[listener]]
kind = "c2s"
address = "127.0.0.1:$STARLING_C2S"

[s2s]
enabled = true
listen = "127.0.0.1:$STARLING_S2S"
policy = "$POLICY"
trust_roots = "$TRUST"
dns = false

[[s2s.route]]
domain = "$PEER_DOMAIN"
address = "$PEER_IP:5269"

[log]
level = "${INTEROP_SERVER_LOG:-info}"
TOML
export FED_STARLING_JID=alice@$STARLING_DOMAIN FED_STARLING_PASSWORD
FED_STARLING_PASSWORD=$(password)
printf '%s\n' "$FED_STARLING_PASSWORD" |
    "$STARLING_BIN" --config "$FED_DIR/starling.toml" user add "$FED_STARLING_JID" \
        --password-stdin >"$FED_DIR/accounts.log" 2>&1 || fail "cannot create $FED_STARLING_JID"
NO_COLOR=1 "$STARLING_BIN" --config "$FED_DIR/starling.toml" serve >"$FED_DIR/starling.log" 2>&1 &
STARLING_PID=$!
PIDS+=("$STARLING_PID")
wait_port 127.0.0.1 "$STARLING_S2S" "${PIDS[-1]}" || fail "Starling did not start"

# --- the peer --------------------------------------------------------------------------------
export FED_PEER_JID=bob@$PEER_DOMAIN FED_PEER_PASSWORD FED_PEER_HOST=$PEER_IP FED_PEER_C2S_PORT=5222
FED_PEER_PASSWORD=$(password)
# shellcheck source=/dev/null
source "$HERE/$PEER.sh"
"${PEER}_start" || fail "$PEER did not start"

# --- the test --------------------------------------------------------------------------------
status=0
[ "$MODE" = bidi-inbound ] && export FED_FIRST=peer
timeout --kill-after=5 60 "$PYTHON" "$HERE/${CHECK}_check.py" >"$FED_DIR/test.log" 2>&1 ||
    status=$?
[ "$status" -eq 0 ] || fail "${CHECK}_check.py failed (status $status)"
cat "$FED_DIR/test.log"
if grep -q "panicked at" "$FED_DIR/starling.log"; then fail "Starling panicked"; fi
# Which authentication the streams used, as Starling saw it.
if [ "$MODE" = dialback ]; then want="by dialback"; else want="by certificate"; fi
if [ "$MODE" = bidi-inbound ]; then
    # bob speaks first: the peer opens the one stream and asks for bidi; Starling answers on
    # it and never opens a stream of its own.
    grep "inbound s2s stream authenticated $want" "$FED_DIR/starling.log" | grep -q "bidi=true" ||
        fail "Starling's log does not show a bidirectional inbound stream"
    if grep -q "outbound s2s stream authenticated" "$FED_DIR/starling.log"; then
        fail "Starling opened a second stream although the peer's is bidirectional"
    fi
elif [ "$MODE" = bidi ]; then
    # alice speaks first: Starling opens the one stream, asks for bidi, and the peer's
    # stanzas come back on it; the peer never needs a stream of its own.
    grep "outbound s2s stream authenticated $want" "$FED_DIR/starling.log" | grep -q "bidi=true" ||
        fail "Starling's log does not show a bidirectional outbound stream"
    if grep -q "inbound s2s stream authenticated" "$FED_DIR/starling.log"; then
        fail "the peer opened a second stream although the first one is bidirectional"
    fi
else
    for direction in inbound outbound; do
        grep -q "$direction s2s stream authenticated $want" "$FED_DIR/starling.log" ||
            fail "Starling's log does not say the $direction stream was authenticated $want"
    done
fi
if [ "$MODE" = dialback ] &&
    grep -q "s2s stream authenticated by certificate" "$FED_DIR/starling.log"; then
    fail "a certificate authenticated a stream in dialback-only mode"
fi
# Starling shuts down cleanly on SIGTERM with its s2s streams open.
kill -TERM "$STARLING_PID"
for _ in $(seq 1 100); do
    kill -0 "$STARLING_PID" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$STARLING_PID" 2>/dev/null && fail "Starling did not stop within 10 s of SIGTERM"
wait "$STARLING_PID" || fail "Starling exited with status $? after SIGTERM"
echo "federation: $PEER $MODE $CHECK ok"
