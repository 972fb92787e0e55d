"""Real-time watch benchmark (parkml.sentry): detection delays, false alarms on clean weeks, and the sentry's CPU cost.

    .venv/bin/python bench/sentry_bench.py [--runs DIR] [--limit 300] [--days 7] [--fps 1] [--cpu-seconds 60]

In its own runs folder (default /tmp/parkml-sentry-bench/runs) it trains a model once (later runs reuse it), then:
1. Delays, through the real processes: `parkml serve` on loopback and `parkml sentry --clock capture` beside it.
   Holdout photos are posted one camera frame per second of capture time (sent as fast as the service answers, the
   sentry on the simulated clock): 60 clean frames, then a frozen camera (one frame repeated), or fog or night
   (dusk) at severity 2 and 1 (`parkml.cctv`), until the sentry raises its alert or the stream ends. The delay is
   the alert's clock minus the onset, in seconds and frames. Targets: frozen <= 120 s at 1 frame/s; fog and night
   at severity 2 <= 200 frames; severity 1 reported.
2. False alarms, offline on logged records: `simulate.synthetic_day` writes `--days` clean days of traffic
   (`--fps` frames per second over the traffic hours, real holdout frames through the version's ONNX graph, 0.2%
   broken frames, telemetry every minute) and `sentry.replay` judges them on their capture clock. Target: 0.
3. CPU: the service and `parkml sentry` (wall clock, default settings) with a camera posting 10 frames/s for
   `--cpu-seconds` (after 20 warm-up frames, while which the sentry loads the version's reference from MLflow); the
   sentry process's CPU time over that time. Target: under 5% of one core.
"""
import io, json, os, socket, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np, pandas as pd
from bench_args import bench_parser, parse_bench  # bench/ is on the path: this script's folder

ROOT = Path(__file__).resolve().parents[1]
PARKML = str(Path(sys.executable).parent/'parkml')

from parkml.central import free_port   # the one port picker (never the same port twice)

def get_version(limit: int):
    """The newest version in this runs folder, or a new one trained with `limit` images per subset; it is given the
    champion alias directly (a benchmark's own registry: no release to govern) so that `parkml serve` serves it"""
    from parkml.tracking import resolve_version, RegistryError, mlflow_client
    from parkml.config import get_settings
    try: mv = resolve_version('latest')
    except RegistryError:
        from parkml.train import train_and_register
        print(f"training a model (limit={limit or 'all'}) in {os.environ['PARKML_RUNS']} ...", flush=True)
        train_and_register(limit=limit or None, run_name='sentry-bench', progress=False)
        mv = resolve_version('latest')
    mlflow_client().set_registered_model_alias(get_settings().model_name, 'champion', mv.version)
    return mv

