"""A small park for the governance app, audit and trace tests: registered versions of the really trained model
(a model name of the test's own), a staging run, approval and release through parkml.governance, a prediction log
with labelled predictions and frames, alerts, and a users file. Everything lives in the test's tmp folder."""
import json, os, time
from pathlib import Path
import numpy as np
import pytest

STAGING_SUMMARY = 'staging/summary.json'

def make_park(trained, tmp_path: Path, monkeypatch, n_pred: int = 60) -> dict:
    import mlflow
    from parkml.config import get_settings
    from parkml.tracking import mlflow_client, lineage_tags
    from parkml.governance import approve, release
    from parkml.tracking import registry_sha256
    from parkml.users import add_user, authenticate
    from parkml.predlog import open_store
    from parkml.alerts import Alert, open_alert_store
    src = mlflow_client().get_model_version(get_settings().model_name, trained['version'])
    env = dict(PARKML_MODEL_NAME=f"park-{tmp_path.name}"[:60], PARKML_GOVERNANCE_URI=f"sqlite:///{tmp_path}/governance.db",
               PARKML_PREDLOG_URI=f"sqlite:///{tmp_path}/predlog.db", PARKML_FRAMES_DIR=str(tmp_path/'frames'),
               PARKML_ALERTS_URI=f"sqlite:///{tmp_path}/alerts.db", PARKML_USERS_FILE=str(tmp_path/'users.yaml'),
               PARKML_KEYS_DIR=str(tmp_path/'keys'), PARKML_TRUSTED_KEYS=str(tmp_path/'trusted_keys.json'))
    for k, v in env.items(): monkeypatch.setenv(k, v)
    cfg = get_settings(); client = mlflow_client(cfg)
    client.create_registered_model(cfg.model_name)
    for _ in range(3): client.create_model_version(cfg.model_name, src.source, src.run_id, tags=src.tags)
    staging = {}
    for v in ('1', '2'):  # the staging run's part: a run with its summary, and the version tags
        with mlflow.start_run(run_name=f"staging-v{v}") as r:
            mlflow.set_tags({**lineage_tags(src.tags.get('parkml.data_version'), src.run_id),
                             'parkml.kind': 'staging', 'parkml.model_version': v})
            gates = [dict(name='accuracy', value=0.93, threshold=0.85, op='>=', passed=True),
                     dict(name='recall_gap_points', value=3.1, threshold=10.0, op='<=', passed=True)]
            mlflow.log_dict(dict(version=v, passed=True, verdict='passed', gates=gates, reasons=[],
                                 recall_gap_sentence='The model favours dogs over cats by 3.1 points (dog recall 0.95 vs cat recall 0.92).',
                                 robustness=[dict(condition='fog', severity=3, accuracy=0.88, accuracy_drop=5.0)],
                                 fairness=[dict(grouping='class', group='cat', recall_cat=0.92, n=60)]), STAGING_SUMMARY)
            mlflow.log_metrics({'stage_accuracy': 0.93})
        staging[v] = r.info.run_id
        sha = registry_sha256(client.get_model_version(cfg.model_name, v))   # the bytes the staging run tested
        for k, val in dict(validation_status='passed', staging_run_id=r.info.run_id, validation_reasons='',
                           staging_onnx_sha256=sha).items():
            client.set_model_version_tag(cfg.model_name, v, k, val)
    users = {'olu': ('owner', 'olu-secret-1'), 'ana': ('qa', 'ana-secret-1'), 'vic': ('viewer', 'vic-secret-1')}
    for name, (role, pw) in users.items():   # the first owner, then the others added by that owner, signed in
        add_user(name, role, pw, by=None if name == 'olu' else authenticate('olu', 'olu-secret-1', env=False))
    t_before = time.time()
    approve('1', authenticate('ana', 'ana-secret-1', env=False), 'staging report of version 1 read')
    release('1', authenticate('olu', 'olu-secret-1', env=False), 'first model to production')
    t_release = time.time()
    rng = np.random.default_rng(0)
    ids = []
    with open_store() as st:
        recs = []
        for i in range(n_pred):
            lab = 'dog' if rng.random() < .5 else 'cat'
            recs.append(dict(ts=t_release + i, camera=f"cam-0{1 + i % 2}", model_name=cfg.model_name, model_version='1',
                             run_id=src.run_id, alias='champion', label=lab, p_dog=.9 if lab == 'dog' else .1, latency_ms=10. + i % 7,
                             width=640, height=480, brightness=.5, contrast=.2, sharpness=.1,
                             frame=f"stand-in frame {i}".encode()))
        ids = st.log_predictions(recs)
        for i, pid in enumerate(ids[:40]):  # 40 labels, 4 of them disagree with the model
            true = recs[i]['label'] if i % 10 else ('cat' if recs[i]['label'] == 'dog' else 'dog')
            st.add_feedback(pid, true, 'keeper', ts=t_release + 100 + i)
    with open_alert_store() as al:
        alerts = al.add([Alert('accuracy', 'warning', 'labelled accuracy 0.90 under 0.95', 'retrain', dict(accuracy=0.9),
                               day=time.strftime('%Y-%m-%d'), model_version='1'),
                         Alert('integrity_frozen', 'critical', 'camera cam-02 repeats one frame', 'check the camera',
                               day=time.strftime('%Y-%m-%d'), model_version='1', camera='cam-02')])
        al.add_action(alerts[0].id, 'retrain', 'olu', 'requested', note='labels say accuracy dropped')
    return dict(cfg=cfg, client=client, name=cfg.model_name, src=src, staging=staging, ids=ids, recs=recs, alerts=alerts,
                t_before=t_before, t_release=t_release, users=users, env=env)
