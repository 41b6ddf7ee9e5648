#!/usr/bin/env bash
# Federation with ejabberd (Debian), certs: an ejabberd user joins a Starling room (muc_check.py).
exec "$(dirname "$0")/lib.sh" ejabberd certs muc
