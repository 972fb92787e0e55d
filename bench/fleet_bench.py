"""A fleet of edge boxes shipping to the centre: the centre's lag while traffic flows, the catch-up after an outage of
the centre's database, and what shipping costs the boxes' serving.

    .venv/bin/python bench/fleet_bench.py [--boxes 8] [--concurrency 8] [--seconds 20] [--rounds 3] [--outage 600]
                                          [--keep DIR]

The default is the issue's setting: 8 boxes at c8 and a 10-minute outage (about 20 minutes in all). For a quick look:
`--boxes 2 --outage 60 --rounds 1`. It starts a central plane (`parkml central up`, in DIR or a temporary folder),
trains and registers a small model once (bench/serve_bench.py's `prepare`), starts `--boxes` `parkml serve --ship`
processes, each with its own SQLite log and box id, and drives each with a client process of its own:

1. rounds: `--rounds` pairs of rounds at `--concurrency` clients per box for `--seconds`, one with the centre up
   (shipping on) and one with the centre's PostgreSQL stopped (the shipper idle in its back-off), in the order
   on-off, off-on, on-off, ... so that the machine's load weighs on both alike. Between rounds the backlog is shipped
   with no traffic. Throughput of the fleet per round, the CPU seconds per prediction of the boxes and the centre,
   and the centre's lag (`arrived_at - received`) of the rows of the shipping-on rounds;
2. outage: PostgreSQL stopped, one camera per box sends one frame at a time (c1) for `--outage` seconds;
3. catch-up: PostgreSQL started again, the cameras go on; drained is when every row received before the restart is
   at the centre (its `arrived_at`); c1 p50 with the centre down, while catching up, and after.
The machine's CPU share taken by the boxes, the centre, the clients and everything else is printed per phase: the
machine is shared.
"""
import argparse, http.client, json, os, statistics, subprocess, sys, tempfile, threading, time
from pathlib import Path
import httpx, psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'bench'))
import serve_bench as sb  # noqa: E402 (its model preparation, photos and client)


def plane(folder: Path) -> dict:
    "`parkml central up` in `folder`; its status"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o711)
    env = {**os.environ, 'PARKML_CENTRAL_DIR': str(folder/'central')}
    r = subprocess.run([sys.executable, '-c', sb.SERVE, 'central', 'up', '--json', '--quiet'], env=env,
                       capture_output=True, text=True, timeout=900)
    if r.returncode: sys.exit(f"parkml central up failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout)


def start_box(i: int, runs: Path, st: dict, logdir: Path, cpu_share: float):
    "`parkml serve --ship` as box `bench-<i>` (started, not waited for): (name, url, process)"
    port, name = sb.free_port(), f"bench-{i}"
    env = {k: v for k, v in os.environ.items() if k not in ('PARKML_API_KEY', 'PARKML_STAFF_KEY', 'PARKML_SETTINGS')}
    env.update(PARKML_RUNS=str(runs), PARKML_PREDLOG_URI=f"sqlite:///{logdir}/{name}.db", PYTHONPATH=str(ROOT),
               PARKML_FRAMES_DIR=str(logdir/f'{name}_frames'), PARKML_VERIFIED_ALIASES='', PARKML_BOX_ID=name,
               PARKML_SHIP_TO=st['settings_file'], PARKML_SHIP_BACKOFF_MAX_S='2',
               PARKML_SHIP_CPU_SHARE=str(cpu_share),
               PARKML_API_KEY=sb.API_KEY, PARKML_STAFF_KEY=sb.STAFF_KEY)
    proc = subprocess.Popen([sys.executable, '-c', sb.SERVE, 'serve', '--ship', '--host', '127.0.0.1', '--port',
                             str(port), '--log-level', 'warning'], env=env, cwd=str(ROOT),
                            stdout=open(logdir/f'{name}.log', 'w'), stderr=subprocess.STDOUT)
    return name, f"http://127.0.0.1:{port}", proc


def load_all(boxes, concurrency: int, n: int, files: str) -> list[dict]:
    "Drive every box at once with its own client process posting `n` photos; each box's figures"
    out = [None] * len(boxes)
    def one(k):
        out[k] = sb.drive(boxes[k][1], 'parkml', concurrency, n, files)
    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(boxes))]
    for t in threads: t.start()
    for t in threads: t.join()
    return out


def backlog(url: str) -> dict: return httpx.get(url + '/health', timeout=60).json()['ship']


