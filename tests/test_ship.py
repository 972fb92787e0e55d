"""The shipper on real processes: boxes' SQLite logs sent by `parkml ship` (and `parkml serve --ship`) to a real central
plane (PostgreSQL, SeaweedFS, MLflow from `parkml central up`, tests/central_fixture.py), through an outage of the
centre's PostgreSQL, a kill -9 mid-batch and a restart."""
import os, secrets, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd, pytest, httpx
from conftest import run_cli, PARKML
from central_fixture import central  # noqa: F401 (fixture)
from pg_fixture import sql

def jpgs(n: int, start: int = 0) -> list[bytes]:
    from parkml.config import get_settings
    cfg = get_settings()
    return [(cfg.data/p).read_bytes() for p in pd.read_csv(cfg.data/'manifest.csv').path[start:start + n]]

class Box:
    "An edge box's log in a folder of its own, its name, and the environment of a `parkml ship` for it"
    def __init__(self, home: Path, central: dict, name: str = None, **env):
        self.home, self.name = home, name or f"box-{secrets.token_hex(3)}"
        home.mkdir(parents=True, exist_ok=True)
        self.env = dict(PARKML_PREDLOG_URI=f"sqlite:///{home}/predlog.db", PARKML_FRAMES_DIR=str(home/'frames'),
                        PARKML_BOX_ID=self.name, PARKML_RUNS=str(home/'runs'), PARKML_SHIP_TO=central['settings_file'],
                        PARKML_SHIP_BATCH='50', PARKML_SHIP_RATE='0', PARKML_SHIP_BACKOFF_S='0.2',
                        PARKML_SHIP_BACKOFF_MAX_S='1', PARKML_SHIP_IDLE_S='0.2', PARKML_FRAME_SAMPLE_RATE='0.25')
        self.env.update({k: str(v) for k, v in env.items()})

    def store(self):
        "The box's log, opened as the box (its name on the rows it writes)"
        from parkml.predlog import open_store
        old = os.environ.get('PARKML_BOX_ID')
        os.environ['PARKML_BOX_ID'] = self.name
        try: return open_store(self.env['PARKML_PREDLOG_URI'], self.env['PARKML_FRAMES_DIR'])
        finally:
            if old is None: os.environ.pop('PARKML_BOX_ID')
            else: os.environ['PARKML_BOX_ID'] = old

    def fill(self, n: int, frames: list[bytes], labelled: int = 10, telemetry: int = 5) -> list[str]:
        "Log `n` predictions over `frames` (an hour ago onwards), label some, add telemetry; their ids"
        t0 = time.time() - 3600
        with self.store() as st:
            ids = st.log_predictions([dict(label='cat' if i % 3 else 'dog', p_dog=0.3, camera=f"cam-{i % 2}",
                                           ts=t0 + i, received=t0 + i + 0.05, frame=frames[i % len(frames)])
                                      for i in range(n)])
            for pid in ids[:labelled]: st.add_feedback(pid, 'dog', 'keeper')
            for i in range(telemetry): st.log_telemetry(dict(ts=t0 + i, cpu_pct=20.0 + i, latency_p95_ms=30.0))
        return ids

    def ship(self, *args, **env) -> subprocess.Popen:
        "Start `parkml ship` for this box; its output goes to ship.log"
        log = open(self.home/'ship.log', 'a')
        return subprocess.Popen([PARKML, 'ship', *args], env={**os.environ, **self.env, **env}, stdout=log,
                                stderr=subprocess.STDOUT)

    def log(self) -> str: return (self.home/'ship.log').read_text()

    def local(self, query: str) -> list: return sql(self.env['PARKML_PREDLOG_URI'], query)

@pytest.fixture(scope='module')
def centre(central):
    "The central plane, its prediction store's schema made (as `parkml central migrate` or a first shipper does)"
    from parkml.config import Settings
    from parkml.ship import open_centre
    open_centre(Settings(central['settings_file'], environ={})).close()
    return central

def centre_rows(central, query: str, params=()) -> list: return sql(central['postgres_uri'], query, params)

