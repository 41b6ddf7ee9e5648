#!/usr/bin/env bash
# Federation with Prosody (Debian) over one bidirectional stream that Prosody opens: lib.sh.
exec "$(dirname "$0")/lib.sh" prosody bidi-inbound
