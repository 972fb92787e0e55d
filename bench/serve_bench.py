"""Serving benchmark: the parkml edge service against MLflow's own `mlflow models serve`, on loopback, driven by real
petpark photos from a separate client process, plus the in-process compute floor.

    .venv/bin/python bench/serve_bench.py [--rounds 3] [--n16 2000] [--n1 400] [--limit 300] [--baseline REF]
    .venv/bin/python bench/serve_bench.py --engines-only --rounds 2 --n16 400 --n1 80

In its own runs folder (default: <runs>/bench_serve) it trains and registers a model once (later runs reuse it) and
logs, also once, an MLflow pyfunc that takes base64 JPEGs and runs the same ONNX graph with ONNX Runtime (2 threads).
It then starts the servers side by side, each with `parkml serve` (uvicorn with the service's limits; engine: the
setting, auto, except the two servers that run each engine, --engine-sync (default FULL), named parkml_onnxruntime and parkml_openvino,
whose ratios to MLflow and to the OpenVINO batch-32 floor are printed against the issue-18 targets): parkml as the
park runs it (API and staff keys set, format check, bounded queue, prediction log with predlog_synchronous=FULL,
frame store and telemetry); the same with predlog_synchronous=NORMAL; parkml with log, frames and telemetry off
(PARKML_PREDLOG_ENABLED=false); with --baseline REF, the code of git commit REF (e.g. the commit before the hostile-
client checks) with NORMAL and no keys, extracted with `git archive`; and `mlflow models serve --env-manager local`
(1 uvicorn worker). It also quantizes the champion once (`parkml quantize`, the configured method, NNCF; alias int8)
and serves that int8 version as parkml_int8 on the engine `auto` picks for the int8 graph itself. Before any server
starts, it prints `auto`'s decision for each graph (measured then if none is recorded for this box, and recorded
beside the graph's compiled blobs, where the servers find it) with its figures. With --engines-only,
only issue 18's servers run: parkml with each engine, the int8 variant, and MLflow (plus the floors, the int8 graph's
among them; --only parkml_openvino, say, leaves out the other float server, --only none both).
--int8-variant NAME:KEY=VALUE,... (repeatable) also serves the int8 variant with settings of its own (e.g.
w1:infer_workers=1,infer_threads=2), and --int8-baseline REF serves it with the code of git commit REF, as parkml_int8
is served (keys, FULL, the same engine), side by side with the code of this checkout.
Each round drives each server at concurrency 1 and 16 from a client process (--driver threads: 16 threads with
http.client and keep-alive connections; --driver asyncio: one thread, 16 keep-alive connections, the HTTP written and
read by hand, about half the client's CPU per request), one photo per request, the API key sent to every parkml
server; each parkml request's photo
gets 8 bytes of its own appended, so that every frame is new to the frame store, as a camera's are; --repeat-frames
sends the photos as they are), rounds interleaved, each starting with the next server, so that background load hits
all servers alike. Reported: predictions/s, p50/p95/p99
latency, errors, each server's peak memory (VmHWM, summed over its processes), the CPU each server (its processes,
user + system) and the client spent per request, the load average, the medians over rounds, and ratios,
among them the cost at c16 of the new checks (baseline vs NORMAL) and of FULL (NORMAL vs FULL).
The floor is decode + preprocess + ONNX in batches of 32 in this process (one session, onnx_threads), and the same
with parkml's layout (infer_workers single-threaded sessions side by side, batches of max_batch).
"""
import argparse, base64, http.client, json, os, shutil, socket, subprocess, sys, tempfile, threading, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- client (runs in its own process)

API_KEY, STAFF_KEY = 'bench-camera-key-0123456789', 'bench-staff-key-9876543210'

def requests_of(kind: str, files: str, distinct: bool) -> tuple:
    "(bodies, path, headers, salt) of a client: JPEG bodies for parkml, base64 JSON for MLflow's pyfunc"
    raw = [Path(p).read_bytes() for p in json.loads(Path(files).read_text())]
    if kind == 'mlflow':
        bodies = [json.dumps({'dataframe_split': {'columns': ['image'], 'data': [[base64.b64encode(b).decode()]]}}).encode() for b in raw]
        path, ctype = '/invocations', 'application/json'
    else:
        bodies, path, ctype = raw, '/predict', 'image/jpeg'
    headers = {'Content-Type': ctype, **({} if kind == 'mlflow' else {'X-API-Key': API_KEY})}
    return bodies, path, headers, os.urandom(4) if distinct and kind != 'mlflow' else None