def centre_ids(central, box: Box) -> list:
    return [r[0] for r in centre_rows(central, 'SELECT id FROM predictions WHERE box_id = ?', (box.name,))]

def wait_for(cond, timeout: float = 60, every: float = 0.1, what: str = 'condition'):
    t = time.monotonic()
    while not (out := cond()):
        assert time.monotonic() - t < timeout, f"{what} not met in {timeout} s"
        time.sleep(every)
    return out

def s3_keys(central, prefix: str = 'frames/') -> list:
    import boto3
    c = boto3.client('s3', endpoint_url=central['s3_endpoint'], aws_access_key_id=central['s3_access_key_id'],
                     aws_secret_access_key=central['s3_secret_access_key'], region_name='us-east-1')
    pages = c.get_paginator('list_objects_v2').paginate(Bucket=central['bucket'], Prefix=prefix)
    return [o['Key'] for p in pages for o in p.get('Contents', [])]

def centre_pg(central):
    "The plane's PostgreSQL server (to stop and start it: an outage of the centre)"
    from parkml.config import Settings
    from parkml.plane import server_handles
    return server_handles(Settings(central['settings_file'], environ={}))[1]

def test_outage_kill9_and_restart_ship_every_row_once(centre, tmp_path):
    "Two boxes; the centre's database down at start; box A killed -9 mid-batch and restarted: every row once"
    central = centre
    from parkml.central import start_postgres
    shared, own_a, own_b = jpgs(20), jpgs(20, 20), jpgs(20, 40)
    a, b = Box(tmp_path/'a', central, PARKML_SHIP_RATE='400'), Box(tmp_path/'b', central)
    ids_a, ids_b = a.fill(1500, shared + own_a), b.fill(300, shared + own_b, labelled=5)
    pg = centre_pg(central)
    pg.stop()
    try:
        procs = [a.ship(), b.ship()]
        wait_for(lambda: 'unreachable' in a.log() and 'unreachable' in b.log(), 30, what='an outage line')
        time.sleep(1.5)   # a few retries
        assert all(p.poll() is None for p in procs), a.log() + b.log()
    finally: start_postgres(pg.folder)
    line = next(ln for ln in a.log().splitlines() if 'unreachable' in ln)
    print(line)
    assert central['settings_file'] in line and '(setting ship_to)' in line and 'Traceback' not in a.log() + b.log()
    n_kill = wait_for(lambda: (n := len(centre_ids(central, a))) >= 300 and n, 60, 0.02, 'box A half-way')
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait(10)
    at_kill = len(centre_ids(central, a))
    print(f"box A killed with {at_kill} of {len(ids_a)} predictions at the centre")
    assert n_kill <= at_kill < len(ids_a)
    assert a.ship('--once').wait(120) == 0, a.log()
    wait_for(lambda: b.local('SELECT count(*) FROM predictions WHERE shipped_at IS NULL') == [(0,)], 60,
             what='box B drained')
    procs[1].terminate()
    assert procs[1].wait(30) == 0, b.log()
    for box, ids in ((a, ids_a), (b, ids_b)):
        at_centre = centre_ids(central, box)
        assert sorted(at_centre) == sorted(ids) and len(set(at_centre)) == len(at_centre)
        for table in ('feedback', 'telemetry'):
            here = box.local(f'SELECT id FROM {table} ORDER BY id')
            there = centre_rows(central, f'SELECT box_row FROM {table} WHERE box_id = ? ORDER BY box_row', (box.name,))
            assert here == there and here, table
        for table in ('predictions', 'feedback', 'telemetry', 'frames'):
            assert box.local(f'SELECT count(*) FROM {table} WHERE shipped_at IS NULL') == [(0,)], table
    late = centre_rows(central, 'SELECT min(arrived_at - received) FROM predictions WHERE box_id = ?', (a.name,))[0][0]
    assert late > 0   # the centre's arrival time beside the box's receipt time (same clock here: later)
    from parkml.frames import keep_sample, frame_sha
    kept = {frame_sha(f) for f in shared + own_a + own_b if keep_sample(frame_sha(f), 0.25)}
    kept |= {r[0] for r in a.local('SELECT p.frame_sha FROM feedback f JOIN predictions p ON p.id = f.prediction_id')}
    kept |= {r[0] for r in b.local('SELECT p.frame_sha FROM feedback f JOIN predictions p ON p.id = f.prediction_id')}
    every = [frame_sha(f) for f in shared + own_a + own_b]
    at_centre = {r[0] for r in centre_rows(central, 'SELECT sha FROM frames WHERE sha = ANY(?)', (every,))}
    assert at_centre == kept and len(kept) < 60   # the sample and the labelled frames, each in one row
    keys = s3_keys(central)
    assert all(sum(k.endswith(f"/{s}.jpg") for k in keys) == 1 for s in kept)  # the shared frames too: once each

