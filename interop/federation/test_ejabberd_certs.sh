#!/usr/bin/env bash
# Federation with ejabberd (Debian), certs: see lib.sh.
exec "$(dirname "$0")/lib.sh" ejabberd certs
