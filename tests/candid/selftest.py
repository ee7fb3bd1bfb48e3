#!/usr/bin/env python3
"""Proves discharger.py and client.py work together, without rxd.

A tiny stand-in daemon (macaroonbakery on loopback HTTPS with a throw-away
self-signed certificate made by openssl) plays LXD's /1.0: requests carrying
Bakery-Protocol-Version get a 401 `macaroon discharge required` whose macaroon
has the third-party caveat `need-declared username is-authenticated-user`
addressed to the discharger; valid slices are verified with
bakery.checker.auth.  client.py then logs in through it (form, agent) and
browser-window is driven directly.  Prints PASS/FAIL lines and a
"N passed, M failed" summary; exits non-zero on any failure.

    python3 tests/candid/selftest.py
"""

import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

import macaroonbakery.bakery as bakery
import macaroonbakery.checkers as checkers
import macaroonbakery.httpbakery as httpbakery

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import client as bakery_client  # noqa: E402  (reuse its discharge_error)

RESULTS = []


def check(name, ok, detail=''):
    RESULTS.append(bool(ok))
    print('%s %s%s' % ('PASS' if ok else 'FAIL', name, '' if ok else ': ' + str(detail)[:600]))
    sys.stdout.flush()


# --- stand-in daemon -------------------------------------------------------

class CandidIdentity(bakery.IdentityClient):
    """No identity without macaroons: ask for a Candid discharge."""

    def __init__(self, url):
        self.url = url

    def identity_from_context(self, ctx):
        cav = checkers.Caveat(location=self.url, condition='is-authenticated-user')
        return None, [checkers.need_declared_caveat(cav, ['username'])]

    def declared_identity(self, ctx, declared):
        if not declared.get('username'):
            raise bakery.IdentityError('empty username')
        return bakery.SimpleIdentity(declared['username'])


class DaemonHandler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def send_json(self, status, body, headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        headers = dict({'Content-Type': 'application/json'}, **(headers or {}))
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        bk = self.server.bakery
        if not self.path.startswith('/1.0'):
            return self.send_json(404, {'type': 'error', 'error': 'not found', 'error_code': 404})
        if httpbakery.BAKERY_PROTOCOL_HEADER not in self.headers:
            return self.send_json(403, {'type': 'error', 'error': 'not authorized', 'error_code': 403})
        try:
            mss = httpbakery.extract_macaroons(self.headers)
        except Exception:
            mss = []
        try:
            info = bk.checker.auth(mss).allow(checkers.AuthContext(), [bakery.LOGIN_OP])
            meta = {'auth': 'trusted', 'auth_user_name': info.identity.id(),
                    'auth_user_method': 'candid', 'auth_methods': ['tls', 'candid']}
            return self.send_json(200, {'type': 'sync', 'status': 'Success', 'status_code': 200,
                                        'metadata': meta})
        except bakery.DischargeRequiredError as e:
            if not self.headers.get('X-LXD-authenticated'):
                return self.send_json(200, {'type': 'sync', 'status_code': 200,
                                            'metadata': {'auth': 'untrusted'}})
            expiry = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(hours=1)
            m = bk.oven.macaroon(bakery.LATEST_VERSION, expiry, e.cavs(), e.ops())
            body, headers = httpbakery.discharge_required_response(m, '.', 'auth', str(e))
            return self.send_json(401, body, headers)
        except Exception as e:
            return self.send_json(403, {'type': 'error', 'error': str(e), 'error_code': 403})


def start_daemon(tmp, discharger, name='daemon'):
    """HTTPS stand-in daemon; returns (url, cert path)."""
    cert, key = os.path.join(tmp, name + '.crt'), os.path.join(tmp, name + '.key')
    # CN only, no 127.0.0.1 SAN: the client must ignore the host name.
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                    'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
                    '-days', '2', '-subj', '/CN=rxd-selftest'], check=True, capture_output=True)
    locator = bakery.ThirdPartyStore()
    locator.add_info(discharger['url'], bakery.ThirdPartyInfo(
        version=bakery.LATEST_VERSION, public_key=bakery.PublicKey.deserialize(discharger['public_key'])))
    server = ThreadingHTTPServer(('127.0.0.1', 0), DaemonHandler)
    server.bakery = bakery.Bakery(location=discharger['url'], locator=locator,
                                  key=bakery.generate_key(),
                                  identity_client=CandidIdentity(discharger['url']))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return 'https://127.0.0.1:%d/1.0' % server.server_address[1], cert


# --- helpers ---------------------------------------------------------------

def run_client(*args):
    p = subprocess.run([sys.executable, os.path.join(HERE, 'client.py')] + list(args),
                       capture_output=True, text=True, timeout=120)
    try:
        out = json.loads(p.stdout)
    except ValueError:
        out = {'raw_stdout': p.stdout, 'stderr': p.stderr[-2000:]}
    return p.returncode, out


def user_of(out):
    body = out.get('body')
    return body.get('metadata', {}).get('auth_user_name') if isinstance(body, dict) else None