def summary(lat: list, errors: list, wall: float, cpu: float) -> dict:
    "What a client reports: rate, latency percentiles (ms), errors, and its own CPU seconds over the timed requests"
    ms = np.array(lat) * 1000
    return dict(n=len(lat), wall_s=wall, per_s=len(lat) / wall, p50=float(np.percentile(ms, 50)),
                p95=float(np.percentile(ms, 95)), p99=float(np.percentile(ms, 99)), errors=len(errors),
                first_error=errors[:1], cpu_s=cpu)

def client(url: str, kind: str, concurrency: int, n: int, files: str, distinct: bool = True) -> dict:
    "Post `n` photos, one per request, from `concurrency` threads (http.client, keep-alive); figures of the timed ones"
    host, port = url.split('//')[1].split(':'); port = int(port)
    bodies, path, headers, salt = requests_of(kind, files, distinct)
    lat, errors, lock = [], [], threading.Lock()
    start = threading.Barrier(concurrency + 1)

    def worker(k: int):
        con = http.client.HTTPConnection(host, port, timeout=60)
        def post(i):
            body = bodies[i % len(bodies)] if salt is None else bodies[i % len(bodies)] + salt + i.to_bytes(4, 'big')
            t = time.perf_counter()
            con.request('POST', path, body=body, headers=headers)
            r = con.getresponse(); body = r.read()
            return time.perf_counter() - t, r.status, body
        for i in range(k, k + 3 * concurrency, concurrency): post(i)  # warm-up, untimed
        start.wait()
        mine, bad = [], []
        for i in range(k, n, concurrency):
            dt, status, body = post(i)
            mine.append(dt)
            if status != 200: bad.append((status, body[:200].decode(errors='replace')))
        with lock: lat.extend(mine); errors.extend(bad)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads: t.start()
    start.wait(); t0, c0 = time.perf_counter(), time.process_time()
    for t in threads: t.join()
    return summary(lat, errors, time.perf_counter() - t0, time.process_time() - c0)

def http_request(host: str, port: int, path: str, headers: dict, body: bytes) -> bytes:
    "One keep-alive POST, as bytes on the wire"
    head = ''.join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body

async def http_response(reader) -> tuple:
    "(status, body) of one HTTP/1.1 response (Content-Length or chunked)"
    head = await reader.readuntil(b'\r\n\r\n')
    lines = head.split(b'\r\n')
    fields = {k.strip().lower(): v.strip() for k, _, v in (l.partition(b':') for l in lines[1:] if l)}
    status = int(lines[0].split()[1])
    if b'content-length' in fields: return status, await reader.readexactly(int(fields[b'content-length']))
    body = b''
    while (size := int((await reader.readuntil(b'\r\n')).split(b';')[0], 16)):
        body += (await reader.readexactly(size + 2))[:-2]
    await reader.readuntil(b'\r\n')
    return status, body

def client_asyncio(url: str, kind: str, concurrency: int, n: int, files: str, distinct: bool = True) -> dict:
    """The same requests as `client`, from one thread: `concurrency` keep-alive connections driven by asyncio with the
    HTTP written and read by hand (a fraction of http.client's CPU per request, so the load generator takes less of
    the cores the servers share with it)"""
    import asyncio
    host, port = url.split('//')[1].split(':'); port = int(port)
    bodies, path, headers, salt = requests_of(kind, files, distinct)
    lat, errors = [], []
    def body(i):
        b = bodies[i % len(bodies)]
        return b if salt is None else b + salt + i.to_bytes(4, 'big')
    async def conn(k: int, go: asyncio.Event):
        reader, writer = await asyncio.open_connection(host, port)
        async def post(i):
            t = time.perf_counter()
            writer.write(http_request(host, port, path, headers, body(i)))
            status, answer = await http_response(reader)
            return time.perf_counter() - t, status, answer
        for i in range(k, k + 3 * concurrency, concurrency): await post(i)   # warm-up, untimed
        ready.append(k)
        await go.wait()
        for i in range(k, n, concurrency):
            dt, status, answer = await post(i)
            lat.append(dt)
            if status != 200: errors.append((status, answer[:200].decode(errors='replace')))
        writer.close()
    async def run():
        go = asyncio.Event()
        tasks = [asyncio.create_task(conn(k, go)) for k in range(concurrency)]
        while len(ready) < concurrency: await asyncio.sleep(0.01)
        t0, c0 = time.perf_counter(), time.process_time()
        go.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 1800)
        return summary(lat, errors, time.perf_counter() - t0, time.process_time() - c0)
    ready = []
    return asyncio.run(run())

DRIVERS = dict(threads=client, asyncio=client_asyncio)

