#!/usr/bin/env bash
# Federation with ejabberd (Debian), dialback: see lib.sh.
exec "$(dirname "$0")/lib.sh" ejabberd dialback
