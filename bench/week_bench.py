"""Week benchmark: `parkml week --quick --fresh` (the README's main command, quick) timed end to end as a process, from a
throw-away runs folder with an empty embedding cache (cold) and then again with the cache that run filled (warm);
`--full` adds the default week from a cold cache. Prints wall time against the targets, and what each week showed.

    .venv/bin/python bench/week_bench.py [--full]
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

PARKML = str(Path(sys.executable).parent/'parkml')
TARGETS = {'quick': 180, 'default': 900}   # seconds, on the 2-core reference machine

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

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--full', action='store_true', help='also the default week (7 days of 2,000 frames, about 9 minutes)')
    a = ap.parse_args()
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
