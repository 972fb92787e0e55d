"""Where a request's time goes in the parkml service, at concurrency 1 and 16, for each inference engine.

    .venv/bin/python bench/request_profile.py [--n16 1500] [--n1 300] [--engines onnxruntime,openvino,int8]
                                              [--levels 1,16]

Uses serve_bench's model, photos and client (its runs folder, <runs>/bench_serve; the model is trained there once);
`int8` in --engines serves its int8 variant (alias int8) on the engine `auto` picks for that graph; `onnxruntime_spin`
serves ONNX Runtime with its threads spinning after each call (setting onnx_spinning = true, its own default);
`onnxruntime_lateframe` serves ONNX Runtime with the frame written and flushed by the commit, after the engine, not
beside it (setting frame_early_write = false). An engine named twice runs twice, in that order (to alternate A/B).
Each engine's service runs in its own process with timers wrapped around the steps of the request path (nothing
else changes): reading the request (from its arrival to the queued job), the wait in the inference queue, decoding,
resizing, integrity features, the engine call, the hand-off to the writer, the commit of the log record and frame, and
the rest (answer to JSON, HTTP out, the client's side: its latency minus the time inside the service). Printed: the
mean of each step per request, except decode, resize and features (per frame: the inference worker runs them for every
frame of its micro-batch in turn, before the engine call) and the engine call (per call; a request waits for the
whole call of its batch; `engine per image` is its share). Then the CPU per request (ms) of each group of the
service's threads (Python's thread names; `native python` is the engine's own threads, OpenVINO's streams), from
/proc/self/task/*/schedstat between the start and the end of each level (warm-up requests included), the kernel's
journal and worker threads (system-wide, so other jobs' disk flushes too) and the client process's own CPU
(--driver: serve_bench's load generator, threads or asyncio).
"""
import argparse, json, os, re, signal, subprocess, sys, tempfile, threading, time
from collections import defaultdict
from pathlib import Path
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_bench as sb

def thread_cpu() -> dict:
    "CPU seconds used so far by each thread of this process, summed by name (Python's name, else the kernel's)"
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = defaultdict(float)
    for tid in os.listdir('/proc/self/task'):
        try: ns = int(Path(f'/proc/self/task/{tid}/schedstat').read_text().split()[0])
        except (OSError, ValueError, IndexError): continue   # ended meanwhile
        name = names.get(int(tid))
        if name is None:
            try: name = 'native ' + Path(f'/proc/self/task/{tid}/comm').read_text().strip()
            except OSError: continue
        out[re.sub(r'[-_ ]?\d+(_\d+)?$', '', name)] += ns / 1e9
    return out

def kernel_cpu() -> dict:
    "CPU seconds of the kernel's journal and worker threads so far (system-wide: the disk flushes of every process)"
    out = defaultdict(float)
    for pid in os.listdir('/proc'):
        if not pid.isdigit(): continue
        try:
            comm = Path(f'/proc/{pid}/comm').read_text().strip()
            if comm.startswith(('jbd2', 'kworker')):
                ns = int(Path(f'/proc/{pid}/schedstat').read_text().split()[0])
                out['kernel ' + comm.split('/')[0].split(':')[0]] += ns / 1e9
        except (OSError, ValueError, IndexError): continue
    return out

STEPS = ['read request', 'inference queue', 'decode', 'resize', 'features', 'engine call', 'engine per image', 'to writer',
         'commit']

