"""The prediction log on PostgreSQL: ingest rate through the store API, a trace look-up on a 10,000,000-row log, and
the daily analysis's read of one day (1,000,000 predictions across 50 cameras).

    .venv/bin/python bench/central_bench.py [--ingest 200000] [--rows 10000000] [--keep DIR]

It starts a throw-away PostgreSQL server on loopback (`parkml.central.start_postgres`, run as the unprivileged
`postgres` user when root) in a temporary folder, and removes it at the end (`--keep DIR`: use and keep that folder;
a second run then reuses the 10,000,000-row table). The ingest goes into a database of its own, made afresh.

1. Ingest: `log_predictions` of synthetic predictions filled like the service fills them (run id, 16-number
   projection, frame hash; no frame bytes), in batches of 1,000 (COPY) and of 16 (the service's group commit,
   executemany); the edge's SQLite store beside it (synchronous NORMAL and FULL).
2. Trace: a table of `--rows` predictions (10 days, 50 cameras) built on the server with generate_series, the
   store's own indexes built after it; then `get_prediction` (the trace's look-up) of random ids, the query plan,
   and `parkml trace ID` end to end in a fresh process on an input refused before inference (the trace's store side
   only: process start, imports, the look-up; no model facts from MLflow).
3. Daily read: one day of that table (1,000,000 predictions, 50 cameras) through `predictions(start, end)`, and
   camera by camera. The daily analysis itself (nbs/25_daily) is measured by bench/daily_bench.py.
The load average is printed: the machine is shared.
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC: day 0 of the big table
DAY = 86400.0


def synthetic(n: int, seed: int = 0, cameras: int = 50) -> list[dict]:
    "`n` prediction records as the service writes them (no frame bytes)"
    from parkml.predlog import new_prediction_id, LABELS
    g = np.random.default_rng(seed)
    p, ts = g.random(n), T0 + np.sort(g.uniform(0, DAY, n))
    return [dict(id=new_prediction_id(), ts=float(ts[i]), received=float(ts[i]) + 0.04, camera=f"cam-{i % cameras:02d}",
                 model_name='parkml-catdog', model_version='3', run_id='0123456789abcdef0123456789abcdef',
                 alias='champion', label=LABELS[int(p[i] > 0.5)], p_dog=float(p[i]), latency_ms=20.0, width=160.0,
                 height=120.0, brightness=0.4, contrast=0.2, sharpness=3.0, frame_sha=f"{i:064x}",
                 proj=g.normal(size=16)) for i in range(n)]


def rate(store, recs: list[dict], batch: int) -> float:
    "Predictions per second logged through `store.log_predictions` in batches of `batch`"
    t = time.perf_counter()
    for k in range(0, len(recs), batch): store.log_predictions(recs[k:k + batch])
    return len(recs) / (time.perf_counter() - t)


def ingest(uri: str, tmp: Path, n: int) -> None:
    "Ingest rates, PostgreSQL and SQLite, into empty stores"
    from parkml.predlog import open_store, SQLiteStore
    recs, small = synthetic(n, seed=1), synthetic(min(n, 20_000), seed=2)
    with open_store(uri, tmp/'frames') as st:
        print(f"PostgreSQL, batches of 1,000 (COPY): {rate(st, recs, 1000):,.0f} predictions/s ({n:,})", flush=True)
        print(f"PostgreSQL, batches of 16 (executemany): {rate(st, small, 16):,.0f} predictions/s ({len(small):,})")
    for sync in ('NORMAL', 'FULL'):
        with SQLiteStore(tmp/f'edge_{sync}.db', tmp/'frames', synchronous=sync) as st:
            print(f"SQLite {sync}, batches of 1,000: {rate(st, recs, 1000):,.0f}/s; "
                  f"batches of 16: {rate(st, synthetic(len(small), seed=3), 16):,.0f}/s", flush=True)


BIG = """INSERT INTO predictions(id, ts, received, camera, model_name, model_version, run_id, alias, label, p_dog,
  latency_ms, width, height, brightness, contrast, sharpness, status, error, frame_sha, proj)
