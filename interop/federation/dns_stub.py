"""A tiny authoritative DNS server on loopback for the federation tests.

Prosody (libunbound, configured with a private resolv.conf) and ejabberd (Erlang's inet_res,
configured through ERL_INETRC) ask it where the test domains are, so that no test ever
consults the machine's resolver. It answers A and SRV queries from the records given on the
command line, NXDOMAIN for names it does not know, and NOTIMP-free empty answers (NOERROR,
no records) for other types of known names. UDP only: every answer here is small.

    python3 dns_stub.py ADDRESS PORT RECORD...
    RECORD: A:name:ipv4   or   SRV:name:priority:weight:port:target
"""

import socket
import struct
import sys


def parse_name(data: bytes, offset: int) -> tuple[str, int]:
    labels = []
    while True:
        length = data[offset]
        offset += 1
        if length == 0:
            break
        if length & 0xC0:
            raise ValueError("compressed names are not expected in queries")
        labels.append(data[offset : offset + length].decode("ascii").lower())
        offset += length
    return ".".join(labels), offset


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.strip(".").split("."):
        out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def main() -> None:
    address, port = sys.argv[1], int(sys.argv[2])
    records: dict[tuple[str, int], list[bytes]] = {}
    names: set[str] = set()
    for spec in sys.argv[3:]:
        kind, rest = spec.split(":", 1)
        if kind == "A":
            name, ip = rest.split(":")
            rdata = socket.inet_aton(ip)
            records.setdefault((name.lower(), 1), []).append(rdata)
        elif kind == "SRV":
            name, prio, weight, srv_port, target = rest.split(":")
            rdata = struct.pack("!HHH", int(prio), int(weight), int(srv_port)) + encode_name(target)
            records.setdefault((name.lower(), 33), []).append(rdata)
        else:
            raise SystemExit(f"unknown record kind {kind}")
        names.add(name.lower())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    print(f"dns_stub: ready on {address}:{port}", flush=True)
    while True:
        data, peer = sock.recvfrom(4096)
        try:
            (qid, flags, qdcount) = struct.unpack("!HHH", data[:6])
            name, end = parse_name(data, 12)
            qtype, _qclass = struct.unpack("!HH", data[end : end + 4])
        except (ValueError, IndexError, struct.error):
            continue
        question = data[12 : end + 4]
        answers = records.get((name, qtype), [])
        rcode = 0 if name in names else 3
        # QR, opcode 0, AA, RD copied, RA.
        out_flags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
        reply = struct.pack("!HHHHHH", qid, out_flags, 1, len(answers), 0, 0) + question
        for rdata in answers:
            reply += b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 60, len(rdata)) + rdata
        print(f"dns_stub: {name} type {qtype} -> {len(answers)} answer(s), rcode {rcode}", flush=True)
        sock.sendto(reply, peer)


if __name__ == "__main__":
    main()
