"""A minimal simplestreams image server for the tests: serves a directory over HTTPS on
127.0.0.1 (port chosen by the kernel, printed on the first line), logging every request path
to a file. Usage: serve.py DIR CERT KEY LOG"""
import http.server
import ssl
import sys
from functools import partial

root, cert, key, log = sys.argv[1:5]


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):
        with open(log, "a") as f:
            f.write(self.path + "\n")


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=root))
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
