"""Active labelling benchmark: on the week's dusk scenario, staff label a fixed budget of frames per day, chosen by the
labelling queue (`parkml.label_queue.rank_frames`, setting label_queue=ranked) or at random; the head is retrained on
the training images plus those labels, and judged on dark evenings (cat/dog recall gap and accuracy), over seeds.

    .venv/bin/python bench/active_labels.py [--days 3] [--frames 400] [--budgets 50 100] [--seeds 5] [--first-seed 0]
                                            [--variants ranked balance dark balance+dark banded+dark3] [--balance true|false]
                                            [--out results.csv]

Each variant is the queue with some settings changed (`VARIANTS`); `random` at each budget and at twice the largest is
always run. The queue gets the day's budget as label_day_budget (the banded variants' quotas); `strata` variants are
the bench's own banded draw, with the quotas cut at the budget (`+half`: half the places from the ranking). The head
is refitted as the retraining does it: the production labels weighted by `parkml.train.fit_weights` (setting
retrain_balance, or --balance), the head blind to the sensor-noise directions of the training images
(`parkml.train.noise_directions`, `blind_head`; setting retrain_noise_directions, or --noise-directions).

The backbone is the real one (EfficientNet-Lite0 embeddings, cached by content under the `cache` setting); dark
frames are real petpark test photos under the week's `night` condition, written once under runs/bench/active_labels.

Each retrained head is also judged as staging's sensor-noise gate judges a version: staging's photos (the `stage`
subset, `stage_robust_sample` of them picked with seed 0), clean and under `noise` at `stage_gate_severity`, each noisy
frame made as staging makes it (`condition_frames`: same transform seed, JPEG at quality 95) and cached by content;
`noise_drop` is clean minus noisy accuracy (points), against the gate `stage_max_drop_noise`.
"""
import argparse, time
from pathlib import Path
import numpy as np
import pandas as pd
from PIL import Image
from parkml.config import get_settings, ensure_dir
from parkml.data import read_imageset, assign_splits
from parkml.network import compute_embeddings
from parkml.model import fit_head, predict_from_embeddings, fit_projection, PROJ_DIM
from parkml.cctv import apply_condition
from parkml.staging_inputs import staging_images, pick_rows, condition_frames
from parkml.label_queue import rank_frames, band_quotas, frame_band, dark_weight, mix_random
from parkml.labels import draw_key
from parkml.train import fit_weights, noise_directions, blind_head
from parkml.week_scenario import DUSK_FROM

OPEN, CLOSE = 8.0, 20.0   # the park's hours, as in the week
# the queue's variants: settings changed from the current ones
PLAIN = dict(label_queue='ranked', label_balance='false', label_dark_weight='0',
             label_random_share='0')   # uncertainty, novelty, coverage
VARIANTS = {'banded': dict(label_queue='banded'), 'ranked': dict(label_queue='ranked'), 'plain': PLAIN,
            'balance': {**PLAIN, 'label_balance': 'true'},
            'dark': {**PLAIN, 'label_dark_weight': '1'}, 'balance+dark': {**PLAIN, 'label_balance': 'true',
                                                                          'label_dark_weight': '1'},
            'mix30': {**PLAIN, 'label_random_share': '0.3'}, 'mix50': {**PLAIN, 'label_random_share': '0.5'},
            'mix70': {**PLAIN, 'label_random_share': '0.7'},
            'mix50+dark': {**PLAIN, 'label_random_share': '0.5', 'label_dark_weight': '1'},
            # random frames with the banded queue's quotas, cut at the budget (label_queue=strata is the bench's own)
            'strata': {**PLAIN, 'label_queue': 'strata'},
            **{f"strata+dark{w}": {**PLAIN, 'label_queue': 'strata', 'label_dark_weight': str(w)}
               for w in (1, 3, 6, 9)},
            **{f"strata+dark{w}+half": {**PLAIN, 'label_queue': 'strata', 'label_dark_weight': str(w)}
               for w in (3, 6)},
            **{f"banded+dark{w}": {**PLAIN, 'label_queue': 'banded', 'label_dark_weight': str(w)}
               for w in (0, 1, 2, 3, 6, 9)},
            'banded+dark3+mix30': {**PLAIN, 'label_queue': 'banded', 'label_dark_weight': '3'}}
