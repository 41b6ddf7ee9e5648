# shellcheck shell=bash
# ejabberd for federation/lib.sh: ejabberd.example on 127.0.0.3 (c2s 5222, s2s 5269), its
# own configuration directory, spool (Mnesia) and logs in $FED_DIR, Erlang node
# fed<pid>@localhost. Names resolve through an inetrc (ERL_INETRC, read by ejabberdctl from the
# configuration directory): dns_stub.py as the only nameserver, and localhost (for the
# Erlang node name) as the only static host. ejabberdctl runs the node as the
# ejabberd user, so the test directory is made readable for it.

EJ_NODE="fed$$@localhost"

ejabberdctl_fed() {
    ejabberdctl --config-dir "$FED_DIR/ejabberd" --logs "$FED_DIR/ejabberd-logs" \
        --spool "$FED_DIR/ejabberd-spool" --node "$EJ_NODE" "$@"
}

ejabberd_start() {
    local dialback=""
    [ "$MODE" = dialback ] && dialback="  mod_s2s_dialback: {}"
    mkdir -p "$FED_DIR/ejabberd" "$FED_DIR/ejabberd-logs" "$FED_DIR/ejabberd-spool"
    # resolv_conf and hosts_file "" keep Erlang away from /etc/resolv.conf and /etc/hosts.
    cat >"$FED_DIR/ejabberd/inetrc" <<INETRC
{resolv_conf, ""}.
{hosts_file, ""}.
{host, {127,0,0,1}, ["localhost"]}.
{nameserver, {127,0,0,9}, 53}.
{lookup, [file, dns]}.
INETRC
    : >"$FED_DIR/ejabberd/ejabberdctl.cfg"
    cat >"$FED_DIR/ejabberd/ejabberd.yml" <<YAML
hosts:
  - $PEER_DOMAIN
loglevel: ${EJABBERD_LOGLEVEL:-info}
certfiles:
  - "$FED_DIR/$PEER_DOMAIN.crt"
  - "$FED_DIR/$PEER_DOMAIN.key"
ca_file: "$TRUST"
listen:
  -
    port: 5222
    ip: "$PEER_IP"
    module: ejabberd_c2s
    starttls_required: true
  -
    port: 5269
    ip: "$PEER_IP"
    module: ejabberd_s2s_in
s2s_use_starttls: required
s2s_dns_timeout: 5
s2s_dns_retries: 1
auth_method: internal
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  s2s:
    allow: all
modules:
  mod_disco: {}
  mod_ping: {}
  mod_roster: {}
  mod_vcard: {}
$dialback
YAML
    chmod -R a+rX "$FED_DIR"
    chown -R ejabberd "$FED_DIR/ejabberd-logs" "$FED_DIR/ejabberd-spool"
    ejabberdctl_fed foreground >"$FED_DIR/ejabberd-stdout.log" 2>&1 &
    PIDS+=($!)
    local ok=0
    for _ in $(seq 1 120); do
        if ejabberdctl_fed status >/dev/null 2>&1; then
            ok=1
            break
        fi
        kill -0 "${PIDS[-1]}" 2>/dev/null || break
        sleep 0.5
    done
    [ "$ok" -eq 1 ] || return 1
    ejabberdctl_fed register bob "$PEER_DOMAIN" "$FED_PEER_PASSWORD" \
        >"$FED_DIR/ejabberdctl.log" 2>&1 || return 1
    wait_port "$PEER_IP" 5269 "${PIDS[-1]}" && wait_port "$PEER_IP" 5222 "${PIDS[-1]}"
}

ejabberd_stop() {
    ejabberdctl_fed stop >/dev/null 2>&1 || true
    # The Erlang port mapper the node started; it refuses to exit while any node lives.
    for _ in $(seq 1 50); do
        epmd -kill >/dev/null 2>&1 && break
        sleep 0.1
    done
}
