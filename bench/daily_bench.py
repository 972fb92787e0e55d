"""Daily analysis at production scale: a day of 100,000 logged predictions judged end to end.

A model version is trained (or reused) in the benchmark's own runs folder. `parkml.simulate.synthetic_day` writes one
day of real petpark holdout frames resampled to 100,000 predictions (every frame through the version's ONNX graph,
as the service computes it; 2% labelled; one telemetry sample a minute) into a fresh prediction log. Then the daily
analysis runs as `parkml analyze` runs it: the papermill notebook `52_daily` (integrity, drift, performance, host,
fairness, SHAP on `shap_frames` frames, figures, one MLflow run with the HTML report, alerts). Prints the wall time of
building the day, of the analysis and of each of its phases, and the peak memory of the analysis.

    .venv/bin/python bench/daily_bench.py [--runs DIR] [--n 100000] [--images 2000] [--limit N] [--inprocess]
"""
import os, resource, shutil, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from drift_power import get_version  # the newest version of the runs folder, or a new one trained
from bench_args import bench_parser, parse_bench


def peak_mb(who) -> float: return resource.getrusage(who).ru_maxrss / 1024


def main():
    ap = bench_parser(__doc__, '/tmp/parkml-drift-bench/runs', 0,
                      'runs folder (model, caches); shared with drift_power.py so one trained version serves both')
    ap.add_argument('--n', type=int, default=100_000, help='logged predictions in the day')
    ap.add_argument('--images', type=int, default=2000, help='distinct holdout images the day resamples (petpark has 1,401)')
    ap.add_argument('--day', default='2026-06-01')
    ap.add_argument('--inprocess', action='store_true', help='run analyse_day + finish_day in this process instead of papermill')
    a = parse_bench(ap)
    day_dir = Path(a.runs).resolve()/'bench-day'
    shutil.rmtree(day_dir, ignore_errors=True)
    os.environ.update(PARKML_PREDLOG_URI=f"sqlite:///{day_dir}/predlog.db", PARKML_FRAMES_DIR=str(day_dir/'frames'),
                      PARKML_ALERTS_URI=f"sqlite:///{day_dir}/alerts.db", PARKML_ALERT_WEBHOOK_URL='', PARKML_SMTP_HOST='')
    from parkml.config import get_settings
    from parkml.predlog import open_store
    from parkml.simulate import synthetic_day
    cfg = get_settings()
    mv = get_version(a.limit)
    print(f"model version {mv.version} (run {mv.run_id}); shap_frames {cfg.shap_frames} x {cfg.shap_max_evals} evaluations; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    t = time.perf_counter()
    with open_store() as st: info = synthetic_day(st, mv, n=a.n, day=a.day, n_images=a.images)
    build = time.perf_counter() - t
    print(f"built the day: {info['n']:,} predictions ({info['n_rejected']} rejected, {info['n_labels']} labelled) from "
          f"{info['n_images']} images, {info['forward_passes']} forward passes, in {build:.1f} s", flush=True)
    t = time.perf_counter()
    if a.inprocess:
        from parkml.daily import analyse_day, finish_day
        res = analyse_day(a.day)
        t_an = time.perf_counter() - t
        out = finish_day(res, send=False)
        seconds, alerts, mem = {**res.seconds, 'mlflow, report and alerts': time.perf_counter() - t - t_an}, out['alert_lines'], peak_mb(resource.RUSAGE_SELF)
        where = 'this process (includes building the day)'
    else:
        from parkml.daily import run_daily
        out = run_daily(a.day, send=False)
        seconds, alerts, mem = out['seconds'], out['alert_lines'], peak_mb(resource.RUSAGE_CHILDREN)
        where = 'the notebook kernel'
    total = time.perf_counter() - t
    print(f"\nanalysis of {info['n']:,} predictions: {total:.1f} s end to end "
          f"({'in process' if a.inprocess else 'papermill: kernel start, notebook, HTML export, MLflow logging'})")
    for k, v in seconds.items(): print(f"  {k:28s} {v:6.2f} s")
    print(f"  {'other (kernel, notebook, logging)':28s} {total - sum(seconds.values()):6.2f} s")
    print(f"peak memory of {where}: {mem:.0f} MB")
    print(f"alerts: {len(alerts)}" + ''.join(f"\n  {x[:150]}" for x in alerts))
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; target: analysis <= 60 s on 2 cores")


if __name__ == '__main__': main()
