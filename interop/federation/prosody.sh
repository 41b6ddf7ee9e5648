# shellcheck shell=bash
# Prosody for federation/lib.sh: prosody.example on 127.0.0.2 (c2s 5222, s2s 5269), data and
# logs in $FED_DIR, DNS through dns_stub.py only (libunbound with a private resolv.conf and
# no hosts file).

prosody_start() {
    local secure=true dialback="" bidi=""
    if [ "$MODE" = dialback ]; then
        secure=false
        dialback='"dialback";'
    fi
    # XEP-0288: mod_s2s_bidi ships with Prosody 0.12 (not loaded by default).
    case "$MODE" in bidi*) bidi='"s2s_bidi";' ;; esac

    mkdir -p "$FED_DIR/prosody-data"
    echo "nameserver $DNS_IP" >"$FED_DIR/resolv.conf"
    cat >"$FED_DIR/prosody.cfg.lua" <<LUA
run_as_root = true
daemonize = false
pidfile = "$FED_DIR/prosody.pid"
data_path = "$FED_DIR/prosody-data"
interfaces = { "$PEER_IP" }
local_interfaces = { "$PEER_IP" }
c2s_ports = { 5222 }
s2s_ports = { 5269 }
c2s_direct_tls_ports = { }
s2s_direct_tls_ports = { }
http_ports = { }
https_ports = { }
log = { debug = "$FED_DIR/prosody.log" }
modules_enabled = { "roster"; "saslauth"; "tls"; $dialback $bidi "disco"; "ping"; "posix" }
authentication = "internal_hashed"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = $secure
unbound = { resolvconf = "$FED_DIR/resolv.conf"; hoststxt = false }
ssl = { cafile = "$TRUST" }
VirtualHost "$PEER_DOMAIN"
    ssl = {
        certificate = "$FED_DIR/$PEER_DOMAIN.crt";
        key = "$FED_DIR/$PEER_DOMAIN.key";
        cafile = "$TRUST";
    }
LUA
    prosodyctl --config "$FED_DIR/prosody.cfg.lua" register bob "$PEER_DOMAIN" \
        "$FED_PEER_PASSWORD" >"$FED_DIR/prosodyctl.log" 2>&1 || return 1
    prosody --config "$FED_DIR/prosody.cfg.lua" -F >"$FED_DIR/prosody-stdout.log" 2>&1 &
    PIDS+=($!)
    wait_port "$PEER_IP" 5269 "${PIDS[-1]}" && wait_port "$PEER_IP" 5222 "${PIDS[-1]}"
}