def test_a_frame_shipped_twice_is_stored_once(centre, tmp_path):
    "Shipping a box's frames again (its marks lost) adds no S3 object and no frames row"
    central = centre
    box = Box(tmp_path/'box', central, PARKML_SHIP_ALL_FRAMES='true')
    frames = jpgs(6, 100)
    box.fill(12, frames, labelled=0, telemetry=0)
    assert box.ship('--once', '--quiet').wait(120) == 0, box.log()
    keys, rows = s3_keys(central), centre_rows(central, 'SELECT sha, path FROM frames WHERE box_id = ?', (box.name,))
    assert len(rows) == 6
    box.local('UPDATE frames SET shipped_at = NULL')
    box.local('UPDATE predictions SET shipped_at = NULL')
    assert box.ship('--once', '--quiet').wait(120) == 0, box.log()
    assert s3_keys(central) == keys and centre_rows(central, 'SELECT sha, path FROM frames WHERE box_id = ?',
                                                    (box.name,)) == rows
    assert len(centre_ids(central, box)) == 12

def test_retention_keeps_every_unshipped_frame(centre, tmp_path):
    "A shipping box whose centre is unreachable keeps every old frame; once shipped, retention removes the usual ones"
    central = centre
    closed = tmp_path/'closed.ini'
    text = Path(central['settings_file']).read_text()
    port = central['servers']['postgres']['port']
    from receivers import free_port
    closed.write_text(text.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{free_port()}/"))
    box = Box(tmp_path/'box', central, PARKML_SHIP_TO=str(closed))
    frames = jpgs(30, 200)
    box.fill(30, frames, labelled=3, telemetry=0)
    p = box.ship()
    wait_for(lambda: 'unreachable' in box.log(), 30, what='an outage line')
    p.terminate()
    assert p.wait(30) == 0 and 'Traceback' not in box.log()
    with box.store() as st:
        assert st.shipping()
        res = st.apply_retention(now=time.time() + 30 * 86400, retention_days=7, sample_rate=0.25)
        assert res['removed'] == 0 and st.counts()['frames'] == 30
        assert all(st.frame_path(s) for (s,) in box.local('SELECT sha FROM frames'))
    box.env['PARKML_SHIP_TO'] = central['settings_file']
    assert box.ship('--once', '--quiet').wait(120) == 0, box.log()
    with box.store() as st:
        res = st.apply_retention(now=time.time() + 30 * 86400, retention_days=7, sample_rate=0.25)
        left = {s for (s,) in box.local('SELECT sha FROM frames')}
    assert res['removed'] > 0 and left == {r[0] for r in centre_rows(central, 'SELECT sha FROM frames WHERE box_id = ?',
                                                                      (box.name,))}

def test_a_centre_file_that_cannot_be_read_never_stops_the_shipper(centre, tmp_path):
    "The centre's file turns unreadable (not UTF-8) while the centre is down: the shipper says why, keeps trying, ships"
    central = centre
    from parkml.central import start_postgres
    good = Path(central['settings_file']).read_bytes()
    ship_to = tmp_path/'centre.ini'
    ship_to.write_bytes(good)
    box = Box(tmp_path/'box', central, PARKML_SHIP_TO=str(ship_to))
    box.fill(20, jpgs(4, 300), labelled=0, telemetry=0)
    p = box.ship()
    try:
        wait_for(lambda: len(centre_ids(central, box)) == 20, 60, what='the first rows shipped')
        ship_to.write_bytes(good + b'\n# caf\xe9, written in latin-1\n')
        pg = centre_pg(central)
        pg.stop()   # the next round fails, and the shipper reads the centre's file again to reconnect
        try: wait_for(lambda: 'cannot be parsed' in box.log(), 30, what='the unreadable file named')
        finally: start_postgres(pg.folder)
        time.sleep(1.5)   # a few more tries on the unreadable file
        assert p.poll() is None and str(ship_to) in box.log()
        ship_to.write_bytes(good)
        box.fill(10, jpgs(2, 400), labelled=0, telemetry=0)
        wait_for(lambda: len(centre_ids(central, box)) == 30, 60, what='every prediction shipped once the file is fixed')
    finally:
        p.terminate()
        p.wait(30)
    assert 'Traceback' not in box.log()

def test_a_box_with_a_skewed_clock_is_flagged(centre, tmp_path):
    "The centre judges a box's clock by its own (the database's): 10 minutes ahead is flagged, a shipper's box is not"
    central = centre
    from parkml.config import Settings
    from parkml.ship import open_centre
    box = Box(tmp_path/'box', central)
    box.fill(5, jpgs(2, 400), labelled=0, telemetry=1)
    assert box.ship('--once', '--quiet').wait(120) == 0, box.log()
    with open_centre(Settings(central['settings_file'], environ={})) as c:
        c.report_status(dict(box_id='skewed-' + box.name, box_time=time.time() + 600, backlog_rows=0))
        st = c.box_status().set_index('box_id')
    assert st.loc['skewed-' + box.name, 'clock_flagged'] and 590 < st.loc['skewed-' + box.name, 'clock_skew_s'] < 610
    ours = st.loc[box.name]
    assert not ours.clock_flagged and abs(ours.clock_skew_s) < 5 and ours.backlog_rows == 0
    assert ours.since_contact_s < 60
    assert ours.disk_free_bytes > 0 and ours.latency_p95_ms == 30.0 and ours.code_version

def metric(text: str, name: str) -> float:
    return float(next(ln.split()[-1] for ln in text.splitlines() if ln.startswith(name + ' ')))

def test_serve_ship_shows_its_backlog(centre, registry, tmp_path):
    """`parkml serve --ship`: with the centre's database down the backlog grows in /health and /metrics while serving
    goes on; once the database is back the backlog drains and the box reports what it serves"""
    central = centre
    from parkml.central import start_postgres
    from receivers import free_port
    box, port = Box(tmp_path/'box', central), free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **box.env, 'PARKML_RUNS': str(registry[0]), 'PARKML_VERIFIED_ALIASES': '',
           'PARKML_TELEMETRY_INTERVAL_S': '0.5'}
    pg = centre_pg(central)
    pg.stop()
    log = open(tmp_path/'serve.log', 'w')
    srv = subprocess.Popen([PARKML, 'serve', '--ship', '--host', '127.0.0.1', '--port', str(port), '--log-level',
                            'warning'], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: ok(url + '/health'), 120, 0.2, 'the service')
        for data in jpgs(8, 300):
            assert httpx.post(url + '/predict', files={'file': data}, timeout=30).status_code == 200
        h = wait_for(lambda: (h := httpx.get(url + '/health').json())['ship']['backlog_rows'] >= 8 and h, 10)
        assert h['status'] == 'ok' and not h['ship']['ok'] and h['ship']['backlog_age_s'] > 0
        m = httpx.get(url + '/metrics').text
        assert metric(m, 'parkml_ship_backlog_rows') >= 8 and metric(m, 'parkml_ship_backlog_age_seconds') > 0
        assert metric(m, 'parkml_ship_shipped_total') == 0
        start_postgres(pg.folder)
        wait_for(lambda: httpx.get(url + '/health').json()['ship']['backlog_rows'] == 0, 60, 0.2, 'the drain')
        m = httpx.get(url + '/metrics').text
        assert metric(m, 'parkml_ship_backlog_rows') == 0 and metric(m, 'parkml_ship_shipped_total') >= 8
        st = centre_rows(central, 'SELECT serve_alias, model_version, onnx_sha256 FROM box_status WHERE box_id = ?',
                         (box.name,))
        assert st[0][0] == 'champion' and st[0][1] == registry[1]['v1'] and len(st[0][2]) == 64
        assert len(centre_ids(central, box)) == 8
    finally:
        start_postgres(pg.folder)
        srv.terminate()
        srv.wait(30)
        log.close()
    text = (tmp_path/'serve.log').read_text()
    assert 'Traceback' not in text and '(setting ship_to) unreachable' in text, text[-2000:]

