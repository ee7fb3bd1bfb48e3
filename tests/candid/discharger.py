#!/usr/bin/env python3
"""A small Candid-compatible discharger for rxd interop tests.

It speaks the discharge side of go-macaroon-bakery v3 / Candid as LXD 5.0
clients meet it (see /work/shared/spec/candid.md):

  GET  /discharge/info            {"PublicKey": b64, "Version": 3}
  GET  /publickey                 {"PublicKey": b64}
  POST /discharge                 id|id64, caveat64, [token|token64, token-kind]
  GET  /login/form?did=D          form schema       (form interaction)
  POST /login/form?did=D          {"form":{..}} ->  {"token":{"kind":"form","value":b64}}
  GET  /login?did=D               HTML login page   (browser-window VisitURL)
  POST /login?did=D               username=&password= logs D in (fake xdg-open)
  GET  /wait-token?did=D          long-poll -> {"kind":"browser-window","token64":b64,...}
  GET  /login/agent?did=D&username=U&public-key=K   -> {"macaroon": ...}  (agent)
  GET  /wait-legacy?did=D         legacy wait -> {"Macaroon": discharge}
  GET  /v1/u/U/groups             ["group", ...]

Users come from a JSON file that is re-read on every request.  Login tokens
are opaque random strings remembered in memory (token -> user); agent tokens
are the self-discharged agent macaroons, as real Candid does it.
"""

import argparse
import base64
import html
import json
import os
import secrets
import signal
import ssl
import sys
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import macaroonbakery.bakery as bakery
import macaroonbakery.checkers as checkers
import macaroonbakery.httpbakery as httpbakery
from google.protobuf.message import DecodeError
from macaroonbakery.bakery._internal import id_pb2
from pymacaroons.serializers.binary_serializer import BinarySerializer

WAIT_TIMEOUT = 60  # seconds a wait-token long-poll may block
AGENT_MACAROON_LIFETIME = 60  # seconds (Candid uses 10 s)


def b64(data):
    """Standard, padded base64 (what Go's encoding/json does for []byte)."""
    return base64.b64encode(data).decode('ascii')


def b64any(text):
    """Decode base64 in either alphabet, padded or not."""
    text = text.strip().replace(' ', '+')  # '+' may arrive unescaped in queries
    text += '=' * (-len(text) % 4)
    return base64.b64decode(text.replace('-', '+').replace('_', '/'), validate=True)


def utcnow():
    return datetime.now(timezone.utc).replace(tzinfo=None)


def load_or_create_key(path):
    """The discharger's curve25519 key pair, persisted as {"public","private"}."""
    if path and os.path.exists(path):
        with open(path) as f:
            return bakery.PrivateKey.deserialize(json.load(f)['private'])
    key = bakery.generate_key()
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as f:
            json.dump({'public': str(key.public_key), 'private': str(key)}, f)
    return key


def split_binary_slice(data):
    """Split Go's macaroon.Slice.MarshalBinary output (v2 binary macaroons
    back to back) into pymacaroons objects."""
    def uvarint(pos):
        n = shift = 0
        while True:
            b = data[pos]
            pos += 1
            n |= (b & 0x7f) << shift
            if b < 0x80:
                return n, pos
            shift += 7

    out = []
    while data:
        if data[0] != 2:
            raise ValueError('not a v2 binary macaroon')
        pos, first = 1, True
        while True:  # header section, caveat sections, then an empty section
            fields = 0
            while True:
                ftype, pos = uvarint(pos)
                if ftype == 0:  # end of section
                    break
                length, pos = uvarint(pos)
                pos += length
                fields += 1
            if fields == 0 and not first:
                break
            first = False
        _, pos = uvarint(pos)  # signature field
        length, pos = uvarint(pos)
        pos += length
        if pos > len(data):
            raise ValueError('truncated macaroon')
        out.append(BinarySerializer().deserialize_raw(data[:pos]))
        data = data[pos:]
    return out


