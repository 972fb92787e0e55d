"""The central plane measured through the library calls the commands make: the ingest rate of predictions into
PostgreSQL beside the edge's SQLite, `parkml trace` on a 10,000,000-row central log, and the daily analysis of one day
of 1,000,000 central predictions across 50 cameras.

    .venv/bin/python bench/central_bench.py [--only ingest,trace,daily] [--ingest 200000] [--rows 10000000]
                                            [--day 1000000] [--limit 60] [--keep DIR]

It starts a whole plane with `parkml central up` (PostgreSQL, SeaweedFS, `mlflow server` with basic auth) in a
temporary folder and stops and removes it at the end (`--keep DIR`: use and keep that folder; a second run reuses its
tables and its trained version).

1. ingest: `log_predictions` of synthetic predictions filled like the service fills them, in batches of 1,000 (COPY),
   PostgreSQL and the edge's SQLite (NORMAL, FULL) in interleaved rounds after a warm-up; batches of 16 on PostgreSQL.
2. trace: the plane's prediction log filled to `--rows` predictions (10 days, 50 cameras) on the server with
   generate_series, the store's indexes built after it, the version the rows name registered on the plane's MLflow;
   `get_prediction` on random ids with the query plan; then `parkml trace ID` as a fresh process with the plane's
   settings: version facts from the MLflow server (snapshot removed before each run), from the snapshot, and an
   input refused before inference; then one day's read, whole and camera by camera.
3. daily: a version trained on the plane once (`--limit`), a day of `--day` real-frame predictions across 50 cameras
   (`parkml.simulate.synthetic_day`) in a database of its own, and `parkml.daily.run_daily` on it, as `parkml
   analyze` runs it: wall time and the time of each phase.
Wall and CPU seconds and the load average are printed: the machine is shared.
"""
import argparse, os, resource, shutil, statistics, subprocess, sys, tempfile, time
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


def ingest(uri: str, tmp: Path, n: int, rounds: int = 3) -> None:
    """Ingest rates, PostgreSQL and the edge's SQLite side by side: after a warm-up batch, `rounds` rounds of `n/rounds`
    predictions into each engine in turn (the machine's load moves between rounds); medians and every round"""
    from parkml.predlog import open_store, SQLiteStore
    recs, small = synthetic(n, seed=1), synthetic(min(n, 20_000), seed=2)
    got = {k: [] for k in ('PostgreSQL', 'SQLite NORMAL', 'SQLite FULL')}
    with open_store(uri, tmp/'frames') as st:
        rate(st, synthetic(5_000, seed=9), 1000)   # warm-up: the connection, the server's caches
        for r in range(rounds):
            part = recs[r::rounds]
            got['PostgreSQL'].append(rate(st, part, 1000))
            for sync in ('NORMAL', 'FULL'):
                with SQLiteStore(tmp/f'edge_{sync}.db', tmp/'frames', synchronous=sync) as lite:
                    got[f'SQLite {sync}'].append(rate(lite, part, 1000))
        g16 = rate(st, small, 16)
    for k, v in got.items():
        print(f"{k}, batches of 1,000: median {statistics.median(v):,.0f} predictions/s "
              f"(rounds: {', '.join(f'{x:,.0f}' for x in v)}; {n:,} in all)", flush=True)
    print(f"PostgreSQL, batches of 16 (executemany, one commit each): {g16:,.0f} predictions/s ({len(small):,})")


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
    "Time `get_prediction` on random ids; print the plan; return an answered and a refused prediction's ids"
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
        ok = st.db.one("SELECT id FROM predictions WHERE status = 'ok' AND model_version = '3' LIMIT 1")
    print(f"get_prediction on {len(ms)} random ids: median {statistics.median(ms):.2f} ms, "
          f"p95 {np.percentile(ms, 95):.2f} ms, max {max(ms):.2f} ms")
    print('plan: ' + ' / '.join(r[0].strip() for r in plan))
    return ok, refused


