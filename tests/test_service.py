"""The edge service (parkml.service) as the park runs it: a real server process on loopback, a model trained on real
petpark photos and registered in MLflow, loaded by alias, and real photos as input."""
import io, json, os, re, select, signal, socket, subprocess, sys, threading, time
from pathlib import Path
import numpy as np, pandas as pd, pytest, httpx
from PIL import Image
from parkml.wait import wait_for

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- a registry with two real versions, once per session

def _env_runs(runs):
    "Point PARKML_RUNS at `runs` for the duration of a with-block"
    class _Ctx:
        def __enter__(self): self.old = os.environ.get('PARKML_RUNS'); os.environ['PARKML_RUNS'] = str(runs)
        def __exit__(self, *a):
            if self.old is None: os.environ.pop('PARKML_RUNS', None)
            else: os.environ['PARKML_RUNS'] = self.old
    return _Ctx()

def register_variant(cfg, version: str, shift: float) -> str:
    "Register a new version whose ONNX graph is `version`'s with the head's bias moved by `shift` (a different model)"
    import mlflow, onnx
    from onnx import numpy_helper
    from parkml.tracking import mlflow_client, local_onnx
    client = mlflow_client(cfg)
    mv = client.get_model_version(cfg.model_name, version)
    m = onnx.load(str(local_onnx(mv, client, cfg)))
    init = next(i for i in m.graph.initializer if i.name == 'head_b')
    init.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(init) + shift).astype(np.float32), 'head_b'))
    with mlflow.start_run(run_name=f'variant-of-v{version}') as run:
        info = mlflow.onnx.log_model(m, name='onnx', save_as_external_data=False)
    tags = {**mv.tags, 'parkml.onnx_uri': info.model_uri, 'parkml.run_id': run.info.run_id, 'parkml.variant_of': version}
    return mlflow.register_model(info.model_uri, cfg.model_name, tags=tags).version

def service_registry(tmp_path_factory) -> tuple[Path, dict]:
    """A runs folder holding a model trained on real photos (version 1, alias champion) and a variant (version 2).
    Made once per test session (test_stream reuses it)."""
    base = tmp_path_factory.getbasetemp()/'service-registry'
    runs, ready = base/'runs', base/'ready.json'
    if ready.is_file(): return runs, json.loads(ready.read_text())
    with _env_runs(runs):
        from parkml.config import get_settings
        from parkml.train import train_and_register
        from parkml.tracking import mlflow_client
        cfg = get_settings()
        r = train_and_register(limit=200, run_name='service-tests', progress=False)
        v2 = register_variant(cfg, r.version, 3.0)
        client = mlflow_client(cfg)
        client.set_registered_model_alias(cfg.model_name, 'champion', r.version)
        # engine = auto: both graphs decided here, so the servers on the shared cache start with the engine recorded
        # instead of measuring beside tests that time or weigh them (a test with a cache of its own sees it pending)
        from parkml.model import decide_engine
        from parkml.tracking import local_onnx
        for v in (r.version, v2): decide_engine(local_onnx(client.get_model_version(cfg.model_name, v), client, cfg), cfg)
    info = dict(v1=str(r.version), v2=str(v2), model=cfg.model_name, test_accuracy=r.metrics['test_accuracy'])
    ready.write_text(json.dumps(info))
    return runs, info

@pytest.fixture(scope='session')
def registry(tmp_path_factory): return service_registry(tmp_path_factory)

def set_alias(runs, version):
    from parkml.config import get_settings
    from parkml.tracking import mlflow_client
    cfg = get_settings(runs=str(runs))
    mlflow_client(cfg).set_registered_model_alias(cfg.model_name, 'champion', version)

# ---------------------------------------------------------------- a real server process

from parkml.central import free_port   # the one port picker (never the same port twice)

