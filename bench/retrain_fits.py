"""Which refit of the head makes the dark-evening gap stable? On `active_labels.py`'s frames, each chooser's picks
(queue with 70% random at 50 a day, random at 100 and 50) are refitted several ways and judged on the same dark frames.

    .venv/bin/python bench/retrain_fits.py [--seeds 6]

Fits: `none` (every label weighs 1), `band` (`parkml.train.balanced_weights` by lighting band), `x3` (production labels
weigh 3), `C0.05` (ten times the head's regularisation), `bag8` (the mean head of 8 refits on resampled labels).
"""
import argparse, sys, time
from pathlib import Path
import numpy as np, pandas as pd
sys.path.insert(0, str(Path(__file__).parent))
import active_labels as al
from parkml.config import get_settings, ensure_dir
from parkml.data import read_imageset, assign_splits
from parkml.network import compute_embeddings
from parkml.model import fit_head, predict_from_embeddings, fit_projection
from parkml.train import balanced_weights
from parkml.evaluate import lighting_band

def fits(base: tuple, Ep, yp, bp) -> dict:
    "name -> (embeddings, labels, sample weights, C) of each way to refit on the training set plus the picks"
    Et, yt = base
    E, y = np.concatenate([Et, Ep]), np.concatenate([yt, yp])
    prod = np.r_[np.zeros(len(yt), bool), np.ones(len(yp), bool)]
    band, x3 = np.ones(len(y)), np.where(prod, 3.0, 1.0)
    band[prod] = balanced_weights(yp, lighting_band(np.clip(bp, 0, 1)))
    return {'none': (E, y, None, None), 'band': (E, y, band, None), 'x3': (E, y, x3, None), 'C0.05': (E, y, None, .05)}

def bagged(E, y, n0: int, B: int = 8, seed: int = 0) -> tuple:
    "The mean head of `B` fits, each on the first `n0` rows plus a resample of the rest"
    rng, heads = np.random.default_rng(seed), []
    for _ in range(B):
        idx = np.r_[np.arange(n0), rng.integers(n0, len(y), len(y) - n0)]
        heads.append(fit_head(E[idx], y[idx]))
    return np.mean([h[0] for h in heads], 0), np.mean([h[1] for h in heads])

def setup():
    "The base head's training set, projection, reference, the pool of week photos and the dark frames judged on"
    cfg = get_settings()
    folder = ensure_dir(cfg.runs/'bench'/'active_labels')
    ds = assign_splits(read_imageset())
    tr = ds.df[ds.df.subset == 'train'].sample(1000, random_state=0)
    emb = compute_embeddings(ds.subset(ds.df.sha.isin(tr.sha)), flip=False)
    Et, yt = np.stack(emb.loc[tr.sha, 'emb']), tr.label.eq('dog').to_numpy()
    mu_basis = fit_projection(Et)
    test = ds.df[ds.df.split == 'test'].sample(frac=1, random_state=1)
    pool, held = test.iloc[:len(test) // 2], test.iloc[len(test) // 2:]
    ev = al.with_embeddings(held.head(400).assign(severity=np.tile([2.0, 3.0], 200)[:min(400, len(held))]), held,
                            folder/'eval')
    return cfg, folder, (Et, yt), mu_basis, (Et[:500] - mu_basis[0]) @ mu_basis[1], pool, ev

def one_seed(s: int, cfg, folder, base, mu_basis, ref, pool, ev) -> list:
    "Every chooser's picks of seed `s`, refitted every way, judged"
    head, rows = fit_head(*base), []
    frames = al.week_frames(pool, 3, 400, folder/'frames', seed=s)
    E = np.stack(frames.emb)
    proj = (E - mu_basis[0]) @ mu_basis[1]
    frames = pd.concat([frames.assign(p_dog=predict_from_embeddings(E, *head)),
                        pd.DataFrame(proj, columns=[f"proj_{i}" for i in range(proj.shape[1])])], axis=1)
    mix = get_settings(**al.VARIANTS['mix70'])
    for how, b, c in (('mix70', 50, mix), ('random', 100, cfg), ('random', 50, cfg)):
        kind = 'random' if how == 'random' else 'ranked'
        picked = pd.concat([al.choose(d, b, kind, ref, s + i, c) for i, (_, d) in enumerate(frames.groupby('day'))])
        Ep, yp, bp = np.stack(picked.emb), picked.label.eq('dog').to_numpy(), picked.brightness.to_numpy(float)
        for name, (EE, yy, ww, C) in fits(base, Ep, yp, bp).items():
            w, b0 = fit_head(EE, yy, C, sample_weight=ww)
            rows.append(dict(seed=s, how=f"{how}@{b}", fit=name, **al.judge(w, b0, ev)))
        EE, yy = fits(base, Ep, yp, bp)['none'][:2]
        rows.append(dict(seed=s, how=f"{how}@{b}", fit='bag8', **al.judge(*bagged(EE, yy, len(base[1]), seed=s), ev)))
    return rows

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seeds', type=int, default=6)
    a = ap.parse_args()
    t0, ctx, rows = time.time(), setup(), []
    for s in range(a.seeds):
        rows += one_seed(s, *ctx)
        print(f"seed {s} done, {time.time() - t0:.0f} s", flush=True)
    r = pd.DataFrame(rows)
    print(r.groupby(['fit', 'how']).agg(accuracy=('accuracy', 'mean'), gap=('gap', 'mean'),
                                        abs_gap=('gap', lambda g: g.abs().mean()), gap_sd=('gap', 'std')).round(3))
    print(r.pivot_table(index='seed', columns=['how', 'fit'], values='gap').round(1).to_string())

if __name__ == '__main__': main()
