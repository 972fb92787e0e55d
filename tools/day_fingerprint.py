#!/usr/bin/env python
"""The daily analysis's results on one fixed fleet day, as JSON, to show that a refactor changes no behaviour.

    PYTHONPATH=CHECKOUT python tools/day_fingerprint.py OUT.json [--work DIR]

Run it once with the old checkout on PYTHONPATH and once with the new one, then compare the two files: every metric
of `daily.day_metrics` (timings left out), the summary, the cameras, boxes and checks tables, the drift of each
camera, the alerts the rules raise, the frames SHAP explains and a hash of every figure's PNG bytes. The first run
in a work folder trains a small version (papermill `50_train`, 120 images a subset) and writes a two-box day of
real holdout frames (park-b's evenings dark, its cam-02 frozen); later runs reuse both, so only the analysis differs."""
import argparse, hashlib, json, os, shutil, sys
from pathlib import Path


def prepare(work: Path, day: str) -> None:
    "Train the small version and write the day, once per work folder"
    from parkml.notebooks import run_notebook
    from parkml.predlog import open_store
    from parkml import simulate as sim
    if not (work/'trained.json').is_file():
        res = run_notebook('50_train', dict(limit=120, run_name='fingerprint'), progress=False)
        (work/'trained.json').write_text(json.dumps(dict(version=res['version'])))
    src = work/'day'
    if (src/'log.db').is_file():
        return
    version = str(json.loads((work/'trained.json').read_text())['version'])
    common = dict(version=version, day=day, n_images=200, seed=0, progress=False)
    for box, kw in [('park-a', dict(n=1000)),
                    ('park-b', dict(n=1000, condition='night', severity=3, condition_hours=(15, 21), label_share=0.1)),
                    ('park-b', dict(n=60, cameras=('cam-02',), n_images=1, label_share=0.0, telemetry=False,
                                    decode_failure_rate=0.0, store_frames=False))]:
        os.environ['PARKML_BOX_ID'] = box
        with open_store(f"sqlite:///{src}/log.db", src/'frames') as st:
            sim.synthetic_day(st, **{**common, **kw})
    os.environ.pop('PARKML_BOX_ID')


def fingerprint(work: Path, day: str) -> dict:
    "Analyse a fresh copy of the day and return what the analysis found"
    from parkml.predlog import open_store
    from parkml.daily import analyse_day, AnalysisOptions, day_metrics
    from parkml.daily_rules import day_alerts
    from parkml.day_groups import box_table
    run = work/'run'
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(work/'day', run)
    opts = AnalysisOptions(shap=True, figures=True, progress=False, thresholds=dict(shap_frames=4))
    with open_store(f"sqlite:///{run}/log.db", run/'frames') as st:
        res = analyse_day(day, opts, st)
    return dict(metrics={k: v for k, v in day_metrics(res).items() if not k.startswith('time_')},
                summary=res.summary(), cameras=res.camera_rows.to_csv(index=False),
                boxes=box_table(res).to_csv(index=False), checks=res.checks_table().to_csv(index=False),
                camera_drift={c: [d.drift, list(d.fired), d.n_window] for c, d in res.camera_drift.items()},
                box_counts={b: v.counts for b, v in res.boxes.items()},
                alerts=sorted(f'{a.severity} {a.rule} {a.camera} {a.message}' for a in day_alerts(res)),
                shap_ids=list(map(str, res.shap['ids'])) if res.shap else None,
                figures={k: hashlib.sha256(v).hexdigest()[:16] for k, v in sorted(res.pngs().items())})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('out', help='the JSON file to write')
    ap.add_argument('--work', default='/tmp/parkml-day-fingerprint', help='work folder (version, day, stores)')
    ap.add_argument('--day', default='2026-05-07', help='the day written and analysed')
    a = ap.parse_args(argv)
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.update(PARKML_RUNS=str(work/'runs'), PARKML_CACHE=str(work/'cache'),
                      PARKML_ALERTS_URI=f"sqlite:///{work}/alerts.db", PARKML_ALERT_WEBHOOK_URL='', PARKML_SMTP_HOST='')
    import parkml
    print(f"code from {Path(parkml.__file__).parent}", file=sys.stderr)
    prepare(work, a.day)
    out = fingerprint(work, a.day)
    Path(a.out).write_text(json.dumps(out, indent=1, sort_keys=True, default=str))
    print(f"{len(out['metrics'])} metrics, {len(out['alerts'])} alerts, {len(out['figures'])} figures -> {a.out}")


if __name__ == '__main__':
    main()
