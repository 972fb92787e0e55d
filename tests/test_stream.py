"""Stream mode (parkml.stream) with the service core and a registered model: a video file made here from real petpark
photos, a folder, an MJPEG stream over HTTP that stalls, and sources that never answer."""
import http.server, logging, socket, socketserver, threading, time
from pathlib import Path
import cv2, numpy as np, pandas as pd, pytest
from test_service import service_registry, free_port

@pytest.fixture(scope='module')
def env(tmp_path_factory):
    """A started Service on the session's registered model, with its own prediction log. The stream is the subject here,
    not approvals (tests/test_edge_approval.py): the alias is served without signed proofs (verified_aliases empty)"""
    runs, info = service_registry(tmp_path_factory)
    from parkml.config import get_settings
    from parkml.predlog import open_store
    from parkml.pipeline import Service
    home = tmp_path_factory.mktemp('stream')
    cfg = get_settings(runs=str(runs), stream_backoff_s=0.05, stream_backoff_max_s=0.2, stream_timeout_s=1.5,
                       verified_aliases='')
    store = open_store(f"sqlite:///{home}/predlog.db", home/'frames')
    svc = Service('champion', store, cfg).start()
    yield dict(svc=svc, store=store, info=info, cfg=cfg, home=home)
    svc.stop(); store.close()

@pytest.fixture(scope='module')
def photos(env):
    "Ten cat then ten dog test-split photos as BGR arrays of 160x120, with their labels"
    cfg = env['cfg']
    m = pd.read_csv(cfg.data/'manifest.csv')
    rows = m[m.split == 'test'].groupby('label').head(10).sort_values('label')
    return [(cv2.resize(cv2.imread(str(cfg.data/p)), (160, 120)), l) for p, l in zip(rows.path, rows.label)]

@pytest.fixture(scope='module')
def clip(env, photos):
    "A 4-second MJPG video at 10 fps made with OpenCV: 2 s of cats, then 2 s of dogs (each photo for 2 frames)"
    path = env['home']/'gate.avi'
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10, (160, 120))
    assert w.isOpened()
    for img, _ in photos:
        for _ in range(2): w.write(img)
    w.release()
    return path

def test_video_file_is_classified_at_the_rate_and_logged_like_the_service(env, clip):
    from parkml.stream import watch
    out = watch(clip, rate=5, camera='gate-cam', service=env['svc'], progress=False)
    assert out['kind'] == 'file' and out['stopped'] == 'end of source' and out['reconnects'] == 0
    assert out['frames'] == 20 and out['ok'] == 20 and out['rejected'] == 0          # 4 s at 5 frames/s
    rows = env['store'].predictions(camera='gate-cam')
    assert len(rows) == 20 and (rows.status == 'ok').all() and (rows.model_version == env['info']['v1']).all()
    truth = ['cat'] * 10 + ['dog'] * 10                     # frame k shows photo k (two video frames per photo, 5 of 10 per s)
    assert (rows.label.values == np.array(truth)).sum() >= 17
    assert out['labels'] == rows.label.value_counts().to_dict()
    for pid in rows.id[:3]:
        row = env['store'].get_prediction(pid)
        assert row['frame_retained'] and Path(row['frame_path']).read_bytes()[:3] == b'\xff\xd8\xff'   # JPEG frames kept
        assert row['proj'].shape == (16,) and row['width'] == 160 and row['height'] == 120

def test_a_file_that_ends_is_reopened_when_followed(env, clip, caplog):
    from parkml.stream import watch
    with caplog.at_level(logging.WARNING, logger='parkml.stream'):
        out = watch(clip, rate=5, camera='loop-cam', follow=True, max_frames=30, service=env['svc'], progress=False)
    assert out['frames'] == 30 and out['ok'] == 30 and out['reconnects'] == 1 and out['stopped'] == '30 frames'
    assert any('stalled or ended after 20 frames' in r.message and 'reconnecting in' in r.message for r in caplog.records)
    assert len(env['store'].predictions(camera='loop-cam')) == 30

def test_folder_of_images_keeps_original_bytes_and_logs_bad_files(env, tmp_path):
    from parkml.stream import watch
    cfg = env['cfg']
    m = pd.read_csv(cfg.data/'manifest.csv')
    originals = [(cfg.data/p).read_bytes() for p in m.path[:4]]
    for i, b in enumerate(originals): (tmp_path/f'{i:03d}.jpg').write_bytes(b)
    (tmp_path/'004.jpg').write_bytes(b'this is not a photo')
    (tmp_path/'notes.txt').write_text('ignored: not an image file name')
    out = watch(tmp_path, camera='dropbox', service=env['svc'], progress=False)
    assert out['kind'] == 'folder' and out['frames'] == 5 and out['ok'] == 4 and out['rejected'] == 1
    rows = env['store'].predictions(camera='dropbox')
    assert sorted(rows.status) == ['ok'] * 4 + ['rejected'] and rows[rows.status == 'rejected'].error.iloc[0].startswith('not_an_image')
    kept = {Path(env['store'].get_prediction(i)['frame_path']).read_bytes() for i in rows[rows.status == 'ok'].id}
    assert kept == set(originals)