def wait_shipped(boxes, limit_s: float = 900) -> float:
    "Wait until no box has a row left to ship (no traffic meanwhile); the seconds it took"
    t = time.time()
    while any(backlog(u)['backlog_rows'] for _, u, _ in boxes):
        if time.time() - t > limit_s: sys.exit(f"the boxes did not ship their backlog in {limit_s:.0f} s")
        time.sleep(0.5)
    return time.time() - t

# ---------------------------------------------------------------- the centre's view

def centre_sql(st: dict, sql: str, args: tuple) -> list:
    import psycopg
    with psycopg.connect(st['postgres_uri']) as c: return c.execute(sql, args).fetchall()


def centre_lag(st: dict, windows: list) -> dict:
    "p50/p95/max of arrived_at - received of the bench boxes' rows received in any of `windows` [(since, until)]"
    lag = []
    for since, until in windows:
        lag += [r[0] for r in centre_sql(st, "SELECT arrived_at - received FROM predictions WHERE box_id LIKE "
                                         "'bench-%%' AND received >= %s AND received < %s", (since, until))]
    lag.sort()
    q = lambda p: lag[min(len(lag) - 1, int(p * len(lag)))] if lag else float('nan')
    return dict(rows=len(lag), p50=q(0.5), p95=q(0.95), max=lag[-1] if lag else float('nan'))


def batch_gaps(logdir: Path, boxes, windows: list) -> dict:
    "Seconds between a box's shipped batches (its local `shipped_at` marks) of the rows received in `windows`"
    import sqlite3
    gaps, sizes = [], []
    for name, _, _ in boxes:
        with sqlite3.connect(f"file:{logdir}/{name}.db?mode=ro", uri=True, timeout=60) as c:
            for since, until in windows:
                marks = c.execute("SELECT shipped_at, count(*) FROM predictions WHERE received >= ? AND received < ? "
                                  "GROUP BY shipped_at ORDER BY shipped_at", (since, until)).fetchall()
                gaps += [b[0] - a[0] for a, b in zip(marks, marks[1:])]
                sizes += [m[1] for m in marks]
    q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))] if xs else float('nan')
    return dict(gap_p50=q(gaps, 0.5), gap_p95=q(gaps, 0.95), rows_p50=q(sizes, 0.5))


def drained_at(st: dict, since: float, until: float) -> tuple[int, float]:
    "Rows received in [since, until) at the centre and the centre's time the last of them arrived"
    n, last = centre_sql(st, "SELECT count(*), max(arrived_at) FROM predictions WHERE box_id LIKE 'bench-%%' "
                         "AND received >= %s AND received < %s", (since, until))[0]
    return int(n), float(last or 'nan')

# ---------------------------------------------------------------- CPU: who takes the machine's two cores

def tree(pid: int) -> list:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess: return []


def centre_pids(st: dict) -> list:
    "pids of the plane's servers: postmaster, SeaweedFS, MLflow (their children are counted with them)"
    d = Path(st['settings_file']).parent
    files = [d/'pg'/'pgdata'/'postmaster.pid', *d.glob('*/*.pid')]
    out = []
    for f in files:
        try: out.append(int(f.read_text().split()[0]))
        except (OSError, ValueError, IndexError): pass
    return out


def cpu_s(pids: list) -> float:
    "CPU seconds (user + system) so far of the processes `pids` and their children"
    total = 0.0
    for pid in pids:
        for p in tree(pid):
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess: pass
    return total


class Meter:
    "CPU seconds of the boxes, the centre, this script's clients and the whole machine over one phase"
    def __init__(self, groups: dict): self.groups, self.t, self.start = groups, None, None

    def now(self) -> dict:
        busy = psutil.cpu_times()
        d = {k: f() for k, f in self.groups.items()}
        d['machine'] = sum(busy) - busy.idle - busy.iowait
        return d

    def __enter__(self):
        self.t, self.start = time.time(), self.now()
        return self

    def __exit__(self, *exc):
        end, self.wall = self.now(), time.time() - self.t
        self.cpu = {k: end[k] - self.start[k] for k in end}

    def shares(self) -> str:
        "Each group's share of the machine's 2 cores, and the rest (other jobs)"
        cap = self.wall * psutil.cpu_count()
        mine = sum(v for k, v in self.cpu.items() if k != 'machine')
        parts = [f"{k} {100 * v / cap:.0f}%" for k, v in self.cpu.items() if k != 'machine']
        return ', '.join(parts + [f"others {100 * max(0.0, self.cpu['machine'] - mine) / cap:.0f}%"])

# ---------------------------------------------------------------- cameras: one frame at a time, each its own process