def plane_up(folder: Path) -> dict:
    "`parkml central up` in `folder` (kept between runs): its status"
    import json
    env = {**os.environ, 'PARKML_CENTRAL_DIR': str(folder)}
    r = subprocess.run([str(Path(sys.executable).parent/'parkml'), 'central', 'up', '--json', '--quiet'],
                       capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return json.loads(r.stdout)


def service_auth(st: dict) -> tuple:
    "The plane's service account (user, password), from its 0600 secrets file"
    from parkml.plane import read_env_file
    sec = read_env_file(st['secrets_file'])
    return sec['MLFLOW_TRACKING_USERNAME'], sec['MLFLOW_TRACKING_PASSWORD']


def register(st: dict, name: str = 'parkml-catdog', upto: int = 3) -> None:
    "Versions 1..`upto` of `name` on the plane's registry (the big table's rows name version 3), if missing"
    from parkml.plane import mlflow_call, MlflowRefused
    url, svc = st['tracking_uri'], service_auth(st)
    try: return mlflow_call(url, '/api/2.0/mlflow/model-versions/get', dict(name=name, version=str(upto)), svc, 'GET')
    except MlflowRefused: pass
    exp = mlflow_call(url, '/api/2.0/mlflow/experiments/create', dict(name=f'bench-{name}'), svc)['experiment_id']
    run = mlflow_call(url, '/api/2.0/mlflow/runs/create', dict(experiment_id=exp), svc)['run']['info']['run_id']
    mlflow_call(url, '/api/2.0/mlflow/registered-models/create', dict(name=name), svc)
    for _ in range(upto):
        body = dict(name=name, source=f'runs:/{run}/m', run_id=run)
        mlflow_call(url, '/api/2.0/mlflow/model-versions/create', body, svc)


def timed_runs(cmd: list, env: dict, times: int, before=None) -> tuple[list, list, str]:
    "Wall and CPU seconds (user + system) of `cmd` run `times` times, `before()` first each time; the last output"
    walls, cpus = [], []
    for _ in range(times):
        if before: before()
        r0, t = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        walls.append(time.perf_counter() - t)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        assert r.returncode == 0, r.stderr[-2000:]
    return walls, cpus, r.stdout


def cli_trace(st: dict, pid: str, refused: str, times: int = 5) -> None:
    """`parkml trace ID` against the plane in a fresh process (the user's own command: PostgreSQL log, audit store,
    MLflow server), with the version's snapshot cold (removed before each run) and warm"""
    runs = Path(tempfile.mkdtemp(prefix='parkml-bench-trace-'))
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONDONTWRITEBYTECODE'}  # as installed: bytecode cached
    env.update(PARKML_SETTINGS=st['settings_file'], PARKML_RUNS=str(runs))
    exe = str(Path(sys.executable).parent/'parkml')
    timed_runs([exe, 'trace', pid], env, 1)   # bytecode written, the server's password check cached
    cold = timed_runs([exe, 'trace', pid], env, times, lambda: shutil.rmtree(runs/'trace_snapshots', True))
    assert 'read from MLflow' in cold[2], cold[2]
    warm = timed_runs([exe, 'trace', pid], env, times)
    assert 'from the snapshot' in warm[2], warm[2]
    ref = timed_runs([exe, 'trace', refused], env, times)
    for what, (w, c, _) in (('snapshot cold (facts from the MLflow server)', cold), ('snapshot warm', warm),
                            ('an input refused before inference (log only)', ref)):
        print(f"parkml trace ID on the plane, {what}: median {statistics.median(w):.2f} s wall, "
              f"{statistics.median(c):.2f} s CPU, best {min(w):.2f} s, over {times}", flush=True)
    shutil.rmtree(runs, ignore_errors=True)
    for what, code in (('bare Python', 'pass'), ('imports of the trace path', 'import parkml.cli, parkml.trace'),
                       ('and psycopg, numpy', 'import parkml.cli, parkml.trace, psycopg, numpy')):
        w, c, _ = timed_runs([sys.executable, '-c', code], env, times)
        print(f"  of which {what}: median {statistics.median(w):.2f} s wall, {statistics.median(c):.2f} s CPU")


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


def daily(st: dict, pg, folder: Path, n: int, limit: int, day: str = '2026-06-01') -> None:
    """The daily analysis of one day of `n` central predictions across 50 cameras, as `parkml analyze` runs it
    (`parkml.daily.run_daily`: the papermill notebook 52_daily) with the plane's settings: the day read from
    PostgreSQL, its MLflow run and HTML report on the MLflow server (artifacts in S3), its alerts in PostgreSQL"""
    sys.path.insert(0, str(Path(__file__).parent))
    from drift_power import get_version
    os.environ.update(PARKML_SETTINGS=st['settings_file'], PARKML_RUNS=str(folder/'runs'),
                      PARKML_MODEL_NAME='bench-daily', PARKML_PREDLOG_URI=fresh_database(pg, 'bench_day'),
                      PARKML_ALERTS_URI=fresh_database(pg, 'bench_alerts'), PARKML_ALERT_WEBHOOK_URL='',
                      PARKML_SMTP_HOST='')
    os.environ.update(dict(zip(('MLFLOW_TRACKING_USERNAME', 'MLFLOW_TRACKING_PASSWORD'), service_auth(st))))
    from parkml.predlog import open_store
    from parkml.simulate import synthetic_day
    from parkml.daily import run_daily
    mv = get_version(limit)
    t = time.perf_counter()
    with open_store() as log:
        info = synthetic_day(log, mv, n=n, day=day, n_images=2000, cameras=tuple(f'cam-{i:02d}' for i in range(50)))
    print(f"day built: {info['n']:,} predictions ({info['n_labels']:,} labelled) across 50 cameras on PostgreSQL "
          f"in {time.perf_counter() - t:.0f} s", flush=True)
    t = time.perf_counter()
    out = run_daily(day, send=False, progress=False)
    total = time.perf_counter() - t
    phases = ', '.join(f"{k} {v:.1f}" for k, v in out.get('seconds', {}).items())
    print(f"daily analysis of {info['n']:,} central predictions, 50 cameras (run_daily, papermill 52_daily, MLflow "
          f"server, S3, PostgreSQL): {total:.1f} s end to end; phases (s): {phases}; {len(out['alerts'])} alerts; "
          f"MLflow run {out['run_id']}", flush=True)


def fresh_database(server, name: str) -> str:
    "URI of database `name` on the server, created empty (dropped first if there)"
    import psycopg
    with psycopg.connect(server.uri, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS {name} WITH (FORCE)')
        con.execute(f'CREATE DATABASE {name}')
    return server.uri_for(name)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--ingest', type=int, default=200_000, help='predictions logged for the ingest rate')
    ap.add_argument('--rows', type=int, default=10_000_000, help='predictions in the table of the trace')
    ap.add_argument('--day', type=int, default=1_000_000, help='predictions in the day of the daily analysis')
    ap.add_argument('--limit', type=int, default=60, help='images per subset when the daily model must be trained')
    ap.add_argument('--only', default='ingest,trace,daily', help='parts to run (comma-separated)')
    ap.add_argument('--keep', default=None, help='folder of the plane, kept for the next run')
    a = ap.parse_args()
    from parkml.config import get_settings
    from parkml.plane import server_handles, down
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    folder = Path(a.keep or tempfile.mkdtemp(prefix='parkml-bench-plane-')).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o711)
    st = plane_up(folder/'central')
    cfg = get_settings(central_dir=str(folder/'central'))
    pg, parts = server_handles(cfg)[1], a.only.split(',')
    try:
        if 'ingest' in parts:
            with tempfile.TemporaryDirectory() as tmp: ingest(fresh_database(pg, 'bench_ingest'), Path(tmp), a.ingest)
        if 'trace' in parts:
            uri = st['postgres_uri']   # the plane's prediction log: `parkml trace` reads it with the plane's settings
            build(uri, a.rows)
            register(st)
            cli_trace(st, *lookups(uri))
            daily_read(uri)
        if 'daily' in parts: daily(st, pg, folder, a.day, a.limit)
    finally:
        if not a.keep:
            down(cfg)
            shutil.rmtree(folder, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == '__main__':
    main()
