#!/usr/bin/env python3
"""Independent macaroon client (macaroonbakery's httpbakery) for an
LXD-compatible daemon that answers `macaroon discharge required`.

    client.py --url https://127.0.0.1:PORT/1.0 --ca SERVER_CERT.pem
              (--user U --password P | --agent-key-file F --user U)
              [--cookie-in FILE] [--cookie-out FILE] [--method GET] [--data JSON]
              [--no-interact] [--discharger-ca PEM]

Prints one JSON object: {"status": N, "body": ..., "cookie": "<macaroon-auth
value or null>"} plus "error" when something failed.  Exit status 0 only if
a final HTTP response was obtained without error (any HTTP status).

The daemon's certificate is verified against --ca but its host name is not
checked.  Requests to the discharger use requests' defaults (set
--discharger-ca or REQUESTS_CA_BUNDLE for an https discharger).
"""

import argparse
import base64
import json
import os
import sys
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter

import macaroonbakery._utils as utils
import macaroonbakery.bakery as bakery
import macaroonbakery.httpbakery as httpbakery
import macaroonbakery.httpbakery.agent as agent

COOKIE = 'macaroon-auth'
MAX_ROUNDS = 3  # discharge rounds per request, like httpbakery / lxc
BAKERY_HEADERS = {httpbakery.BAKERY_PROTOCOL_HEADER: str(bakery.LATEST_VERSION)}


class NoHostnameAdapter(HTTPAdapter):
    """Checks the certificate chain (verify=CA file) but not the host name."""

    def init_poolmanager(self, *args, **kwargs):
        kwargs['assert_hostname'] = False
        super().init_poolmanager(*args, **kwargs)


class FormInfo:
    """The "form" entry of an interaction-required error: {"url": ...}."""

    @classmethod
    def from_dict(cls, d):
        return d.get('url')


class FormInteractor(httpbakery.Interactor):
    """httpbakery/form protocol: GET url -> {"schema": environschema fields};
    POST url {"form": {...}} -> {"token": {"kind", "value": std b64}}."""

    def __init__(self, user, password):
        self.user, self.password = user, password

    def kind(self):
        return 'form'

    def interact(self, client, location, ir_err):
        url = ir_err.interaction_method('form', FormInfo)
        if not url:
            raise httpbakery.InteractionError('no URL found in form information')
        url = urljoin(location.rstrip('/') + '/', url)
        resp = requests.get(url, headers=BAKERY_HEADERS, timeout=60)
        schema = resp.json().get('schema') if resp.status_code == 200 else None
        if not schema:
            raise httpbakery.InteractionError('cannot get schema: [%d] %s' % (resp.status_code, resp.text))
        values = {}
        for name, attr in schema.items():  # fill the form from the command line
            if name == 'username':
                values[name] = self.user
            elif name == 'password' or attr.get('is-secret'):
                values[name] = self.password
            elif attr.get('mandatory'):
                raise httpbakery.InteractionError('cannot fill form field %r' % name)
        resp = requests.post(url, json={'form': values}, headers=BAKERY_HEADERS, timeout=60)
        if resp.status_code != 200:
            raise httpbakery.InteractionError('cannot submit form: [%d] %s' % (resp.status_code, resp.text))
        token = resp.json().get('token')
        if not token:
            raise httpbakery.InteractionError('no token found in form response')
        return httpbakery.DischargeToken(kind=token['kind'], value=base64.b64decode(token['value']))


class AgentForAnyLocation(agent.AgentInteractor):
    """macaroonbakery's agent interactor, logging in as one user at whatever
    discharger the caveat names (the stock one needs the URL up front)."""

    def __init__(self, key, user):
        super().__init__(agent.AuthInfo(key=key, agents=[]))
        self.user = user

    def _find_agent(self, location):
        return agent.Agent(url=location, username=self.user)


def load_agent_key(path):
    """Accepts an agent file ({"key": {"private": ..}}), {"private": ..} or a
    bare std-base64 curve25519 private key."""
    with open(path) as f:
        text = f.read().strip()
    try:
        data = json.loads(text)
    except ValueError:
        return bakery.PrivateKey.deserialize(text)
    data = data.get('key', data) if isinstance(data, dict) else data
    return bakery.PrivateKey.deserialize(data['private'] if isinstance(data, dict) else data)


