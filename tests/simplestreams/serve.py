"""A minimal simplestreams image server for the tests: serves a directory over HTTPS on
127.0.0.1 (port chosen by the kernel, printed on the first line), logging every request path
to a file. Usage: serve.py DIR CERT KEY LOG [RATE]: with RATE (bytes per second), files are
sent no faster, so a client can watch a download's progress."""
import http.server
import ssl
import sys
import time
from functools import partial

root, cert, key, log = sys.argv[1:5]
rate = int(sys.argv[5]) if len(sys.argv) > 5 else 0


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):
        with open(log, "a") as f:
            f.write(self.path + "\n")

    def copyfile(self, source, outputfile):
        if not rate:
            return super().copyfile(source, outputfile)
        chunk = max(rate // 20, 1)
        while True:
            data = source.read(chunk)
            if not data:
                return
            outputfile.write(data)
            time.sleep(len(data) / rate)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=root))
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
