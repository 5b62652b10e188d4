#!/usr/bin/python3
"""Verify every DKIM-Signature of a message with python3-dkim, without DNS.

Usage: dkimverify.py MESSAGE_FILE NAME=TXT_VALUE...

Each NAME=TXT_VALUE argument is one TXT record (for example
"s1._domainkey.example.com=v=DKIM1; k=rsa; p=..."); lookups of any other
name answer "no record". Prints one JSON object describing each signature
and exits 0 only when the message has at least one signature and all verify.
"""

import json
import logging
import sys

import dkim
from dkim.util import parse_tag_value


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], "rb") as f:
        message = f.read()
    records = {}
    for arg in sys.argv[2:]:
        name, sep, value = arg.partition("=")
        if not sep:
            print("bad record argument %r" % arg, file=sys.stderr)
            return 2
        records[name.strip().rstrip(".").lower()] = value.encode()

    lookups = []

    # Same signature as dkim.dnsplug.get_txt: bytes name (with a trailing
    # dot), returns the record's bytes or None.
    def dnsfunc(name, timeout=5):
        key = name.decode().rstrip(".").lower()
        lookups.append(key)
        return records.get(key)

    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG,
                        format="dkim: %(message)s")
    logger = logging.getLogger("dkimverify")

    d = dkim.DKIM(message, logger=logger)
    sigs = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
    results = []
    for idx, raw in enumerate(sigs):
        try:
            tags = parse_tag_value(raw)
        except Exception as e:  # a malformed header is a failure, not a crash
            results.append({"index": idx, "ok": False, "error": str(e)})
            continue
        try:
            ok = dkim.DKIM(message, logger=logger).verify(idx=idx, dnsfunc=dnsfunc)
            err = ""
        except dkim.DKIMException as e:
            ok, err = False, str(e)
        results.append({
            "index": idx,
            "ok": bool(ok),
            "error": err,
            "d": tags.get(b"d", b"").decode(),
            "s": tags.get(b"s", b"").decode(),
            "a": tags.get(b"a", b"").decode(),
            "c": tags.get(b"c", b"simple/simple").decode(),
            "h": tags.get(b"h", b"").decode(),
        })
    print(json.dumps({"signatures": results, "lookups": lookups}))
    return 0 if results and all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
