#!/usr/bin/env bash
# Federation with Prosody (Debian), certs: see lib.sh.
exec "$(dirname "$0")/lib.sh" prosody certs
