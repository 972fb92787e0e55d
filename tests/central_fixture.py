"""A central plane for the tests: `parkml central up` in a fresh folder starts real PostgreSQL, SeaweedFS and MLflow
server processes on loopback; `parkml central down` stops them after the session."""
import json, shutil, tempfile, time
from pathlib import Path
import pytest
from conftest import run_cli

def plane_up(folder: Path) -> dict:
    "Start a plane in `folder` with the CLI: its `status --json`, the environment that selects it, its start-up time"
    env = dict(PARKML_CENTRAL_DIR=str(folder))
    t0 = time.monotonic()
    r = run_cli('central', 'up', '--json', '--quiet', env=env, timeout=300, check=True)
    return dict(json.loads(r.stdout), env=env, startup_s=time.monotonic() - t0)

def plane_down(st: dict):
    "Stop a plane started by `plane_up`"
    run_cli('central', 'down', env=st['env'], timeout=300, check=True)

@pytest.fixture(scope='session')
def central():
    "A running central plane for the session (in /tmp: PostgreSQL's user must be able to enter its folder)"
    base = Path(tempfile.mkdtemp(prefix='parkml-central-'))
    base.chmod(0o711)
    st = plane_up(base/'central')
    print(f"\ncentral plane up in {st['startup_s']:.1f} s")
    yield st
    plane_down(st)
    shutil.rmtree(base, ignore_errors=True)

def service_auth(st: dict) -> tuple:
    "(user, password) of the plane's parkml service account, read from its 0600 secrets file"
    from parkml.plane import read_env_file
    sec = read_env_file(st['secrets_file'])
    return sec['MLFLOW_TRACKING_USERNAME'], sec['MLFLOW_TRACKING_PASSWORD']