def camera(url: str, files: str, stop: str, out: str) -> None:
    "Post one frame at a time to `url` until the file `stop` exists; write [(time, ms, status)] to `out`"
    host, port = url.split('//')[1].split(':')
    bodies = [Path(p).read_bytes() for p in json.loads(Path(files).read_text())]
    con, rec, i, salt = http.client.HTTPConnection(host, int(port), timeout=60), [], 0, os.urandom(4)
    while not os.path.exists(stop):
        body = bodies[i % len(bodies)] + salt + i.to_bytes(4, 'big')
        t = time.perf_counter()
        try:
            con.request('POST', '/predict', body=body, headers={'Content-Type': 'image/jpeg', 'X-API-Key': sb.API_KEY})
            r = con.getresponse()
            r.read()
            status = r.status
        except OSError:
            con, status = http.client.HTTPConnection(host, int(port), timeout=60), 0
        rec.append((time.time(), 1000 * (time.perf_counter() - t), status))
        i += 1
    Path(out).write_text(json.dumps(rec))


def cameras(boxes, files: Path, folder: Path) -> tuple:
    "Start one camera process per box; (processes, stop file, output files)"
    stop = folder/'cameras.stop'
    stop.unlink(missing_ok=True)
    outs = [folder/f"camera-{name}.json" for name, _, _ in boxes]
    procs = [subprocess.Popen([sys.executable, __file__, '--camera', url, str(files), str(stop), str(o)])
             for (_, url, _), o in zip(boxes, outs)]
    return procs, stop, outs


def c1_p50(recs: list, since: float, until: float) -> tuple[float, int, int]:
    "Median latency (ms) of the cameras' requests sent in [since, until), their number and the failed ones"
    ms = [r[1] for r in recs if since <= r[0] < until and r[2] == 200]
    bad = sum(1 for r in recs if since <= r[0] < until and r[2] != 200)
    return (statistics.median(ms) if ms else float('nan')), len(ms), bad

# ---------------------------------------------------------------- the phases

def local_count(logdir: Path, boxes, since: float, until: float) -> int:
    "Predictions the boxes' own logs received in [since, until)"
    import sqlite3
    n = 0
    for name, _, _ in boxes:
        with sqlite3.connect(f"file:{logdir}/{name}.db?mode=ro", uri=True, timeout=60) as c:
            n += c.execute("SELECT count(*) FROM predictions WHERE received >= ? AND received < ?",
                           (since, until)).fetchone()[0]
    return n


def one_round(a, boxes, on: bool, n: int, files: str, pg, groups: dict) -> dict:
    "A round of `n` photos per box at once, the centre up (`on`) or its PostgreSQL stopped; its figures"
    from parkml.central import start_postgres
    if not on: pg.stop()
    with Meter(groups) as m:
        t0 = time.time()
        res = load_all(boxes, a.concurrency, n, files)
        t1 = time.time()
    if not on: start_postgres(pg.folder)
    wait_shipped(boxes)
    preds = sum(r['n'] for r in res)
    return dict(on=on, window=(t0, t1), per_s=sum(r['per_s'] for r in res), errors=sum(r['errors'] for r in res),
                p50=statistics.median(r['p50'] for r in res), preds=preds, shares=m.shares(),
                box_cpu_ms=1000 * m.cpu['boxes'] / preds, centre_cpu_ms=1000 * m.cpu['centre'] / preds)


def rounds(a, boxes, files: str, pg, groups: dict) -> list[dict]:
    "A warm-up round, then `--rounds` pairs of rounds, shipping on and off in turn (on-off, off-on, ...)"
    warm = load_all(boxes, a.concurrency, 6 * a.concurrency, files)
    n = max(10 * a.concurrency, int(a.seconds * statistics.median(r['per_s'] for r in warm)))
    wait_shipped(boxes)
    print(f"rounds of {n} photos per box at c{a.concurrency}", flush=True)
    out = []
    for k in range(a.rounds):
        for on in ((True, False) if k % 2 == 0 else (False, True)):
            out.append(one_round(a, boxes, on, n, files, pg, groups))
            r = out[-1]
            print(f"  shipping {'on ' if on else 'off'}: {r['per_s']:.1f} req/s, p50 {r['p50']:.0f} ms, box CPU "
                  f"{r['box_cpu_ms']:.1f} ms/prediction, centre {r['centre_cpu_ms']:.1f}; {r['shares']}", flush=True)
    return out