STRATA_SHARE = {v: .5 for v in VARIANTS if v.startswith('strata') and v.endswith('+half')}   # the rest: the ranking's
BANDED_MIX = {'banded+dark3+mix30': .3}   # the banded draw with this share of its places drawn at random (the rest: 0)

def darkened(rows: pd.DataFrame, folder: Path) -> pd.DataFrame:
    "Embeddings and brightness of `rows` (path, sha, label, severity) under the night condition, cached by content"
    ensure_dir(folder)
    paths = []
    for r in rows.itertuples():
        p = folder/f"{r.sha[:16]}-{r.severity:g}.jpg"
        if not p.is_file():
            img = apply_condition(Image.open(r.path).convert('RGB'), 'night', r.severity, seed=int(r.sha[:8], 16))
            img.save(p, quality=90)
        paths.append(p.name)
    return embedded(paths, rows.label.to_numpy(), folder)

def noisy(rows: pd.DataFrame, severity: int, folder: Path, seed: int = 0) -> pd.DataFrame:
    "Embeddings of staging photos `rows` (path, sha, label) under sensor noise, each frame as staging makes it"
    ensure_dir(folder)
    paths = [f"{sha[:16]}-noise{severity:g}-s{seed}.jpg" for sha in rows.sha]   # the frame is fixed by these
    todo = [i for i, p in enumerate(paths) if not (folder/p).is_file()]
    if todo:
        made = condition_frames([Path(rows.path.iloc[i]).read_bytes() for i in todo], list(rows.sha.iloc[todo]),
                                'noise', severity, seed)
        for i, data in zip(todo, made): (folder/paths[i]).write_bytes(data)
    return embedded(paths, rows.label.to_numpy(), folder)

def embedded(paths: list, labels, folder: Path) -> pd.DataFrame:
    "Embeddings and brightness of the images `paths` in `folder`, in that order (written as its manifest)"
    pd.DataFrame(dict(path=paths, label=labels)).to_csv(folder/'manifest.csv', index=False)
    ds = read_imageset(folder)
    emb = compute_embeddings(ds, flip=False, progress=True)
    by_name = ds.df.assign(name=ds.df.path.map(lambda p: Path(p).name)).set_index('name').sha
    return emb.loc[by_name.loc[paths].to_numpy()].reset_index(drop=True)

def week_frames(pool: pd.DataFrame, days: int, frames: int, folder: Path, seed: int = 0) -> pd.DataFrame:
    "The dusk days' frames: capture hour, camera, photo, night severity (2, 3, 3...) after DUSK_FROM, embedding"
    rng = np.random.default_rng(seed)
    out = []
    for d in range(days):
        dusk = min(3.0, 2.0 + d)
        h = np.sort(rng.uniform(OPEN, CLOSE, frames))
        df = pool.iloc[rng.integers(0, len(pool), frames)][['path', 'sha', 'label']].reset_index(drop=True)
        ramp = np.clip(.5 + .5 * (h - DUSK_FROM) / (CLOSE - DUSK_FROM), 0, 1)   # the week's darkening evening
        sev = np.where(h >= DUSK_FROM, np.round(dusk * ramp), 0)
        out.append(df.assign(day=d, hour=h, severity=sev, camera=rng.choice(['cam-01', 'cam-02'], frames)))
    df = pd.concat(out, ignore_index=True)
    return with_embeddings(df, pool, folder)

def with_embeddings(df: pd.DataFrame, pool: pd.DataFrame, folder: Path) -> pd.DataFrame:
    "`df` with `emb`, `brightness` and a content key `frame_sha` (photo + severity)"
    clean = compute_embeddings(read_imageset().subset(read_imageset().df.sha.isin(pool.sha)), flip=False)
    pairs = df[df.severity > 0].drop_duplicates(['sha', 'severity'])
    dark = darkened(pairs, folder).set_index(pairs.sha + '-' + pairs.severity.astype(str))
    key = np.where(df.severity > 0, df.sha + '-' + df.severity.astype(str), df.sha)
    src = pd.concat([clean[['emb', 'brightness']], dark[['emb', 'brightness']]])
    return df.assign(frame_sha=key, emb=list(src.loc[key, 'emb']), brightness=src.loc[key, 'brightness'].to_numpy())

