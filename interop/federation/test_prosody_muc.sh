#!/usr/bin/env bash
# Federation with Prosody (Debian), certs: a Prosody user joins a Starling room (muc_check.py).
exec "$(dirname "$0")/lib.sh" prosody certs muc
