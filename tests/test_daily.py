"""The daily analysis end to end: synthetic days of real petpark frames through a real model version, the papermill
notebook, one MLflow run per day, alerts delivered to a real webhook receiver and a real SMTP server on loopback."""
import json, re
from pathlib import Path
import pytest
from conftest import run_cli
from receivers import Receiver, free_port, receiver, mailbox  # noqa: F401 (fixtures)
from parkml.alerts import open_alert_store
from parkml.config import get_settings
from parkml.predlog import open_store
from parkml.tracking import mlflow_client
from parkml import simulate as sim

# 600 holdout images: their model outputs are computed once per session (cached), 1-2k frames a day
DAY_KW = dict(n=1500, n_images=600, seed=0, progress=False)


@pytest.fixture
def day_env(trained, tmp_path, monkeypatch):
    "A fresh prediction log and alert store for one test (the model store is the session's trained one)"
    monkeypatch.setenv('PARKML_PREDLOG_URI', f"sqlite:///{tmp_path}/predlog.db")
    monkeypatch.setenv('PARKML_FRAMES_DIR', str(tmp_path/'frames'))
    monkeypatch.setenv('PARKML_ALERTS_URI', f"sqlite:///{tmp_path}/alerts.db")
    monkeypatch.setenv('PARKML_ALERT_BACKOFF_S', '0.05')
    monkeypatch.setenv('PARKML_ALERT_TIMEOUT_S', '2.0')
    return dict(version=str(trained['version']), tmp=tmp_path)


def write_day(version, day, **kw):
    with open_store() as st: return sim.synthetic_day(st, version, day=day, **{**DAY_KW, **kw})


def test_dog_share_jump_full_run_alert_reaches_webhook_and_mail(day_env, receiver, mailbox, monkeypatch):
    """`parkml analyze` on a day when 95% of the traffic is dogs: executed notebook and HTML, one MLflow run tagged with
    the version, SHAP maps, and a prediction-drift alert with its evidence at the webhook and in the mailbox"""
    monkeypatch.setenv('PARKML_ALERT_WEBHOOK_URL', receiver.url)
    monkeypatch.setenv('PARKML_SMTP_HOST', '127.0.0.1')
    monkeypatch.setenv('PARKML_SMTP_PORT', str(mailbox.port))
    monkeypatch.setenv('PARKML_SMTP_TO', 'keeper@park.test')
    v, day = day_env['version'], '2026-05-05'
    info = write_day(v, day, dog_share=0.95)
    assert info['n'] == 1500 and info['forward_passes'] <= 600
    r = run_cli('analyze', '--day', day, '--set', 'shap_frames=2', '--set', 'shap_max_evals=40', '--quiet', check=True)
    run_id = re.search(r'MLflow run ([0-9a-f]{32})', r.stdout).group(1)
    html = Path(re.search(r'report: (\S+)', r.stdout).group(1))
    assert f'model version {v} judged on 1500 predictions' in r.stdout and 'prediction_drift' in r.stdout
    nb = html.with_suffix('.ipynb')
    assert nb.is_file() and html.is_file() and 'Drift against the reference' in html.read_text()
    cells = json.loads(nb.read_text())['cells']
    assert not any(o.get('output_type') == 'error' for c in cells for o in c.get('outputs', []))
    # one MLflow run for the day, tagged with the version it judged, holding metrics, plots, tables, notebook and report
    client = mlflow_client()
    exp = client.get_experiment_by_name(get_settings().experiment).experiment_id
    runs = client.search_runs([exp], f"tags.`parkml.kind` = 'daily' and tags.`parkml.day` = '{day}'")
    assert [x.info.run_id for x in runs] == [run_id]
    run = runs[0]
    assert run.data.tags['parkml.model_version'] == v and run.data.tags['parkml.model_run_id'] == info['run_id']
    m = run.data.metrics
    assert m['n_predictions'] == 1500 and m['drift'] == 1.0 and m['dog_share'] > 0.85 and 0 < m['est_accuracy'] <= 1
    assert m['label_n_labels'] == info['n_labels'] and m['alerts'] >= 1
    arts = {a.path for d in ('notebook', 'plots', 'report', 'tables') for a in client.list_artifacts(run_id, d)}
    assert {f'notebook/{nb.name}', f'notebook/{html.name}', f'report/daily-{day}.html', 'plots/shap.png', 'plots/drift.png',
            'plots/integrity.png', 'plots/performance.png', 'plots/telemetry.png', 'tables/alerts.json'} <= arts, arts
    # the alert: stored, with evidence and the run link; delivered once to each channel
    with open_alert_store() as st:
        a, = st.query(day=day, rule='prediction_drift')
        ob = st.outbox(a.id)
    ev = a.evidence
    assert a.model_version == v and ev['dog_share'] > 0.85 and abs(ev['reference_dog_share'] - 0.5) < 0.15
    assert ev['change'] > 0.3 and ev['test_p_adjusted'] <= 0.01 and run_id in ev['run_link'] and a.action == 'watch'
    assert 'rose from' in a.message and set(ob.channel) == {'webhook', 'email'} and ob.delivered.notna().all()
    hooked = [g for g in receiver.got if g['rule'] == 'prediction_drift']
    assert len(hooked) == 1 and hooked[0]['id'] == a.id and hooked[0]['evidence']['dog_share'] == ev['dog_share']
    mails = [msg for _, _, msg in mailbox.msgs if 'prediction_drift' in msg['Subject']]
    assert len(mails) == 1 and run_id in mails[0].get_payload(decode=True).decode()