def challenge(daemon_url, cert):
    """The daemon's 401 body, fetched without hostname checking."""
    s = requests.Session()
    s.mount('https://', bakery_client.NoHostnameAdapter())
    r = s.get(daemon_url, headers={'Bakery-Protocol-Version': '3', 'X-LXD-authenticated': 'true'},
              verify=cert, timeout=30)
    return s, r


def start_discharger(tmp, name, users_file, *extra):
    """Runs discharger.py; returns (process, ready-file contents)."""
    ready = os.path.join(tmp, name + '.ready')
    log = open(os.path.join(tmp, name + '.log'), 'w')
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, 'discharger.py'), '--users', users_file,
                             '--ready-file', ready, '--key-file', os.path.join(tmp, name + '-key.json')]
                            + list(extra), stderr=log)
    log.close()
    for _ in range(150):
        if os.path.exists(ready) or proc.poll() is not None:
            break
        time.sleep(0.1)
    if not os.path.exists(ready):
        raise RuntimeError('discharger %s did not start; see %s.log' % (name, os.path.join(tmp, name)))
    with open(ready) as f:
        return proc, json.load(f)


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None


def main():
    tmp = tempfile.mkdtemp(prefix='candid-selftest-')
    agent_key = bakery.generate_key()
    users = {
        'alice@example.com': {'password': 'pw', 'groups': ['devs']},
        'bot@example.com': {'password': 'unused', 'groups': [],
                            'agent_public_key': str(agent_key.public_key)},
    }
    users_file = os.path.join(tmp, 'users.json')
    with open(users_file, 'w') as f:
        json.dump(users, f)
    agent_file = os.path.join(tmp, 'agent.json')
    with open(agent_file, 'w') as f:  # the Go/Python agent-file format
        json.dump({'key': {'private': str(agent_key), 'public': str(agent_key.public_key)},
                   'agents': []}, f)
    proc, disch = start_discharger(tmp, 'candid', users_file, '--groups-secret', 'sekrit')
    try:
        check('discharger ready file', disch['url'].startswith('http://127.0.0.1:') and disch['pid'] == proc.pid)
        daemon_url, cert = start_daemon(tmp, disch)
        run_checks(tmp, disch, daemon_url, cert, users_file, users, agent_file)
        tls_checks(tmp, users_file)
    except Exception as e:
        check('selftest ran to completion', False, repr(e))
    finally:
        rc = stop(proc)
        check('discharger exits cleanly on SIGTERM', rc == 0, rc)
    failed = RESULTS.count(False)
    print('%d passed, %d failed' % (RESULTS.count(True), failed))
    if failed:
        print('logs in', tmp)
    sys.exit(1 if failed else 0)


