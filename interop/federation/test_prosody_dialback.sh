#!/usr/bin/env bash
# Federation with Prosody (Debian), dialback: see lib.sh.
exec "$(dirname "$0")/lib.sh" prosody dialback
