"""The command line every model benchmark starts with: its runs folder and the images per subset used when a model
must be trained first. Parsing sets PARKML_RUNS, so parkml, imported after, works in that folder."""
import argparse, os
from pathlib import Path


def bench_parser(doc: str, # the benchmark's docstring: its first line is the description
                 runs: str, # the default runs folder
                 limit: int, # the default images per subset for a model trained on the spot (0: all)
                 runs_help: str = 'runs folder of the benchmark (model, caches)', # help of --runs
                ) -> argparse.ArgumentParser:
    "A parser with the options `--runs` and `--limit`; the benchmark adds its own"
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument('--runs', default=runs, help=runs_help)
    ap.add_argument('--limit', type=int, default=limit, help='images per subset when a model must be trained (0: all)')
    return ap


def parse_bench(ap: argparse.ArgumentParser) -> argparse.Namespace:
    "The parsed arguments; PARKML_RUNS names the runs folder"
    a = ap.parse_args()
    os.environ['PARKML_RUNS'] = str(Path(a.runs).resolve())
    return a
