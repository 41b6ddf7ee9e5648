# shellcheck shell=bash
# A throwaway Starling for one interop test. Sourced by interop/run (bash).
#
#   interop_certificate DIR      once per run: DIR/cert.pem and DIR/key.pem, a self-signed
#                                certificate for $STARLING_DOMAIN made by openssl (the server
#                                is configured with it, the clients trust it as their only CA)
#   server_start WORKDIR         writes WORKDIR/starling.toml (data in WORKDIR/data, listeners
#                                on free loopback ports), creates the accounts $INTEROP_ACCOUNTS
#                                with the CLI, starts `starling serve` (log in WORKDIR/server.log)
#                                and waits until its ports accept connections; exports
#                                STARLING_C2S_PORT, STARLING_DIRECT_TLS_PORT and
#                                STARLING_HTTP_PORT (plaintext HTTP: WebSocket, BOSH), and
#                                STARLING_COMPONENT_PORT where the component
#                                $STARLING_COMPONENT_DOMAIN (XEP-0114) may connect with
#                                $STARLING_COMPONENT_SECRET, and STARLING_SIP_PORT where the
#                                SIP gateway (sip.$STARLING_DOMAIN) listens, UDP and TCP, with
#                                the SIP domain sip.example routed to 127.0.0.1:STARLING_SIPP_PORT
#   server_stop                  SIGTERM, then waits; fails when the server does not exit by
#                                itself with status 0 within 10 s (it is then killed)
#
# Needs STARLING_BIN (the binary), STARLING_DOMAIN, STARLING_CA and STARLING_KEY, and
# INTEROP_PASSWORD_<USER> for each user of INTEROP_ACCOUNTS.

SERVER_PID=

interop_certificate() {
    local dir=$1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=$STARLING_DOMAIN" -addext "subjectAltName=DNS:$STARLING_DOMAIN" \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>"$dir/openssl.log" || {
        cat "$dir/openssl.log" >&2
        return 1
    }
}

# Prints N distinct TCP ports that were free on 127.0.0.1 a moment ago.
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
sockets = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    sockets.append(s)
print(" ".join(str(s.getsockname()[1]) for s in sockets))
EOF
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The server listens on both ports. A connection to the direct-TLS port that closes without a
# handshake gets logged as a failed handshake, so that port is only probed when the log does
# not already name it.
listening() {
    local dir=$1 c2s=$2 tls=$3 http=$4
    port_open "$c2s" || return 1
    port_open "$http" || return 1
    grep -q "127\.0\.0\.1:$tls\b" "$dir/server.log" || port_open "$tls"
}

write_config() {
    local dir=$1 c2s=$2 tls=$3 http=$4 component=$5 sip=$6 sipp=$7
    cat >"$dir/starling.toml" <<EOF
[server]
hosts = ["$STARLING_DOMAIN"]
data_dir = "$dir/data"

[tls]
cert = "$STARLING_CA"
key = "$STARLING_KEY"

[[listener]]
kind = "c2s"
address = "127.0.0.1:$c2s"

[[listener]]
kind = "c2s-direct-tls"
address = "127.0.0.1:$tls"

[[listener]]
kind = "http"
address = "127.0.0.1:$http"

[components]
listen = "127.0.0.1:$component"

[[components.component]]
domain = "$STARLING_COMPONENT_DOMAIN"
secret = "$STARLING_COMPONENT_SECRET"

[sip]
enabled = true
listen = "127.0.0.1:$sip"

[[sip.route]]
domain = "sip.example"
address = "127.0.0.1:$sipp"
transport = "udp"

[log]
level = "${INTEROP_SERVER_LOG:-info}"
EOF
}

create_accounts() {
    local dir=$1 user var
    for user in $INTEROP_ACCOUNTS; do
        var="INTEROP_PASSWORD_${user^^}"
        printf '%s\n' "${!var}" |
            "$STARLING_BIN" --config "$dir/starling.toml" user add "$user@$STARLING_DOMAIN" \
                --password-stdin >>"$dir/accounts.log" 2>&1 || {
            echo "cannot create $user@$STARLING_DOMAIN:" >&2
            cat "$dir/accounts.log" >&2
            return 1
        }
    done
}

server_start() {
    local dir=$1 attempt c2s tls http component sip sipp
    mkdir -p "$dir/data"
    for attempt in 1 2 3; do
        read -r c2s tls http component sip sipp < <(free_ports 6)
        write_config "$dir" "$c2s" "$tls" "$http" "$component" "$sip" "$sipp"
        if [ "$attempt" -eq 1 ]; then
            create_accounts "$dir" || return 1
        fi
        NO_COLOR=1 "$STARLING_BIN" --config "$dir/starling.toml" serve >"$dir/server.log" 2>&1 &
        SERVER_PID=$!
        for _ in $(seq 1 150); do
            if ! kill -0 "$SERVER_PID" 2>/dev/null; then
                break
            fi
            if listening "$dir" "$c2s" "$tls" "$http"; then
                export STARLING_C2S_PORT=$c2s STARLING_DIRECT_TLS_PORT=$tls STARLING_HTTP_PORT=$http
                export STARLING_COMPONENT_PORT=$component
                export STARLING_SIP_PORT=$sip STARLING_SIPP_PORT=$sipp
                return 0
            fi
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "the server did not listen on $c2s, $tls and $http within 15 s" >&2
            server_stop || true
            return 1
        fi
        wait "$SERVER_PID" || true
        SERVER_PID=
        # Someone took a port between our check and the server's bind: pick others.
        grep -qi "address.*in use" "$dir/server.log" || break
    done
    echo "the server did not start; its log:" >&2
    cat "$dir/server.log" >&2
    return 1
}

server_stop() {
    local pid=$SERVER_PID status=0
    [ -n "$pid" ] || return 0
    SERVER_PID=
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "the server did not stop within 10 s of SIGTERM; killed" >&2
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        return 1
    fi
    wait "$pid" || status=$?
    if [ "$status" -ne 0 ]; then
        echo "the server exited with status $status after SIGTERM" >&2
        return 1
    fi
}
