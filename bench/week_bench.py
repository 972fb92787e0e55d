"""Week benchmark: `parkml week --quick --fresh` (the README's main command, quick) timed end to end as a process, from a
throw-away runs folder with an empty embedding cache (cold) and then again with the cache that run filled (warm);
`--full` adds the default week from a cold cache; `--fleet N` times `parkml week --quick --fleet N` instead (its own
central plane, stopped after). Prints wall time against the targets, and what each week showed.

    .venv/bin/python bench/week_bench.py [--full | --fleet 3]
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

PARKML = str(Path(sys.executable).parent/'parkml')
TARGETS = {'quick': 180, 'default': 900, 'fleet': 360}   # seconds, on the 2-core reference machine

def run(name: str, runs: Path, cache: Path, quick: bool) -> dict:
    "One week as a process on its own runs folder and the given cache; its wall time and its week.json"
    env = {**os.environ, 'PARKML_RUNS': str(runs), 'PARKML_CACHE': str(cache)}
    t = time.time()
    p = subprocess.run([PARKML, 'week', '--fresh', *(['--quick'] if quick else [])], env=env, capture_output=True, text=True)
    wall = time.time() - t
    if p.returncode: sys.exit(f"{name}: parkml week failed ({p.returncode}):\n{p.stderr[-3000:]}")
    w = json.loads((runs/'week'/'week.json').read_text())
    print(f"{name}: {wall:.1f} s", file=sys.stderr, flush=True)
    return dict(name=name, wall_s=wall, week_s=w['seconds'], target_s=TARGETS['quick' if quick else 'default'], week=w)

def fleet(n: int) -> None:
    "`parkml week --quick --fleet n` from a throw-away runs folder (PostgreSQL's user must enter it): wall time and what it showed"
    tmp = Path(tempfile.mkdtemp(prefix='parkml-fleet-bench-'))
    tmp.chmod(0o711)
    env, t = {**os.environ, 'PARKML_RUNS': str(tmp)}, time.time()
    try:
        p = subprocess.run([PARKML, 'week', '--quick', '--fresh', '--fleet', str(n)], env=env, capture_output=True, text=True)
        wall = time.time() - t
        if p.returncode: sys.exit(f"parkml week --fleet {n} failed ({p.returncode}):\n{p.stderr[-3000:]}")
        w = json.loads((tmp/'week-demo'/'week'/'week.json').read_text())
    finally:
        subprocess.run([PARKML, 'central', 'down'], env={**env, 'PARKML_CENTRAL_DIR': str(tmp/'week-demo'/'central')},
                       capture_output=True)
    print(f"quick week, fleet of {n}: {wall:.1f} s (target {TARGETS['fleet']} s: {'met' if wall <= TARGETS['fleet'] else 'NOT met'}); "
          f"load average at the end {os.getloadavg()[0]:.1f}")
    o, k, once = w['centre']['outage'], w['kill'], w['exactly_once']
    print(f"centre down {o['end'] - o['start']:.0f} s; {k['box_id']} killed with {k['at_centre']}/{k['local']} shipped, "
          f"restarted in {k['restart_s']} s; exactly once: {once['ok']} ({once['centre']} ids, {once['duplicates']} duplicates, "
          f"{once['missing']} missing)")
    for b in w['fleet']:
        print(f"  {b['box_id']}: {b['predictions']} predictions, backlog {b['backlog_before']:.0f} -> peak "
              f"{b['backlog_peak']:.0f}, drained {b['drained_after_s']} s after the centre returned")

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--full', action='store_true', help='also the default week (7 days of 2,000 frames, about 9 minutes)')
    ap.add_argument('--fleet', type=int, default=0, metavar='N', help='time the quick week on a fleet of N boxes instead')
    a = ap.parse_args()
    if a.fleet: return fleet(a.fleet)
    with tempfile.TemporaryDirectory() as tmp:
        tmp, res = Path(tmp), []
        res.append(run('quick, cold cache', tmp/'q1', tmp/'cache', True))
        res.append(run('quick, warm cache', tmp/'q2', tmp/'cache', True))
        if a.full: res.append(run('default, cold cache', tmp/'d1', tmp/'cache-full', False))
    print(f"\n{'run':22} {'wall s':>7} {'target':>7} {'met':>4} {'week s':>7} {'failed':>6}  dark evenings (cat/dog recall, gap points)")
    for r in res:
        w = r['week']
        dusk = '; '.join(f"v{d['version']} {d['recall_cat']:.2f}/{d['recall_dog']:.2f} {d['gap_points']:+.0f}" for d in w['dusk'])
        print(f"{r['name']:22} {r['wall_s']:7.1f} {r['target_s']:7d} {'yes' if r['wall_s'] <= r['target_s'] else 'NO':>4} "
              f"{r['week_s']:7.1f} {w['failed_requests']:6d}  {dusk}")
    for r in res:
        print(f"\n{r['name']}: alerts by day")
        for row in r['week']['table']: print(f"  day {row['day']} {row['date']}: {row['alerts'] or '-'}  (versions {row['versions']})")

if __name__ == '__main__':
    main()