def start(args, env, log: Path, health: str):
    "Start a parkml process and wait for its /health"
    import httpx
    p = subprocess.Popen([PARKML, *args], env=env, stdout=open(log, 'a'), stderr=subprocess.STDOUT)
    t = time.time()
    while True:
        if p.poll() is not None: raise RuntimeError(f"parkml {args[0]} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(health, timeout=1).status_code in (200, 503): return p
        except httpx.TransportError: pass
        if time.time() - t > 120: raise RuntimeError(f"parkml {args[0]} did not start: {log}")
        time.sleep(0.2)

def stop(p):
    p.terminate(); p.wait(30)

# ---------------------------------------------------------------- 1. detection delays through the real processes

def condition_frames(pool: pd.DataFrame, condition, severity) -> list:
    from parkml.simulate import frame_bytes
    return [frame_bytes(p, condition, severity, int(s[:8], 16)) for p, s in zip(pool.path, pool.sha)]

def raised(alerts_uri: str, camera: str, rule: str):
    "The first alert of `rule` for `camera` in the sentry's alert store, or None"
    from parkml.alerts import open_alert_store
    with open_alert_store(alerts_uri) as st:
        got = [a for a in st.query(rule=rule, camera=camera)]
    return min(got, key=lambda a: a.evidence['clock']) if got else None

def stream(client, frames, camera: str, t0: float, alerts_uri: str, rule: str, onset: float, chunk: int = 20):
    "Post frames one second of capture time apart; after each chunk look for the alert; return it (or None)"
    for i in range(0, len(frames), chunk):
        for j, b in enumerate(frames[i:i + chunk]):
            r = client.post(f'/predict?camera={camera}&ts={t0 + i + j:.3f}', content=b)
            r.raise_for_status()
        if onset is not None and t0 + i + chunk > onset and (a := raised(alerts_uri, camera, rule)): return a
    return None

def delays(a, home: Path, env: dict) -> pd.DataFrame:
    "Detection delay of each scenario, with `parkml serve` and `parkml sentry --clock capture` as processes"
    import httpx
    from parkml.data import read_imageset, assign_splits
    hold = assign_splits(read_imageset()).df.query("subset == 'holdout'").sample(frac=1, random_state=0).reset_index(drop=True)
    sport, wport = free_port(), free_port()
    srv = start(['serve', '--host', '127.0.0.1', '--port', str(sport), '--log-level', 'warning'], env, home/'serve.log',
                f"http://127.0.0.1:{sport}/health")
    alerts_uri = f"sqlite:///{home}/alerts.db"
    senv = {**env, 'PARKML_ALERTS_URI': alerts_uri, 'PARKML_SENTRY_STATE_DIR': str(home/'sentry'),
            'PARKML_SENTRY_POLL_S': '0.2', 'PARKML_SENTRY_SETTLE_S': '0.5'}
    sen = start(['sentry', '--clock', 'capture', '--port', str(wport), '--quiet'], senv, home/'sentry.log',
                f"http://127.0.0.1:{wport}/health")
    clean = condition_frames(hold.iloc[:60], None, 0)
    cases = [('frozen camera', None, 0, 'sentry_frozen_camera', 300)] + [
        (f"{c} severity {s}", c, s, 'sentry_drift', n) for s, n in ((2, 400), (1, a.mild_frames)) for c in ('fog', 'night')]
    rows = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{sport}", timeout=60) as cl:
            for k, (name, cond, sev, rule, n) in enumerate(cases):
                cam, t0 = f"bench-{k}", pd.Timestamp('2026-06-01 09:00', tz='UTC').timestamp() + k * 86400
                bad = [clean[7]] * n if cond is None else condition_frames(hold.iloc[60:60 + n], cond, sev)
                stream(cl, clean, cam, t0, alerts_uri, rule, None)
                onset = t0 + len(clean)
                al = stream(cl, bad, cam, onset, alerts_uri, rule, onset)
                time.sleep(1.5)
                al = al or raised(alerts_uri, cam, rule)
                d = pd.Timestamp(al.evidence['clock']).timestamp() - onset if al else float('nan')
                found = (al.evidence.get('since') or onset) - onset + 1 if al and rule == 'sentry_drift' else float('nan')
                rows.append(dict(scenario=name, frames_sent=len(bad), delay_s=d, delay_frames=d if al else float('nan'),
                                 cusum_crossed_at_frame=found))
                print(f"  {name}: " + (f"raised after {d:.0f} s = {d:.0f} frames" if al else f"not raised in {len(bad)} frames"), flush=True)
    finally:
        stop(sen); stop(srv)
    return pd.DataFrame(rows)

# ---------------------------------------------------------------- 2. false alarms on clean days, offline

def false_alarms(a, mv, home: Path) -> dict:
    "Write `a.days` clean synthetic days into a prediction log, replay them through a fresh sentry, count what it raises"
    from parkml.config import get_settings
    from parkml.predlog import open_store
    from parkml.monitor import day_window
    from parkml.simulate import synthetic_day
    from parkml.sentry import replay
    cfg = get_settings()
    n = int(a.fps * 14 * 3600)  # frames of one day: the traffic hours 7-21 at --fps
    events, frames, t0 = [], 0, time.time()
    with open_store(f"sqlite:///{home}/week.db", home/'week-frames') as st:
        for d in range(a.days):
            day = (pd.Timestamp('2026-07-01') + pd.Timedelta(days=d)).strftime('%Y-%m-%d')
            synthetic_day(st, mv, n=n, day=day, store_frames=False, label_share=0, seed=d, progress=False)
            start, end = day_window(day, cfg)
            rows, tel = st.predictions(start, end), st.telemetry(start, end)
            t1 = time.time()
            ev = replay(rows, tel, end=end, cfg=cfg)
            frames += len(rows)
            events.append(ev[ev.event == 'raised'])
            print(f"  day {day}: {len(rows)} frames, {int((ev.event == 'raised').sum())} raised; replayed in {time.time() - t1:.0f} s",
                  flush=True)
    ev = pd.concat(events)
    return dict(days=a.days, frames=frames, raised=len(ev), rules=ev.rule.value_counts().to_dict(), seconds=time.time() - t0)

# ---------------------------------------------------------------- 3. CPU cost of the sentry at 10 frames/s

def cpu_cost(a, home: Path, env: dict) -> dict:
    "The sentry's CPU time while a camera posts 10 frames/s to the service for `a.cpu_seconds` seconds"
    import httpx, psutil
    from parkml.config import get_settings
    from parkml.data import read_imageset, assign_splits
    hold = assign_splits(read_imageset()).df.query("subset == 'holdout'").head(600)
    photos = [Path(p).read_bytes() for p in hold.path]
    sport, wport = free_port(), free_port()
    srv = start(['serve', '--host', '127.0.0.1', '--port', str(sport), '--log-level', 'warning'], env, home/'serve-cpu.log',
                f"http://127.0.0.1:{sport}/health")
    senv = {**env, 'PARKML_ALERTS_URI': f"sqlite:///{home}/alerts-cpu.db", 'PARKML_SENTRY_STATE_DIR': str(home/'sentry-cpu')}
    sen = start(['sentry', '--clock', 'wall', '--port', str(wport), '--quiet'], senv, home/'sentry-cpu.log',
                f"http://127.0.0.1:{wport}/health")
    ps, n = psutil.Process(sen.pid), 0
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{sport}", timeout=60) as cl:
            for b in photos[-20:]:  # warm-up: the sentry loads the version's reference (MLflow) on its first frames
                cl.post('/predict?camera=cpu-cam', content=b).raise_for_status()
            time.sleep(3 * float(get_settings().sentry_poll_s) + 2)
            c0, t0 = sum(ps.cpu_times()[:2]), time.time()
            while time.time() - t0 < a.cpu_seconds:
                due = t0 + n / 10
                if due > time.time(): time.sleep(due - time.time())
                cl.post('/predict?camera=cpu-cam', content=photos[n % len(photos)]).raise_for_status(); n += 1
            time.sleep(1)
            c1, t1 = sum(ps.cpu_times()[:2]), time.time()
            seen = httpx.get(f"http://127.0.0.1:{wport}/health").json()['cameras'].get('cpu-cam', {}).get('frames', 0)
    finally:
        stop(sen); stop(srv)
    return dict(frames=n, rate=n / (t1 - t0), seconds=t1 - t0, cpu_s=c1 - c0, pct_of_core=100 * (c1 - c0) / (t1 - t0),
                frames_read=seen)

def main():
    ap = bench_parser(__doc__, '/tmp/parkml-sentry-bench/runs', 300)
    ap.add_argument('--days', type=int, default=7, help='clean days replayed for the false alarms')
    ap.add_argument('--fps', type=float, default=1.0, help='frames per second of those days over the traffic hours')
    ap.add_argument('--mild-frames', type=int, default=500, help='frames of fog and night at severity 1')
    ap.add_argument('--cpu-seconds', type=float, default=60, help='seconds of the 10 frames/s stream for the CPU cost')
    ap.add_argument('--skip', default='', help='comma-separated parts to skip: delays, false, cpu')
    a = parse_bench(ap)
    os.environ.setdefault('PARKML_CACHE', str(ROOT/'runs'/'cache'))
    from parkml.config import get_settings
    cfg = get_settings()
    mv = get_version(a.limit)
    home = Path(tempfile.mkdtemp(prefix='sentry-bench-'))
    env = {**os.environ, 'PARKML_PREDLOG_URI': f"sqlite:///{home}/predlog.db", 'PARKML_FRAMES_DIR': str(home/'frames'),
           'PARKML_ALERT_WEBHOOK_URL': ''}
    print(f"model version {mv.version} (run {mv.run_id}); sentry: check every {cfg.sentry_check_s:g} s, integrity window "
          f"{cfg.sentry_integrity_window} frames, drift ERT {cfg.sentry_drift_ert_frames:,} frames; work folder {home}", flush=True)
    skip, out = set(a.skip.split(',')), {}
    if 'delays' not in skip:
        print('1. detection delays (service + sentry on the capture clock, 1 frame/s of capture time):', flush=True)
        d = delays(a, home, env)
        out['delays'] = d.to_dict('records')
        print(d.to_string(index=False))
    if 'false' not in skip:
        print(f"2. false alarms: {a.days} clean days at {a.fps:g} frames/s over the traffic hours, replayed offline:", flush=True)
        out['false_alarms'] = f = false_alarms(a, mv, home)
        print(f"  {f['raised']} alerts raised over {f['days']} days, {f['frames']:,} frames {f['rules'] or ''} ({f['seconds']:.0f} s)")
    if 'cpu' not in skip:
        print('3. CPU of the sentry process (wall clock) while a camera posts 10 frames/s:', flush=True)
        out['cpu'] = c = cpu_cost(a, home, env)
        print(f"  {c['frames']} frames at {c['rate']:.1f}/s over {c['seconds']:.0f} s (sentry read {c['frames_read']}): "
              f"sentry CPU {c['cpu_s']:.2f} s = {c['pct_of_core']:.1f}% of one core")
    (home/'sentry_bench.json').write_text(json.dumps(out, indent=1, default=str))
    print(f"figures: {home/'sentry_bench.json'}")

if __name__ == '__main__':
    main()
