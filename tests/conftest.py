"Shared fixtures: real petpark data, a throw-away runs folder, one real training run per test session."
import os, shutil, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
PARKML = str(Path(sys.executable).parent/'parkml')
# every test's runs folder shares one embedding cache (keyed by image content): each photo's embedding is computed once
os.environ.setdefault('PARKML_CACHE', str(ROOT/'runs'/'cache'))
os.environ.setdefault('PARKML_PASSWORD_ROUNDS', '4')   # cheap bcrypt for the tests' many sign-ins (production: 12)
for _k in ('PARKML_USER', 'PARKML_PASSWORD', 'PARKML_TOKEN', 'PARKML_SIGNING_KEY'): os.environ.pop(_k, None)   # no identity from the caller's shell

def run_cli(*args, env=None, timeout=600, check=False):
    "Run the installed `parkml` command; returns the CompletedProcess"
    r = subprocess.run([PARKML, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})}, cwd=ROOT)
    if check and r.returncode: raise AssertionError(f"parkml {args} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r

@pytest.fixture(scope='session')
def data_root():
    from parkml.config import get_settings
    root = get_settings().data
    assert (root/'manifest.csv').is_file(), f"petpark data not found at {root}"
    return root

@pytest.fixture(scope='session')
def manifest(data_root): return pd.read_csv(data_root/'manifest.csv', dtype=str, keep_default_na=False)

@pytest.fixture
def tmp_runs(tmp_path, monkeypatch):
    "A fresh, empty runs folder (MLflow store, caches, prediction log) for one test"
    monkeypatch.setenv('PARKML_RUNS', str(tmp_path/'runs'))
    return tmp_path/'runs'

@pytest.fixture(scope='session')
def trained(tmp_path_factory):
    """One real training run through the papermill notebook on a small stratified sample, in its own store.
    Sets PARKML_RUNS for the whole session so later tests see this store; yields the notebook's result."""
    runs = tmp_path_factory.mktemp('trained')/'runs'
    old = os.environ.get('PARKML_RUNS')
    os.environ['PARKML_RUNS'] = str(runs)
    from parkml.notebooks import run_notebook
    res = run_notebook('50_train', dict(limit=120, run_name='pytest'), progress=False)
    res['runs'] = runs
    yield res
    if old is None: os.environ.pop('PARKML_RUNS', None)
    else: os.environ['PARKML_RUNS'] = old
