#!/usr/bin/env python3
"""SQL for LXD 5.0's global database: COUNT trusted client certificates sharing one real
certificate's PEM, with distinct fingerprints (for `lxd sql global -`, benchmarks only)."""
import sys

count, pem_path = int(sys.argv[1]), sys.argv[2]
pem = open(pem_path).read().replace("'", "''")
batch = 1000
for start in range(0, count, batch):
    rows = ",".join(
        f"('{i + 1:064x}', 1, 'seed-{i}', '{pem}', 0)"
        for i in range(start, min(start + batch, count))
    )
    print(f"INSERT INTO certificates (fingerprint, type, name, certificate, restricted) VALUES {rows};")