def drive(url, kind, concurrency, n, files, distinct=True, driver='threads') -> dict:
    "Run the client (`driver`: threads or asyncio) in a separate process"
    p = subprocess.run([sys.executable, __file__, '--client', url, kind, str(concurrency), str(n), files,
                        str(int(distinct)), driver], capture_output=True, text=True, timeout=1800)
    line = next((l for l in p.stdout.splitlines() if l.startswith('RESULT ')), None)
    if line is None: sys.exit(f"client against {kind} failed:\n{p.stderr[-3000:]}")
    return json.loads(line[7:])

# ---------------------------------------------------------------- the model, the pyfunc, the photos

def prepare(runs: Path, limit: int):
    "Registered model (trained once) and the pyfunc over its ONNX graph (logged once) in `runs`; returns (onnx path, pyfunc uri)"
    os.environ['PARKML_RUNS'] = str(runs)
    from parkml.config import get_settings, ensure_dir
    cfg = get_settings()
    main_cache = Path(os.environ.get('PARKML_EMBED_CACHE', ROOT/'runs'/'cache'))
    if main_cache.is_dir() and not (runs/'cache').exists(): shutil.copytree(main_cache, runs/'cache', ignore=shutil.ignore_patterns('models'))
    from parkml.tracking import mlflow_client, resolve_version, local_onnx
    client = mlflow_client(cfg)
    info = runs/'bench_models.json'
    if info.is_file():
        d = json.loads(info.read_text())
        if 'int8' not in d: d.update(int8_variant(client, cfg)); info.write_text(json.dumps(d))
        return Path(d['onnx']), d['pyfunc'], Path(d['int8'])
    from parkml.train import train_and_register
    print(f"training and registering a model on {limit} images per subset (once) ...", flush=True)
    r = train_and_register(limit=limit, run_name='serve-bench', progress=True)
    client.set_registered_model_alias(cfg.model_name, 'champion', r.version)
    onnx_path = local_onnx(resolve_version('champion', client, cfg), client, cfg)
    pyfunc = log_pyfunc(onnx_path)
    d = dict(onnx=str(onnx_path), pyfunc=pyfunc, version=r.version, **int8_variant(client, cfg))
    info.write_text(json.dumps(d))
    return onnx_path, pyfunc, Path(d['int8'])

def int8_variant(client, cfg) -> dict:
    "The champion's int8 variant (`parkml quantize`, the configured method), registered once under the alias int8"
    from parkml.quantize import quantize_version
    from parkml.tracking import resolve_version, local_onnx
    print(f"quantizing the champion to int8 ({cfg.quantize_method}, {cfg.quantize_calibration_images} train photos; once) ...",
          flush=True)
    r = quantize_version('champion', alias='int8', progress=False)
    print(f"int8 variant: version {r['version']}, {r['reference']}", flush=True)
    return dict(int8=str(local_onnx(resolve_version('int8', client, cfg), client, cfg)), int8_version=r['version'],
                int8_method=r['method'], int8_reference=r['reference'])

PYFUNC = '''
import base64, io
import numpy as np, pandas as pd, onnxruntime as ort
from PIL import Image
import mlflow.pyfunc

class OnnxJpeg(mlflow.pyfunc.PythonModel):
    "base64 JPEGs in column `image` -> p_dog, through the ONNX graph with ONNX Runtime (2 threads)"
    def load_context(self, context):
        opts = ort.SessionOptions(); opts.intra_op_num_threads = 2
        self.sess = ort.InferenceSession(context.artifacts['onnx'], opts, providers=['CPUExecutionProvider'])
        self.size = self.sess.get_inputs()[0].shape[1]
    def predict(self, context, model_input, params=None):
        xs = [np.asarray(Image.open(io.BytesIO(base64.b64decode(s))).convert('RGB').resize((self.size, self.size), Image.BILINEAR), dtype=np.uint8)
              for s in model_input['image']]
        p = self.sess.run(['p_dog'], {'image': np.stack(xs)})[0]
        return pd.DataFrame({'p_dog': p, 'label': np.where(p >= 0.5, 'dog', 'cat')})

mlflow.models.set_model(OnnxJpeg())
'''

def log_pyfunc(onnx_path: Path) -> str:
    "Log the base64-JPEG pyfunc (models from code) with the ONNX graph as an artifact; returns its model URI"
    import mlflow, pandas as pd
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp)/'onnx_jpeg.py'; code.write_text(PYFUNC)
        example = pd.DataFrame({'image': [base64.b64encode(Path(p).read_bytes()).decode() for p in photos(1)]})
        with mlflow.start_run(run_name='serve-bench-pyfunc'):
            info = mlflow.pyfunc.log_model(name='pyfunc', python_model=str(code), artifacts={'onnx': str(onnx_path)},
                                           input_example=example, pip_requirements=['onnxruntime', 'pillow', 'pandas', 'numpy'])
    return info.model_uri