def outage(a, boxes, files: Path, logdir: Path, st: dict, pg, groups: dict) -> dict:
    "The centre's PostgreSQL down for `--outage` s under one camera per box, then up until the backlog is at the centre"
    from parkml.central import start_postgres
    pg.stop()
    t1 = time.time()
    procs, stop, outs = cameras(boxes, files, logdir)
    groups = {**groups, 'cameras': lambda: cpu_s([p.pid for p in procs])}
    try:
        with Meter(groups) as dark:
            while time.time() - t1 < a.outage:
                time.sleep(min(30.0, a.outage - (time.time() - t1)))
                b = [backlog(u) for _, u, _ in boxes]
                print(f"  centre down {time.time() - t1:.0f} s: backlog {sum(x['backlog_rows'] for x in b)} rows, "
                      f"oldest {max(x['backlog_age_s'] for x in b):.0f} s", flush=True)
        before, t2 = [backlog(u) for _, u, _ in boxes], time.time()
        expected = local_count(logdir, boxes, t1, t2)
        start_postgres(pg.folder)
        t3 = time.time()
        with Meter(groups) as catch:
            while drained_at(st, t1, t2)[0] < expected:
                if time.time() - t3 > 1800: sys.exit('the backlog was not at the centre after 30 minutes')
                time.sleep(1)
        last = drained_at(st, t1, t2)[1]
        while any(backlog(u)['backlog_age_s'] > time.time() - t2 for _, u, _ in boxes): time.sleep(0.5)
        whole = time.time() - t3   # every row of the outage shipped: frames and telemetry too (polled, +-0.5 s)
        time.sleep(a.after)
    finally:
        stop.touch()
        for p in procs: p.wait(120)
    recs = [r for o in outs for r in json.loads(o.read_text())]
    return dict(t1=t1, t2=t2, t3=t3, expected=expected, drain_s=last - t3, whole_s=whole, before=before, dark=dark,
                catch=catch,
                c1_dark=c1_p50(recs, t1 + min(30, a.outage / 4), t2), c1_catch=c1_p50(recs, t3, last),
                c1_after=c1_p50(recs, last + 2, last + a.after))


def own_cpu() -> float:
    "CPU seconds of this script and the client processes it waited for"
    t = psutil.Process().cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def rise(x: float, base: float) -> str: return f"{100 * (x / base - 1):+.0f}%"


def report(a, fleet: list, out: dict, lag: dict) -> dict:
    "Print the figures; the same as a dict"
    on, off = [r for r in fleet if r['on']], [r for r in fleet if not r['on']]
    cost = [1 - x['per_s'] / y['per_s'] for x, y in zip(on, off)]
    print(f"\n{a.boxes} boxes, c{a.concurrency} each; load average {os.getloadavg()[0]:.1f} at the end")
    print(f"fleet throughput, shipping on:  {', '.join(format(r['per_s'], '.1f') for r in on)} req/s")
    print(f"fleet throughput, shipping off: {', '.join(format(r['per_s'], '.1f') for r in off)} req/s")
    cpu = lambda rs, k: statistics.mean(r[k] for r in rs)
    print(f"cost of shipping: {', '.join(format(100 * c, '.1f') for c in cost)}% per pair, mean "
          f"{100 * statistics.mean(cost):.1f}% (target < 10%); box CPU per prediction {cpu(on, 'box_cpu_ms'):.1f} ms "
          f"on, {cpu(off, 'box_cpu_ms'):.1f} ms off; the centre {cpu(on, 'centre_cpu_ms'):.1f} ms per prediction "
          "shipped")
    print(f"centre lag while traffic flows: p50 {lag['p50']:.2f} s, p95 {lag['p95']:.2f} s, max {lag['max']:.2f} s "
          f"over {lag['rows']} rows (target p95 <= 5 s); a box's batches {lag['gap_p50']:.2f} s apart at the median, "
          f"{lag['gap_p95']:.2f} s at p95, {lag['rows_p50']:.0f} predictions each")
    rows = sum(b['backlog_rows'] for b in out['before'])
    print(f"outage of {a.outage:.0f} s: backlog {rows} rows ({out['expected']} predictions), oldest "
          f"{max(b['backlog_age_s'] for b in out['before']):.0f} s; CPU {out['dark'].shares()}")
    print(f"catch-up: every prediction of the outage at the centre {out['drain_s']:.1f} s after PostgreSQL answered "
          f"({out['expected'] / max(out['drain_s'], 1e-9):.0f} predictions/s; target <= 120 s for 600 s), the whole "
          f"backlog (frames, telemetry) after {out['whole_s']:.1f} s; CPU {out['catch'].shares()}")
    (d, nd, bd), (c, nc, bc), (f, nf, bf) = out['c1_dark'], out['c1_catch'], out['c1_after']
    print(f"c1 p50 of the cameras: {d:.1f} ms centre down (n={nd}), {c:.1f} ms catching up (n={nc}, {rise(c, d)}; "
          f"target +20% at most), {f:.1f} ms after (n={nf}, {rise(f, d)}); failed requests {bd + bc + bf}")
    return dict(boxes=a.boxes, concurrency=a.concurrency, rounds=[{k: v for k, v in r.items()} for r in fleet],
                cost=cost, lag=lag, backlog_rows=rows, backlog_predictions=out['expected'], drain_s=out['drain_s'],
                whole_s=out['whole_s'],
                c1=dict(dark=out['c1_dark'], catch=out['c1_catch'], after=out['c1_after']),
                cpu=dict(dark=out['dark'].shares(), catch=out['catch'].shares()))