def test_cat_recall_drop_alert_retried_while_receiver_down_then_delivered(day_env, monkeypatch):
    """Evenings at night severity 3: the day's labels show cat recall falling more than 10 points. The webhook is down:
    the alert is stored, tried `alert_retries` times, kept queued, and delivered by `parkml alerts deliver` later"""
    from parkml.daily import run_daily
    port = free_port()  # nothing listens here yet
    monkeypatch.setenv('PARKML_ALERT_WEBHOOK_URL', f"http://127.0.0.1:{port}/hook")
    monkeypatch.setenv('PARKML_ALERT_RETRIES', '2')
    v, day = day_env['version'], '2026-05-06'
    info = write_day(v, day, condition='night', severity=3, condition_hours=(15, 21), label_share=0.1, n_images=300)
    assert info['n_condition'] > 300 and info['n_labels'] > 100
    res = run_daily(day, thresholds=dict(shap_frames=0), progress=False)
    assert res['undelivered'] >= 1 and res['model_version'] == v
    with open_alert_store() as st:
        a, = st.query(day=day, rule='recall_drop_cat')
        ob = st.outbox(a.id)
    ev = a.evidence
    assert a.severity == 'critical' and a.action == 'retrain' and ev['class'] == 'cat' and ev['drop_points'] >= 10
    assert ev['recall_hi'] < ev['reference_recall'] and ev['n_labels_class'] >= 20 and res['run_id'] in ev['run_link']
    assert abs(ev['recall'] - ev['reference_recall'] + ev['drop_points'] / 100) < 1e-9
    assert ob.attempts[0] == 2 and ob.delivered.isna()[0] and 'ConnectError' in ob.last_error[0]
    r = Receiver(port=port)
    try:
        out = run_cli('alerts', 'deliver', check=True)
        assert 'delivered, 0 still queued' in out.stdout
        got = {g['rule']: g for g in r.got}
        assert got['recall_drop_cat']['id'] == a.id and got['recall_drop_cat']['evidence']['drop_points'] == ev['drop_points']
        shown = run_cli('alerts', 'show', a.id, check=True).stdout
        assert 'Cat recall fell by' in shown and 'Suggested action: retrain' in shown
    finally: r.stop()
    with open_alert_store() as st: assert st.outbox(pending=True).empty


def test_schedule_prints_cron_and_systemd_lines(tmp_path, monkeypatch):
    from parkml.schedule import schedule_entries, install_schedule
    r = run_cli('schedule', check=True)
    line = [x for x in r.stdout.splitlines() if x and not x.startswith('#')]
    assert len(line) == 1 and re.match(r'^30 2 \* \* \* mkdir -p .+ && cd .+ && PARKML_SETTINGS=.+/settings\.ini .+/parkml analyze '
                                       r'--day yesterday --quiet >> .+/logs/daily\.log 2>&1$', line[0]), r.stdout
    bad = run_cli('schedule', '--at', '25:61')
    assert bad.returncode == 2 and 'HH:MM' in bad.stderr and 'Traceback' not in bad.stderr
    text = '\n'.join(schedule_entries('systemd', '03:15').values())
    assert 'OnCalendar=*-*-* 03:15:00' in text and 'Type=oneshot' in text and 'Persistent=true' in text
    assert re.search(r'^ExecStart=/\S+/parkml analyze --day yesterday --quiet$', text, re.M)
    monkeypatch.setenv('PARKML_RUNS', str(tmp_path/'runs'))
    paths, hint = install_schedule('systemd')
    assert [p.name for p in paths] == ['parkml-daily.service', 'parkml-daily.timer'] and all(p.is_file() for p in paths)
    assert paths[0].parent == tmp_path/'runs'/'systemd' and 'OnCalendar=*-*-* 02:30:00' in paths[1].read_text()
    assert hint.startswith('activate: systemctl --user link') and 'enable --now parkml-daily.timer' in hint
