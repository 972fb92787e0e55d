"""Prediction log on both engines (each test runs on a SQLite file and on a real PostgreSQL database): real petpark
frames in tmp_path, real threads and a real kill -9."""
import hashlib, os, signal, subprocess, sys, textwrap, threading, time
from pathlib import Path
import numpy as np, pandas as pd, pytest
from parkml.config import get_settings
from parkml.predlog import (open_store, SQLiteStore, PostgresStore, PredictionStore, proj_matrix, keep_sample, frame_sha,
                            new_prediction_id, LABELS)
from parkml.stores import StoreUnavailable, StoreTooNew
from pg_fixture import pg_server, pg_db, store_uri, sql  # noqa: F401 (fixtures)

@pytest.fixture(scope='module')
def frames():
    "Bytes of 120 real petpark JPEGs"
    cfg = get_settings()
    paths = pd.read_csv(cfg.data/'manifest.csv').path[:120]
    return [(cfg.data/p).read_bytes() for p in paths]

@pytest.fixture
def store(store_uri, tmp_path):
    s = open_store(store_uri, tmp_path/'frames')
    yield s
    s.close()

def rec(i, frame=None, ts=None, camera='cam-01'):
    "A prediction record like the service writes"
    p = (i * 37 % 100) / 100
    r = dict(id=new_prediction_id(), ts=1.75e9 + i if ts is None else ts, camera=camera, model_name='parkml-catdog',
             model_version='2', run_id='f' * 32, alias='champion', label=LABELS[p > 0.5], p_dog=p, latency_ms=12.5,
             width=160.0, height=120.0, brightness=0.4, contrast=0.2, sharpness=3.0,
             proj=np.arange(16, dtype=np.float32) + i)
    if frame is not None: r['frame'] = frame
    return r

def test_round_trip(store, frames):
    assert isinstance(store, (SQLiteStore, PostgresStore)) and isinstance(store, PredictionStore)
    recs = [rec(i, frames[i]) for i in range(20)]
    ids = store.log_predictions(recs)
    rej = store.log_prediction(dict(ts=1.75e9 + 5.5, status='rejected', error='corrupt image', frame=b'\xff\xd8garbage'))
    assert ids == [r['id'] for r in recs]
    df = store.predictions(1.75e9 + 2, 1.75e9 + 10)
    assert len(df) == 9 and list(df.ts) == sorted(df.ts) and 'rejected' in set(df.status)
    ok = df[df.status == 'ok']
    assert np.array_equal(proj_matrix(ok), np.stack([recs[i]['proj'] for i in range(2, 10)]))
    assert ok.label.tolist() == [recs[i]['label'] for i in range(2, 10)]
    got = store.get_prediction(ids[7])
    assert got['p_dog'] == recs[7]['p_dog'] and got['run_id'] == 'f' * 32 and np.array_equal(got['proj'], recs[7]['proj'])
    assert got['frame_sha'] == hashlib.sha256(frames[7]).hexdigest() and got['frame_retained']
    assert Path(got['frame_path']).read_bytes() == frames[7] and got['true_label'] is None
    r = store.get_prediction(rej)
    assert r['status'] == 'rejected' and r['label'] is None and r['error'] == 'corrupt image' and r['proj'] is None
    assert store.get_frame(r['frame_sha']) == b'\xff\xd8garbage' and store.get_prediction('p-missing') is None
    c = store.counts()
    assert (c['predictions'], c['rejected'], c['frames'], c['feedback']) == (21, 1, 21, 0) and c['db_bytes'] > 0

def test_frames_are_content_addressed(store, frames, tmp_path):
    sha = store.put_frame(frames[0])
    assert sha == store.put_frame(frames[0]) == frame_sha(frames[0])
    p = store.frame_path(sha)
    assert p == tmp_path/'frames'/sha[:2]/f"{sha}.jpg" and p.read_bytes() == frames[0]
    assert [f for f in (tmp_path/'frames').rglob('*') if f.is_file()] == [p]
    assert store.frame_path('0' * 64) is None and store.get_frame('0' * 64) is None
    with pytest.raises(ValueError): store.put_frame(b'')