def start_fleet(a, runs: Path, st: dict, logdir: Path, boxes: list) -> list:
    "Start the first box (it fills the model cache the boxes share), then the others together; wait for each"
    boxes.append(start_box(0, runs, st, logdir, a.ship_cpu_share))
    sb.wait_http(boxes[0][1], '/health', boxes[0][2], timeout=600)
    boxes += [start_box(i, runs, st, logdir, a.ship_cpu_share) for i in range(1, a.boxes)]
    for _, url, proc in boxes[1:]: sb.wait_http(url, '/health', proc, timeout=600)
    return boxes


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--boxes', type=int, default=8, help='edge services (the issue: 8)')
    ap.add_argument('--concurrency', type=int, default=8, help='clients per box in the rounds (the issue: 8)')
    ap.add_argument('--seconds', type=float, default=20, help='about how long each round lasts')
    ap.add_argument('--rounds', type=int, default=3, help='pairs of rounds, shipping on and off')
    ap.add_argument('--outage', type=float, default=600, help='seconds the centre is down (the issue: 600)')
    ap.add_argument('--after', type=float, default=30, help='seconds the cameras go on after the catch-up')
    ap.add_argument('--keep', default=None, help='folder to use and keep (plane, model, logs)')
    ap.add_argument('--ship-cpu-share', type=float, default=None,
                    help="each box's ship_cpu_share (default: the park's 0.1 of a core times the box's share of cores)")
    ap.add_argument('--camera', nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.ship_cpu_share is None: a.ship_cpu_share = round(0.1 * min(1.0, (os.cpu_count() or 1) / a.boxes), 4)
    return a


def main():
    a = parse()
    if a.camera: return camera(*a.camera)
    from parkml.central import start_postgres
    base = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix='parkml-fleet-'))
    t = time.time()
    st = plane(base)
    print(f"central plane up in {time.time() - t:.0f} s ({base}); load average {os.getloadavg()[0]:.1f}", flush=True)
    runs, logdir = base/'runs', base/f"boxes-{int(time.time())}"
    logdir.mkdir()
    sb.prepare(runs, 150)
    files = logdir/'photos.json'
    files.write_text(json.dumps(sb.photos(200)))
    from parkml.config import Settings
    from parkml.plane import server_handles
    pg = server_handles(Settings(st['settings_file'], environ={}))[1]
    boxes = []
    groups = dict(boxes=lambda: cpu_s([p.pid for _, _, p in boxes]), centre=lambda: cpu_s(centre_pids(st)),
                  clients=own_cpu)
    try:
        start_fleet(a, runs, st, logdir, boxes)
        print(f"{a.boxes} boxes serving with --ship (ship_cpu_share {a.ship_cpu_share:g}); "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        fleet = rounds(a, boxes, str(files), pg, groups)
        lag = centre_lag(st, [r['window'] for r in fleet if r['on']])
        lag.update(batch_gaps(logdir, boxes, [r['window'] for r in fleet if r['on']]))
        print(f"centre down for {a.outage:.0f} s, one camera per box at c1 ...", flush=True)
        out = outage(a, boxes, files, logdir, st, pg, groups)
    finally:
        start_postgres(pg.folder)
        for _, _, p in boxes: p.terminate()
        for _, _, p in boxes: p.wait(60)
    print(f"box logs in {logdir}")
    summary = report(a, fleet, out, lag)
    (logdir/'fleet_bench.json').write_text(json.dumps(summary, indent=1, default=str))


if __name__ == '__main__':
    main()