class Server:
    "`parkml serve` in its own process on a free loopback port, with its own prediction log"
    def __init__(self, runs, home: Path, **env):
        self.home, self.port = home, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home.mkdir(parents=True, exist_ok=True)
        # the service's mechanics are the subject here, not approvals (tests/test_edge_approval.py): the alias is served
        # without signed proofs unless a test sets PARKML_VERIFIED_ALIASES
        self.env = {**os.environ, 'PARKML_RUNS': str(runs), 'PARKML_ALIAS_POLL_S': '0.3', 'PARKML_TELEMETRY_INTERVAL_S': '0.5',
                    'PARKML_VERIFIED_ALIASES': '',
                    'PARKML_PREDLOG_URI': f"sqlite:///{home}/predlog.db", 'PARKML_FRAMES_DIR': str(home/'frames'),
                    **{k: str(v) for k, v in env.items()}}
        self.start()

    def start(self, wait=True):
        self.log = open(self.home/'server.log', 'a')
        # the real command the park runs: `parkml serve`
        self.proc = subprocess.Popen([str(Path(sys.executable).parent/'parkml'), 'serve', '--host', '127.0.0.1',
                                      '--port', str(self.port), '--log-level', 'warning'],
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        def answers():
            assert self.proc.poll() is None, f"server exited:\n{(self.home/'server.log').read_text()[-3000:]}"
            return httpx.get(self.url + '/health', timeout=2).status_code in (200, 503)
        if wait: wait_for(answers, 120, 'the server answering /health', catch=httpx.TransportError)

    def stop(self):
        if self.proc.poll() is None: self.proc.terminate(); self.proc.wait(30)
        if not self.log.closed: self.log.close()

    def store(self):
        from parkml.predlog import open_store
        return open_store(self.env['PARKML_PREDLOG_URI'], self.env['PARKML_FRAMES_DIR'])

    def text_log(self): return (self.home/'server.log').read_text()

def module_server(home: str, fresh_engine_cache: bool = False):
    """A module-scoped `server` fixture: `parkml serve` of the registry's first version, its home a new temp folder
    `home`; with `fresh_engine_cache`, no engine decision is recorded for it yet (each graph is measured as it comes)"""
    @pytest.fixture(scope='module')
    def server(registry, tmp_path_factory):
        h = tmp_path_factory.mktemp(home)
        s = Server(registry[0], h, **({'PARKML_CACHE': h/'engine-cache'} if fresh_engine_cache else {}))
        yield s
        s.stop()
    return server

server = module_server('main-server', fresh_engine_cache=True)

def decided(url: str, timeout: float = 120) -> dict:
    "The served model of /health at `url` once its engine decision is no longer pending"
    def model():
        m = httpx.get(url + '/health', timeout=10).json()['model']
        return m if m['engine_decision']['decision'] != 'pending' else None
    return wait_for(model, timeout, f"an engine decision at {url}")

@pytest.fixture(scope='module')
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as c: yield c

@pytest.fixture(scope='module')
def store(server):
    st = server.store(); yield st; st.close()

# ---------------------------------------------------------------- real photos and bad inputs

@pytest.fixture(scope='session')
def photos():
    "Twelve test-split photos, six cats then six dogs: (bytes, label)"
    from parkml.config import get_settings
    cfg = get_settings()
    m = pd.read_csv(cfg.data/'manifest.csv')
    rows = m[m.split == 'test'].groupby('label').head(6).sort_values('label')
    return [((cfg.data/p).read_bytes(), l) for p, l in zip(rows.path, rows.label)]

def encode(img: Image.Image, fmt: str) -> bytes:
    b = io.BytesIO(); img.save(b, fmt); return b.getvalue()

def metric(text: str, name: str, /, **labels) -> float:
    "Value of one Prometheus sample in `text` (0 when absent)"
    from prometheus_client.parser import text_string_to_metric_families
    want = {k: str(v) for k, v in labels.items()}
    return next((s.value for f in text_string_to_metric_families(text) for s in f.samples
                 if s.name == name and s.labels == want), 0.0)

# ---------------------------------------------------------------- endpoints

def test_predict_answers_after_logging_prediction_and_frame(server, http, store, photos, registry):
    from parkml.config import get_settings
    from parkml.model import OnnxModel
    from parkml.pipeline import analyse_frame
    from parkml.tracking import resolve_version, local_onnx
    answers = []
    for i, (data, label) in enumerate(photos):
        if i % 2:  # multipart with headers ...
            r = http.post('/predict', files={'file': ('frame.jpg', data, 'image/jpeg')},
                          headers={'X-Camera-Id': 'gate-2', 'X-Capture-Time': '2025-06-15T08:30:00Z'})
        else:      # ... or the raw body with query parameters
            r = http.post('/predict?camera=gate-1&ts=1749976200.5', content=data, headers={'Content-Type': 'image/jpeg'})
        assert r.status_code == 200, r.text
        answers.append((r.json(), data, label, i))
    v1 = registry[1]['v1']
    assert sum(a['label'] == label for a, _, label, _ in answers) >= 10   # the model is good on real photos
    cfg = get_settings(runs=str(registry[0]))
    om = OnnxModel(local_onnx(resolve_version(v1, cfg=cfg), cfg=cfg), 1)
    for a, data, label, i in answers:
        assert a['model']['version'] == v1 and a['model']['alias'] == 'champion' and a['model']['name'] == registry[1]['model']
        assert (a['camera'], a['ts']) == (('gate-2', 1749976200.0) if i % 2 else ('gate-1', 1749976200.5))
        assert a['label'] == ('dog' if a['p_dog'] >= 0.5 else 'cat') and a['latency_ms'] > 0
        row = store.get_prediction(a['prediction_id'])     # committed before the answer was sent
        assert row is not None and row['status'] == 'ok' and row['label'] == a['label'] and row['camera'] == a['camera']
        assert row['p_dog'] == pytest.approx(a['p_dog']) and row['model_version'] == v1 and row['run_id'] == a['model']['run_id']
        assert row['ts'] == a['ts'] and abs(row['received'] - time.time()) < 120
        assert Path(row['frame_path']).read_bytes() == data            # the frame, content-addressed, linked by id
        assert row['frame_sha'] == a['frame_sha'] and row['frame_path'].endswith(a['frame_sha'] + '.jpg')
        x, feats = analyse_frame(data, om.size, 40)                    # integrity features of what the model saw
        for k, v in feats.items(): assert row[k] == pytest.approx(v), k
        out = om.run(x[None], ['p_dog', 'proj'])                       # p_dog and the drift projection: one pass
        assert a['p_dog'] == pytest.approx(float(out['p_dog'][0]), abs=1e-5)
        assert row['proj'].shape == (16,) and np.allclose(row['proj'], out['proj'][0], atol=1e-4)

def test_defaults_camera_and_receive_time(http, store, photos):
    t = time.time()
    a = http.post('/predict', content=photos[0][0]).json()   # no content type, no camera, no time
    row = store.get_prediction(a['prediction_id'])
    assert row['camera'] == 'cam-01' and t - 1 < row['ts'] == row['received'] < time.time() + 1

def test_batch_keeps_order_and_reports_each_image(http, store, photos):
    broken = photos[4][0][:len(photos[4][0]) // 2]   # a JPEG cut in half: decoded, refused and logged
    imgs = [photos[0][0], photos[7][0], broken, photos[3][0], b'not an image at all']
    r = http.post('/predict/batch?camera=gate-3', files=[('file', (f'{i}.jpg', d, 'image/jpeg')) for i, d in enumerate(imgs)])
    assert r.status_code == 200, r.text
    res = r.json()
    assert res['n'] == 5 and res['n_ok'] == 3 and [x['ok'] for x in res['results']] == [True, True, False, True, False]
    assert res['results'][2]['code'] == 'corrupt' and res['results'][2]['status'] == 422
    assert res['results'][4]['code'] == 'unsupported_format' and res['results'][4]['prediction_id'] is None   # never logged
    for x, d in zip(res['results'][:4], imgs):
        row = store.get_prediction(x['prediction_id'])
        assert row['camera'] == 'gate-3' and row['status'] == ('ok' if x['ok'] else 'rejected')
        if x['ok']: assert Path(row['frame_path']).read_bytes() == d and row['label'] == x['label']
    single = http.post('/predict', content=photos[7][0]).json()
    assert res['results'][1]['p_dog'] == pytest.approx(single['p_dog'], abs=1e-5)  # batching changes nothing

def test_feedback_is_linked_to_its_prediction_and_frame(http, store, photos):
    data, label = photos[8]
    a = http.post('/predict', content=data, headers={'Content-Type': 'image/jpeg'}).json()
    r = http.post('/feedback', json={'prediction_id': a['prediction_id'], 'label': label, 'source': 'keeper-anna'})
    assert r.status_code == 200, r.text
    assert r.json()['predicted'] == a['label'] and r.json()['correct'] == (a['label'] == label) and r.json()['frame_sha'] == a['frame_sha']
    row = store.get_prediction(a['prediction_id'])
    assert row['true_label'] == label and row['feedback_source'] == 'keeper-anna' and Path(row['frame_path']).read_bytes() == data
    fb = store.feedback()
    assert a['prediction_id'] in set(fb.id) and fb.set_index('id').loc[a['prediction_id'], 'frame_sha'] == a['frame_sha']
    rej = http.post('/predict', content=data[:len(data) // 2], headers={'Content-Type': 'image/jpeg'}).json()   # logged, refused
    for body, status, code in [({'prediction_id': 'p000000000000nope', 'label': 'cat'}, 404, 'unknown_prediction'),
                               ({'prediction_id': a['prediction_id'], 'label': 'horse'}, 422, 'bad_label'),
                               ({'prediction_id': a['prediction_id'], 'label': 1}, 422, 'bad_label'),
                               ({'label': 'cat'}, 422, 'bad_prediction_id'),
                               ({'prediction_id': rej['prediction_id'], 'label': 'cat'}, 422, 'rejected_prediction'),
                               ([1, 2], 400, 'bad_json')]:
        r = http.post('/feedback', json=body)
        assert (r.status_code, r.json()['code']) == (status, code), r.text
    r = http.post('/feedback', content=b'{not json', headers={'Content-Type': 'application/json'})
    assert r.status_code == 400 and r.json()['code'] == 'bad_json'
    b = http.post('/predict', content=photos[9][0], headers={'Content-Type': 'image/jpeg'}).json()
    r = http.post('/feedback', json={'prediction_id': b['prediction_id'], 'label': 'neither', 'source': 'keeper-anna'})
    assert r.status_code == 200 and r.json()['correct'] is None, r.text   # no cat or dog: no verdict on the model
    assert store.get_prediction(b['prediction_id'])['true_label'] == 'neither'
    assert b['prediction_id'] not in set(store.feedback().id)   # out of the cat/dog metrics
    assert store.get_prediction(a['prediction_id'])['true_label'] == label   # the refused ones changed nothing

# the bad inputs the staging run sends too (one table, in parkml.staging): name -> (body from a photo, content type, status, code)
from parkml.staging_inputs import bad_inputs
BAD_NAMES = list(bad_inputs(b'\xff\xd8\xff\xda\x00\x08\x01' + bytes(64), 8.0))

@pytest.mark.parametrize('name', BAD_NAMES)
def test_bad_input_gets_a_clear_4xx_and_an_integrity_row(name, server, http, store, photos):
    body, ctype, status, code = bad_inputs(photos[1][0])[name]
    before = metric(http.get('/metrics').text, 'parkml_rejected_inputs_total', reason=code)
    for multipart in ([False, True] if ctype.startswith('image/') and status != 413 else [False]):
        r = (http.post('/predict', files={'file': ('x', body, ctype)}) if multipart else
             http.post('/predict', content=body, headers={'Content-Type': ctype}))
        assert r.status_code == status, (multipart, r.text)
        e = r.json()
        assert e['code'] == code and e['status'] == status and len(e['error']) > 15
        if code == 'unsupported_format':   # not JPEG, PNG or WebP: refused before anything is logged
            assert e['prediction_id'] is None
            continue
        row = store.get_prediction(e['prediction_id'])
        assert row['status'] == 'rejected' and row['error'].startswith(code) and row['label'] is None and row['p_dog'] is None
    m = http.get('/metrics').text
    assert metric(m, 'parkml_rejected_inputs_total', reason=code) >= before + 1
    assert http.get('/health').json()['status'] == 'ok' and server.proc.poll() is None
    assert 'Traceback' not in server.text_log()

def test_body_limit_is_enforced_while_reading(server, http, photos):
    def chunks():   # no Content-Length: the server must stop reading by itself
        for _ in range(40): yield os.urandom(2**20)
    r = http.post('/predict', content=chunks(), headers={'Content-Type': 'image/jpeg'})
    assert r.status_code == 413 and r.json()['code'] == 'body_too_large'
    with socket.create_connection(('127.0.0.1', server.port), timeout=10) as s:   # declares 10 GiB, sends 100 bytes
        s.sendall(b'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 10737418240\r\n\r\n' + b'x' * 100)
        assert s.recv(65536).startswith(b'HTTP/1.1 413')   # refused at once, without waiting for the body
    assert http.post('/predict', content=photos[0][0]).status_code == 200

@pytest.mark.parametrize('params,headers,code', [({'ts': 'yesterday'}, {}, 'bad_capture_time'), ({'ts': '86400'}, {}, 'bad_capture_time'),
                                                 ({}, {'X-Capture-Time': '2999-01-01T00:00:00Z'}, 'bad_capture_time'),
                                                 ({'camera': '../../etc'}, {}, 'bad_camera')])
def test_bad_camera_or_time_is_refused(http, store, photos, params, headers, code):
    r = http.post('/predict', params=params, headers={'Content-Type': 'image/jpeg', **headers}, content=photos[0][0])
    assert r.status_code == 400 and r.json()['code'] == code
    assert store.get_prediction(r.json()['prediction_id'])['status'] == 'rejected'

def test_unknown_routes_and_methods_are_json_errors(http):
    assert http.get('/nope').status_code == 404 and http.get('/nope').json()['code'] == 'not_found'
    r = http.get('/predict')
    assert r.status_code == 405 and r.json()['status'] == 405

def test_health_and_metrics(server, http, store, registry):
    decided(server.url)   # the engine named below is the one that stays
    h = http.get('/health').json()
    assert h['status'] == 'ok' and h['model']['version'] == registry[1]['v1'] and h['model']['source'] == 'registry'
    assert h['registry']['ok'] and h['store']['ok'] and h['store']['committed'] > 0 and h['uptime_s'] > 0
    m = http.get('/metrics')
    assert m.status_code == 200 and m.headers['content-type'].startswith('text/plain')
    t = m.text
    n_ok = metric(t, 'parkml_requests_total', endpoint='predict', outcome='ok')
    n_labels = sum(metric(t, 'parkml_predictions_total', label=l) for l in ('cat', 'dog'))
    assert n_ok > 10 and n_labels >= n_ok          # batch answers count as predictions too
    assert metric(t, 'parkml_request_latency_seconds_count', endpoint='predict', outcome='ok') == n_ok
    assert metric(t, 'parkml_requests_total', endpoint='predict', outcome='rejected') > 5
    assert metric(t, 'parkml_model_info', name=registry[1]['model'], version=registry[1]['v1'],
                  run_id=h['model']['run_id'], alias='champion', engine=h['model']['engine']) == 1
    for g in ('cpu_pct', 'mem_pct', 'disk_pct', 'rss_mb'): assert metric(t, f'parkml_host_{g}') > 0, g
    assert metric(t, 'parkml_inference_batch_size_count') > 0 and metric(t, 'parkml_commit_batch_size_count') > 0
    time.sleep(1.2)
    tel = store.telemetry()
    assert len(tel) >= 2 and (tel.rss_mb > 50).all() and tel.requests.sum() > 10

def test_engine_setting_switches_what_the_service_runs(registry, tmp_path, photos):
    "The same version served by each engine: /health and the model info metric name it, and the answers agree"
    answers = {}
    for engine in ('onnxruntime', 'openvino'):
        s = Server(registry[0], tmp_path/engine, PARKML_ENGINE=engine)
        try:
            with httpx.Client(base_url=s.url, timeout=30) as c:
                h = c.get('/health').json()
                assert h['model']['engine'] == engine and h['model']['version'] == registry[1]['v1']
                # OpenVINO's workers share one compilation with a stream each, so their calls run side by side
                assert (h['model']['workers'], h['model']['engine_streams']) == (2, 2 if engine == 'openvino' else 1)
                info = dict(name=registry[1]['model'], version=registry[1]['v1'], run_id=h['model']['run_id'])
                assert metric(c.get('/metrics').text, 'parkml_model_info', **info, alias='champion', engine=engine) == 1
                jpeg = {'Content-Type': 'image/jpeg'}
                answers[engine] = [c.post('/predict', content=b, headers=jpeg).json() for b, _ in photos]
        finally: s.stop()
    for a, b in zip(answers['onnxruntime'], answers['openvino']):
        assert a['label'] == b['label'] and abs(a['p_dog'] - b['p_dog']) < 1e-4

def test_openapi_fuzzed_by_schemathesis_without_server_errors(server, http, tmp_path):
    spec = http.get('/openapi.json').json()
    assert {'/predict', '/predict/batch', '/feedback', '/health', '/metrics'} <= set(spec['paths'])
    st = Path(sys.executable).parent/'schemathesis'
    # every check but positive_data_acceptance: bytes that fit the schema (any binary) need not be a readable image
    r = subprocess.run([str(st), 'run', f'{server.url}/openapi.json', '--checks', 'all', '--exclude-checks', 'positive_data_acceptance',
                        '--max-examples', '40', '--seed', '7', '--generation-database', 'none', '--no-color', '--workers', '2'],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-6000:]
    assert re.search(r'\b\d+ passed', r.stdout) and not re.search(r'\b\d+ (failed|errors?)\b', r.stdout), r.stdout[-3000:]
    assert 'Traceback' not in server.text_log()
    assert http.get('/health').json()['status'] == 'ok'

def test_alias_switch_while_streaming_has_no_failed_request(server, store, registry, photos):
    runs, info = registry
    data = photos[2][0]
    log, stop = [], threading.Event()
    def stream():
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                t0 = time.time()
                try: r = c.post('/predict', content=data, headers={'Content-Type': 'image/jpeg'}); log.append((t0, time.time(), r.status_code, r.json()))
                except Exception as e: log.append((t0, time.time(), 0, repr(e)))
    threads = [threading.Thread(target=stream) for _ in range(4)]
    for t in threads: t.start()
    try:
        decided(server.url)   # v1's engine, decided in the background since the start: recorded
        time.sleep(1.0)
        set_alias(runs, info['v2'])
        t_switch = time.time()
        # the new version loads beside the old one, which answers meanwhile; its graph was never measured here, and
        # the swap does not wait for that: ONNX Runtime serves it at once, the engine decision follows in the background
        v2_answered = lambda: any(s == 200 and a['model']['version'] == info['v2'] for *_, s, a in log[-20:])
        while time.time() - t_switch < 15 and not v2_answered(): time.sleep(0.1)
        m = httpx.get(server.url + '/health').json()['model']
        assert m['version'] == info['v2'], f"no swap within 15 s: {m}"
        assert (m['engine'], m['engine_decision']['decision']) == ('onnxruntime', 'pending')
        m = decided(server.url)              # measured while serving, then (if it won) the other engine takes over
        assert m['version'] == info['v2'] and m['engine_decision']['decision'] == 'recorded'
        assert m['engine'] == json.loads(Path(m['engine_decision']['record']).read_text())['engine']
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads: t.join()
        set_alias(runs, info['v1'])
    bad = [x for x in log if x[2] != 200]
    assert not bad, bad[:3]
    versions = [a['model']['version'] for *_, a in log]
    assert versions[0] == info['v1'] and info['v2'] in versions and len(log) > 40
    first_v2_done = min(t1 for t0, t1, s, a in log if a['model']['version'] == info['v2'])
    assert all(a['model']['version'] == info['v2'] for t0, t1, s, a in log if t0 > first_v2_done)   # no flapping back
    p = {a['model']['version']: a['p_dog'] for *_, a in log}
    assert abs(p[info['v1']] - p[info['v2']]) > 1e-3                      # the new version really answers
    row = store.get_prediction(next(a['prediction_id'] for *_, a in reversed(log)))
    assert row['model_version'] == info['v2'] and row['run_id'] != log[0][3]['model']['run_id']
    t = time.time()
    while httpx.get(server.url + '/health').json()['model']['version'] != info['v1']:
        assert time.time() - t < 15, 'did not switch back'
        time.sleep(0.2)
    assert httpx.get(server.url + '/health').json()['swaps'] >= 2

def test_retention_keeps_sample_and_labelled_frames(http, store, photos):
    from parkml.predlog import keep_sample
    ids = [http.post('/predict', content=d, params={'camera': 'retention'}).json() for d, _ in photos]
    labelled = ids[5]
    assert http.post('/feedback', json={'prediction_id': labelled['prediction_id'], 'label': photos[5][1]}).status_code == 200
    out = store.apply_retention(now=time.time() + 1, retention_days=0, sample_rate=0.5)
    assert out['removed'] > 0 and out['kept_feedback'] >= 1
    for a in ids:
        row = store.get_prediction(a['prediction_id'])
        keep = a is labelled or keep_sample(a['frame_sha'], 0.5) or row['frame_sha'] in set(store.feedback().frame_sha)
        assert row['frame_retained'] == keep, (a['prediction_id'], keep)
    assert store.get_prediction(labelled['prediction_id'])['frame_retained']

def test_engine_decision_is_recorded_once_and_reused_after_a_restart(registry, tmp_path, photos):
    "engine = auto on a graph never measured: served at once, decided in the background, recorded; a restart reuses it"
    srv = Server(registry[0], tmp_path/'decide', PARKML_ENGINE='auto', PARKML_CACHE=tmp_path/'cache')
    jpeg = {'Content-Type': 'image/jpeg'}
    try:
        m = httpx.get(srv.url + '/health').json()['model']
        assert (m['engine'], m['engine_decision']['decision']) == ('onnxruntime', 'pending')
        assert httpx.post(srv.url + '/predict', content=photos[0][0], headers=jpeg).status_code == 200
        m = decided(srv.url)
        where = Path(m['engine_decision']['record'])
        rec, mtime = json.loads(where.read_text()), where.stat().st_mtime
        assert where.parent.parent == tmp_path/'cache'/'openvino' and m['engine'] == rec['engine']
        assert m['engine_decision']['decided'] == rec['decided']
        assert set(rec['images_per_s']) == {'onnxruntime', 'openvino'}
        srv.stop()
        srv.start()
        m = httpx.get(srv.url + '/health').json()['model']                # at once: the recorded decision
        assert (m['engine'], m['engine_decision']['decision'], m['engine_decision']['decided']) == \
            (rec['engine'], 'recorded', rec['decided'])
        assert httpx.post(srv.url + '/predict', content=photos[1][0], headers=jpeg).status_code == 200
        time.sleep(1.0)
        assert where.stat().st_mtime == mtime and json.loads(where.read_text()) == rec   # not measured again
    finally: srv.stop()

# ---------------------------------------------------------------- durability: kill -9 right after answers

@pytest.mark.parametrize('sync', ['FULL', 'NORMAL'])
def test_kill9_keeps_every_answered_prediction_and_frame(registry, tmp_path, photos, sync):
    "SIGKILL mid-stream loses no answered record, at either predlog_synchronous (NORMAL risks only a power cut)"
    srv = Server(registry[0], tmp_path/'kill', PARKML_PREDLOG_SYNCHRONOUS=sync)
    answered, stop = [], threading.Event()
    def client(k):
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            i = k
            while not stop.is_set():
                data = photos[i % len(photos)][0] + k.to_bytes(2, 'big') + i.to_bytes(4, 'big')   # distinct frames
                i += 8
                try: r = c.post('/predict', content=data, headers={'Content-Type': 'image/jpeg'})
                except httpx.TransportError: return
                if r.status_code == 200: answered.append((r.json(), data))
    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads: t.start()
    t0 = time.time()
    while len(answered) < 60 and time.time() - t0 < 60: time.sleep(0.05)   # enough answers, however busy the machine
    os.kill(srv.proc.pid, signal.SIGKILL)   # mid-stream: requests in flight
    srv.proc.wait(); stop.set()
    for t in threads: t.join()
    assert len(answered) > 50
    st = srv.store()
    try:
        for a, data in answered:
            row = st.get_prediction(a['prediction_id'])
            assert row is not None and row['status'] == 'ok' and row['p_dog'] == pytest.approx(a['p_dog'])
            assert row['frame_retained'] and Path(row['frame_path']).read_bytes() == data
    finally: st.close()
    srv.log.close()

# ---------------------------------------------------------------- API key, and a registry that goes away

def test_api_key_and_serving_on_when_the_registry_is_unreachable(registry, tmp_path, photos):
    runs, info = registry
    port = free_port()
    mlf = subprocess.Popen([sys.executable, '-m', 'mlflow', 'server', '--backend-store-uri', f"sqlite:///{runs}/mlflow.db",
                            '--host', '127.0.0.1', '--port', str(port), '--workers', '1'], start_new_session=True,
                           stdout=open(tmp_path/'mlflow.log', 'w'), stderr=subprocess.STDOUT)
    try:
        t = time.time()
        while True:
            try:
                if httpx.get(f'http://127.0.0.1:{port}/health', timeout=1).status_code == 200: break
            except httpx.TransportError: pass
            assert time.time() - t < 60 and mlf.poll() is None, (tmp_path/'mlflow.log').read_text()[-2000:]
            time.sleep(0.3)
        srv = Server(runs, tmp_path/'keyed', PARKML_API_KEY='s3cret-key', PARKML_TRACKING_URI=f'http://127.0.0.1:{port}',
                     MLFLOW_HTTP_REQUEST_MAX_RETRIES=0, MLFLOW_HTTP_REQUEST_TIMEOUT=3)
        key = {'X-API-Key': 's3cret-key'}
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.get('/health').json()['registry']['ok'] is True          # /health needs no key
            for method, path, kw in [('POST', '/predict', dict(content=photos[0][0])), ('POST', '/predict/batch', dict(content=photos[0][0])),
                                     ('POST', '/feedback', dict(json={'prediction_id': 'x', 'label': 'cat'})),
                                     ('GET', '/metrics', {}), ('GET', '/openapi.json', {})]:
                for headers in ({}, {'X-API-Key': 'wrong'}):
                    r = c.request(method, path, headers=headers, **kw)
                    assert r.status_code == 401 and r.json()['code'] == 'unauthorized', (path, r.text)
            assert c.post('/predict', content=photos[0][0], headers=key).status_code == 200
            assert c.get('/openapi.json', headers=key).json()['components']['securitySchemes']['apiKey']['name'] == 'X-API-Key'
            os.killpg(mlf.pid, signal.SIGKILL); mlf.wait(30)                  # the registry goes away
            t = time.time()
            while c.get('/health').json()['registry']['ok']:
                assert time.time() - t < 20, 'registry failure not noticed'
                time.sleep(0.2)
            h = c.get('/health').json()
            assert h['status'] == 'degraded' and h['registry']['error'] and h['model']['version'] == info['v1']
            r = c.post('/predict', content=photos[6][0], headers=key)         # ... and the service keeps serving
            assert r.status_code == 200 and r.json()['model']['version'] == info['v1']
        srv.stop(); srv.start()                                               # a restart while it is still away
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            h = c.get('/health').json()
            assert h['model']['source'] == 'cache' and h['model']['version'] == info['v1'] and not h['registry']['ok']
            assert 'unreachable' in h['registry']['error']
            assert c.post('/predict', content=photos[6][0], headers=key).status_code == 200
        srv.stop()
    finally:
        if 'srv' in locals(): srv.stop()                                     # also when an assertion failed
        if mlf.poll() is None: os.killpg(mlf.pid, signal.SIGKILL); mlf.wait(30)

def test_a_service_started_for_a_run_stops_when_that_run_dies():
    """`serve(parent_pid=...)` (staging runs and the week start their services so) stops once its parent is gone, even
    a parent killed without cleaning up: here a parent that exits at once, leaving its child to the watch"""
    import psutil
    code = ("import os, subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import sys, time; "
            "from parkml.service import stop_with_parent; stop_with_parent(int(sys.argv[1]), 0.2); time.sleep(120)', "
            "str(os.getpid())]); print(p.pid, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    child = psutil.Process(int(out.stdout.split()[0]))
    try: child.wait(30)
    except psutil.TimeoutExpired:
        child.kill(); raise AssertionError('the orphaned service process was still running after 30 s')

# ---------------------------------------------------------------- hostile clients: keys, formats, floods, slow clients

API_KEY, STAFF_KEY = 'camera-key-0123456789abcdef', 'staff-key-fedcba9876543210'

def _serve_cli(runs, home, host, **env) -> subprocess.CompletedProcess:
    "`parkml serve --host HOST` with only the PARKML_* variables given (no keys unless given)"
    base = {k: v for k, v in os.environ.items() if k not in ('PARKML_API_KEY', 'PARKML_STAFF_KEY')}
    env = {**base, 'PARKML_RUNS': str(runs), 'PARKML_PREDLOG_URI': f"sqlite:///{home}/predlog.db",
           'PARKML_FRAMES_DIR': str(home/'frames'), **env}
    return subprocess.run([str(Path(sys.executable).parent/'parkml'), 'serve', '--host', host, '--port', str(free_port())],
                          env=env, capture_output=True, text=True, timeout=120)

@pytest.mark.parametrize('keys,reason', [({}, 'api_key is not set; staff_key is not set'),
                                         ({'PARKML_API_KEY': 'short'}, 'api_key is shorter than 16 characters'),
                                         ({'PARKML_API_KEY': API_KEY, 'PARKML_STAFF_KEY': API_KEY}, 'staff_key equals api_key')])
def test_serving_beyond_loopback_without_good_keys_is_refused_with_the_reason(registry, tmp_path, keys, reason):
    r = _serve_cli(registry[0], tmp_path, '0.0.0.0', **keys)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert 'refusing to serve on 0.0.0.0' in r.stderr and reason in r.stderr and 'PARKML_STAFF_KEY' in r.stderr
    assert 'Traceback' not in r.stderr + r.stdout and API_KEY not in r.stderr + r.stdout   # no traceback, no key shown
    assert not (tmp_path/'predlog.db').exists()                                           # refused before opening anything

def test_keys_guard_predictions_and_labels_separately(registry, tmp_path, photos):
    srv = Server(registry[0], tmp_path/'keys', PARKML_API_KEY=API_KEY, PARKML_STAFF_KEY=STAFF_KEY)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.get('/health').status_code == 200                                   # open to the watchdog
            for headers in ({}, {'X-API-Key': 'wrong'}, {'X-Staff-Key': STAFF_KEY}):      # the staff key is not a camera key
                r = c.post('/predict', content=photos[0][0], headers=headers)
                assert r.status_code == 401 and r.json()['code'] == 'unauthorized', r.text
            a = c.post('/predict', content=photos[0][0], headers={'X-API-Key': API_KEY}).json()
            label = {'prediction_id': a['prediction_id'], 'label': photos[0][1]}
            for headers in ({}, {'X-API-Key': API_KEY}, {'X-API-Key': API_KEY, 'X-Staff-Key': 'wrong'}):
                r = c.post('/feedback', json=label, headers=headers)
                assert r.status_code == 401 and 'X-Staff-Key' in r.json()['error'], r.text
            with srv.store() as st: assert st.get_prediction(a['prediction_id'])['true_label'] is None   # nothing written
            r = c.post('/feedback', json=label, headers={'X-Staff-Key': STAFF_KEY})
            assert r.status_code == 200, r.text
            with srv.store() as st: assert st.get_prediction(a['prediction_id'])['true_label'] == photos[0][1]
            spec = c.get('/openapi.json', headers={'X-API-Key': API_KEY}).json()
            assert spec['components']['securitySchemes']['staffKey']['name'] == 'X-Staff-Key'
            assert spec['paths']['/feedback']['post']['security'] == [{'staffKey': []}]
    finally: srv.stop()
    assert API_KEY not in srv.text_log() and STAFF_KEY not in srv.text_log()

def test_formats_other_than_jpeg_png_webp_are_refused_and_nothing_is_logged(server, http, store, photos):
    img = Image.open(io.BytesIO(photos[2][0])).convert('RGB')
    refused = {'gif': (encode(img, 'GIF'), 'image/gif'), 'bmp': (encode(img, 'BMP'), 'image/bmp'),
               'tiff': (encode(img, 'TIFF'), 'image/tiff'), 'text': (b'hello, I am a text file\n' * 40, 'text/plain')}
    logged = lambda: {k: v for k, v in store.counts().items() if k != 'telemetry'}   # host samples keep coming
    before, frames = logged(), sorted(Path(server.env['PARKML_FRAMES_DIR']).rglob('*'))
    n0 = metric(http.get('/metrics').text, 'parkml_rejected_inputs_total', reason='unsupported_format')
    sent = 0
    for name, (body, ctype) in refused.items():
        for r in (http.post('/predict', content=body, headers={'Content-Type': 'image/jpeg'}),    # the header lies
                  http.post('/predict', content=body, headers={'Content-Type': 'application/octet-stream'}),
                  http.post('/predict', files={'file': (f'x.{name}', body, ctype)})):
            sent += 1
            e = r.json()
            assert r.status_code == 415 and e['code'] == 'unsupported_format' and e['prediction_id'] is None, (name, r.text)
            assert 'JPEG, PNG and WebP' in e['error']
    assert logged() == before and sorted(Path(server.env['PARKML_FRAMES_DIR']).rglob('*')) == frames
    assert metric(http.get('/metrics').text, 'parkml_rejected_inputs_total', reason='unsupported_format') == n0 + sent
    for fmt in ('PNG', 'WEBP'):   # the other two accepted formats are served, and their frames kept as sent
        a = http.post('/predict', content=encode(img, fmt)).json()
        assert a['label'] in ('cat', 'dog') and store.get_prediction(a['prediction_id'])['frame_path'].endswith(fmt.lower())

def test_overload_gets_503_with_retry_after_and_memory_stays_bounded(registry, tmp_path, photos):
    """Twenty-four clients post 2 MiB frames as fast as they can into a queue of two: the service refuses the surplus
    with 503 + Retry-After before reading it, answers the rest with their records committed, and its memory stays flat"""
    import psutil
    srv = Server(registry[0], tmp_path/'flood', PARKML_QUEUE_MAX=2)
    pad = os.urandom(2 * 2**20)
    frame = lambda k, i: photos[k % len(photos)][0] + pad + k.to_bytes(2, 'big') + i.to_bytes(4, 'big')
    proc, rss, stop, out = psutil.Process(srv.proc.pid), [], threading.Event(), []
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        for i in range(6): assert c.post('/predict', content=frame(99, i)).status_code == 200   # warm up with big frames
    base = proc.memory_info().rss
    def sample():
        while not stop.is_set(): rss.append(proc.memory_info().rss); time.sleep(0.05)
    def client(k):
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            i = 0
            while not stop.is_set():
                r = c.post('/predict', content=frame(k, i)); i += 1
                out.append((r.status_code, r.headers.get('retry-after'), r.json()))
    threads = [threading.Thread(target=sample)] + [threading.Thread(target=client, args=(k,)) for k in range(24)]
    for t in threads: t.start()
    time.sleep(6); stop.set()
    for t in threads: t.join()
    try:
        statuses = [s for s, _, _ in out]
        assert set(statuses) <= {200, 503} and statuses.count(200) >= 10 and statuses.count(503) >= 10, statuses
        assert all(ra == '1' and d['code'] == 'overloaded' for s, ra, d in out if s == 503)
        h = httpx.get(srv.url + '/health').json()
        assert h['queue']['peak'] <= 2 and h['queue']['overloads'] == statuses.count(503) and h['queue']['pending'] == 0
        with srv.store() as st:
            ok = [d['prediction_id'] for s, _, d in out if s == 200]
            assert all(st.get_prediction(p)['status'] == 'ok' for p in ok)         # every acknowledged record is there
            assert st.counts()['predictions'] == len(ok) + 6                      # and nothing else: 503s left no trace
        growth = (max(rss) - base) / 2**20
        print(f"RSS {base / 2**20:.0f} MiB before, peak {max(rss) / 2**20:.0f} MiB; {statuses.count(200)} answered, "
              f"{statuses.count(503)} refused")
        assert growth < 60, f"RSS grew by {growth:.0f} MiB under the flood"         # 24 clients x 2 MiB unbounded: more
    finally: srv.stop()

def _recv_all(s: socket.socket, deadline_s: float) -> tuple[bytes, float | None]:
    "Everything the server sends until it closes the connection (and when that was), or until `deadline_s`"
    got, t0 = b'', time.time()
    s.settimeout(0.2)
    while time.time() - t0 < deadline_s:
        try: chunk = s.recv(65536)
        except socket.timeout: continue
        except ConnectionResetError: return got, time.time() - t0
        if not chunk: return got, time.time() - t0
        got += chunk
    return got, None

def test_slow_clients_are_cut_off_while_others_are_served(registry, tmp_path, photos):
    srv = Server(registry[0], tmp_path/'slow', PARKML_BODY_TIMEOUT_S=2, PARKML_HEADER_TIMEOUT_S=2)
    res, stop = {}, threading.Event()
    def slow_body():
        with socket.create_connection(('127.0.0.1', srv.port), timeout=10) as s:
            s.sendall(b'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 50000\r\n\r\n')
            t0, sent = time.time(), 0
            while time.time() - t0 < 12 and not select.select([s], [], [], 1.0)[0]:   # a byte a second until it answers
                try: s.sendall(photos[0][0][sent:sent + 1])
                except OSError: break
                sent += 1
            res['body'] = (*_recv_all(s, 10), time.time() - t0, sent)
    def slow_headers():
        with socket.create_connection(('127.0.0.1', srv.port), timeout=10) as s:
            s.sendall(b'POST /predict HTTP/1.1\r\nHost: x\r\n')
            t0 = time.time()
            try:
                for b in b'X-Dribble: ' + b'a' * 20:
                    s.sendall(bytes([b])); time.sleep(1)
            except OSError: pass
            res['headers'] = (*_recv_all(s, 5), time.time() - t0)
    def fast():
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            res['fast'] = []
            while not stop.is_set(): res['fast'].append(c.post('/predict', content=photos[1][0]).status_code)
    threads = [threading.Thread(target=f) for f in (slow_body, slow_headers, fast)]
    try:
        for t in threads: t.start()
        threads[0].join(); threads[1].join(); stop.set(); threads[2].join()
        got, closed_after, _, sent = res['body']
        assert got.startswith(b'HTTP/1.1 408'), got[:300]
        body = json.loads(got.split(b'\r\n\r\n', 1)[1])
        assert body['code'] == 'body_timeout' and 'body_timeout_s' in body['error'] and sent <= 6
        assert closed_after is not None, 'the connection was left open after the 408'
        with srv.store() as st: assert st.get_prediction(body['prediction_id'])['error'].startswith('body_timeout')
        got, closed_after, total = res['headers']
        assert got == b'' and closed_after is not None and total < 8, (got[:200], closed_after, total)
        assert len(res['fast']) >= 5 and set(res['fast']) == {200}                # the others were served all along
    finally: srv.stop()