def run_checks(tmp, disch, daemon_url, cert, users_file, users, agent_file):
    base = ['--url', daemon_url, '--ca', cert]
    cookie = os.path.join(tmp, 'cookie')

    # Discharger metadata.
    info = requests.get(disch['url'] + '/discharge/info', timeout=10).json()
    check('GET /discharge/info', info == {'PublicKey': disch['public_key'], 'Version': 3}, info)
    r = requests.get(disch['url'] + '/v1/u/alice@example.com/groups',
                     headers={'Authorization': 'Bearer sekrit'}, timeout=10)
    check('groups API', r.status_code == 200 and r.json() == ['devs'], r.text)
    r = requests.get(disch['url'] + '/v1/u/alice@example.com/groups', timeout=10)
    check('groups API needs the bearer secret', r.status_code == 401, r.status_code)

    # Form login through client.py, then cookie reuse without interaction.
    rc, out = run_client(*base, '--user', 'alice@example.com', '--password', 'pw', '--cookie-out', cookie)
    check('form login', rc == 0 and out['status'] == 200 and user_of(out) == 'alice@example.com'
          and out['cookie'], out)
    rc, out = run_client(*base, '--user', 'x', '--password', 'x', '--cookie-in', cookie, '--no-interact')
    check('cookie reuse (--cookie-in, --no-interact)', rc == 0 and user_of(out) == 'alice@example.com', out)

    # A tampered cookie must not authenticate (and --no-interact stops at 401).
    with open(cookie) as f:
        slice_ = json.loads(bakery.b64decode(f.read()))
    sig = slice_[0]['s64']
    slice_[0]['s64'] = ('A' if sig[0] != 'A' else 'B') + sig[1:]
    bad = os.path.join(tmp, 'bad-cookie')
    with open(bad, 'w') as f:
        f.write(bakery_client.base64.b64encode(json.dumps(slice_).encode()).decode())
    rc, out = run_client(*base, '--user', 'x', '--password', 'x', '--cookie-in', bad, '--no-interact')
    check('tampered cookie -> 401 challenge', rc == 1 and out['status'] == 401 and
          out['body'].get('Code') == 'macaroon discharge required', out)

    rc, out = run_client(*base, '--user', 'alice@example.com', '--password', 'wrong')
    check('wrong password fails', rc == 1 and 'cannot submit form' in out.get('error', ''), out)

    other = os.path.join(tmp, 'other.crt')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
                    '-nodes', '-keyout', os.path.join(tmp, 'other.key'), '-out', other, '-days', '2',
                    '-subj', '/CN=other'], check=True, capture_output=True)
    rc, out = run_client('--url', daemon_url, '--ca', other, '--user', 'a', '--password', 'b')
    check('untrusted daemon certificate rejected', rc == 1 and 'SSL' in out.get('error', ''), out)

    # Agent login.
    rc, out = run_client(*base, '--user', 'bot@example.com', '--agent-key-file', agent_file)
    check('agent login', rc == 0 and user_of(out) == 'bot@example.com', out)
    stranger = os.path.join(tmp, 'stranger.key')
    with open(stranger, 'w') as f:
        f.write(str(bakery.generate_key()))
    rc, out = run_client(*base, '--user', 'bot@example.com', '--agent-key-file', stranger)
    check('agent login with unregistered key fails', rc == 1 and out['status'] == 401, out)

    # USERS.json is re-read per request.
    users['carol@example.com'] = {'password': 'c', 'groups': []}
    with open(users_file, 'w') as f:
        json.dump(users, f)
    rc, out = run_client(*base, '--user', 'carol@example.com', '--password', 'c')
    check('users file re-read', rc == 0 and user_of(out) == 'carol@example.com', out)

    # Raw protocol: interaction-required shape, browser-window, corrupt payload.
    session, r = challenge(daemon_url, cert)
    check('daemon challenge', r.status_code == 401 and r.headers.get('WWW-Authenticate') == 'Macaroon', r.text)
    m = r.json()['Info']['Macaroon']
    cid64, payload64 = next(iter(m['cdata'].items()))
    form = {'id64': cid64, 'caveat64': payload64}
    hdr = {'Bakery-Protocol-Version': '3'}
    r2 = requests.post(disch['url'] + '/discharge', data=form, headers=hdr, timeout=10)
    body = r2.json()
    info = body.get('Info', {})
    methods = info.get('InteractionMethods', {})
    check('interaction-required shape',
          r2.status_code == 401 and r2.headers.get('WWW-Authenticate') == 'Macaroon'
          and body.get('Code') == 'interaction required'
          and set(methods) == {'form', 'agent', 'browser-window'}
          and set(methods['browser-window']) == {'VisitURL', 'WaitTokenURL'}
          and 'login-url' in methods['agent'] and 'url' in methods['form']
          and 'VisitURL' in info and 'WaitURL' in info, body)

    raw = bytearray(bakery.b64decode(payload64))
    raw[-1] ^= 1
    r3 = requests.post(disch['url'] + '/discharge', headers=hdr, timeout=10, data={
        'id64': cid64, 'caveat64': bakery_client.base64.b64encode(bytes(raw)).decode()})
    check('corrupt payload -> 500 cannot decrypt caveat id',
          r3.status_code == 500 and 'cannot decrypt caveat id' in r3.text, r3.text)

    def fake_xdg_open(url):  # what the curl-based fake xdg-open does
        requests.post(url, data={'username': 'alice@example.com', 'password': 'pw'}, timeout=10)

    bclient = httpbakery.Client(interaction_methods=[httpbakery.WebBrowserInteractor(open=fake_xdg_open)])
    try:
        bclient.handle_error(bakery_client.discharge_error(r), daemon_url)
        r4 = session.get(daemon_url, cookies=bclient.cookies, verify=cert, timeout=30, headers={
            'Bakery-Protocol-Version': '3', 'X-LXD-authenticated': 'true'})
        check('browser-window login', r4.status_code == 200 and
              r4.json()['metadata']['auth_user_name'] == 'alice@example.com', r4.text)
    except Exception as e:
        check('browser-window login', False, e)


def tls_checks(tmp, users_file):
    """A discharger on https (cert with an IP:127.0.0.1 SAN) and a form login
    through it, trusting it with --discharger-ca."""
    cert, key = os.path.join(tmp, 'candid-tls.crt'), os.path.join(tmp, 'candid-tls.key')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
                    '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=candid-test',
                    '-addext', 'subjectAltName=IP:127.0.0.1'], check=True, capture_output=True)
    proc, disch = start_discharger(tmp, 'candid-tls', users_file, '--tls-cert', cert, '--tls-key', key)
    try:
        check('TLS discharger ready file', disch['url'].startswith('https://127.0.0.1:'), disch)
        daemon_url, daemon_cert = start_daemon(tmp, disch, 'daemon2')
        rc, out = run_client('--url', daemon_url, '--ca', daemon_cert, '--discharger-ca', cert,
                             '--user', 'alice@example.com', '--password', 'pw')
        check('form login via https discharger', rc == 0 and user_of(out) == 'alice@example.com', out)
    finally:
        check('TLS discharger exits cleanly on SIGTERM', stop(proc) == 0)


if __name__ == '__main__':
    main()