class CannotRetrieve(Exception):
    """A request macaroon Go's bakery cannot even read (see go_decode_macaroon_id)."""


def go_decode_macaroon_id(id_bytes):
    """The part of go-macaroon-bakery v3's Oven.decodeMacaroonId that can fail: an identifier
    starting with 0x03 (after an optional RawURL base64 layer, recognised by a leading 'A') must
    be a protobuf MacaroonId naming at least one operation. Go's Checker treats that failure as
    fatal ("cannot retrieve macaroon"), not as a stranger's macaroon to skip, while Python's
    raises VerificationError and skips it; Candid is Go, so this is checked by hand here."""
    if id_bytes[:1] == b'A':
        try:
            id_bytes = base64.urlsafe_b64decode(id_bytes + b'=' * (-len(id_bytes) % 4))
        except ValueError:
            return  # not base64: Go looks it up as an old-style id and finds nothing
    if id_bytes[:1] != b'\x03':
        return
    try:
        msg = id_pb2.MacaroonId.FromString(id_bytes[1:])
    except DecodeError as e:
        raise CannotRetrieve('cannot unmarshal macaroon id: %s' % e)
    if not msg.ops or not msg.ops[0].actions:
        raise CannotRetrieve('no operations found in macaroon')


class NeedLogin(Exception):
    """Raised by the caveat checker when no authenticated user is known."""


class BadToken(Exception):
    """A discharge token that is malformed (not merely unknown)."""


class UserChecker(bakery.ThirdPartyCaveatChecker):
    """Discharges `is-authenticated-user` (optionally `is-authenticated-user
    @domain`) for an already-authenticated user; anything else is refused."""

    def __init__(self, user, expiry):
        self.user, self.expiry = user, expiry

    def check_third_party_caveat(self, ctx, info):
        cond, arg = checkers.parse_caveat(info.condition)
        if cond != 'is-authenticated-user':
            raise bakery.CaveatNotRecognizedError('caveat not recognized')
        if arg and not arg.startswith('@'):
            raise bakery.CaveatNotRecognizedError('caveat not recognized')
        if self.user is None:
            raise NeedLogin()
        if arg and not self.user.endswith(arg):
            raise bakery.ThirdPartyCaveatCheckFailed('user not in domain ' + arg[1:])
        return [checkers.declared_caveat('username', self.user),
                checkers.time_before_caveat(utcnow() + timedelta(seconds=self.expiry))]


class DeclaredUser(bakery.IdentityClient):
    """Identity of a verified agent-login macaroon = its `declared username`."""

    def identity_from_context(self, ctx):
        return None, None

    def declared_identity(self, ctx, declared):
        if not declared.get('username'):
            raise bakery.IdentityError('no username declared')
        return bakery.SimpleIdentity(declared['username'])


class NoLocator(bakery.ThirdPartyLocator):
    def third_party_info(self, loc):
        raise bakery.ThirdPartyInfoNotFound(loc)


