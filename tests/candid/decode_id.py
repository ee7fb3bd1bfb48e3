#!/usr/bin/env python3
"""Reads a bakery macaroon as JSON on stdin (the `Info.Macaroon` of a 401 challenge) and
prints what macaroonbakery's own v3 identifier decoder finds in its identifier:

    {"nonce_hex": .., "storage_id_hex": .., "ops": [[entity, action], ...]}

or {"error": ..} when it cannot. Used to check that the daemon's identifiers are ones Go and
Python bakeries (Candid among them) can read.
"""

import json
import sys

import macaroonbakery.bakery as bakery
import macaroonbakery.bakery._oven as oven
from macaroonbakery.bakery._internal import id_pb2


def main():
    m = bakery.Macaroon.from_dict(json.load(sys.stdin))
    id_bytes = m.macaroon.identifier_bytes
    try:
        storage_id, ops = oven._decode_macaroon_id(id_bytes)
    except bakery.VerificationError as e:
        print(json.dumps({'error': str(e)}))
        return
    nonce = id_pb2.MacaroonId.FromString(id_bytes[1:]).nonce if id_bytes[:1] == b'\x03' else b''
    print(json.dumps({
        'version': id_bytes[0],
        'nonce_hex': nonce.hex(),
        'storage_id_hex': storage_id.hex(),
        'ops': [[op.entity, op.action] for op in ops],
    }))


if __name__ == '__main__':
    main()
