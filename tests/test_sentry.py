"""The sentry as the park runs it: `parkml serve` on loopback with a model trained on real photos, `parkml sentry`
beside it on the capture clock (frames carry capture times one second apart, sent faster than real time), and a
webhook receiver for its alerts. Each test has its own camera, day, sentry state and alert store."""
import io, os, signal, subprocess, sys, time
from pathlib import Path
import httpx, pandas as pd, pytest
from PIL import Image
from test_service import free_port, service_registry, module_server
from receivers import Receiver
from parkml.wait import wait_for

PARKML = str(Path(sys.executable).parent/'parkml')

@pytest.fixture(scope='module')
def registry(tmp_path_factory): return service_registry(tmp_path_factory)

server = module_server('sentry-server')

@pytest.fixture(scope='module')
def holdout():
    "Paths and hashes of 200 holdout photos (never trained on)"
    from parkml.data import read_imageset, assign_splits
    hold = assign_splits(read_imageset()).df.query("subset == 'holdout'")
    return hold.sample(200, random_state=1).reset_index(drop=True)

def frames(pool, condition=None, severity=2):
    from parkml.simulate import frame_bytes
    return [frame_bytes(p, condition, severity, int(s[:8], 16)) for p, s in zip(pool.path, pool.sha)]

@pytest.fixture(scope='module')
def clean(holdout): return frames(holdout)