def instrumented_server(out: str, port: int):
    "Run the service with timers on its steps; SIGUSR1 writes the per-request step times to `out` and starts afresh"
    import parkml.pipeline as S, parkml.service as H, parkml.model as M   # the steps live in pipeline, the app in service
    T, born, inferred, lock = defaultdict(list), {}, {}, threading.Lock()
    def add(step, ms):
        with lock: T[step].append(ms)
    def timed(step, fn):
        def w(*a, **k):
            t = time.perf_counter()
            try: return fn(*a, **k)
            finally: add(step, (time.perf_counter() - t) * 1000)
        return w
    for name, step in (('decode_image', 'decode'), ('preprocess', 'resize'), ('image_features', 'features')):
        setattr(S, name, timed(step, getattr(S, name)))
    M.ServingModel.run = timed('engine call', M.ServingModel.run)
    job_init, infer, write = S.Job.__init__, S.Service._infer, S.Service._write
    def init(self, data, camera, ts, received, t0, error=None):
        job_init(self, data, camera, ts, received, t0, error)
        born[self.id] = time.perf_counter()
        add('read request', (born[self.id] - self.t0) * 1000)
    def infer_(self, jobs, k=0):
        t = time.perf_counter()
        for j in jobs: add('inference queue', (t - born.get(j.id, t)) * 1000)
        infer(self, jobs, k)
        for j in jobs: inferred[j.id] = time.perf_counter()
    def write_(self, jobs, k=0):
        t = time.perf_counter()
        for j in jobs: add('to writer', (t - inferred.pop(j.id, t)) * 1000)
        write(self, jobs, k)
        end = time.perf_counter()
        for j in jobs:
            add('commit', (end - t) * 1000)
            add('in service', (end - j.t0) * 1000)
            born.pop(j.id, None)
    S.Job.__init__, S.Service._infer, S.Service._write = init, infer_, write_
    last = [thread_cpu(), kernel_cpu()]
    def dump(*_):
        with lock:
            now = [thread_cpu(), kernel_cpu()]
            cpu = {k: v - last[i].get(k, 0.0) for i in (0, 1) for k, v in now[i].items()}
            last[:] = now
            Path(out).write_text(json.dumps({**{k: v for k, v in T.items()}, 'cpu_s': cpu}))
            T.clear()
    signal.signal(signal.SIGUSR1, dump)
    import uvicorn
    uvicorn.run(H.app_factory(), host='127.0.0.1', port=port, log_level='warning', access_log=False,
                **H.uvicorn_options())   # the limits `parkml serve` gives uvicorn