class State:
    """Everything shared between request threads."""

    def __init__(self, args, key):
        self.args, self.key = args, key
        self.url = None  # set once listening
        self.cond = threading.Condition()
        self.tokens = {}  # token bytes -> (kind, username)
        self.logins = {}  # did -> {"user", "error", "id", "caveat"}
        self.agent_keys = {}  # agent macaroon id -> agent public key bytes
        # Mints and checks the agent-login macaroons (root keys in memory).
        self.agent_bakery = bakery.Bakery(key=key, identity_client=DeclaredUser())
        self._api_bakery = None

    def api_bakery(self):
        """Guards the groups API; its login caveats are addressed to ourselves."""
        with self.cond:
            if self._api_bakery is None:
                locator = bakery.ThirdPartyStore()
                locator.add_info(self.url, bakery.ThirdPartyInfo(
                    public_key=self.key.public_key, version=bakery.LATEST_VERSION))
                self._api_bakery = bakery.Bakery(
                    location=self.url, key=self.key, locator=locator,
                    identity_client=DeclaredUser(),
                    authorizer=bakery.ACLAuthorizer(
                        get_acl=lambda ctx, op: [bakery.EVERYONE]))
            return self._api_bakery

    def users(self):
        try:
            with open(self.args.users) as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            print('discharger: cannot read users file: %s' % e, file=sys.stderr)
            return {}

    def check_password(self, user, password):
        entry = self.users().get(user or '')
        return entry is not None and entry.get('password') == password

    def new_token(self, kind, user):
        token = ('tok-' + secrets.token_hex(16)).encode('ascii')
        with self.cond:
            self.tokens[token] = (kind, user)
        return token

    def user_for_token(self, kind, value):
        """Username the token proves, or None if unknown / user removed."""
        if kind == 'agent':
            user = self.agent_token_user(value)
        else:
            with self.cond:
                found = self.tokens.get(value)
            if found is None or found[0] != kind:
                return None
            user = found[1]
        return user if user in self.users() else None

    def agent_token_user(self, value):
        try:
            ms = split_binary_slice(value)
        except Exception:
            raise BadToken('invalid token')
        if not ms:
            raise BadToken('invalid token')
        try:
            info = self.agent_bakery.checker.auth([ms]).allow(
                checkers.AuthContext(), [bakery.LOGIN_OP])
        except Exception as e:
            print('discharger: agent token rejected: %s' % e, file=sys.stderr)
            return None
        user = info.identity.id() if info.identity else None
        # The agent key the macaroon was minted for (the "local" caveat does
        # not name it) must still be the one registered for the user.
        with self.cond:
            minted_for = self.agent_keys.get(ms[0].identifier_bytes)
        registered = self.users().get(user, {}).get('agent_public_key')
        try:
            if minted_for and registered and b64any(registered) == minted_for:
                return user
        except ValueError:
            pass
        return None


