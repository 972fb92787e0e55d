"""`parkml week --quick --fleet 3`: three edge boxes shipping to the week's own central plane through an outage and
a `kill -9`, checked against the stores themselves. Its own module: the plain week's fixture puts that week's stores
in the environment, and a fleet week started beside it must not inherit them."""
import json, os, time
from pathlib import Path
import pandas as pd, pytest
from conftest import run_cli

pytestmark = pytest.mark.timeout(1800)   # a whole (quick) week: minutes

@pytest.fixture(scope='module')
def fleet_week():
    "`parkml week --quick --fleet 3` as a real process, in a folder PostgreSQL's user can enter; its plane stopped after"
    import tempfile
    base = Path(tempfile.mkdtemp(prefix='parkml-fleetweek-'))
    base.chmod(0o711)
    runs, t0 = base/'week-demo', time.monotonic()
    r = run_cli('week', '--quick', '--fleet', '3', '--fresh', env={'PARKML_RUNS': str(base)}, timeout=1700)
    print(f"\nparkml week --quick --fleet 3: {time.monotonic() - t0:.0f} s, load average {os.getloadavg()}; in {base}")
    try:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
        (runs/'week'/'stdout.txt').write_text(r.stdout)
        env = dict(line.split('=', 1) for line in (runs/'demo.env').read_text().splitlines())
        yield dict(runs=runs, env=env, out=r.stdout, res=json.loads((runs/'week'/'week.json').read_text()))
    finally:
        run_cli('central', 'down', env={'PARKML_CENTRAL_DIR': str(runs/'central')}, timeout=300)

def test_a_fleet_week_ships_every_prediction_once_through_an_outage_and_a_kill(fleet_week):
    "The centre's ids equal the union of the boxes' own logs, read from the stores; backlogs grew and drained"
    from pg_fixture import sql
    res, centre = fleet_week['res'], fleet_week['env']['PARKML_PREDLOG_URI']
    boxes = {b['box_id']: b for b in res['fleet']}
    assert sorted(boxes) == ['park-a', 'park-b', 'park-c'] and all(b['predlog_uri'].startswith('sqlite:///')
                                                                   for b in boxes.values())
    local = {b: [r[0] for r in sql(v['predlog_uri'], 'SELECT id FROM predictions')] for b, v in boxes.items()}
    at_centre = sql(centre, 'SELECT id, box_id FROM predictions')
    union = set().union(*map(set, local.values()))
    assert all(local.values()) and sum(map(len, local.values())) == len(union)         # no id in two boxes
    assert len(at_centre) == len({i for i, _ in at_centre}) == len(union)              # no duplicate at the centre
    assert {i for i, _ in at_centre} == union                                           # none missing, none extra
    for b, ids in local.items(): assert {i for i, box in at_centre if box == b} == set(ids), b
    for b, v in boxes.items():                                                          # every box drained at the end
        assert sql(v['predlog_uri'], 'SELECT count(*) FROM predictions WHERE shipped_at IS NULL') == [(0,)], b
    o = res['centre']['outage']
    assert o['end'] - o['start'] >= 8
    late = sql(centre, 'SELECT box_id, count(*) FROM predictions WHERE arrived_at - received > 5 GROUP BY box_id')
    assert {b for b, n in late if n > 0} == set(boxes), late                            # each box held rows back
    samples = pd.read_csv(fleet_week['runs']/'week'/'backlog.csv')
    for b, v in boxes.items():
        assert v['backlog_peak'] > v['backlog_before'] + 10 and v['drained_after_s'] < 60, v
        during = samples[(samples.box_id == b) & samples.t.between(o['start'], o['end'])]
        assert during.backlog.max() > 10, b
    assert res['exactly_once']['ok'] and 'every prediction once' in fleet_week['out']
    assert (fleet_week['runs']/'week'/'week.html').read_text().count('<img src="data:image/png;base64,') >= 2

def test_the_killed_box_restarted_and_the_loop_closed_on_the_fleet(fleet_week):
    "The box killed -9 served again after its restart; the retrained version was released and served by every box"
    import psutil
    from pg_fixture import sql
    res = fleet_week['res']
    k, boxes = res['kill'], {b['box_id']: b for b in res['fleet']}
    assert k['box_id'] == 'park-b' and 0 < k['at_centre'] < k['local'] and not psutil.pid_exists(k['pid'])
    assert k['mid_batch'] and k['in_flight']['table'] == 'predictions' and k['in_flight']['rows'] > 0, k
    after = sql(boxes['park-b']['predlog_uri'], 'SELECT count(*) FROM predictions WHERE received > ?', (k['at'],))
    assert after[0][0] > 100   # answered after its restart
    v = res['versions']
    assert v['released'] == v['retrained'] != v['first']
    for b in boxes.values():
        served = {r[0] for r in sql(b['predlog_uri'], 'SELECT DISTINCT model_version FROM predictions')}
        assert served == {v['first'], v['released']}, (b['box_id'], served)
    first, new = res['dusk']
    assert new['frames'] == first['frames'] > 0 and first['missing'] == 0, res['dusk']   # the same dark frames
    assert new['gap_points'] < first['gap_points'], res['dusk']   # retraining moves the boundary towards cats
    alerts = sql(fleet_week['env']['PARKML_ALERTS_URI'], 'SELECT rule, camera FROM alerts')
    assert any(str(c).startswith('park-') for _, c in alerts), alerts                  # alerts name their box
    assert 'park-b killed (kill -9' in fleet_week['out'] and 'mid-batch' in fleet_week['out'] and 'chain alerts:' in fleet_week['out']