class Sentry:
    "`parkml sentry --clock capture` in its own process with its own state and alert store, alerting to `hook`"
    def __init__(self, server, runs, home: Path, hook: str, **env):
        self.port, self.home = free_port(), home
        self.env = {**os.environ, 'PARKML_RUNS': str(runs), 'PARKML_PREDLOG_URI': server.env['PARKML_PREDLOG_URI'],
                    'PARKML_FRAMES_DIR': server.env['PARKML_FRAMES_DIR'],
                    'PARKML_ALERTS_URI': f"sqlite:///{home}/alerts.db",
                    'PARKML_SENTRY_STATE_DIR': str(home/'sentry'), 'PARKML_ALERT_WEBHOOK_URL': hook,
                    'PARKML_SENTRY_CHECK_S': '5', 'PARKML_SENTRY_POLL_S': '0.2', 'PARKML_SENTRY_SETTLE_S': '0.3',
                    'PARKML_CPU_MAX_PCT': '100', **{k: str(v) for k, v in env.items()}}
        self.start()

    def start(self):
        self.log = open(self.home/'sentry.log', 'a')
        self.proc = subprocess.Popen([PARKML, 'sentry', '--clock', 'capture', '--port', str(self.port), '--quiet'],
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        def answers():
            assert self.proc.poll() is None, (self.home/'sentry.log').read_text()[-3000:]
            return httpx.get(self.health_url, timeout=1).status_code == 200
        wait_for(answers, 60, 'the sentry answering /health', every=0.1, catch=httpx.TransportError)

    @property
    def health_url(self): return f"http://127.0.0.1:{self.port}/health"
    def health(self): return httpx.get(self.health_url, timeout=5).json()

    def wait_frames(self, camera, n, timeout=60):
        "Wait until the sentry has read `n` frames of `camera`"
        wait_for(lambda: (self.health()['cameras'].get(camera) or {}).get('frames', 0) >= n, timeout,
                 f"the sentry reading {n} frames of {camera}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self.log.close()
        return self.proc.returncode

def send(server, data, camera, t0):
    "POST each frame with capture times one second apart from `t0`; returns the next capture time"
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for i, b in enumerate(data):
            r = c.post(f'/predict?camera={camera}&ts={t0 + i:.3f}', content=b,
                       headers={'Content-Type': 'application/octet-stream'})
            assert r.status_code == 200, r.text
    return t0 + len(data)

def day(d: str) -> float: return pd.Timestamp(f'{d} 09:00', tz='UTC').timestamp()

@pytest.fixture
def watch(server, registry, tmp_path):
    "A receiver and a started sentry; stopped after the test"
    r = Receiver()
    made = []
    def start(**env):
        made.append(Sentry(server, registry[0], tmp_path, r.url, **env))
        return made[-1]
    yield r, start
    for s in made:
        if s.proc.poll() is None: s.stop()
    r.stop()

def got(receiver, rule=None):
    "(rule, state) of each alert the webhook received (of `rule` only, when given)"
    return [(x['rule'], x['state']) for x in receiver.got if rule is None or x['rule'] == rule]

# ---------------------------------------------------------------- the tests

def test_frozen_camera_alerts_once_and_resolves(server, clean, watch):
    r, start = watch
    s = start()
    t = send(server, clean[:40], 'gate-frozen', day('2026-05-04'))
    onset = t
    t = send(server, [clean[40]] * 50, 'gate-frozen', t)
    t = send(server, clean[41:81], 'gate-frozen', t)
    s.wait_frames('gate-frozen', 130)
    wait_for(lambda: len(got(r)) >= 2, 30, 'two alerts')
    assert got(r) == [('sentry_frozen_camera', 'open'), ('sentry_frozen_camera', 'resolved')], got(r)
    raised = pd.Timestamp(r.got[0]['evidence']['clock']).timestamp()
    assert raised - onset <= 21 + 5 + 1, raised - onset          # frozen_max_frames + one check interval, at 1 frame/s
    assert r.got[0]['camera'] == 'gate-frozen' and r.got[1]['state_by'] == 'sentry'

def test_fog_raises_drift(server, holdout, clean, watch):
    r, start = watch
    s = start()
    t = send(server, clean[:40], 'gate-fog', day('2026-05-05'))
    fog = frames(holdout.iloc[40:200], 'fog', 2)
    send(server, fog, 'gate-fog', t)
    s.wait_frames('gate-fog', 200)
    wait_for(lambda: ('sentry_drift', 'open') in got(r), 30, 'a drift alert')
    a = next(x for x in r.got if x['rule'] == 'sentry_drift')
    assert a['camera'] == 'gate-fog' and pd.Timestamp(a['evidence']['clock']).timestamp() - t <= 200
    assert a['evidence']['daily_tests']['summary'].startswith('DRIFT'), a['evidence']

def test_latency_spike_raises_and_clears(server, holdout, clean, watch):
    r, start = watch
    s = start(PARKML_SENTRY_PERF_WINDOW_S='20')
    t = send(server, clean[:30], 'gate-slow', day('2026-05-06'))
    big = []
    for p in holdout.path[30:42]:   # 4000x3000 PNGs: the service takes about 0.4 s to decode each (p95 limit 250 ms)
        b = io.BytesIO()
        Image.open(p).convert('RGB').resize((4000, 3000)).save(b, 'PNG')
        big.append(b.getvalue())
    t = send(server, big, 'gate-slow', t)
    send(server, clean[60:105], 'gate-slow', t)
    s.wait_frames('gate-slow', 87)
    wait_for(lambda: len(got(r, 'sentry_latency_p95')) >= 2, 30, 'two latency alerts')
    assert got(r, 'sentry_latency_p95') == [('sentry_latency_p95', 'open'), ('sentry_latency_p95', 'resolved')]
    assert r.got[0]['evidence']['statistic'] > 250

def test_clean_stream_raises_nothing(server, clean, watch):
    r, start = watch
    s = start()
    send(server, clean[:150], 'gate-clean', day('2026-05-07'))
    s.wait_frames('gate-clean', 150)
    time.sleep(1)
    h = s.health()
    assert r.got == [] and h['status'] == 'ok' and h['open'] == [], (got(r), h['open'])
    assert h['cameras']['gate-clean']['distinct'] == 150 and h['checks'] >= 25
    m = httpx.get(s.health_url.replace('/health', '/metrics')).text
    assert 'parkml_sentry_frames_total{camera="gate-clean"} 150.0' in m

def test_restart_resumes_without_realerting(server, clean, watch):
    r, start = watch
    s = start()
    t = send(server, clean[:30], 'gate-restart', day('2026-05-08'))
    t = send(server, [clean[30]] * 40, 'gate-restart', t)
    s.wait_frames('gate-restart', 70)
    wait_for(lambda: got(r) == [('sentry_frozen_camera', 'open')], 30, 'a frozen camera alert')
    assert s.stop() == 0
    t = send(server, [clean[30]] * 20, 'gate-restart', t)      # still frozen while the sentry is down
    s.start()
    t = send(server, clean[31:71], 'gate-restart', t)
    s.wait_frames('gate-restart', 130)                         # every frame read once: 130, not more
    wait_for(lambda: len(got(r)) >= 2, 30, 'two alerts')
    time.sleep(1)
    assert got(r) == [('sentry_frozen_camera', 'open'), ('sentry_frozen_camera', 'resolved')], got(r)
    assert s.health()['cameras']['gate-restart']['frames'] == 130