class _MJPEG(http.server.BaseHTTPRequestHandler):
    "An MJPEG camera over HTTP that sends `n` frames per connection, then stalls (keeps the connection, sends nothing)"
    frames, n, connections = [], 6, 0
    def do_GET(self):
        type(self).connections += 1
        self.send_response(200)
        self.send_header('Content-Type', 'multipart/x-mixed-replace; boundary=frame'); self.end_headers()
        try:
            for f in self.frames[:self.n]:
                self.wfile.write(b'--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n' % (len(f), f))
                self.wfile.flush(); time.sleep(0.1)
            time.sleep(20)
        except OSError: pass
    def log_message(self, *a): pass

def test_stalled_stream_is_reconnected_with_backoff(env, photos, caplog):
    from parkml.stream import watch
    _MJPEG.frames = [cv2.imencode('.jpg', img)[1].tobytes() for img, _ in photos]
    srv = socketserver.ThreadingTCPServer(('127.0.0.1', 0), _MJPEG); srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f'http://127.0.0.1:{srv.server_address[1]}/live.mjpg'
    try:
        t = time.time()
        with caplog.at_level(logging.WARNING, logger='parkml.stream'):
            out = watch(url, rate=20, camera='mjpeg-cam', max_frames=8, service=env['svc'], progress=False)
    finally: srv.shutdown(); srv.server_close()
    assert out['kind'] == 'url' and out['frames'] == 8 and out['ok'] == 8 and out['stopped'] == '8 frames'
    assert out['reconnects'] >= 1 and _MJPEG.connections >= 2 and time.time() - t < 30
    assert any('stalled or ended' in r.message for r in caplog.records)
    assert len(env['store'].predictions(camera='mjpeg-cam')) == 8

@pytest.mark.parametrize('source', ['http://127.0.0.1:{port}/live.mjpg', '7'])
def test_unreachable_source_gives_up_with_a_clear_message(env, source, caplog):
    from parkml.stream import watch, SourceError
    source = source.format(port=free_port())
    t = time.time()
    with caplog.at_level(logging.WARNING, logger='parkml.stream'), pytest.raises(SourceError) as e:
        watch(source, max_retries=2, service=env['svc'], progress=False)
    assert 'gave up' in str(e.value) and source in str(e.value) and 'cannot open' in str(e.value)
    assert sum('reconnecting in' in r.message for r in caplog.records) == 2 and time.time() - t < 20

def test_bad_sources_are_refused_up_front(env):
    from parkml.stream import watch, SourceError
    with pytest.raises(SourceError, match='neither a camera index'): watch('/no/such/clip.mp4', service=env['svc'])
    with pytest.raises(ValueError, match='rate must be positive'): watch(env['home'], rate=-1, service=env['svc'])

def test_parkml_watch_command_logs_the_clip_and_refuses_a_missing_source(env, clip):
    import json, os, subprocess, sys
    exe = str(Path(sys.executable).parent/'parkml')
    home = env['home']
    e = {**os.environ, 'PARKML_RUNS': str(env['cfg'].runs), 'PARKML_PREDLOG_URI': f"sqlite:///{home}/cli-predlog.db",
         'PARKML_FRAMES_DIR': str(home/'cli-frames'), 'PARKML_VERIFIED_ALIASES': ''}
    r = subprocess.run([exe, 'watch', str(clip), '--rate', '5', '--camera', 'cli-cam', '--alias', 'champion', '--quiet'],
                       capture_output=True, text=True, env=e, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout[r.stdout.index('{'):])
    assert out['frames'] == 20 and out['ok'] == 20 and out['camera'] == 'cli-cam'
    from parkml.predlog import open_store
    st = open_store(e['PARKML_PREDLOG_URI'], e['PARKML_FRAMES_DIR'])
    try: assert len(st.predictions(camera='cli-cam')) == 20
    finally: st.close()
    r = subprocess.run([exe, 'watch', str(home/'missing.avi'), '--quiet'], capture_output=True, text=True, env=e, timeout=120)
    assert r.returncode == 2 and 'missing.avi' in r.stderr and 'Traceback' not in r.stderr