def judge(w, b, ev: pd.DataFrame) -> dict:
    "Accuracy, cat and dog recall and the recall gap (dog minus cat, points) on the dark-evening frames `ev`"
    p = predict_from_embeddings(np.stack(ev.emb), w, b) >= .5
    y = ev.label.eq('dog').to_numpy()
    rc, rd = (~p[~y]).mean(), p[y].mean()
    return dict(accuracy=float((p == y).mean()), recall_cat=float(rc), recall_dog=float(rd), gap=100 * float(rd - rc))

def judge_noise(w, b, clean: pd.DataFrame, noise: pd.DataFrame) -> dict:
    "Staging's noise measure: clean accuracy minus accuracy under noise (points), and the cat recall under noise"
    c, n = judge(w, b, clean), judge(w, b, noise)
    return dict(clean_accuracy=c['accuracy'], noise_accuracy=n['accuracy'], noise_recall_cat=n['recall_cat'],
                noise_drop=100 * (c['accuracy'] - n['accuracy']))

def strata(c: pd.DataFrame, budget: int, weight: float, seed: int) -> pd.DataFrame:
    "`budget` frames drawn at random within each lighting band, as many as `band_quotas` give it"
    band, key = frame_band(c.brightness), draw_key(c.frame_sha, seed)
    return pd.concat([c[band == b].iloc[np.argsort(key[band == b], kind='stable')[:q]]
                      for b, q in band_quotas(band, budget, weight).items()])

def choose(day: pd.DataFrame, budget: int, how: str, ref, seed: int, cfg, share: float = 1.0,
           mix: float = 0.0) -> pd.DataFrame:
    "The `budget` frames of one day the queue (or chance) gives the staff (`strata`: `share` of them from the strata)"
    c = day.drop_duplicates('frame_sha').assign(id=lambda d: d.index.astype(str), disagree=False,
                                                ts=lambda d: pd.Timestamp('2026-11-20', tz=cfg.monitor_tz).timestamp()
                                                + 3600 * d.hour)
    if how == 'strata' and share >= 1:
        return strata(c, budget, dark_weight(cfg), seed)
    if how == 'strata':   # a share of the places from the strata, the rest from the ranking alone
        s = strata(c, round(budget * share), dark_weight(cfg), seed)
        return pd.concat([s, rank_frames(c.drop(s.index), ref, 'ranked', seed, cfg).head(budget - len(s))])
    r = rank_frames(c, ref, how, seed, cfg)
    if how == 'banded' and mix:   # the banded draw with a share of places drawn at random
        order, _ = mix_random(np.arange(len(r)), mix, draw_key(r.frame_sha, seed))
        r = r.iloc[order]
    return r.head(budget)

def run(frames: pd.DataFrame, train, base, ref, mu_basis, budget: int, how: str, seed: int, cfg, ev, st) -> dict:
    "Label `budget` frames a day by `how` (random or a variant), retrain the head, judge it at dusk and on `st`'s noise"
    variant, how = how, 'random' if how == 'random' else cfg.label_queue
    mu, basis = mu_basis
    E = np.stack(frames.emb)
    frames = frames.assign(p_dog=predict_from_embeddings(E, *base))
    proj = (E - mu) @ basis
    frames = pd.concat([frames, pd.DataFrame(proj, columns=[f"proj_{i}" for i in range(proj.shape[1])])], axis=1)
    share, mix = STRATA_SHARE.get(variant, 1.0), BANDED_MIX.get(variant, 0.0)
    picked = pd.concat([choose(d, budget, how, ref, seed + i, cfg, share, mix)
                        for i, (_, d) in enumerate(frames.groupby('day'))])
    Et, yt, bt, V = train
    y = np.concatenate([yt, picked.label.eq('dog').to_numpy()])
    sw = fit_weights(y, np.r_[np.zeros(len(yt), bool), np.ones(len(picked), bool)],
                     np.concatenate([bt, picked.brightness.to_numpy(float)]), cfg)   # the retraining's weights
    w, b = blind_head(np.concatenate([Et, np.stack(picked.emb)]), y, V, sample_weight=sw)   # the retraining's head
    return dict(how=variant, budget=budget, seed=seed, labels=len(picked),
                dark_share=float((picked.severity > 0).mean()), cat_share=float(picked.label.eq('cat').mean()),
                **judge(w, b, ev), **judge_noise(w, b, *st))