def test_bad_records_are_refused(store):
    for bad in [dict(label='bird'), dict(label='cat', colour='red'), dict(status='rejected', label='dog'),
                dict(status='maybe', label='cat')]:
        with pytest.raises(ValueError): store.log_prediction(bad)
    good = rec(1)
    with pytest.raises(Exception): store.log_predictions([good, {**rec(2), 'id': good['id']}])  # duplicate id
    assert store.counts()['predictions'] == 0  # the whole batch was rolled back

def test_concurrent_writers_lose_nothing(store, frames):
    ids, errors = [], []
    def writer(w):
        try:
            for b in range(25):
                batch = [rec(w * 1000 + b * 8 + k, frames[(w * 8 + k) % len(frames)] if k == 0 else None) for k in range(8)]
                ids.extend(store.log_predictions(batch))
                store.predictions(limit=5)  # readers interleave with writers
        except Exception as e: errors.append(e)
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors and len(ids) == len(set(ids)) == 8 * 25 * 8
    assert set(store.predictions().id) == set(ids) and store.counts()['predictions'] == 1600

CHILD = textwrap.dedent("""
    import sys, pandas as pd
    from parkml.predlog import open_store, new_prediction_id
    uri, frames_dir, data = sys.argv[1:]
    store = open_store(uri, frames_dir)
    paths = pd.read_csv(f"{data}/manifest.csv").path
    i = 0
    while True:
        batch = []
        for _ in range(4):
            frame = open(f"{data}/{paths[i % len(paths)]}", 'rb').read() + i.to_bytes(4, 'little')
            batch.append(dict(id=new_prediction_id(), camera='cam-09', label='dog', p_dog=0.9, frame=frame))
            i += 1
        for pid in store.log_predictions(batch): print(pid, flush=True)
""")