def photos(n: int) -> list:
    "Paths of `n` petpark test-split photos (both classes)"
    from parkml.config import get_settings
    import pandas as pd
    cfg = get_settings()
    m = pd.read_csv(cfg.data/'manifest.csv')
    return [str(cfg.data/p) for p in m[m.split == 'test'].path[:n]]

# ---------------------------------------------------------------- servers

from parkml.central import free_port   # the one port picker (never the same port twice)

def wait_http(url: str, path: str, proc, timeout=180):
    host, port = url.split('//')[1].split(':')
    t = time.time()
    while time.time() - t < timeout:
        if proc.poll() is not None: sys.exit(f"server {url} exited with {proc.returncode}; see its log")
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=2); c.request('GET', path)
            if c.getresponse().status == 200: return
        except OSError: pass
        time.sleep(0.3)
    sys.exit(f"server {url} did not come up in {timeout} s")

SERVE = 'import sys; from parkml.cli import main; sys.exit(main())'   # `parkml serve ...` of whichever parkml is on the path

def start_parkml(runs: Path, name: str, logdir: Path, record: bool = True, sync: str = 'FULL', code: Path = None,
                 engine: str = None, alias: str = None, settings: dict = None, keys: bool = None):
    "`parkml serve` named `name` on a free port: with keys, unless it runs the baseline `code` (a folder with parkml/)"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ('PARKML_API_KEY', 'PARKML_STAFF_KEY', 'PARKML_SETTINGS')}
    env.update({'PARKML_RUNS': str(runs), 'PARKML_PREDLOG_ENABLED': str(record).lower(), 'PARKML_PREDLOG_SYNCHRONOUS': sync,
                'PARKML_PREDLOG_URI': f"sqlite:///{logdir}/{name}.db", 'PARKML_FRAMES_DIR': str(logdir/f'{name}_frames'),
                # the bench model is not approved by anyone; the check of signed approvals runs once per model load, not
                # per request, so leaving it off does not change what is measured
                'PARKML_VERIFIED_ALIASES': ''})
    if engine: env['PARKML_ENGINE'] = engine   # else the setting (auto: the faster on this box, as recorded)
    if alias: env['PARKML_SERVE_ALIAS'] = alias
    env.update({f"PARKML_{k.upper()}": str(v) for k, v in (settings or {}).items()})   # a variant's own settings
    if code is None if keys is None else keys: env.update(PARKML_API_KEY=API_KEY, PARKML_STAFF_KEY=STAFF_KEY)
    env['PYTHONPATH'] = str(code or ROOT)
    proc = subprocess.Popen([sys.executable, '-c', SERVE, 'serve', '--host', '127.0.0.1', '--port', str(port), '--log-level',
                             'warning', *([] if record else ['--no-log'])], env=env, cwd=str(code or ROOT),
                            stdout=open(logdir/f'{name}.log', 'w'), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"; wait_http(url, '/health', proc)
    return name, url, proc

def extract(ref: str, dest: Path) -> Path:
    "The package and settings of git commit `ref` of this repository, in `dest`"
    dest.mkdir(parents=True)
    arch = subprocess.run(['git', '-C', str(ROOT), 'archive', ref, 'parkml', 'settings.ini', 'pyproject.toml'],
                          capture_output=True, check=True).stdout
    subprocess.run(['tar', '-x', '-C', str(dest)], input=arch, check=True)
    return dest

def start_mlflow(runs: Path, uri: str, logdir: Path):
    port = free_port()
    # mlflow starts `uvicorn` by name through bash: the venv's bin must be on PATH even when the venv is not activated
    env = {**os.environ, 'MLFLOW_TRACKING_URI': f"sqlite:///{runs}/mlflow.db",
           'PATH': f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen([sys.executable, '-m', 'mlflow', 'models', 'serve', '-m', uri, '--env-manager', 'local', '-w', '1',
                             '--host', '127.0.0.1', '--port', str(port)], env=env,
                            stdout=open(logdir/'mlflow.log', 'w'), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"; wait_http(url, '/ping', proc)
    return 'mlflow', url, proc

def variant_settings(text: str) -> tuple:
    "('w1', {'infer_workers': '1', ...}) from 'w1:infer_workers=1,...' (an --int8-variant)"
    name, _, kv = text.partition(':')
    return name, dict(item.split('=', 1) for item in kv.split(',') if item)

def tree_cpu_s(pid: int) -> float:
    "CPU seconds (user + system) used so far by a process and its live descendants"
    import psutil
    total = 0.0
    try: procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess: return float('nan')
    for p in procs:
        try: total += sum(p.cpu_times()[:2])
        except psutil.NoSuchProcess: pass
    return total

def tree_peak_mb(pid: int) -> float:
    "Peak resident memory (VmHWM) of a process and its descendants, MiB"
    import psutil
    try: procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess: return float('nan')
    total = 0
    for p in procs:
        try:
            for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                if line.startswith('VmHWM:'): total += int(line.split()[1])
        except OSError: pass
    return total / 1024

# ---------------------------------------------------------------- floor

def floor(onnx_path: Path, paths: list, batch: int, workers: int, threads: int, seconds: float = 8,
          engine: str = 'onnxruntime') -> float:
    "Images/s of decode + preprocess + the engine in batches, in-process, with `workers` models of `threads` threads"
    from parkml.config import get_settings
    from parkml.data import decode_image, preprocess
    from parkml.model import engine_model
    mp = get_settings().max_megapixels
    raw = [Path(p).read_bytes() for p in paths]
    sessions = [engine_model(onnx_path, engine, threads) for _ in range(workers)]
    counts = [0] * workers
    def work(k):
        s, i, t0 = sessions[k], k * batch, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            chunk = [raw[(i + j) % len(raw)] for j in range(batch)]; i += batch * workers
            s.run(np.stack([preprocess(decode_image(b, mp), s.size) for b in chunk]), ['p_dog', 'proj'])
            counts[k] += batch
        counts[k] /= time.perf_counter() - t0
    for s in sessions: s.run(np.zeros((batch, s.size, s.size, 3), np.uint8), ['p_dog', 'proj'])
    ts = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
    for t in ts: t.start()
    for t in ts: t.join()
    return float(sum(counts))

def engine_decisions(graphs: dict, cfg) -> dict:
    """`engine = auto`'s decision for each graph ({name: onnx path}): the recorded one, else measured now (before any
    server starts, so no server measures beside the bench) and recorded, where the servers find it; printed"""
    from parkml.config import file_sha256
    from parkml.model import decide_engine, engine_record_path
    out = {}
    for name, path in graphs.items():
        rec = out[name] = dict(decide_engine(path, cfg), record=str(engine_record_path(file_sha256(path), cfg)))
        speed = ', '.join(f"{e} {v:.1f}" for e, v in rec['images_per_s'].items())
        lone = ', '.join(f"{e} {v:.1f}" for e, v in (rec.get('lone_frames_per_s') or {}).items())
        print(f"engine auto, {name} graph: {rec['engine']} (images/s as served, "
              f"{cfg.infer_workers} x {cfg.infer_threads} thread, batches of {cfg.max_batch}: {speed}; "
              f"lone frames/s: {lone}; decided {rec['decided']}, recorded in {rec['record']})", flush=True)
    return out

def commit_floor(logdir: Path, sync: str, paths: list, batch: int = 16, seconds: float = 6) -> float:
    "Records/s the prediction log commits in groups of `batch`, each with a new frame, at PRAGMA synchronous `sync`"
    from parkml.predlog import SQLiteStore, new_prediction_id
    st = SQLiteStore(logdir/f'floor_{sync}.db', logdir/f'floor_{sync}_frames', synchronous=sync)
    raw, proj = [Path(p).read_bytes() for p in paths[:64]], np.zeros(16, np.float32)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        now = time.time()
        st.log_predictions([dict(id=new_prediction_id(now), ts=now, received=now, camera='bench', model_name='m',
                                 model_version='1', run_id='r', alias='champion', status='ok', label='cat', p_dog=0.1,
                                 latency_ms=1.0, proj=proj, frame=raw[(n + k) % len(raw)] + os.urandom(8), frame_ext='jpg')
                            for k in range(batch)])
        n += batch
    rate = n / (time.perf_counter() - t0)
    st.close()
    return rate

# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', default=None, help='runs folder of the benchmark (default: <runs>/bench_serve)')
    ap.add_argument('--limit', type=int, default=300, help='images per subset for the training run (first time only)')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--n16', type=int, default=2000, help='timed requests per measurement at concurrency 16')
    ap.add_argument('--n1', type=int, default=400, help='timed requests per measurement at concurrency 1')
    ap.add_argument('--photos', type=int, default=600)
    ap.add_argument('--no-mlflow', action='store_true')
    ap.add_argument('--baseline', default=None, help='git commit whose parkml runs side by side, without keys (the cost of the checks)')
    ap.add_argument('--repeat-frames', action='store_true', help='send the photos as they are (frames repeat in the frame store)')
    ap.add_argument('--engines-only', action='store_true',
                    help='only the servers of issue 18: parkml with each engine, the int8 variant, mlflow (and floors)')
    ap.add_argument('--engine-sync', default='FULL', choices=['FULL', 'NORMAL'],
                    help='predlog_synchronous of the servers that run each engine and the int8 variant (FULL: the default setting)')
    ap.add_argument('--int8-variant', action='append', default=[], metavar='NAME:KEY=VALUE,...',
                    help='also serve the int8 variant with these settings (e.g. w1:infer_workers=1,infer_threads=2); '
                         'repeatable')
    ap.add_argument('--int8-baseline', default=None, metavar='REF',
                    help='also serve the int8 variant with the code of git commit REF, as parkml_int8 is served')
    ap.add_argument('--only', type=lambda t: t.split(','), default=None,
                    help='with --engines-only: of parkml_onnxruntime and parkml_openvino, serve only these (commas)')
    ap.add_argument('--driver', default='threads', choices=list(DRIVERS),
                    help='load generator: threads (16 threads with http.client) or asyncio (one thread, raw HTTP)')
    ap.add_argument('--client', nargs=7, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.client:
        url, kind, c, n, files, distinct, driver = a.client
        print('RESULT ' + json.dumps(DRIVERS[driver](url, kind, int(c), int(n), files, distinct == '1'))); return

    from parkml.config import get_settings
    runs = Path(a.runs or get_settings().runs/'bench_serve').resolve(); runs.mkdir(parents=True, exist_ok=True)
    onnx_path, pyfunc, int8_path = prepare(runs, a.limit)
    cfg = get_settings()
    paths = photos(a.photos)
    logdir = Path(tempfile.mkdtemp(prefix='serve_bench_'))
    files = logdir/'photos.json'; files.write_text(json.dumps(paths))
    print(f"model {onnx_path}\npyfunc {pyfunc}\nlogs and stores of this run: {logdir}", flush=True)

    decisions = engine_decisions(dict(float=onnx_path, int8=int8_path), get_settings(runs=str(runs)))
    servers = [] if a.engines_only else [start_parkml(runs, 'parkml', logdir),
                                         start_parkml(runs, 'parkml_normal', logdir, sync='NORMAL'),
                                         start_parkml(runs, 'parkml_nolog', logdir, record=False)]
    from parkml.model import ENGINES
    servers += [start_parkml(runs, f'parkml_{e}', logdir, sync=a.engine_sync, engine=e) for e in ENGINES if not
                (a.only and f'parkml_{e}' not in a.only)]
    int8_engine = decisions['int8']['engine']   # auto: decided for the int8 graph itself
    servers.append(start_parkml(runs, 'parkml_int8', logdir, sync=a.engine_sync, alias='int8', engine=int8_engine))
    variants = dict(variant_settings(v) for v in a.int8_variant)
    servers += [start_parkml(runs, f'parkml_int8_{v}', logdir, sync=a.engine_sync, alias='int8', engine=int8_engine,
                             settings=kv) for v, kv in variants.items()]
    if a.int8_baseline:   # the int8 variant served by the code of another commit, as parkml_int8 is served
        code = extract(a.int8_baseline, logdir/'int8_baseline_code')
        servers.append(start_parkml(runs, 'parkml_int8_base', logdir, sync=a.engine_sync, alias='int8',
                                    engine=int8_engine, code=code, keys=True))
    if a.baseline:
        servers.append(start_parkml(runs, 'baseline', logdir, sync='NORMAL', code=extract(a.baseline, logdir/'baseline_code')))
    if not a.no_mlflow: servers.append(start_mlflow(runs, pyfunc, logdir))
    res = {name: {1: [], 16: []} for name, _, _ in servers}
    try:
        for r in range(a.rounds):
            for name, url, proc in servers[r % len(servers):] + servers[:r % len(servers)]:   # each round starts elsewhere
                for c, n in ((1, a.n1), (16, a.n16)):
                    cpu0 = tree_cpu_s(proc.pid)
                    out = drive(url, 'mlflow' if name == 'mlflow' else 'parkml', c, n, str(files), not a.repeat_frames,
                                a.driver)
                    out['server_cpu_ms'] = 1000 * (tree_cpu_s(proc.pid) - cpu0) / (n + 3 * c)   # with the warm-up
                    out['client_cpu_ms'] = 1000 * out['cpu_s'] / out['n']
                    out['load'] = os.getloadavg()[0]
                    res[name][c].append(out)
                    print(f"round {r + 1} {name:12} c={c:2} {out['per_s']:7.1f}/s p50 {out['p50']:6.2f} ms p95 {out['p95']:6.2f} "
                          f"p99 {out['p99']:6.2f} CPU ms/request server {out['server_cpu_ms']:5.2f} client "
                          f"{out['client_cpu_ms']:4.2f} load {out['load']:4.1f} errors {out['errors']} "
                          f"{out['first_error'] or ''}",
                          flush=True)
        peaks = {name: tree_peak_mb(proc.pid) for name, _, proc in servers}
    finally:
        for name, url, proc in servers:
            if name == 'mlflow':
                import signal
                try: os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError: pass
            else: proc.terminate()
        for _, _, proc in servers: proc.wait(60)

    print("floor: decode + preprocess + ONNX in-process ...", flush=True)
    floors = {f"floor batch 32, 1 session x {cfg.onnx_threads} threads": floor(onnx_path, paths, 32, 1, cfg.onnx_threads),
              f"floor batch {cfg.max_batch}, {cfg.infer_workers} sessions x {cfg.infer_threads} thread": floor(onnx_path, paths, cfg.max_batch, cfg.infer_workers, cfg.infer_threads)}
    floors[f"floor openvino batch 32, 1 x {cfg.onnx_threads} threads"] = floor(onnx_path, paths, 32, 1, cfg.onnx_threads,
                                                                               engine='openvino')
    floors[f"floor int8 {int8_engine} batch 32, 1 x {cfg.onnx_threads} threads"] = floor(int8_path, paths, 32, 1,
                                                                                      cfg.onnx_threads, engine=int8_engine)

    commits = {s: commit_floor(logdir, s, paths) for s in ('NORMAL', 'FULL')}
    from parkml.predlog import open_store
    logged = next(k for k in ('parkml', 'parkml_onnxruntime', 'parkml_int8') if k in res)
    st = open_store(f"sqlite:///{logdir}/{logged}.db", logdir/f'{logged}_frames')
    counts = st.counts(); st.close()
    answered = sum(o['n'] - o['errors'] for c in (1, 16) for o in res[logged][c])

    med = lambda name, c, k: float(np.median([o[k] for o in res[name][c]]))
    print(f"\nmedians over {a.rounds} rounds; {a.n16} requests at concurrency 16, {a.n1} at concurrency 1; one photo per request")
    print(f"{'server':34} {'pred/s c16':>10} {'p50 c16':>8} {'p95 c16':>8} {'p99 c16':>8} {'pred/s c1':>9} {'p50 c1':>7} {'p95 c1':>7} {'p99 c1':>7} {'errors':>6} {'peak MB':>8}")
    labels = dict(parkml='parkml (checks, log FULL)', parkml_normal='parkml (checks, log NORMAL)',
                  parkml_nolog='parkml (no log, frames, telemetry)', baseline=f"parkml @{a.baseline} (NORMAL)",
                  mlflow='mlflow models serve (pyfunc)', **{f'parkml_{e}': f'parkml {e} (checks, {a.engine_sync})' for e in ENGINES},
                  parkml_int8=f'parkml int8 {int8_engine} (checks, {a.engine_sync})',
                  **{f'parkml_int8_{v}': f'parkml int8 {v}' for v in variants},
                  **({'parkml_int8_base': f'parkml int8 @{a.int8_baseline}'} if a.int8_baseline else {}))
    for name in res:
        errs = sum(o['errors'] for c in (1, 16) for o in res[name][c])
        print(f"{labels[name]:34} {med(name, 16, 'per_s'):10.1f} {med(name, 16, 'p50'):8.2f} {med(name, 16, 'p95'):8.2f} {med(name, 16, 'p99'):8.2f} "
              f"{med(name, 1, 'per_s'):9.1f} {med(name, 1, 'p50'):7.2f} {med(name, 1, 'p95'):7.2f} {med(name, 1, 'p99'):7.2f} {errs:6d} {peaks[name]:8.0f}")
    print(f"\nCPU ms per request at c16 (server: its processes, warm-up included; client: {a.driver}, timed requests)")
    for name in res:
        print(f"{labels[name]:34} server {med(name, 16, 'server_cpu_ms'):6.2f}  client {med(name, 16, 'client_cpu_ms'):5.2f}")
    print(f"load average (1 min) at the end of each measurement: "
          f"{min(o['load'] for v in res.values() for c in v.values() for o in c):.1f}-"
          f"{max(o['load'] for v in res.values() for c in v.values() for o in c):.1f}")
    for k, v in floors.items(): print(f"{k:60} {v:7.1f} images/s")
    for k, v in commits.items(): print(f"{'prediction log commits in groups of 16, new frames, ' + k:60} {v:7.1f} records/s")
    print("\nratios (targets in brackets)")
    ov_floor = floors[f"floor openvino batch 32, 1 x {cfg.onnx_threads} threads"]
    print(f"  engine auto on this box: {decisions['float']['engine']} for the float graph, "
          f"{int8_engine} for the int8 graph (images/s float {decisions['float']['images_per_s']}, "
          f"int8 {decisions['int8']['images_per_s']})")
    i8_floor = floors[f"floor int8 {int8_engine} batch 32, 1 x {cfg.onnx_threads} threads"]
    int8_servers = ['parkml_int8', *[f'parkml_int8_{v}' for v in variants], 'parkml_int8_base']
    for n in [k for k in [f'parkml_{e}' for e in ENGINES] + int8_servers if k in res]:
        if 'mlflow' in res:
            print(f"  {n:19} / mlflow, pred/s at c16:         {med(n, 16, 'per_s') / med('mlflow', 16, 'per_s'):.2f}  [>= 2.0]")
            print(f"  {n:19} p50 at c1 / mlflow's:            {med(n, 1, 'p50') / med('mlflow', 1, 'p50'):.2f}  [<= 0.7]")
        print(f"  {n:19} c16 / OpenVINO f32 batch-32 floor: {med(n, 16, 'per_s') / ov_floor:.2f}  [>= 0.75]")
        if n.startswith('parkml_int8'):
            print(f"  {n:19} c16 / its own graph's floor:      {med(n, 16, 'per_s') / i8_floor:.2f}  [>= 0.75]")
        print(f"  {n:19} peak memory:                     {peaks[n]:.0f} MB  [<= {577 * 1.1:.0f}]")
    if a.engines_only:
        out = dict(results=res, peaks_mb=peaks, floors=floors, int8_engine=int8_engine, store=counts, answered=answered,
                   engine_decisions=decisions)
        (runs/'serve_bench_results.json').write_text(json.dumps(out, indent=1))
        print(f"raw results: {runs/'serve_bench_results.json'}")
        return
    p16 = med('parkml', 16, 'per_s')
    if 'mlflow' in res:
        print(f"  parkml / mlflow, pred/s at c16:                 {p16 / med('mlflow', 16, 'per_s'):.2f}  [>= 1.30]")
        print(f"  parkml p50 at c1 vs mlflow p50 at c1:           {med('parkml', 1, 'p50'):.2f} vs {med('mlflow', 1, 'p50'):.2f} ms  [parkml <= mlflow]")
    for k, v in floors.items(): print(f"  parkml c16 / {k[6:]:50} {p16 / v:.2f}  [>= 0.80]")
    n16 = med('parkml_normal', 16, 'per_s')
    print(f"  cost of log+frames+telemetry (NORMAL) at c16:   {100 * (1 - n16 / med('parkml_nolog', 16, 'per_s')):.1f}%  [< 10%]")
    print(f"  cost of log+frames+telemetry at c1 (p50):       {med('parkml_normal', 1, 'p50') - med('parkml_nolog', 1, 'p50'):+.2f} ms")
    print(f"  cost of synchronous=FULL vs NORMAL at c16:      {100 * (1 - p16 / n16):.1f}%")
    print(f"  cost of synchronous=FULL at c1 (p50):           {med('parkml', 1, 'p50') - med('parkml_normal', 1, 'p50'):+.2f} ms")
    if 'baseline' in res:
        b16 = med('baseline', 16, 'per_s')
        print(f"  cost of keys+format check+queue at c16:         {100 * (1 - n16 / b16):.1f}%  (NORMAL vs @{a.baseline})")
        print(f"  cost of checks and FULL together at c16:        {100 * (1 - p16 / b16):.1f}%  [< 10%]")
    print(f"\nprediction log of the logged server: {counts['predictions']} predictions for {answered} answered timed requests "
          f"(+ warm-up), {counts['frames']} distinct frames, {counts['telemetry']} telemetry samples")
    out = dict(results=res, peaks_mb=peaks, floors=floors, commits=commits, store=counts, answered=answered,
               engine_decisions=decisions)
    (runs/'serve_bench_results.json').write_text(json.dumps(out, indent=1))
    print(f"raw results: {runs/'serve_bench_results.json'}")

if __name__ == '__main__': main()