SELECT 'p' || lpad(to_hex(({t0} * 1000)::bigint + g * {step}), 12, '0') || lpad(to_hex(g), 10, '0'),
  {t0} + g * {dt}, {t0} + g * {dt} + 0.04, 'cam-' || lpad((g % 50)::text, 2, '0'),
  CASE WHEN g % 100 <> 7 THEN 'parkml-catdog' END, CASE WHEN g % 100 <> 7 THEN '3' END,
  CASE WHEN g % 100 <> 7 THEN '0123456789abcdef0123456789abcdef' END, CASE WHEN g % 100 <> 7 THEN 'champion' END,
  CASE WHEN g % 100 = 7 THEN NULL WHEN g % 2 = 0 THEN 'dog' ELSE 'cat' END,
  (g % 1000) / 1000.0, 20.0, 160.0, 120.0, 0.4, 0.2, 3.0, CASE WHEN g % 100 = 7 THEN 'rejected' ELSE 'ok' END,
  CASE WHEN g % 100 = 7 THEN 'not an image' END, lpad(to_hex(g), 64, '0'), decode(repeat('3f', 64), 'hex')
FROM generate_series({lo}, {hi}) g"""
SECONDARY = ('predictions_ts', 'predictions_camera_ts', 'predictions_frame')


def build(uri: str, rows: int) -> None:
    "Fill the log to `rows` predictions over 10 days on the server; indexes dropped first and built after"
    from parkml.predlog import open_store, PREDLOG_STEPS
    with open_store(uri, '/tmp') as st:
        have = st.counts()['predictions']
        if have >= rows: return print(f"table already holds {have:,} predictions")
        con, dt = st.db.writer, 10 * DAY / rows
        con.execute('TRUNCATE predictions')
        con.execute("SET maintenance_work_mem = '512MB'")
        for ix in SECONDARY: con.execute(f'DROP INDEX IF EXISTS {ix}')
        con.execute('ALTER TABLE predictions DROP CONSTRAINT IF EXISTS predictions_pkey')
        t, chunk = time.perf_counter(), 1_000_000
        for lo in range(0, rows, chunk):
            con.execute(BIG.format(t0=T0, dt=dt, step=max(1, int(dt * 1000)), lo=lo, hi=min(rows, lo + chunk) - 1))
            print(f"\r  {min(rows, lo + chunk):,} rows, {time.perf_counter() - t:.0f} s", end='', flush=True)
        con.execute('ALTER TABLE predictions ADD PRIMARY KEY (id)')
        for stmt in PREDLOG_STEPS['postgresql'][0]:
            if stmt.startswith('CREATE INDEX'): con.execute(stmt)
        con.execute('VACUUM ANALYZE predictions')
        print(f"\nbuilt {rows:,} rows with their indexes in {time.perf_counter() - t:.0f} s; "
              f"log {st.db_bytes() / 1e9:.1f} GB", flush=True)


def lookups(uri: str, n: int = 200) -> str:
    "Time `get_prediction` on random ids; print the plan; return an id of a refused input for the CLI"
    from parkml.predlog import open_store
    with open_store(uri, '/tmp') as st:
        ids = [r[0] for r in st.db.rows('SELECT id FROM predictions TABLESAMPLE SYSTEM (0.05) LIMIT ?', (n,))[1]]
        st.get_prediction(ids[0])
        ms = []
        for i in ids:
            t = time.perf_counter()
            assert st.get_prediction(i)['id'] == i
            ms.append((time.perf_counter() - t) * 1000)
        plan = st.db.rows('EXPLAIN SELECT * FROM predictions WHERE id = ?', (ids[0],))[1]
        refused = st.db.one("SELECT id FROM predictions WHERE status = 'rejected' LIMIT 1")
    print(f"get_prediction on {len(ms)} random ids: median {statistics.median(ms):.2f} ms, "
          f"p95 {np.percentile(ms, 95):.2f} ms, max {max(ms):.2f} ms")
    print('plan: ' + ' / '.join(r[0].strip() for r in plan))
    return refused


def cli_trace(uri: str, pid: str, times: int = 5) -> None:
    "`parkml trace ID` in a fresh process, end to end"
    env = {**os.environ, 'PARKML_PREDLOG_URI': uri}
    exe, out = str(Path(sys.executable).parent/'parkml'), []
    for _ in range(times):
        t = time.perf_counter()
        r = subprocess.run([exe, 'trace', pid], capture_output=True, text=True, env=env, cwd=ROOT)
        out.append(time.perf_counter() - t)
        assert r.returncode == 0 and pid in r.stdout, r.stderr
    print(f"parkml trace ID (a refused input: store side only), fresh process: median {statistics.median(out):.2f} s, "
          f"best {min(out):.2f} s over {times}")
    for what, code in (('bare Python', 'pass'), ('imports of the trace path', 'import parkml.cli, parkml.trace'),
                       ('and psycopg', 'import parkml.cli, parkml.trace, psycopg')):
        ts = []
        for _ in range(times):
            t = time.perf_counter()
            subprocess.run([sys.executable, '-c', code], check=True, cwd=ROOT)
            ts.append(time.perf_counter() - t)
        print(f"  of which {what}: median {statistics.median(ts):.2f} s")


def daily_read(uri: str) -> None:
    "Read day 3 of the big table (1,000,000 predictions at 10,000,000 rows), whole and camera by camera"
    from parkml.predlog import open_store
    start, end = T0 + 3 * DAY, T0 + 4 * DAY
    with open_store(uri, '/tmp') as st:
        t = time.perf_counter()
        df = st.predictions(start, end)
        whole = time.perf_counter() - t
        t = time.perf_counter()
        per = sum(len(st.predictions(start, end, camera=f"cam-{c:02d}")) for c in range(50))
        cams = time.perf_counter() - t
    print(f"daily read: {len(df):,} predictions of {df.camera.nunique()} cameras in {whole:.1f} s "
          f"({len(df) / whole:,.0f} rows/s); camera by camera: {per:,} in {cams:.1f} s")


def fresh_database(server, name: str) -> str:
    "URI of database `name` on the server, created empty (dropped first if there)"
    import psycopg
    with psycopg.connect(server.uri, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS {name} WITH (FORCE)')
        con.execute(f'CREATE DATABASE {name}')
    return server.uri_for(name)


def log_database(server) -> str:
    "URI of the database of the big table (kept between runs with --keep)"
    import psycopg
    with psycopg.connect(server.uri, autocommit=True) as con:
        if not con.execute("SELECT 1 FROM pg_database WHERE datname = 'bench_log'").fetchone():
            con.execute('CREATE DATABASE bench_log')
    return server.uri_for('bench_log')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--ingest', type=int, default=200_000, help='predictions logged for the ingest rate')
    ap.add_argument('--rows', type=int, default=10_000_000, help='predictions in the table of the trace')
    ap.add_argument('--keep', default=None, help='folder of the server, kept for the next run')
    a = ap.parse_args()
    from parkml.central import start_postgres
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    folder = Path(a.keep or tempfile.mkdtemp(prefix='parkml-bench-pg-'))
    server = start_postgres(folder)
    try:
        with tempfile.TemporaryDirectory() as tmp: ingest(fresh_database(server, 'bench_ingest'), Path(tmp), a.ingest)
        uri = log_database(server)
        build(uri, a.rows)
        cli_trace(uri, lookups(uri))
        daily_read(uri)
    finally:
        if not a.keep:
            server.stop()
            shutil.rmtree(folder, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == '__main__':
    main()