def paired(r: pd.DataFrame, gate: float) -> pd.DataFrame:
    """Each queue variant at a budget against random at twice that budget, seed by seed: mean differences, 95%
    half-width, and how many weeks pass the noise gate `gate` (points) with the variant and with random"""
    rows = []
    rnd = r[r.how == 'random'].set_index(['budget', 'seed'])
    for (b, how), g in r[~r.how.isin(['random', 'none (base model)'])].groupby(['budget', 'how'], sort=False):
        if (2 * b, g.seed.iloc[0]) not in rnd.index: continue
        base = rnd.loc[[(2 * b, s) for s in g.seed]]
        d_gap = g.gap.abs().to_numpy() - base.gap.abs().to_numpy()
        d_acc = g.accuracy.to_numpy() - base.accuracy.to_numpy()
        d_noise = g.noise_drop.to_numpy() - base.noise_drop.to_numpy()
        half = lambda d: 1.96 * d.std(ddof=1) / np.sqrt(len(d))
        rows.append(dict(budget=b, how=how, against=f"random at {2 * b}", abs_gap_diff=d_gap.mean(),
                         abs_gap_ci=half(d_gap), gap_wins=int((d_gap <= 0).sum()), accuracy_diff=d_acc.mean(),
                         accuracy_ci=half(d_acc), noise_drop_diff=d_noise.mean(), noise_drop_ci=half(d_noise),
                         noise_passes=int((g.noise_drop <= gate).sum()),
                         random_passes=int((base.noise_drop <= gate).sum()),
                         seeds=len(g)))
    return pd.DataFrame(rows).set_index(['budget', 'how'])

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--days', type=int, default=3, help='dusk days whose frames are labelled')
    ap.add_argument('--frames', type=int, default=400, help='frames per day')
    ap.add_argument('--budgets', type=int, nargs='+', default=[50, 100], help='labels per day')
    ap.add_argument('--seeds', type=int, default=5)
    ap.add_argument('--first-seed', type=int, default=0, help='the first seed (fresh weeks to confirm a chosen setting)')
    ap.add_argument('--train', type=int, default=1000, help='training images of the base head')
    ap.add_argument('--proj-dim', type=int, default=PROJ_DIM,
                    help="dimensions of the embedding projection the queue sees (the log keeps PROJ_DIM)")
    ap.add_argument('--novelty', type=float, default=None, help='label_novelty_weight (default: the setting)')
    ap.add_argument('--coverage', type=float, default=None, help='label_coverage (default: the setting)')
    ap.add_argument('--balance', choices=['true', 'false'], default=None,
                    help="retrain_balance: the retraining's class weights per lighting band (default: the setting)")
    ap.add_argument('--noise-directions', type=int, default=None,
                    help="retrain_noise_directions: sensor-noise directions the retrained head ignores (default: the "
                         "setting; 0: none)")
    ap.add_argument('--variants', nargs='+', default=['banded'], choices=list(VARIANTS),
                    help="the queue's variants (banded, ranked: the settings as they are with that queue)")
    ap.add_argument('--out', default=None, help="CSV of every seed's rows (default: none)")
    a = ap.parse_args()
    over = dict(label_novelty_weight=a.novelty, label_coverage=a.coverage, retrain_balance=a.balance,
                retrain_noise_directions=a.noise_directions)
    over = {k: str(v) for k, v in over.items() if v is not None}
    t0, cfg = time.time(), get_settings(**over)
    folder = ensure_dir(cfg.runs/'bench'/'active_labels')
    ds = assign_splits(read_imageset())
    tr = ds.df[ds.df.subset == 'train'].sample(a.train, random_state=0)
    emb = compute_embeddings(ds.subset(ds.df.sha.isin(tr.sha)), flip=False)
    train = (np.stack(emb.loc[tr.sha, 'emb']), tr.label.eq('dog').to_numpy(), emb.loc[tr.sha, 'brightness'].to_numpy())
    base, mu_basis = fit_head(*train[:2]), fit_projection(train[0], a.proj_dim)
    train += (noise_directions(ds.subset(ds.df.sha.isin(tr.sha)), emb, cfg.retrain_noise_directions),)
    ref = (train[0][:500] - mu_basis[0]) @ mu_basis[1]
    test = ds.df[ds.df.split == 'test'].sample(frac=1, random_state=1)
    pool, held = test.iloc[:len(test) // 2], test.iloc[len(test) // 2:]
    ev = with_embeddings(held.head(400).assign(severity=np.tile([2.0, 3.0], 200)[:min(400, len(held))]), held,
                         folder/'eval')
    stage = staging_images(0, 0)
    stage = stage.iloc[pick_rows(stage, cfg.stage_robust_sample, 0)]   # staging's noise photos (its default seed 0)
    clean = compute_embeddings(read_imageset().subset(read_imageset().df.sha.isin(stage.sha)), flip=False)
    st = (stage.assign(emb=list(clean.loc[stage.sha, 'emb'])),
          stage.assign(emb=list(noisy(stage, cfg.stage_gate_severity, folder/'noise').emb)))
    gate = cfg.stage_max_drop_noise
    print(f"{a.days} dusk days of {a.frames} frames a seed; {len(ev)} dark-evening frames to judge on; "
          f"{len(stage)} staging photos under noise severity {cfg.stage_gate_severity} "
          f"(gate: drop <= {gate:g} points); "
          f"novelty weight {cfg.label_novelty_weight}, coverage {cfg.label_coverage}, retrain_balance {cfg.retrain_balance}, "
          f"retrain_noise_directions {cfg.retrain_noise_directions}; "
          f"prepared in {time.time() - t0:.0f} s")
    rows = [dict(how='none (base model)', budget=0, seed=0, labels=0, dark_share=np.nan, **judge(*base, ev),
                 **judge_noise(*base, *st))]
    cfgs = {(v, b): get_settings(**{**over, **VARIANTS[v], 'label_day_budget': str(b)}) for v in a.variants
            for b in a.budgets}
    plan = [(b, how) for b in a.budgets for how in (*a.variants, 'random')] + [(2 * max(a.budgets), 'random')]
    for s in range(a.first_seed, a.first_seed + a.seeds):
        frames = week_frames(pool, a.days, a.frames, folder/'frames', seed=s)   # each seed a week of its own
        for b, how in plan:
            rows.append(run(frames, train, base, ref, mu_basis, b, how, s, cfgs.get((how, b), cfg), ev, st))
        print(f"seed {s} done, {time.time() - t0:.0f} s", flush=True)
    r = pd.DataFrame(rows)
    if a.out: r.to_csv(a.out, index=False)
    summary = r.groupby(['budget', 'how'], sort=False).agg(
        labels=('labels', 'mean'), dark_share=('dark_share', 'mean'), cat_share=('cat_share', 'mean'),
        accuracy=('accuracy', 'mean'),
        accuracy_sd=('accuracy', 'std'), recall_cat=('recall_cat', 'mean'), recall_dog=('recall_dog', 'mean'),
        gap=('gap', 'mean'), abs_gap=('gap', lambda g: g.abs().mean()), gap_sd=('gap', 'std'),
        noise_drop=('noise_drop', 'mean'), noise_drop_sd=('noise_drop', 'std'),
        noise_recall_cat=('noise_recall_cat', 'mean'),
        noise_passes=('noise_drop', lambda d: int((d <= gate).sum())))
    with pd.option_context('display.width', 250, 'display.max_columns', 40):
        print(summary.round(3).to_string())
        print(paired(r, gate).round(3).to_string())
    print(f"{a.seeds} seeds, {time.time() - t0:.0f} s")

if __name__ == '__main__': main()
