"""Prediction-trace benchmark: `parkml trace` on a prediction log of 1,000,000 predictions.

    .venv/bin/python bench/trace_bench.py [--n 1000000] [--lookups 200] [--fresh-lookups 20] [--cli 5] [--cli-fresh 2]

In its own runs folder (default: <runs>/bench_trace) it trains a small real version once (papermill `50_train`,
limit 60), stages it by tags (validation_status=passed, a staging run), approves and releases it through
parkml.governance, then fills the prediction log through the store API (`bulk_insert`, 20,000 rows a transaction)
up to `--n` predictions spread over 30 days on 4 cameras with the real model name, version and run id; 1,000 of them
carry a real petpark photo as their frame and 10,000 get a feedback label. Later runs reuse the store.

Reported: build time, database size, the query plan of the look-up (primary key, no scan), the library call
`parkml.trace.trace(id)` on `--lookups` random ids with the version's facts from its snapshot (the fast path) and
on `--fresh-lookups` ids from MLflow (`fresh=True`), and the CLI `parkml trace ID` end to end (process start,
imports, look-ups, printing) `--cli` times, `parkml trace ID --fresh` `--cli-fresh` times, and where a fresh
process's time goes (bare Python; the imports of the fast path; the imports the MLflow path adds). The load
average is printed too: the machine is shared.
"""
import argparse, os, statistics, subprocess, sys, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=1_000_000); ap.add_argument('--lookups', type=int, default=200)
    ap.add_argument('--fresh-lookups', type=int, default=20)
    ap.add_argument('--cli', type=int, default=5); ap.add_argument('--cli-fresh', type=int, default=2); ap.add_argument('--runs', default=None)
    a = ap.parse_args()
    from parkml.config import get_settings
    runs = Path(a.runs or get_settings().runs/'bench_trace').resolve()
    os.environ['PARKML_RUNS'] = str(runs)
    from parkml.tracking import mlflow_client, resolve_version, RegistryError
    from parkml.governance import Actor, approve, release
    from parkml.predlog import open_store
    from parkml.trace import trace, stores_signature, SETTLE_S
    cfg = get_settings(); client = mlflow_client(cfg)
    try: mv = resolve_version('champion', client, cfg)
    except RegistryError:
        from parkml.notebooks import run_notebook
        print('training a small version (once)...', flush=True)
        res = run_notebook('50_train', dict(limit=60, run_name='bench-trace'), progress=True)
        import mlflow
        with mlflow.start_run(run_name=f"staging-v{res['version']}") as r:
            mlflow.set_tags({'parkml.kind': 'staging', 'parkml.model_version': res['version']})
        for k, v in dict(validation_status='passed', staging_run_id=r.info.run_id).items():
            client.set_model_version_tag(cfg.model_name, res['version'], k, v)
        approve(res['version'], Actor('bench-qa', 'qa', simulated=True), 'benchmark')
        release(res['version'], Actor('bench-owner', 'owner', simulated=True), 'benchmark')
        mv = resolve_version('champion', client, cfg)
    st = open_store()
    have = st.counts()['predictions']
    t_build = None
    if have < a.n:
        rng = np.random.default_rng(0); n = a.n - have
        photos = sorted(cfg.data.rglob('*.jpg'))[:1000]
        t0, start = time.time(), time.time() - 30 * 86400
        ts = np.sort(start + rng.uniform(0, 30 * 86400, n)); p = rng.uniform(0, 1, n)
        def records():
            for i in range(n):
                r = dict(ts=float(ts[i]), received=float(ts[i]) + .01, camera=f"cam-0{1 + i % 4}", model_name=mv.name,
                         model_version=str(mv.version), run_id=mv.run_id, alias='champion', label='dog' if p[i] >= .5 else 'cat',
                         p_dog=float(p[i]), latency_ms=8.0 + (i % 13), width=640., height=480., brightness=.5, contrast=.2, sharpness=.1)
                if i < len(photos): r['frame'] = photos[i].read_bytes()
                yield r
        st.bulk_insert(records(), batch=20_000, total=n)
        ids = st.predictions(limit=10_000).id.tolist()
        for pid in ids: st.add_feedback(pid, 'dog' if rng.random() < .5 else 'cat', 'bench')
        t_build = time.time() - t0
    c = st.counts()
    con = st.db.reader()
    plan = con.execute("EXPLAIN QUERY PLAN SELECT * FROM predictions WHERE id = ?", ('x',)).fetchall()
    sample = [r[0] for r in con.execute('SELECT id FROM predictions ORDER BY random() LIMIT ?', (a.lookups,))]
    print(f"\nprediction log {st.path}: {c['predictions']:,} predictions, {c['labelled']:,} labelled, {c['frames']:,} frames, "
          f"{c['db_bytes'] / 2**20:.0f} MiB" + (f"; built in {t_build:.0f} s" if t_build else ' (reused)'))
    print('look-up plan: ' + '; '.join(str(r[-1]) for r in plan))
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    while not stores_signature(cfg)[1]: time.sleep(SETTLE_S / 4)  # MLflow just written (first run): let it settle
    def timed(ids, fresh):
        lat, srcs = [], set()
        for pid in ids:
            t0 = time.perf_counter(); t = trace(pid, st, fresh=fresh); lat.append(time.perf_counter() - t0)
            assert t['prediction_id'] == pid and t['model']['run_id'] == mv.run_id
            srcs.add(t['model_facts_from'])
        return np.array(lat) * 1000, srcs
    first, src1 = timed(sample[:1], False)
    lat_ms, srcs = timed(sample, False)
    assert srcs == {'snapshot'}, srcs
    print(f"library trace(id), {len(lat_ms)} random ids, version facts from the snapshot: first call of the process {first[0]:.0f} ms ({src1.pop()}), "
          f"median {np.median(lat_ms):.1f} ms, p95 {np.percentile(lat_ms, 95):.1f} ms, max {lat_ms.max():.1f} ms")
    fr_ms, srcs = timed(sample[:a.fresh_lookups], True)
    assert srcs == {'mlflow'}, srcs
    print(f"library trace(id, fresh=True), {len(fr_ms)} ids, version facts from MLflow: median {np.median(fr_ms):.1f} ms, "
          f"p95 {np.percentile(fr_ms, 95):.1f} ms, max {fr_ms.max():.1f} ms")
    st.close()
    exe = str(Path(sys.executable).parent/'parkml')
    def run(args, n, want):
        out = []
        for pid in sample[:n]:
            t0 = time.perf_counter()
            r = subprocess.run([exe, 'trace', pid, *args], capture_output=True, text=True, env=dict(os.environ))
            out.append(time.perf_counter() - t0)
            assert r.returncode == 0 and pid in r.stdout and want in r.stdout, r.stderr
        return out, r.stdout
    cli, shown = run([], a.cli, 'from the snapshot')
    print(f"CLI `parkml trace ID` end to end (process start, imports, look-ups, printing), {len(cli)} runs: "
          f"median {statistics.median(cli):.2f} s, max {max(cli):.2f} s")
    if a.cli_fresh:
        clif, _ = run(['--fresh'], a.cli_fresh, 'read from MLflow')
        print(f"CLI `parkml trace ID --fresh` (version facts from MLflow), {len(clif)} runs: median {statistics.median(clif):.2f} s, "
              f"max {max(clif):.2f} s")
    def bare(code, n=3):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter(); subprocess.run([sys.executable, '-c', code], check=True); ts.append(time.perf_counter() - t0)
        return statistics.median(ts)
    print(f"  where a process's time goes (medians of 3): bare Python {bare('pass'):.2f} s; importing the fast path "
          f"(parkml.cli, parkml.trace: sqlite3, numpy, no pandas, no MLflow) {bare('import parkml.cli, parkml.trace'):.2f} s; "
          f"pandas with MLflow and its SQL store, which the MLflow path adds "
          f"{bare('import pandas, mlflow, mlflow.store.tracking.sqlalchemy_store'):.2f} s")
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print('\n' + shown)

if __name__ == '__main__': main()