def test_answered_predictions_survive_kill9(store_uri, tmp_path):
    frames_dir = tmp_path/'frames'
    proc = subprocess.Popen([sys.executable, '-c', CHILD, store_uri, str(frames_dir), str(get_settings().data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed, deadline = [], time.time() + 60
    try:
        while len(printed) < 400 and time.time() < deadline:
            line = proc.stdout.readline()
            if not line: pytest.fail(f"writer died before the kill: {proc.stderr.read()}")
            printed.append(line)
        os.kill(proc.pid, signal.SIGKILL)  # while it is writing: no clean-up, no atexit, no close
        proc.wait(10)
    finally:
        if proc.poll() is None: proc.kill()
    assert proc.returncode == -signal.SIGKILL
    printed += proc.stdout.read().splitlines(keepends=True)
    ids = [l.strip() for l in printed if l.endswith('\n')]
    assert len(ids) >= 400
    if store_uri.startswith('sqlite:'): assert sql(store_uri, 'PRAGMA integrity_check') == [('ok',)]
    store = open_store(store_uri, frames_dir)
    try:
        for pid in ids:
            p = store.get_prediction(pid)
            assert p is not None, f"answered prediction {pid} was lost"
            assert p['frame_retained'] and hashlib.sha256(Path(p['frame_path']).read_bytes()).hexdigest() == p['frame_sha']
        assert store.counts()['predictions'] >= len(ids)
    finally: store.close()

def test_feedback(store):
    ids = store.log_predictions([rec(i) for i in range(5)])
    store.add_feedback(ids[1], 'cat', source='keeper', ts=1.75e9 + 100)
    store.add_feedback(ids[1], 'dog', source='vet', ts=1.75e9 + 200)  # latest wins
    store.add_feedback(ids[3], 'cat', source='keeper', ts=1.75e9 + 150)
    assert store.get_prediction(ids[1])['true_label'] == 'dog' and store.get_prediction(ids[1])['feedback_source'] == 'vet'
    assert store.get_prediction(ids[0])['true_label'] is None
    fb = store.feedback()
    assert fb.id.tolist() == [ids[1], ids[3]] and fb.true_label.tolist() == ['dog', 'cat']
    assert store.feedback(1.75e9 + 2, 1.75e9 + 5).id.tolist() == [ids[3]]
    assert store.feedback(1.75e9 + 140, 1.75e9 + 160, by='feedback').id.tolist() == [ids[3]]
    with pytest.raises(KeyError): store.add_feedback('p-unknown', 'cat')
    with pytest.raises(ValueError): store.add_feedback(ids[0], 'bird')
    with pytest.raises(ValueError): store.add_feedback(ids[0], 1)
    assert store.counts()['feedback'] == 3 and store.counts()['labelled'] == 2

def test_retention_keeps_sample_and_labelled(store, frames, tmp_path):
    now = time.time()
    old = [rec(i, frames[i], ts=now - 30 * 86400 + i) for i in range(100)]
    new = [rec(i, frames[i], ts=now - 3600) for i in range(100, 120)]
    ids = store.log_predictions(old + new)
    labelled = {3, 40, 77}
    for i in labelled: store.add_feedback(ids[i], 'dog', source='test')
    shas = [frame_sha(frames[i]) for i in range(120)]
    sampled = {i for i in range(100) if keep_sample(shas[i], 0.2)} - labelled
    assert 5 <= len(sampled) <= 40  # the sample is a real share of 20%

    res = store.apply_retention(retention_days=7, sample_rate=0.2)
    assert res['kept_feedback'] == 3 and res['kept_sample'] == len(sampled) and res['removed'] == 100 - 3 - len(sampled)
    for i in range(120):
        p = store.get_prediction(ids[i])
        assert p['frame_sha'] == shas[i]  # predictions are never deleted
        assert p['frame_retained'] == (i in labelled or i in sampled or i >= 100), i
        assert (tmp_path/'frames'/shas[i][:2]/f"{shas[i]}.jpg").exists() == p['frame_retained']
    assert store.counts()['predictions'] == 120 and store.counts()['frames'] == 120 - res['removed']
    assert store.apply_retention(retention_days=7, sample_rate=0.2)['removed'] == 0  # stable: decided once
    with pytest.raises(ValueError): store.apply_retention(sample_rate=2)

def test_open_store_schemes(tmp_path, monkeypatch):
    for uri in ['mysql://x/y', f'{tmp_path}/predlog.db']:
        with pytest.raises(NotImplementedError, match='sqlite://, postgresql://'): open_store(uri, tmp_path)
    with pytest.raises(ValueError): open_store('sqlite://', tmp_path)
    monkeypatch.setenv('PARKML_PREDLOG_URI', f'sqlite:///{tmp_path}/from-settings.db')
    monkeypatch.setenv('PARKML_FRAMES_DIR', str(tmp_path/'fr'))
    with open_store() as s:
        assert s.path == tmp_path/'from-settings.db' and s.frames_dir == tmp_path/'fr'
        s.log_prediction(rec(0, b'frame bytes'))
    assert (tmp_path/'from-settings.db').exists() and len(list((tmp_path/'fr').rglob('*.jpg'))) == 1
    with pytest.raises(RuntimeError): s.log_prediction(rec(1))  # closed

def test_server_down_is_one_clear_line(tmp_path):
    "No server on the port: the store, the server and the setting are named, the password is not; the CLI says it in one line"
    from receivers import free_port
    uri = f"postgresql://parkml:hunter2hunter2@127.0.0.1:{free_port()}/park"
    with pytest.raises(StoreUnavailable) as e: open_store(uri, tmp_path)
    msg = str(e.value)
    assert msg.startswith('prediction store postgresql://parkml@127.0.0.1:') and '(setting predlog_uri): connection refused' in msg
    assert 'hunter2' not in msg
    from conftest import run_cli
    r = run_cli('trace', 'p0000000000000000000000', env=dict(PARKML_PREDLOG_URI=uri), timeout=60)
    assert r.returncode == 2 and 'Traceback' not in r.stderr and 'hunter2' not in r.stderr + r.stdout
    assert '(setting predlog_uri): connection refused' in r.stderr, r.stderr

def test_store_made_before_versions_opens_with_every_row(tmp_path):
    "A log written by parkml before schema versions (tests/data/v0, made by the code of 8ec4ebb) migrates in place"
    import shutil
    from conftest import ROOT
    db = shutil.copy(ROOT/'tests'/'data'/'v0'/'predlog.db', tmp_path/'predlog.db')
    assert sql(f"sqlite:///{db}", 'PRAGMA user_version') == [(0,)]
    before = sql(f"sqlite:///{db}", 'SELECT * FROM predictions ORDER BY id')
    with open_store(f"sqlite:///{db}", tmp_path/'frames') as st:
        assert st.db.schema_version() == 3 and len(before) == st.counts()['predictions'] > 0
        assert st.feedback().true_label.notna().all() and len(st.feedback()) == st.counts()['labelled'] > 0
    after = sql(f"sqlite:///{db}", 'SELECT * FROM predictions ORDER BY id')
    assert [r[:len(before[0])] for r in after] == before and {r[len(before[0]):] for r in after} == {(None,) * 3}
    sql(f"sqlite:///{db}", 'PRAGMA user_version = 5')
    with pytest.raises(StoreTooNew, match='schema version 5, newer than this parkml'): open_store(f"sqlite:///{db}", tmp_path)
    assert sql(f"sqlite:///{db}", 'SELECT * FROM predictions ORDER BY id') == after

def test_postgres_store_keeps_its_schema_version(pg_db, tmp_path):
    with open_store(pg_db, tmp_path/'frames') as st: st.log_prediction(rec(1))
    assert sql(pg_db, "SELECT version FROM parkml_schema WHERE store = 'predlog'") == [(3,)]
    sql(pg_db, "UPDATE parkml_schema SET version = 4 WHERE store = 'predlog'")
    with pytest.raises(StoreTooNew, match='prediction store postgresql://.*schema version 4'): open_store(pg_db, tmp_path)

def test_large_batch_round_trip(store):
    "A batch large enough for PostgreSQL's COPY comes back exactly as logged (rejected inputs and empty fields too)"
    recs = [rec(i) if i % 10 else dict(id=new_prediction_id(), ts=1.75e9 + i, status='rejected', error=f'bad {i}')
            for i in range(500)]
    assert store.log_predictions(recs) == [r['id'] for r in recs]
    df = store.predictions()
    assert df.id.tolist() == [r['id'] for r in recs] and (df.status == 'rejected').sum() == 50
    ok = df[df.status == 'ok']
    assert np.array_equal(proj_matrix(ok), np.stack([r['proj'] for r in recs if 'proj' in r]))
    assert ok.p_dog.tolist() == [r['p_dog'] for r in recs if 'p_dog' in r] and df.error.iloc[10] == 'bad 10'
    assert pd.isna(df.label.iloc[0]) and pd.isna(df.camera.iloc[0]) and df.camera.iloc[1] == 'cam-01'
    with pytest.raises(Exception): store.log_predictions([rec(i) for i in range(100)] + [recs[3]])  # a duplicate id
    assert store.counts()['predictions'] == 500  # the whole batch was rolled back

@pytest.fixture(scope='module')
def s3(tmp_path_factory):
    "A real S3 gateway (SeaweedFS) on loopback for this module, with its bucket `parkml`"
    from parkml.s3store import start_seaweed, stop_seaweed
    folder = tmp_path_factory.mktemp('s3')
    yield start_seaweed(folder, bucket='parkml')
    stop_seaweed(folder)

def test_frames_in_s3(s3, pg_db, frames, tmp_path, monkeypatch):
    "The central log: rows in PostgreSQL, frames in the bucket (each stored once), read back, retired, and a clear error"
    key = s3.keys['parkml']  # the bucket-scoped identity parkml uses, through boto3's own variables
    monkeypatch.setenv('AWS_ACCESS_KEY_ID', key['accessKey'])
    monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', key['secretKey'])
    monkeypatch.setenv('PARKML_S3_ENDPOINT', s3.endpoint)
    monkeypatch.setenv('PARKML_CACHE', str(tmp_path/'cache'))
    st = open_store(pg_db, 's3://parkml/frames')
    ids = st.log_predictions([rec(i, frames[i % 3]) for i in range(6)])  # three frames, each sent twice
    shas = [frame_sha(f) for f in frames[:3]]
    listed = lambda: sorted(o['Key'] for o in s3.client().list_objects_v2(Bucket='parkml', Prefix='frames/').get('Contents', []))
    assert listed() == sorted(f"frames/{s[:2]}/{s}.jpg" for s in shas)
    p = st.get_prediction(ids[4])
    assert p['frame_retained'] and p['frame_path'] == f"s3://parkml/frames/{shas[1][:2]}/{shas[1]}.jpg"
    assert st.get_frame(shas[1]) == frames[1] and st.frame_path(shas[1]).is_relative_to(tmp_path/'cache')
    res = st.apply_retention(now=time.time(), retention_days=7, sample_rate=0)
    assert res['removed'] == 3 and listed() == [] and not st.get_prediction(ids[4])['frame_retained']
    assert st.frame_path(shas[2]) is None and st.counts()['predictions'] == 6
    st.close()
    monkeypatch.setenv('PARKML_S3_ENDPOINT', f"http://127.0.0.1:{__import__('receivers').free_port()}")
    with open_store(pg_db, 's3://parkml/frames') as st:
        with pytest.raises(StoreUnavailable, match=r'frame store s3://parkml/frames \(setting frames_dir'):
            st.log_prediction(rec(9, frames[5]))
        assert st.counts()['predictions'] == 6  # nothing half-written

def test_stores_opened_at_once_migrate_once(pg_db, tmp_path):
    "Three processes open the three stores of one new PostgreSQL database at the same moment: each schema is made once"
    code = textwrap.dedent("""
        import sys, time
        from parkml.predlog import open_store
        from parkml.alerts import open_alert_store
        from parkml.auditlog import open_governance
        uri, go = sys.argv[1], float(sys.argv[2])
        time.sleep(max(0, go - time.time()))
        for opener in (open_store, open_alert_store, open_governance): opener(uri).close()
    """)
    go = str(time.time() + 3)
    procs = [subprocess.Popen([sys.executable, '-c', code, pg_db, go], stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for _ in range(3)]
    assert [p.wait(60) for p in procs] == [0, 0, 0], [p.stderr.read() for p in procs]
    versions = sorted(sql(pg_db, 'SELECT store, version FROM parkml_schema'))
    assert versions == [('alerts', 1), ('audit', 1), ('predlog', 3)]

def test_a_version_1_store_gains_the_box_columns(store_uri, tmp_path):
    "A log at schema version 1 (before boxes had names) migrates in place on both engines: rows kept, new columns empty"
    from parkml.stores import migrate, SQLiteDB, PostgresDB
    from parkml.predlog import PREDLOG_STEPS
    sqlite = store_uri.startswith('sqlite')
    db = SQLiteDB(store_uri[len('sqlite://'):]) if sqlite else PostgresDB(store_uri, name='predlog')
    db.name = 'predlog'
    migrate(db, PREDLOG_STEPS[db.engine][:1])
    db.close()
    sql(store_uri, "INSERT INTO predictions(id, ts, received, status, label) VALUES('p1', 1, 1, 'ok', 'cat')")
    sql(store_uri, "INSERT INTO telemetry(ts, cpu_pct) VALUES(1, 50)")
    with open_store(store_uri, tmp_path/'frames') as st:
        assert st.db.schema_version() == 3 and st.counts()['predictions'] == 1
        old = st.get_prediction('p1')
        assert old['label'] == 'cat' and [old[k] for k in ('box_id', 'arrived_at', 'shipped_at')] == [None] * 3
        assert st.telemetry().cpu_pct.tolist() == [50.0] and st.box_status().empty

def test_every_row_names_its_box(store_uri, frames, tmp_path, monkeypatch):
    "box_id (setting; default the host name) is on every prediction, feedback, frame and telemetry row"
    import socket
    with open_store(store_uri, tmp_path/'a') as st:
        pid = st.log_prediction(rec(0, frames[0]))
        assert st.get_prediction(pid)['box_id'] == socket.gethostname()
    monkeypatch.setenv('PARKML_BOX_ID', 'park-b')
    with open_store(store_uri, tmp_path/'b') as st:
        pid = st.log_prediction(rec(1, frames[1]))
        other = st.log_prediction({**rec(2), 'box_id': 'park-z'})  # a row shipped from another box keeps its name
        st.add_feedback(pid, 'dog')
        st.log_telemetry(dict(cpu_pct=3.0))
        assert st.get_prediction(pid)['box_id'] == 'park-b' and st.get_prediction(other)['box_id'] == 'park-z'
        assert st.feedback().loc[lambda d: d.id == pid, 'box_id'].tolist() == ['park-b']
        assert st.telemetry().box_id.tolist() == ['park-b']
    assert sql(store_uri, 'SELECT box_id FROM frames WHERE sha = ?', (frame_sha(frames[1]),)) == [('park-b',)]
    assert sql(store_uri, 'SELECT box_id FROM feedback') == [('park-b',)]

def test_box_status_on_the_centres_clock(store_uri, tmp_path):
    "report_status upserts one row per box, stamped and skew-judged by the database's clock"
    with open_store(store_uri, tmp_path/'f') as st:
        row = st.report_status(dict(box_id='park-a', box_time=time.time() + 600, backlog_rows=7, serve_alias='prod'))
        assert 599 < row['clock_skew_s'] < 601 and row['clock_flagged'] == 1
        st.report_status(dict(box_id='park-a', box_time=time.time(), backlog_rows=0, model_version='3'))
        st.report_status(dict(box_id='park-b', box_time=time.time() - 30, disk_free_bytes=2**40))
        df = st.box_status()
        assert df.box_id.tolist() == ['park-a', 'park-b'] and df.clock_flagged.tolist() == [False, False]
        assert df.backlog_rows.iloc[0] == 0 and df.model_version.iloc[0] == '3' and df.disk_free_bytes.iloc[1] == 2**40
        assert (df.last_contact - time.time()).abs().max() < 5 and 29 < df.clock_skew_s.iloc[1] * -1 < 31
        with pytest.raises(ValueError, match='unknown status fields'): st.report_status(dict(box_id='x', cpu=1))

def test_retention_keeps_unshipped_frames_of_a_shipping_box(store_uri, frames, tmp_path):
    "Once a shipper has started on a log, old frames it has not dealt with stay; dealt-with ones follow the usual rule"
    with open_store(store_uri, tmp_path/'f') as st:
        st.log_predictions([rec(i, frames[i], ts=1.75e9) for i in range(10)])
        with st.db.write() as con:
            con.execute("INSERT INTO ship_state(name, value, updated) VALUES('shipper', 'test', 0)")
            done = (frame_sha(frames[0]), frame_sha(frames[1]))
            con.execute('UPDATE frames SET shipped_at = 1 WHERE sha IN (?, ?)', done)
        assert st.shipping()
        res = st.apply_retention(now=1.75e9 + 30 * 86400, retention_days=7, sample_rate=0)
        assert res['removed'] == 2 and st.counts()['frames'] == 8
        assert all(st.frame_path(frame_sha(f)) for f in frames[2:10])
