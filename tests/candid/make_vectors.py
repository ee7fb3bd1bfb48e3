#!/usr/bin/env python3
"""Writes crates/rxd-bakery/tests/vectors.json: macaroon / bakery test
vectors produced by pymacaroons 0.13.0 and macaroonbakery 1.3.4, for the
Rust implementation to check itself against.

All keys are fixed (hex in the output); values that depend on a random nonce
(third-party vids, the caveat-v3 box nonce) change on every run, so the Rust
side must *verify/decode* them rather than re-create them byte for byte.
Everything the generator computes by hand (HMAC chain, Go-style JSON) is
cross-checked against the libraries before writing.

    python3 tests/candid/make_vectors.py [--out PATH]
"""

import argparse
import base64
import hashlib
import hmac
import json
import os

import nacl.public
import nacl.secret
import pymacaroons
from pymacaroons import Verifier

import macaroonbakery._utils as utils
import macaroonbakery.bakery._oven as oven
from macaroonbakery.bakery._internal import id_pb2
import macaroonbakery.bakery as bakery
import macaroonbakery.checkers as checkers
import macaroonbakery.httpbakery as httpbakery

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(ROOT, 'crates', 'rxd-bakery', 'tests', 'vectors.json')

TIME_BEFORE = 'time-before 2030-01-01T00:00:00.123456789Z'
CONDITION = 'need-declared username is-authenticated-user'
CANDID_URL = 'https://candid.example.com'


def hx(b):
    return bytes(b).hex()


def b64url(b):
    """URL-safe base64 without padding (Go's RawURLEncoding)."""
    return base64.urlsafe_b64encode(b).rstrip(b'=').decode()


def b64std(b):
    return base64.b64encode(b).decode()


