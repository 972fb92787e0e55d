"""Staging gates at work: a good candidate passes, a biased one and a fragile one fail, each for its reason.

    .venv/bin/python bench/gate_demo.py [--limit N] [--sample N] [--robust-sample N] [--runs DIR]

In a throw-away runs folder (the project's embedding cache is copied in, so only new images are embedded) it trains
three candidates and stages each with `parkml.staging.stage` (the papermill notebook, the real service on loopback):
  good     the standard head on the full training split;
  biased   the same, but only 5% of the training cats kept (`train_and_register(cat_fraction=0.05)`):
           it should fail the cat/dog recall-gap gate, and the reason says which species it favours, in words;
  fragile  the standard training split plus dusk frames of training cats (night, severity 2) mislabelled "dog",
           as a careless night-shift labelling would feed a retraining: clean accuracy holds, dusk collapses,
           so it should fail the night robustness gate (and the dusk recall gap).
It prints every gate's verdict and the time each staging took.
"""
import argparse, os, shutil, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def dusk_cats_as_dogs(ds, folder: Path, n: int, severity: float = 2):
    "An ImageSet of `n` training cats under night at `severity`, labelled dog (written to `folder`)"
    import pandas as pd
    from PIL import Image
    from parkml.cctv import apply_condition
    from parkml.data import read_imageset
    from parkml.staging_inputs import frame_seed
    cats = ds.df[(ds.df.subset == 'train') & (ds.df.label == 'cat')].sort_values('sha').head(n)
    (folder/'images').mkdir(parents=True, exist_ok=True)
    rows = []
    for r in cats.itertuples():
        name = f"images/dusk_{r.sha[:16]}.jpg"
        apply_condition(Image.open(r.path), 'night', severity, frame_seed(r.sha, 'night', severity, 1)).save(folder/name, quality=95)
        rows.append(dict(path=name, label='dog', source='dusk-mislabelled'))
    pd.DataFrame(rows).to_csv(folder/'manifest.csv', index=False)
    return read_imageset(folder)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--limit', type=int, default=0, help='images per subset and class for training (0: all)')
    ap.add_argument('--sample', type=int, default=0, help='staging images replayed clean (0: all)')
    ap.add_argument('--robust-sample', type=int, default=-1, help='images replayed per condition but night and severity (-1: setting stage_robust_sample; 0: all)')
    ap.add_argument('--runs', default=None, help='runs folder (default: a new temporary one)')
    a = ap.parse_args()
    runs = Path(a.runs or tempfile.mkdtemp(prefix='parkml-gates-'))/'runs'
    for src in (ROOT/'runs'/'cache', Path(os.environ.get('PARKML_RUNS', ROOT/'runs'))/'cache'):
        if (src/'embeddings').is_dir(): shutil.copytree(src/'embeddings', runs/'cache'/'embeddings', dirs_exist_ok=True)
        for f in src.glob('*.onnx'): (runs/'cache').mkdir(parents=True, exist_ok=True); shutil.copy(f, runs/'cache'/f.name)
    os.environ['PARKML_RUNS'] = str(runs)
    from parkml.train import train_and_register, training_set
    from parkml.staging import stage
    from parkml.staging_record import format_gates
    print(f"runs folder: {runs}")
    limit = a.limit or None
    t = time.time()
    cands = {'good': train_and_register(limit=limit, run_name='gate-demo-good', progress=False)}
    cands['biased'] = train_and_register(limit=limit, cat_fraction=0.05, run_name='gate-demo-biased', progress=False)
    extra = dusk_cats_as_dogs(training_set(limit), runs/'dusk-mislabelled', 400)
    cands['fragile'] = train_and_register(limit=limit, extra=extra, run_name='gate-demo-fragile', progress=False)
    print(f"trained 3 candidates in {time.time() - t:.0f} s: " +
          ', '.join(f"{k} v{r.version} (test accuracy {r.metrics['test_accuracy']:.3f})" for k, r in cands.items()))
    for name, r in cands.items():
        t = time.time()
        res = stage(r.version, sample=a.sample, robust_sample=a.robust_sample, progress=False)
        print(f"\n=== {name} candidate, version {r.version}: staged in {time.time() - t:.0f} s ===")
        print(format_gates(res))
        print(f"report: {res['html']}")

if __name__ == '__main__':
    sys.exit(main())