class Handler(BaseHTTPRequestHandler):
    server_version = 'candid-test/1'

    @property
    def st(self):
        return self.server.state

    def setup(self):
        # TLS handshake here, in the per-connection thread, not in accept().
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def log_message(self, fmt, *args):
        sys.stderr.write('discharger: %s %s\n' % (self.address_string(), fmt % args))

    # --- helpers -----------------------------------------------------------

    def reply(self, status, body, headers=None, ctype='application/json'):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, code, message):
        body = {'Code': code, 'Message': message} if code else {'Message': message}
        self.reply(status, body)

    def params(self):
        """Query parameters merged with a form-urlencoded body (like Go)."""
        u = urlsplit(self.path)
        out = {k: v[0] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        if self.body and 'application/x-www-form-urlencoded' in self.headers.get('Content-Type', ''):
            form = parse_qs(self.body.decode('utf-8', 'replace'), keep_blank_values=True)
            out.update({k: v[0] for k, v in form.items()})
        return out

    def bakery_version(self):
        try:
            return max(0, min(int(self.headers.get('Bakery-Protocol-Version', '0')), 3))
        except ValueError:
            return 0

    # --- routing -----------------------------------------------------------

    def do_GET(self):
        self.route('GET')

    def do_POST(self):
        self.route('POST')

    def route(self, method):
        length = int(self.headers.get('Content-Length') or 0)
        self.body = self.rfile.read(length) if length else b''
        path = urlsplit(self.path).path.rstrip('/') or '/'
        routes = {
            ('GET', '/discharge/info'): lambda: self.reply(200, {
                'PublicKey': str(self.st.key.public_key), 'Version': bakery.LATEST_VERSION}),
            ('GET', '/publickey'): lambda: self.reply(200, {'PublicKey': str(self.st.key.public_key)}),
            ('POST', '/discharge'): self.discharge,
            ('GET', '/login/form'): self.form_schema,
            ('POST', '/login/form'): self.form_login,
            ('GET', '/login/agent'): self.agent_login,
            ('GET', '/login'): self.browser_page,
            ('POST', '/login'): self.browser_login,
            ('GET', '/login-legacy'): self.browser_page,
            ('POST', '/login-legacy'): self.browser_login,
            ('GET', '/wait-token'): self.wait_token,
            ('GET', '/wait-legacy'): self.wait_legacy,
        }
        handler = routes.get((method, path))
        if handler is None and method == 'GET' and path.startswith('/v1/u/') and path.endswith('/groups'):
            handler = lambda: self.groups(unquote(path[len('/v1/u/'):-len('/groups')]))
        if handler is None:
            return self.error(404, 'not found', 'no handler for %s %s' % (method, path))
        handler()

    # --- discharge ---------------------------------------------------------

    def discharge(self):
        p = self.params()
        try:
            cid = p['id'].encode() if 'id' in p else b64any(p.get('id64', ''))
            caveat = b64any(p['caveat64']) if p.get('caveat64') else None
            token = p['token'].encode() if p.get('token') else (
                b64any(p['token64']) if p.get('token64') else None)
        except ValueError as e:
            return self.error(400, 'bad request', 'cannot discharge: bad base64: %s' % e)
        # Decode first, so a payload for another key fails like Go does.
        try:
            bakery.decode_caveat(self.st.key, caveat if caveat is not None else cid)
        except Exception as e:
            # Go says "cannot decrypt caveat id" for a box failure; we say it
            # for every undecodable payload (wrong key prefix, truncation...).
            reason = 'cannot decrypt caveat id'
            if 'decrypt' not in str(e).lower():
                reason += ' (%s)' % (str(e) or type(e).__name__)
            return self.error(500, 'bad request',
                              'cannot discharge: discharger cannot decode caveat id: ' + reason)
        user = None
        if not token:
            # Candid, given no token, authenticates the discharge request by its own macaroons
            # (to reuse an earlier login's macaroon-identity cookie). Those include every cookie
            # a client holds for this host name, the relying party's too when it shares the
            # host: a Go bakery skips any it cannot verify but fails on one it cannot read.
            try:
                mss = httpbakery.extract_macaroons(self.headers)
            except Exception:  # Go skips cookies it cannot decode
                mss = []
            print('discharger: discharge request carries %d macaroon slice(s)' % len(mss),
                  file=sys.stderr)
            try:
                for ms in mss:
                    if ms:
                        go_decode_macaroon_id(ms[0].identifier_bytes)
            except CannotRetrieve as e:
                return self.error(500, '', 'cannot discharge: cannot retrieve macaroon: %s' % e)
        if token:
            if not p.get('token-kind'):
                return self.error(400, 'bad request', 'discharge token provided without token kind')
            try:
                user = self.st.user_for_token(p['token-kind'], token)
            except BadToken as e:
                return self.error(400, 'bad request', 'cannot discharge: %s' % e)
        try:
            m = bakery.discharge(checkers.AuthContext(), id=cid, caveat=caveat, key=self.st.key,
                                 checker=UserChecker(user, self.st.args.discharge_expiry),
                                 locator=NoLocator())
        except NeedLogin:
            return self.interaction_required(cid, caveat)
        except Exception as e:
            return self.error(500, 'bad request', 'cannot discharge: %s' % (str(e) or type(e).__name__))
        self.reply(200, {'Macaroon': m.to_dict()})

    def interaction_required(self, cid, caveat):
        """Exactly what httpbakery.NewInteractionRequiredError + Candid's
        SetInteraction calls serialise to."""
        did = secrets.token_hex(32) + 'ID'  # Candid's discharge-id shape
        with self.st.cond:
            self.st.logins[did] = {'user': None, 'error': None, 'id': cid, 'caveat': caveat}
        base = self.st.url
        body = {
            'Code': 'interaction required',
            'Message': 'cannot discharge: macaroon discharge required: authentication required',
            'Info': {
                'InteractionMethods': {
                    'agent': {'login-url': base + '/login/agent?did=' + did},
                    'form': {'url': base + '/login/form?did=' + did},
                    'browser-window': {'VisitURL': base + '/login?did=' + did,
                                       'WaitTokenURL': base + '/wait-token?did=' + did},
                },
                'VisitURL': base + '/login-legacy?did=' + did,
                'WaitURL': base + '/wait-legacy?did=' + did,
            },
        }
        if self.bakery_version() == 0:
            return self.reply(407, body)
        self.reply(401, body, {'WWW-Authenticate': 'Macaroon'})

    # --- form interaction --------------------------------------------------

    def form_schema(self):
        # environschema.Fields as JSON (the shape Candid's userpass IdPs send).
        field = {'type': 'string', 'group': '', 'Immutable': False, 'mandatory': True}
        self.reply(200, {'schema': {
            'username': dict(field, description='username'),
            'password': dict(field, description='password', **{'is-secret': True}),
        }})

    def form_login(self):
        try:
            form = json.loads(self.body or b'{}')['form']
            user, password = form['username'], form['password']
        except (ValueError, KeyError, TypeError) as e:
            return self.error(400, 'bad request', 'cannot unmarshal login request: %s' % e)
        if not self.st.check_password(user, password):
            return self.error(401, 'unauthorized', 'cannot validate form: invalid username or password')
        token = self.st.new_token('form', user)
        self.reply(200, {'token': {'kind': 'form', 'value': b64(token)}})

    # --- browser-window interaction ----------------------------------------

    def browser_page(self):
        did = html.escape(self.params().get('did', ''))
        self.reply(200, '<html><body><form method="post" action="?did=%s">'
                        'User <input name="username"> Password <input name="password" '
                        'type="password"> <input type="submit" value="Log in"></form>'
                        '</body></html>' % did, ctype='text/html')

    def browser_login(self):
        p = self.params()
        did = p.get('did', '')
        with self.st.cond:
            entry = self.st.logins.get(did)
            if entry is None:
                return self.reply(404, 'unknown discharge id\n', ctype='text/plain')
            ok = self.st.check_password(p.get('username'), p.get('password'))
            if ok:
                entry['user'] = p['username']
            else:  # like Candid: a failed login fails the waiting client
                entry['error'] = 'login failed: invalid username or password'
            self.st.cond.notify_all()
        if ok:
            self.reply(200, 'login successful\n', ctype='text/plain')
        else:
            self.reply(401, 'invalid username or password\n', ctype='text/plain')

    def wait(self):
        """Block until the did is logged in; returns the entry or None
        after having written an error reply."""
        did = self.params().get('did', '')
        with self.st.cond:
            if did not in self.st.logins:
                self.error(404, 'not found', 'cannot wait: discharge id %r not found' % did)
                return None
            done = self.st.cond.wait_for(
                lambda: self.st.logins[did]['user'] or self.st.logins[did]['error'], WAIT_TIMEOUT)
            entry = dict(self.st.logins[did])
        if not done:
            self.error(408, 'timeout', 'cannot wait: timed out waiting for login')
            return None
        if entry['error']:
            self.error(401, 'unauthorized', 'cannot wait: ' + entry['error'])
            return None
        return entry

    def wait_token(self):
        entry = self.wait()
        if entry:
            token = self.st.new_token('browser-window', entry['user'])
            # Go's httpbakery.WaitTokenResponse is {kind, token | token64};
            # "value" is an extra copy some of our own tests read.
            self.reply(200, {'kind': 'browser-window', 'token64': b64(token), 'value': b64(token)})

    def wait_legacy(self):
        entry = self.wait()
        if entry:
            m = bakery.discharge(checkers.AuthContext(), id=entry['id'], caveat=entry['caveat'],
                                 key=self.st.key, locator=NoLocator(),
                                 checker=UserChecker(entry['user'], self.st.args.discharge_expiry))
            self.reply(200, {'Macaroon': m.to_dict()})

    # --- agent interaction -------------------------------------------------

    def agent_login(self):
        p = self.params()
        user, pub = p.get('username', ''), p.get('public-key', '')
        if not user:
            return self.error(400, 'bad request', 'username not specified')
        if not pub:
            return self.error(400, 'bad request', 'public-key not specified')
        registered = self.st.users().get(user, {}).get('agent_public_key')
        try:
            key = bakery.PublicKey.deserialize(base64.b64encode(b64any(pub)))
            match = registered and b64any(registered) == b64any(pub)
        except Exception:
            return self.error(400, 'bad request', 'invalid public-key')
        if not match:
            return self.error(401, 'unauthorized', 'cannot log in: no agent %s with that public key' % user)
        version = max(self.bakery_version(), 1)
        m = self.st.agent_bakery.oven.macaroon(
            version, utcnow() + timedelta(seconds=AGENT_MACAROON_LIFETIME),
            [checkers.declared_caveat('username', user),
             bakery.local_third_party_caveat(key, version)],
            [bakery.LOGIN_OP])
        with self.st.cond:
            self.st.agent_keys[m.macaroon.identifier_bytes] = b64any(pub)
        self.reply(200, {'macaroon': m.to_dict()})

    # --- user groups -------------------------------------------------------

    def groups(self, user):
        """Candid's user-groups API, behind Candid's own macaroon login (as the
        real one is): a caller without a valid macaroon is challenged with one
        whose third-party caveat is addressed back to this server, which it
        discharges by logging in (an agent, typically). Only the user
        themself, or a user marked "groups_reader", may read a user's groups."""
        st = self.st
        op = bakery.LOGIN_OP  # a login macaroon: its discharge declares who calls
        try:
            info = st.api_bakery().checker.auth(httpbakery.extract_macaroons(self.headers)).allow(
                checkers.AuthContext(), [op])
            caller = info.identity.id() if info.identity else None
        except (bakery.DischargeRequiredError, bakery.PermissionDenied,
                bakery.VerificationError, bakery.AuthInitError, ValueError) as e:
            print('discharger: groups API login needed (%s: %s)' % (type(e).__name__, e),
                  file=sys.stderr)
            caller = None
        if caller is None:
            version = max(self.bakery_version(), 1)
            m = st.api_bakery().oven.macaroon(
                version, utcnow() + timedelta(seconds=st.args.discharge_expiry),
                [checkers.need_declared_caveat(
                    checkers.Caveat(location=st.url, condition='is-authenticated-user'),
                    ['username'])],
                [op])
            content, headers = httpbakery.discharge_required_response(
                m, '/', 'candid', 'authentication required')
            return self.reply(401, content.decode(), headers)
        users = st.users()
        if caller != user and not users.get(caller, {}).get('groups_reader'):
            return self.error(403, 'forbidden', '%s may not read the groups of %s' % (caller, user))
        entry = users.get(user)
        if entry is None:
            return self.error(404, 'not found', 'user %s not found' % user)
        self.reply(200, list(entry.get('groups', [])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--users', required=True, help='USERS.json, re-read on every request')
    ap.add_argument('--ready-file', required=True, help='written atomically once listening')
    ap.add_argument('--tls-cert')
    ap.add_argument('--tls-key')
    ap.add_argument('--discharge-expiry', type=int, default=86400,
                    help='seconds of the time-before caveat on discharges')
    ap.add_argument('--key-file', help='persist/load the discharger key pair here')
    ap.add_argument('--port', type=int, default=0, help='default 0 = ephemeral')
    args = ap.parse_args()

    state = State(args, load_or_create_key(args.key_file))
    server = ThreadingHTTPServer(('127.0.0.1', args.port), Handler)
    server.daemon_threads = True
    server.state = state
    scheme = 'http'
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
        scheme = 'https'
    state.url = '%s://127.0.0.1:%d' % (scheme, server.server_address[1])

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()

    tmp = args.ready_file + '.tmp'
    with open(tmp, 'w') as f:
        json.dump({'url': state.url, 'public_key': str(state.key.public_key), 'pid': os.getpid()}, f)
    os.replace(tmp, args.ready_file)
    print('discharger: listening on %s' % state.url, file=sys.stderr)

    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    print('discharger: stopped', file=sys.stderr)


if __name__ == '__main__':
    main()