def hmac256(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()


def fixed_key(label):
    """A deterministic curve25519 key pair from a label."""
    return bakery.PrivateKey(nacl.public.PrivateKey(hashlib.sha256(label.encode()).digest()))


def key_hex(k):
    return {'private_hex': hx(k.serialize(raw=True)), 'public_hex': hx(k.public_key.serialize(raw=True)),
            'public_b64': str(k.public_key)}


def go_json(m):
    """Go's gopkg.in/macaroon.v2 V2 JSON, built by hand: field order c, l,
    i|i64, s|s64; caveats i|i64, v|v64, l; a field is plain text when the
    bytes are valid UTF-8, else RawURL base64 in the *64 field; empty
    fields omitted; no "v"."""
    def put(out, name, data):
        try:
            out[name] = data.decode('utf-8')
        except UnicodeDecodeError:
            out[name + '64'] = b64url(data)

    out = {}
    if m.caveats:
        out['c'] = []
        for c in m.caveats:
            cj = {}
            put(cj, 'i', c.caveat_id_bytes)
            if c.verification_key_id:
                put(cj, 'v', c.verification_key_id)
            if c.location:
                cj['l'] = c.location
            out['c'].append(cj)
    if m.location:
        out['l'] = m.location
    put(out, 'i', m.identifier_bytes)
    put(out, 's', bytes.fromhex(m.signature))
    return out


def b64_everywhere_json(m):
    """Same macaroon with every id/vid/signature in a *64 field (unpadded
    URL-safe): also valid input that parsers must accept."""
    out = {'c': [dict({'i64': b64url(c.caveat_id_bytes)},
                      **({'v64': b64url(c.verification_key_id), 'l': c.location}
                         if c.verification_key_id else {}))
                 for c in m.caveats],
           'l': m.location, 'i64': b64url(m.identifier_bytes),
           's64': b64url(bytes.fromhex(m.signature))}
    return out


def first_party_vector():
    root = bytes(range(32))
    mid = b'rxd-vector-first-party'
    loc = 'rxd-test'
    cavs = [TIME_BEFORE, 'declared username alice']
    m = pymacaroons.Macaroon(location=loc, identifier=mid, key=root, version=pymacaroons.MACAROON_V2)
    for c in cavs:
        m.add_first_party_caveat(c)
    # The libmacaroons chain, computed independently.
    derived = hmac256(b'macaroons-key-generator', root)
    chain = [hmac256(derived, mid)]
    for c in cavs:
        chain.append(hmac256(chain[-1], c.encode()))
    assert hx(chain[-1]) == m.signature, 'HMAC chain mismatch'
    return {
        'description': 'first-party-only macaroon (V2); verify with root_key, all caveats satisfied '
                       'before 2030 when declared username=alice',
        'root_key_hex': hx(root), 'id': mid.decode(), 'id_hex': hx(mid), 'location': loc,
        'caveats': cavs,
        'derived_key_hex': hx(derived),
        'signature_chain_hex': [hx(s) for s in chain],
        'signature_hex': m.signature,
        'json': utils.macaroon_to_dict(m),
        'json_text': utils.macaroon_to_json_string(m),
        'binary_v2_hex': hx(utils.b64decode(m.serialize())),
        'go_json': go_json(m),
        'time_before': {'text': TIME_BEFORE.split(' ', 1)[1], 'unix_seconds': 1893456000,
                        'nanos': 123456789},
    }


def caveat_v3_vector(daemon, candid, root_key, ns_text):
    ns = checkers.Namespace()
    for pair in ns_text.split():
        uri, prefix = pair.split(':', 1)
        ns.register(uri, prefix)
    assert ns.serialize_text().decode() == ns_text
    info = bakery.ThirdPartyInfo(version=bakery.VERSION_3, public_key=candid.public_key)
    payload = bakery.encode_caveat(CONDITION, root_key, info, daemon, ns)
    # The plaintext inside the box, built by hand from the spec.
    secret = bytearray([3])
    bakery.encode_uvarint(len(root_key), secret)
    secret += root_key
    bakery.encode_uvarint(len(ns_text), secret)
    secret += ns_text.encode() + CONDITION.encode()
    nonce = payload[37:61]
    box = nacl.public.Box(candid.key, daemon.public_key.key)
    assert box.decrypt(payload[61:], nonce) == bytes(secret), 'plaintext mismatch'
    decoded = bakery.decode_caveat(candid, payload)
    assert decoded.root_key == root_key and decoded.condition == CONDITION
    return {
        'description': 'bakery caveat v3 payload: 0x03 | candid_pub[0:4] | daemon_pub | nonce(24) | '
                       'box(secret, nonce, candid_pub, daemon_priv); decode with candid private key',
        'daemon_key': key_hex(daemon), 'candid_key': key_hex(candid),
        'condition': CONDITION, 'root_key_hex': hx(root_key), 'namespace': ns_text,
        'secret_plaintext_hex': hx(secret), 'nonce_hex': hx(nonce),
        'payload_hex': hx(payload), 'payload_b64url': b64url(payload), 'payload_b64std': b64std(payload),
    }


def third_party_vector(daemon, candid):
    root = hashlib.sha256(b'rxd primary root key').digest()
    mid = b'\x03' + bytes(range(0xa0, 0xb0)) + bytes(7) + b'\x01'  # 0x03 | nonce | root-key id
    cid = b'\x03\x00'
    cav_root = bytes(range(0x40, 0x58))  # 24 bytes
    p = pymacaroons.Macaroon(location=CANDID_URL, identifier=mid, key=root, version=pymacaroons.MACAROON_V2)
    sig_before = bytes.fromhex(p.signature)
    p.add_third_party_caveat(CANDID_URL, cav_root, cid)
    sig_after_tp = bytes.fromhex(p.signature)
    p.add_first_party_caveat(TIME_BEFORE)
    vid = p.caveats[0].verification_key_id

    # vid = nonce | secretbox(key = signature so far, HMAC-generator(caveat root key)).
    cav_derived = hmac256(b'macaroons-key-generator', cav_root)
    assert nacl.secret.SecretBox(sig_before).decrypt(vid) == cav_derived
    assert sig_after_tp == hmac256(sig_before, hmac256(sig_before, vid) + hmac256(sig_before, cid))

    d = pymacaroons.Macaroon(location='', identifier=cid, key=cav_root, version=pymacaroons.MACAROON_V2)
    for c in ['declared username alice@example.com', TIME_BEFORE]:
        d.add_first_party_caveat(c)
    bound = p.prepare_for_request(d)
    zero = bytes(32)
    expect = hmac256(zero, hmac256(zero, bytes.fromhex(p.signature)) + hmac256(zero, bytes.fromhex(d.signature)))
    assert hx(expect) == bound.signature, 'binding mismatch'
    v = Verifier()
    v.satisfy_general(lambda cond: True)
    assert v.verify(p, root, [bound])

    slice_text = '[' + ','.join(utils.macaroon_to_json_string(x) for x in (p, bound)) + ']'
    unbound_text = '[' + ','.join(utils.macaroon_to_json_string(x) for x in (p, d)) + ']'

    # The same primary as a bakery v3 macaroon, the payload carrying cav_root.
    ns = checkers.Namespace()
    ns.register('std', '')
    payload = bakery.encode_caveat(
        CONDITION, cav_root, bakery.ThirdPartyInfo(version=3, public_key=candid.public_key), daemon, ns)
    bm = bakery.Macaroon.from_dict({'m': utils.macaroon_to_dict(p), 'v': 3, 'ns': 'std:',
                                    'cdata': {b64std(cid): b64std(payload)}})
    body, headers = httpbakery.discharge_required_response(bm, '.', 'auth', 'authentication required')
    return {
        'description': 'primary with a third-party caveat (cid 0x03 0x00) + its discharge bound to it. '
                       'Verify cookie_* with root_key_hex: the slice is valid (declared username '
                       'alice@example.com) until 2030; cookie_unbound_std must fail.',
        'root_key_hex': hx(root), 'id_hex': hx(mid), 'location': CANDID_URL,
        'third_party': {'location': CANDID_URL, 'caveat_id_hex': hx(cid), 'caveat_root_key_hex': hx(cav_root),
                        'condition': CONDITION,
                        'signature_before_hex': hx(sig_before),
                        'vid_hex': hx(vid), 'vid_nonce_hex': hx(vid[:24]),
                        'vid_plaintext_hex': hx(cav_derived),
                        'signature_after_hex': hx(sig_after_tp)},
        'first_party_caveats': [TIME_BEFORE],
        'primary_signature_hex': p.signature,
        'primary_json': utils.macaroon_to_dict(p),
        'discharge': {'id_hex': hx(cid), 'location': '',
                      'caveats': ['declared username alice@example.com', TIME_BEFORE],
                      'unbound_signature_hex': d.signature, 'bound_signature_hex': bound.signature,
                      'json_bound': utils.macaroon_to_dict(bound), 'json_unbound': utils.macaroon_to_dict(d)},
        'slice_json_text': slice_text,
        'cookie_std': b64std(slice_text.encode()),
        'cookie_urlsafe': base64.urlsafe_b64encode(slice_text.encode()).decode(),
        'cookie_unbound_std': b64std(unbound_text.encode()),
        'bakery': {
            'description': 'the primary wrapped as a bakery v3 macaroon (Python style: std padded '
                           'base64 cdata); cdata payload decodes with candid_key to caveat_root_key',
            'daemon_key': key_hex(daemon), 'candid_key': key_hex(candid),
            'payload_hex': hx(payload),
            'python_wrapper': bm.to_dict(),
            'go_wrapper': {'m': go_json(p), 'v': 3, 'cdata': {b64url(cid): b64url(payload)}, 'ns': 'std:'},
            'discharge_required_body': json.loads(body),
            'discharge_required_headers': headers,
        },
    }


def macaroon_id_vector():
    """A login macaroon identifier in go-macaroon-bakery's v3 layout, serialised the way
    macaroonbakery's Oven does it (version byte, then id_pb2.MacaroonId), and read back by its
    own decoder."""
    nonce, storage_id = bytes(range(0x10, 0x20)), bytes(range(0xa0, 0xb0))
    msg = id_pb2.MacaroonId(nonce=nonce, storageId=storage_id,
                            ops=oven._macaroon_id_ops([bakery.LOGIN_OP]))
    id_bytes = bytes([bakery.LATEST_VERSION]) + msg.SerializeToString()
    got_storage, got_ops = oven._decode_macaroon_id(id_bytes)
    assert got_storage == storage_id and got_ops == [bakery.LOGIN_OP]
    return {
        'description': 'Oven.macaroon\'s identifier: 0x03 + protobuf MacaroonId{nonce, storageId, '
                       'ops=[{entity "login", actions ["login"]}]}',
        'nonce_hex': hx(nonce),
        'storage_id_hex': hx(storage_id),
        'ops': [{'entity': 'login', 'actions': ['login']}],
        'id_hex': hx(id_bytes),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default=DEFAULT_OUT)
    args = ap.parse_args()
    daemon, candid = fixed_key('rxd vector daemon key'), fixed_key('rxd vector candid key')
    tp = third_party_vector(daemon, candid)
    prim = pymacaroons.Macaroon.deserialize(json.dumps(tp['primary_json']),
                                            pymacaroons.serializers.JsonSerializer())
    go = go_json(prim)
    # Our hand-made Go JSON must parse back (pymacaroons reads i64/s64/v64).
    again = pymacaroons.Macaroon.deserialize(json.dumps(go), pymacaroons.serializers.JsonSerializer())
    assert again.signature == prim.signature and again.caveats[0].verification_key_id == \
        prim.caveats[0].verification_key_id
    vectors = {
        'generator': 'tests/candid/make_vectors.py (pymacaroons 0.13.0, macaroonbakery 1.3.4, PyNaCl)',
        'note': 'keys and ids are fixed; vids and box nonces are random per run. HMAC key '
                '"macaroons-key-generator" derives the signing key from a root key.',
        'first_party': first_party_vector(),
        'third_party': tp,
        'caveat_v3': [caveat_v3_vector(daemon, candid, bytes(range(0x60, 0x78)), 'std:'),
                      caveat_v3_vector(daemon, candid, bytes(range(0x60, 0x78)), 'http:http std:')],
        'macaroon_id': macaroon_id_vector(),
        'go_style': {
            'description': "the third_party primary rendered as Go's macaroon.v2 MarshalJSON would "
                           '(plain text when valid UTF-8, else RawURL base64 *64 fields; no "v"), and '
                           'a variant with every binary field base64-encoded; both must parse to '
                           'the same macaroon (signature_hex)',
            'signature_hex': prim.signature,
            'json': go,
            'json_b64_everywhere': b64_everywhere_json(prim),
        },
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(vectors, f, indent=1, sort_keys=False)
        f.write('\n')
    print('wrote', args.out)


if __name__ == '__main__':
    main()
