"""Audit log costs: appending one record (its own transaction, hash chained) and verifying the whole chain, on a
throw-away SQLite file of N records, a tenth of them signed (Ed25519), with and without the trusted keys.

    .venv/bin/python bench/auditlog_bench.py [--n 20000]

Governing actions are a few a day, so the figures that matter are the cost of one append (what `govern` adds)
and how long `parkml audit verify` takes on years of records. An append is one committed SQLite transaction,
whose cost is mostly the disk's fsync, so it is timed alternately with an append as the store did it before the
chain (same table size, same folder). Targets: the chain adds under 1 ms to an append; verify under 10 s for
100,000 records.
"""
import argparse, base64, sqlite3, statistics, tempfile, time
from contextlib import closing
from pathlib import Path

LEGACY = ("CREATE TABLE audit(id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, actor TEXT NOT NULL, "
          "role TEXT NOT NULL, action TEXT NOT NULL, model TEXT NOT NULL, version TEXT, from_version TEXT, "
          "to_version TEXT, alias TEXT, note TEXT, staging_run_id TEXT, simulated INTEGER NOT NULL DEFAULT 0, "
          "extra TEXT NOT NULL DEFAULT '{}')",
          "CREATE INDEX audit_version ON audit(model, version)", "CREATE INDEX audit_alias ON audit(model, alias, ts)")
INSERT = ("INSERT INTO audit(ts, actor, role, action, model, note, extra) "
          "VALUES(?, 'olu', 'owner', 'alert_handled', 'm', ?, '{}')")

def unchained(path: Path, n: int) -> None:
    "The audit table as it was before the chain (no hash, no chain trigger), holding `n` records"
    with closing(sqlite3.connect(path, isolation_level=None)) as con:  # closed: an open one would skip the checkpoints
        con.execute('PRAGMA journal_mode=WAL')
        for stmt in LEGACY: con.execute(stmt)
        con.execute('BEGIN')
        con.executemany(INSERT, ((time.time(), f"alert {i}") for i in range(n)))
        con.execute('COMMIT')

def unchained_append(path: Path, i: int) -> float:
    "ms of one append as the store did it before the chain: its own connection and transaction, one INSERT"
    t = time.perf_counter()
    con = sqlite3.connect(path, timeout=30, isolation_level=None)
    con.execute('BEGIN IMMEDIATE')
    con.execute(INSERT, (time.time(), f"alert {i}"))
    con.execute('COMMIT')
    con.close()
    return (time.perf_counter() - t) * 1000

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=20000, help='records in the log')
    a = ap.parse_args()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from parkml.auditlog import open_governance, sign_statement
    from parkml.auditverify import verify_chain
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    keys = {'ana': {'role': 'qa', 'public_key': base64.b64encode(pub).decode()}}
    tmp = Path(tempfile.mkdtemp())
    st = open_governance(f"sqlite:///{tmp}/governance.db")
    def rec(i):
        if i % 10: return dict(actor='olu', role='owner', action='alert_handled', model='m', note=f"alert {i}")
        s = dict(model='m', version=str(i), onnx_sha256='ab' * 32, verdict='passed', approver='ana')
        return dict(actor='ana', role='qa', action='approve', model='m', version=str(i), extra={'statement': s},
                    signer='ana', signature=sign_statement(s, key))
    t0 = time.perf_counter()
    for lo in range(0, a.n, 1000): st.append([rec(i) for i in range(lo, min(lo + 1000, a.n))])
    print(f"filled {a.n} records in batches of 1000: {time.perf_counter() - t0:.1f} s")
    unchained(tmp/'before.db', a.n)
    one, before = [], []
    for i in range(300):  # alternating, so both see the same disk
        t = time.perf_counter()
        st.append([rec(a.n + i)])
        one.append((time.perf_counter() - t) * 1000)
        before.append(unchained_append(tmp/'before.db', i))
    for name, xs in (('one append, hash chained', one), ('one append as before the chain', before)):
        p95 = sorted(xs)[int(.95 * len(xs))]
        print(f"{name}, on a log of {a.n}: median {statistics.median(xs):.2f} ms, p95 {p95:.2f} ms")
    for name, k in (('with trusted keys', keys), ('without keys', None)):
        t = time.perf_counter()
        v = verify_chain(st, k)
        dt = time.perf_counter() - t
        assert v.ok, v.problems[:3]
        print(f"verify {v.count} records {name}: {dt:.2f} s ({v.count / dt:,.0f} records/s), "
              f"{v.signatures} signatures valid, {v.unverified} not checked")

if __name__ == '__main__': main()
