"""Training benchmark: a cold run (embeddings computed) and a warm run (embeddings cached) on the full image set,
each in its own process in a throw-away runs folder. Prints test accuracy, cat/dog recall, time and peak memory.

    .venv/bin/python bench/train_bench.py [--limit N]
"""
import argparse, json, os, subprocess, sys, tempfile, time

CHILD = r'''
import json, sys, time, resource
t = time.time()
from parkml.train import train_and_register
r = train_and_register(limit=int(sys.argv[1]) or None, run_name=sys.argv[2], progress=True)
print("RESULT " + json.dumps(dict(wall_s=time.time() - t, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      version=r.version, timings=r.timings, **{k: r.metrics[k] for k in ('test_accuracy', 'test_recall_cat', 'test_recall_dog',
      'test_f1_macro', 'val_accuracy', 'onnx_torch_max_abs_diff', 'test_accuracy_ci_lo', 'test_accuracy_ci_hi')})))
'''

def run(kind, limit, env):
    p = subprocess.run([sys.executable, '-c', CHILD, str(limit), kind], env=env, capture_output=True, text=True)
    line = next((l for l in p.stdout.splitlines() if l.startswith('RESULT ')), None)
    if line is None: sys.exit(f"{kind} run failed:\n{p.stderr[-3000:]}")
    return json.loads(line[7:])

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--limit', type=int, default=0, help='images per subset (0: all)')
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, 'PARKML_RUNS': tmp}
        res = {k: run(k, a.limit, env) for k in ('cold', 'warm')}
    print(f"\n{'run':6} {'wall s':>7} {'peak MB':>8} {'test acc':>9} {'95% CI':>15} {'cat rec':>8} {'dog rec':>8} {'gap pts':>8} {'onnx|dp|':>9}")
    for k, r in res.items():
        print(f"{k:6} {r['wall_s']:7.1f} {r['peak_rss_mb']:8.0f} {r['test_accuracy']:9.4f} "
              f"{r['test_accuracy_ci_lo']:.4f}-{r['test_accuracy_ci_hi']:.4f} {r['test_recall_cat']:8.4f} {r['test_recall_dog']:8.4f} "
              f"{100*(r['test_recall_dog']-r['test_recall_cat']):8.1f} {r['onnx_torch_max_abs_diff']:9.1e}")
    print("\ntargets: test accuracy >= 0.97, |cat-dog recall gap| <= 2 points, cold <= 300 s, warm <= 30 s")
    print("step timings:", json.dumps({k: {t: round(v, 1) for t, v in r['timings'].items()} for k, r in res.items()}))

if __name__ == '__main__': main()
