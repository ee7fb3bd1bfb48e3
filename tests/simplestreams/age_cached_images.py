"""Make a stopped rxd's cached images look unused for DAYS days, as if time had passed (the
image-server test checks images.remote_cache_expiry with it). Usage: age_cached_images.py DB DAYS"""
import sqlite3
import sys

db, days = sys.argv[1], int(sys.argv[2])
conn = sqlite3.connect(db)
conn.execute(
    "UPDATE images SET last_used_at = strftime('%s', 'now') - ? * 86400 WHERE cached = 1",
    (days,),
)
conn.commit()
