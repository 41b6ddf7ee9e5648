#!/usr/bin/env python3
"""Writes bench accounts straight into a peer server's storage (for bench/run).

    accounts.py prosody DATA_PATH DOMAIN PASSWORD COUNT ITERATIONS

Prosody (mod_auth_internal_hashed, storage "internal") keeps one Lua file per account,
DATA_PATH/<encoded host>/accounts/<user>.dat, holding the SCRAM-SHA-1 salt, iteration count
and hex stored/server keys. Writing them here takes seconds for thousands of accounts, where
`prosodyctl register` starts a Lua VM per account. The keys are the ones Prosody itself
derives (RFC 5802: SaltedPassword = PBKDF2-HMAC-SHA-1, StoredKey = H(HMAC(SP, "Client Key")),
ServerKey = HMAC(SP, "Server Key")), so a wrong derivation shows as failed logins.
"""
import hashlib
import hmac
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor


def prosody_encode(s: str) -> str:
    # util.datamanager's encode: every non-alphanumeric byte as %xx.
    return re.sub(r"[^A-Za-z0-9]", lambda m: "%%%02x" % ord(m.group(0)), s)


def scram_sha1(password: str, salt: bytes, iterations: int):
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha1).digest()
    stored_key = hashlib.sha1(client_key).hexdigest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha1).hexdigest()
    return stored_key, server_key


def write_one(args):
    directory, user, password, iterations = args
    path = os.path.join(directory, prosody_encode(user) + ".dat")
    if os.path.exists(path):
        return 0
    salt = os.urandom(16).hex()
    stored, server = scram_sha1(password, salt.encode(), iterations)
    text = (
        "return {\n"
        f'\t["iteration_count"] = {iterations};\n'
        f'\t["salt"] = "{salt}";\n'
        f'\t["stored_key"] = "{stored}";\n'
        f'\t["server_key"] = "{server}";\n'
        "};\n"
    )
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)
    return 1


def main():
    if len(sys.argv) != 7 or sys.argv[1] != "prosody":
        sys.exit(__doc__)
    _, _, data_path, domain, password, count, iterations = sys.argv
    count, iterations = int(count), int(iterations)
    if not 0 < count <= 1_000_000:
        sys.exit("COUNT must be 1..1000000")
    directory = os.path.join(data_path, prosody_encode(domain), "accounts")
    os.makedirs(directory, exist_ok=True)
    jobs = [(directory, f"bench{i}", password, iterations) for i in range(count)]
    with ProcessPoolExecutor() as pool:
        created = sum(pool.map(write_one, jobs, chunksize=256))
    print(f"prosody accounts: {created} written, {count - created} already present")


if __name__ == "__main__":
    main()
