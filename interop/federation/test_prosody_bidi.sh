#!/usr/bin/env bash
# Federation with Prosody (Debian) over one bidirectional stream (XEP-0288): see lib.sh.
exec "$(dirname "$0")/lib.sh" prosody bidi