def start(engine: str, runs: Path, logdir: Path, run: str = None):
    "The instrumented service with `engine` in its own process, its log and frames named `run`: (url, process, timings)"
    run = (run or engine).replace('#', '-')
    port, out = sb.free_port(), logdir/f'steps-{run}.json'
    # the bench's model is registered, not approved: no verified alias (the signature checks happen once, at load)
    env = {**os.environ, 'PARKML_RUNS': str(runs), 'PARKML_ENGINE': engine, 'PARKML_VERIFIED_ALIASES': '',
           'PARKML_PREDLOG_URI': f"sqlite:///{logdir}/{run}.db", 'PARKML_FRAMES_DIR': str(logdir/f'{run}_frames')}
    if engine == 'int8':   # the int8 variant serve_bench registered (alias int8), on the engine auto picks for its graph
        env.update(PARKML_SERVE_ALIAS='int8', PARKML_ENGINE='auto')
    if engine == 'onnxruntime_spin':   # ONNX Runtime with its threads spinning after each call (onnx_spinning, before: true)
        env.update(PARKML_ENGINE='onnxruntime', PARKML_ONNX_SPINNING='true')
    if engine == 'onnxruntime_lateframe':   # the frame flushed by the commit, after the engine (as before)
        env.update(PARKML_ENGINE='onnxruntime', PARKML_FRAME_EARLY_WRITE='false')
    proc = subprocess.Popen([sys.executable, __file__, '--server', str(out), str(port)], env=env,
                            stdout=open(logdir/f'{run}.log', 'w'), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    sb.wait_http(url, '/health', proc)
    return url, proc, out

def steps(proc, out: Path) -> dict:
    "Ask the server for its step times since the last call; mean ms per request of each step"
    out.unlink(missing_ok=True)
    proc.send_signal(signal.SIGUSR1)
    for _ in range(100):
        if out.is_file(): break
        time.sleep(0.1)
    T = json.loads(out.read_text())
    cpu = T.pop('cpu_s', {})
    n = max(1, len(T.get('in service', [])))
    calls = T.get('engine call', [])
    return {**{k: float(np.mean(v)) for k, v in T.items()}, 'engine per image': float(np.sum(calls)) / n,
            'engine calls': len(calls), 'requests': n, 'cpu ms': {k: 1000 * v / n for k, v in cpu.items()}}

def cpu_row(r: dict, group: str) -> float:
    "One row of the CPU table: a thread group's ms per request, or the service's, the client's, or both"
    cpu = r['steps']['cpu ms']
    service = sum(v for g, v in cpu.items() if not g.startswith('kernel'))
    client = 1000 * r['client'].get('cpu_s', float('nan')) / max(1, r['client']['n'])
    return dict(zip(['service, all threads', 'client', 'service + client'],
                    [service, client, service + client])).get(group, cpu.get(group, 0.0))

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n16', type=int, default=1500)
    ap.add_argument('--n1', type=int, default=300)
    ap.add_argument('--photos', type=int, default=600)
    ap.add_argument('--engines', default='onnxruntime,openvino')
    ap.add_argument('--limit', type=int, default=300)
    ap.add_argument('--levels', default='1,16', help='concurrency levels to drive')
    ap.add_argument('--driver', default='threads', choices=list(sb.DRIVERS), help="serve_bench's load generator")
    ap.add_argument('--server', nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.server: return instrumented_server(a.server[0], int(a.server[1]))
    from parkml.config import get_settings
    runs = (get_settings().runs/'bench_serve').resolve()
    runs.mkdir(parents=True, exist_ok=True)
    sb.prepare(runs, a.limit)
    logdir = Path(tempfile.mkdtemp(prefix='request_profile_'))
    files = logdir/'photos.json'
    files.write_text(json.dumps(sb.photos(a.photos)))
    res = {}
    levels = [(int(c), a.n1 if int(c) == 1 else a.n16) for c in a.levels.split(',')]
    engines = a.engines.split(',')
    for k, engine in enumerate(engines):
        run = f"{engine}#{engines[:k].count(engine) + 1}" if engine in engines[:k] else engine   # a repeat: its name
        url, proc, out = start(engine, runs, logdir, run)
        try:
            for c, n in levels:
                steps(proc, out)   # forget the warm-up and the previous level
                cl = sb.drive(url, 'parkml', c, n, str(files), driver=a.driver)
                res[(run, c)] = dict(client=cl, steps=steps(proc, out))
                print(f"{run:12} c={c:2} {cl['per_s']:6.1f}/s p50 {cl['p50']:6.2f} ms", flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
    shown = ', '.join(f'{n} requests at concurrency {c}' for c, n in levels)
    print(f"\nmean ms in each step ({shown}; {a.photos} photos)")
    cols = list(res)
    print(f"{'step':30}" + ''.join(f"{(e + ' c' + str(c))[-20:]:>21}" for e, c in cols))
    for s in STEPS + ['in service']:
        print(f"{s:30}" + ''.join(f"{res[k]['steps'].get(s, float('nan')):21.2f}" for k in cols))
    rest = {k: res[k]['client']['p50'] - res[k]['steps']['in service'] for k in cols}
    print(f"{'answer, HTTP out, client (p50)':30}" + ''.join(f"{rest[k]:21.2f}" for k in cols))
    print(f"{'client p50':30}" + ''.join(f"{res[k]['client']['p50']:21.2f}" for k in cols))
    print(f"\nCPU ms per request, by thread (the client's own: its process; kernel: system-wide)")
    groups = sorted({g for k in cols for g in res[k]['steps']['cpu ms']},
                    key=lambda g: -max(res[k]['steps']['cpu ms'].get(g, 0) for k in cols))
    for g in groups + ['service, all threads', 'client', 'service + client']:
        print(f"{g[:30]:30}" + ''.join(f"{cpu_row(res[k], g):21.3f}" for k in cols))
    per_call = {k: res[k]['steps']['requests'] / max(1, res[k]['steps']['engine calls']) for k in cols}
    print(f"{'images per engine call':30}" + ''.join(f"{per_call[k]:21.2f}" for k in cols))
    print(f"{'predictions/s':30}" + ''.join(f"{res[k]['client']['per_s']:21.1f}" for k in cols))
    (runs/'request_profile.json').write_text(json.dumps({f"{e} c{c}": v for (e, c), v in res.items()}, indent=1))
    print(f"raw results: {runs/'request_profile.json'}")

if __name__ == '__main__': main()