def discharge_error(resp):
    """The httpbakery.Error in a discharge-required response, or None (same
    rules as httpbakery's client: 407, or 401 + WWW-Authenticate: Macaroon)."""
    if resp.status_code not in (401, 407):
        return None
    if resp.status_code == 401 and resp.headers.get('WWW-Authenticate') != 'Macaroon':
        return None
    if not resp.headers.get('Content-Type', '').startswith('application/json'):
        return None
    body = resp.json()
    if body.get('Code') != httpbakery.ERR_DISCHARGE_REQUIRED:
        return None
    return httpbakery.Error.from_dict(body)


def main():
    ap = argparse.ArgumentParser(description='macaroon client for rxd tests')
    ap.add_argument('--url', required=True)
    ap.add_argument('--ca', required=True, help="PEM the daemon's certificate must chain to")
    ap.add_argument('--user', required=True)
    ap.add_argument('--password')
    ap.add_argument('--agent-key-file')
    ap.add_argument('--cookie-in', help='file holding a macaroon-auth cookie value to start with')
    ap.add_argument('--cookie-out', help='write the final macaroon-auth cookie value here')
    ap.add_argument('--method', default='GET')
    ap.add_argument('--data', help='JSON request body')
    ap.add_argument('--no-interact', action='store_true', help='never discharge: fail on a challenge')
    ap.add_argument('--discharger-ca', help='CA bundle for an https discharger')
    args = ap.parse_args()
    if (args.password is None) == (args.agent_key_file is None):
        ap.error('give exactly one of --password and --agent-key-file')
    if args.discharger_ca:
        os.environ['REQUESTS_CA_BUNDLE'] = args.discharger_ca

    key = None
    if args.agent_key_file:
        key = load_agent_key(args.agent_key_file)
        interactors = [AgentForAnyLocation(key, args.user)]
    else:
        interactors = [FormInteractor(args.user, args.password)]
    jar = requests.cookies.RequestsCookieJar()
    client = httpbakery.Client(interaction_methods=interactors, key=key, cookies=jar)
    if args.cookie_in:
        with open(args.cookie_in) as f:
            jar.set_cookie(utils.cookie(url=urljoin(args.url, '/'), name=COOKIE, value=f.read().strip()))

    session = requests.Session()
    session.mount('https://', NoHostnameAdapter())
    headers = dict(BAKERY_HEADERS, **{'X-LXD-authenticated': 'true'})
    result = {'status': None, 'body': None, 'cookie': None}
    try:
        for rounds in range(MAX_ROUNDS + 1):
            # rxd reads JSON bodies only when they are labelled JSON.
            if args.data is not None:
                headers['Content-Type'] = 'application/json'
            resp = session.request(args.method, args.url, headers=headers, cookies=jar,
                                   data=args.data, verify=args.ca, timeout=120)
            try:
                result['status'], result['body'] = resp.status_code, resp.json()
            except ValueError:
                result['status'], result['body'] = resp.status_code, resp.text
            err = discharge_error(resp)
            if err is None:
                break
            if args.no_interact:
                result['error'] = 'discharge required but --no-interact given'
                break
            if rounds == MAX_ROUNDS:
                result['error'] = 'too many discharge rounds'
                break
            # Discharge every third-party caveat (interacting as needed),
            # bind, and store the slice as the macaroon-auth cookie.
            client.handle_error(err, args.url)
    except Exception as e:  # report, don't trace back: tests read stdout
        result['error'] = '%s: %s' % (type(e).__name__, e)

    for c in jar:
        if c.name == COOKIE:
            result['cookie'] = c.value
    if args.cookie_out and result['cookie'] is not None:
        with open(args.cookie_out, 'w') as f:
            f.write(result['cookie'])
    print(json.dumps(result))
    sys.exit(1 if 'error' in result or result['status'] is None else 0)


if __name__ == '__main__':
    main()