def ok(url: str) -> bool:
    try: return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError: return False

@pytest.fixture(scope='session')
def registry(tmp_path_factory):
    from test_service import service_registry
    return service_registry(tmp_path_factory)

def test_serve_ship_wakes_its_shipper_and_shows_the_batch_in_flight(centre, registry, tmp_path):
    """`parkml serve --ship` with a 30 s idle look: a prediction committed wakes the shipper at once; while the centre
    holds the batch (its predictions table locked) `/health` shows it in flight, and it lands once the lock ends"""
    import psycopg
    from receivers import free_port
    central, port = centre, free_port()
    box, url = Box(tmp_path/'box', central, PARKML_SHIP_IDLE_S='30'), f"http://127.0.0.1:{port}"
    env = {**os.environ, **box.env, 'PARKML_RUNS': str(registry[0]), 'PARKML_VERIFIED_ALIASES': ''}
    log = open(tmp_path/'serve.log', 'w')
    srv = subprocess.Popen([PARKML, 'serve', '--ship', '--host', '127.0.0.1', '--port', str(port), '--log-level',
                            'warning'], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: ok(url + '/health'), 120, 0.2, 'the service')
        time.sleep(1)   # the shipper's first rounds are done: it naps (30 s at most)
        with psycopg.connect(central['postgres_uri']) as con:   # one transaction, held until the block ends
            con.execute('LOCK TABLE predictions IN EXCLUSIVE MODE')
            pid = httpx.post(url + '/predict', files={'file': jpgs(1, 400)[0]}, timeout=30).json()['prediction_id']
            f = wait_for(lambda: httpx.get(url + '/health').json()['ship']['in_flight'], 15, 0.05, 'a batch in flight')
            assert f['table'] == 'predictions' and f['rows'] == 1, f
            assert centre_ids(central, box) == []   # held at the centre
        assert wait_for(lambda: pid in centre_ids(central, box), 15, 0.1, 'the prediction at the centre')
    finally:
        srv.terminate()
        srv.wait(30)
        log.close()
    assert 'Traceback' not in (tmp_path/'serve.log').read_text()

def test_a_catching_up_shipper_keeps_to_its_share_of_a_core(centre, tmp_path):
    "A backlog of many batches goes out within `ship_cpu_share`: the shipper pauses after each batch for its CPU time"
    from parkml.config import Settings
    from parkml.ship import Shipper
    box = Box(tmp_path/'box', centre, PARKML_SHIP_BATCH='20', PARKML_SHIP_CPU_SHARE='0.1')
    box.fill(300, jpgs(4, 300), labelled=0, telemetry=0)
    store = box.store()
    sh = Shipper(store, Settings(environ={**os.environ, **box.env}))
    try:
        sh.run(until_idle=True)   # once, to connect and warm up (imports, the S3 client): not what is measured
        box.local('UPDATE predictions SET shipped_at = NULL')
        t, c = time.monotonic(), time.thread_time()
        sh.run(until_idle=True)
        wall, cpu = time.monotonic() - t, time.thread_time() - c
    finally:
        sh.stop()
        store.close()
    assert len(centre_ids(centre, box)) == 300
    assert cpu / wall < 0.15, (cpu, wall)   # at most a tenth of a core, give or take the last batch
    assert wall > 0.8 * cpu / 0.1, (cpu, wall)
