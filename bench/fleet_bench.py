"""A fleet of edge boxes shipping to the centre: the centre's lag while traffic flows, the catch-up after an outage of
the centre's database, and what shipping costs the boxes' serving.

    .venv/bin/python bench/fleet_bench.py [--boxes 2] [--concurrency 8] [--seconds 20] [--outage 60] [--keep DIR]

The issue's setting is 8 boxes at c8 and a 10-minute outage (`--boxes 8 --outage 600`); the default is smaller
because this machine has 2 cores shared with other jobs, where 8 services and their clients only measure the
contention. It starts a central plane (`parkml central up`, in DIR or a temporary folder), trains and registers a
small model once (bench/serve_bench.py's `prepare`), starts `--boxes` `parkml serve --ship` processes, each with its
own SQLite log and box id, and drives them with bench/serve_bench.py's client (a process of its own per box):

1. flow: `--concurrency` clients per box for `--seconds`, the centre up: requests/s per box with shipping on, and
   the centre's lag (`arrived_at - received` of the rows that arrived, p50/p95/max);
2. outage: the centre's PostgreSQL stopped; the same load (requests/s with the shipper idle, in its back-off), then
   one client per box (a camera sending one frame at a time) for `--outage` seconds: c1 p50 without shipping;
3. catch-up: PostgreSQL started again, the c1 clients go on until every box's backlog (its `/health`) is empty:
   drain time and rate, c1 p50 while the shipper catches up.
The load average is printed: the machine is shared.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, threading, time
from pathlib import Path
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'bench'))
import serve_bench as sb  # noqa: E402 (its model preparation, photos and client)


def plane(folder: Path) -> dict:
    "`parkml central up` in `folder`; its status"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o711)
    env = {**os.environ, 'PARKML_CENTRAL_DIR': str(folder/'central')}
    r = subprocess.run([sys.executable, '-c', sb.SERVE, 'central', 'up', '--json', '--quiet'], env=env,
                       capture_output=True, text=True, timeout=600)
    if r.returncode: sys.exit(f"parkml central up failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout)


def start_box(i: int, runs: Path, st: dict, logdir: Path):
    "`parkml serve --ship` as box `bench-<i>`: (name, url, process)"
    port, name = sb.free_port(), f"bench-{i}"
    env = {k: v for k, v in os.environ.items() if k not in ('PARKML_API_KEY', 'PARKML_STAFF_KEY', 'PARKML_SETTINGS')}
    env.update(PARKML_RUNS=str(runs), PARKML_PREDLOG_URI=f"sqlite:///{logdir}/{name}.db", PYTHONPATH=str(ROOT),
               PARKML_FRAMES_DIR=str(logdir/f'{name}_frames'), PARKML_VERIFIED_ALIASES='', PARKML_BOX_ID=name,
               PARKML_SHIP_TO=st['settings_file'], PARKML_SHIP_BACKOFF_MAX_S='2')
    proc = subprocess.Popen([sys.executable, '-c', sb.SERVE, 'serve', '--ship', '--host', '127.0.0.1', '--port',
                             str(port), '--log-level', 'warning'], env=env, cwd=str(ROOT),
                            stdout=open(logdir/f'{name}.log', 'w'), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    sb.wait_http(url, '/health', proc)
    return name, url, proc


def load_all(boxes, concurrency: int, n: int, files: str) -> list[dict]:
    "Drive every box at once with its own client process posting `n` photos; each box's figures"
    out = [None] * len(boxes)
    def one(k):
        out[k] = sb.drive(boxes[k][1], 'parkml', concurrency, n, files)
    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(boxes))]
    for t in threads: t.start()
    for t in threads: t.join()
    return out


def backlog(url: str) -> dict: return httpx.get(url + '/health', timeout=30).json()['ship']


def centre_lag(st: dict, since: float, until: float) -> dict:
    "p50/p95/max of arrived_at - received of the bench boxes' rows received in [since, until)"
    import psycopg
    with psycopg.connect(st['postgres_uri']) as c:
        rows = c.execute("SELECT arrived_at - received FROM predictions WHERE box_id LIKE 'bench-%%' "
                         "AND received >= %s AND received < %s", (since, until)).fetchall()
    lag = sorted(r[0] for r in rows)
    q = lambda p: lag[min(len(lag) - 1, int(p * len(lag)))] if lag else float('nan')
    return dict(rows=len(lag), p50=q(0.5), p95=q(0.95), max=lag[-1] if lag else float('nan'))


C1 = 15  # requests per c1 round (one client process per box and round)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--boxes', type=int, default=2)
    ap.add_argument('--concurrency', type=int, default=8)
    ap.add_argument('--seconds', type=float, default=20)
    ap.add_argument('--outage', type=float, default=60)
    ap.add_argument('--keep', default=None, help='folder to use and keep (plane, model, logs)')
    a = ap.parse_args()
    base = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix='parkml-fleet-'))
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o711)
    t = time.time()
    st = plane(base)
    print(f"central plane up in {time.time() - t:.0f} s ({base})", flush=True)
    runs, logdir = base/'runs', base/f"boxes-{int(time.time())}"
    logdir.mkdir()
    sb.prepare(runs, 150)
    files = logdir/'photos.json'
    files.write_text(json.dumps(sb.photos(200)))
    boxes = [start_box(i, runs, st, logdir) for i in range(a.boxes)]
    from parkml.config import Settings
    from parkml.plane import server_handles
    from parkml.central import start_postgres
    pg = server_handles(Settings(st['settings_file'], environ={}))[1]
    try:
        print(f"{a.boxes} boxes serving with --ship; load average {os.getloadavg()[0]:.1f}", flush=True)
        t0 = time.time()
        flow = load_all(boxes, a.concurrency, int(a.seconds * 40 / a.boxes), str(files))
        time.sleep(3)
        lag = centre_lag(st, t0, time.time())
        pg.stop()
        t1 = time.time()
        rate = statistics.mean(r['per_s'] for r in flow)
        dark = load_all(boxes, a.concurrency, int(a.seconds * rate), str(files))
        c1_dark = []
        while time.time() - t1 < a.outage: c1_dark += [r['p50'] for r in load_all(boxes, 1, C1, str(files))]
        before = [backlog(u) for _, u, _ in boxes]
        c1_catch, done = [], threading.Event()
        def cameras():   # one camera per box goes on sending, one frame at a time, while the backlog drains
            while not done.is_set(): c1_catch.extend(r['p50'] for r in load_all(boxes, 1, C1, str(files)))
        cam = threading.Thread(target=cameras)
        start_postgres(pg.folder)
        t2 = time.time()
        cam.start()
        while any(backlog(u)['backlog_rows'] for _, u, _ in boxes):
            time.sleep(0.5)
            if time.time() - t2 > 1800: sys.exit('no drain in 30 minutes')
        drain_s = time.time() - t2
        done.set()
        cam.join()
    finally:
        start_postgres(pg.folder)
        for _, _, p in boxes: p.terminate()
        for _, _, p in boxes: p.wait(60)
    rows = sum(b['backlog_rows'] for b in before)
    print(f"box logs in {logdir}")
    print(f"\nload average {os.getloadavg()[0]:.1f}; {a.boxes} boxes, c{a.concurrency} each")
    each = ', '.join(format(r['per_s'], '.1f') for r in flow)
    print(f"flow (shipping on): {sum(r['per_s'] for r in flow):.1f} req/s in all ({each}), "
          f"p50 {statistics.mean(r['p50'] for r in flow):.0f} ms")
    print(f"centre lag while traffic flows: p50 {lag['p50']:.2f} s, p95 {lag['p95']:.2f} s, max {lag['max']:.2f} s "
          f"over {lag['rows']} rows (target p95 <= 5 s)")
    print(f"centre down (shipper idle): {sum(r['per_s'] for r in dark):.1f} req/s in all; shipping cost "
          f"{100 * (1 - sum(r['per_s'] for r in flow) / sum(r['per_s'] for r in dark)):.1f}% of throughput (target < 10%)")
    print(f"outage of {a.outage:.0f} s: backlog {rows} rows, oldest {max(b['backlog_age_s'] for b in before):.0f} s")
    print(f"catch-up: drained in {drain_s:.1f} s ({rows / max(drain_s, 1e-9):.0f} rows/s); c1 p50 "
          f"{statistics.median(c1_dark):.1f} ms with the centre down, {statistics.median(c1_catch or [float('nan')]):.1f} ms "
          "while catching up (target: +20% at most)")


if __name__ == '__main__':
    main()
