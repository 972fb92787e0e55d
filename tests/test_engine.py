"""The int8 variant of a version (`parkml.quantize`): a new registered version with its lineage and its own reference,
and the staging gates of the shipping rule that judge it against its source."""
import os
from types import SimpleNamespace
import numpy as np, pytest
from conftest import run_cli

CALIBRATION = 16   # train photos: enough for a real quantization, few enough for a fast test

@pytest.fixture(scope='module')
def variant(trained, tmp_path_factory):
    "The trained version copied as v1 under a registry name of this module's own, and its int8 variant (NNCF) as v2"
    from parkml.config import get_settings
    from parkml.tracking import mlflow_client
    from parkml.quantize import quantize_version
    src = mlflow_client().get_model_version(get_settings().model_name, trained['version'])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('PARKML_MODEL_NAME', f"engine-{os.getpid()}")
        mp.setenv('PARKML_CACHE', str(tmp_path_factory.mktemp('engine_cache')))
        cfg = get_settings()
        client = mlflow_client(cfg)
        client.create_registered_model(cfg.model_name)
        lineage = {k: v for k, v in src.tags.items() if k.startswith('parkml.')}
        client.create_model_version(cfg.model_name, src.source, src.run_id, tags=lineage)
        res = quantize_version('1', 'nncf', CALIBRATION, alias='int8', progress=False)
        yield dict(res=res, cfg=cfg, client=client, src=client.get_model_version(cfg.model_name, '1'))

def test_quantized_version_is_a_new_version_with_its_lineage_and_reference(variant):
    from parkml.config import file_sha256
    from parkml.data import data_version
    from parkml.model import open_model, recorded_engine
    from parkml.monitor import load_reference
    from parkml.quantize import calibration_rows
    from parkml.staging_checks import reference_images
    from parkml.tracking import local_onnx, resolve_version, lineage
    r, cfg, client, src = variant['res'], variant['cfg'], variant['client'], variant['src']
    mv = resolve_version('int8', client, cfg)
    assert r['version'] == str(mv.version) == '2' and r['source'] == '1'
    rows = calibration_rows(CALIBRATION)
    assert set(rows.subset) == {'train'} and set(rows.split) == {'train'}          # never a test, val or stage photo
    t = mv.tags
    assert t['parkml.quantized_from'] == '1' and t['parkml.quantization_method'] == 'nncf'
    assert t['parkml.calibration_sha256'] == data_version(rows) == r['calibration_sha256']
    assert t['parkml.calibration_images'] == str(CALIBRATION) and t['validation_status'] == 'pending'
    assert t['parkml.calibration_condition_share'] == str(cfg.quantize_condition_share)
    assert t['parkml.data_version'] == src.tags['parkml.data_version'] and t['parkml.parent_run'] == src.run_id
    assert mv.run_id != src.run_id and lineage('2', client, cfg)['parent_run'] == src.run_id
    q, f = local_onnx(mv, client, cfg), local_onnx(src, client, cfg)
    assert file_sha256(q) != file_sha256(f)
    rec = recorded_engine(cfg, q)                                                    # auto decided for this graph
    assert rec['graph_sha256'] == file_sha256(q) and rec['engine'] == r['engine']
    # its own reference: the source's rows, answered by the int8 graph through the engine that serves it
    ref_q, ref_f = load_reference(mv, 'all', cfg, client), load_reference(src, 'all', cfg, client)
    assert list(ref_q.sha) == list(ref_f.sha) and t['parkml.reference_engine'] == r['engine']
    p = open_model(q, cfg=cfg).predict(reference_images(ref_q, size=cfg.image_size))
    assert np.abs(p - ref_q.p_dog.to_numpy()).max() < 1e-5
    assert 0 < np.abs(ref_q.p_dog - ref_f.p_dog).max() < 0.3                      # int8: close, not equal
    assert ((ref_q.p_dog >= .5) == (ref_f.p_dog >= .5)).mean() >= 0.98
    assert abs(r['quantized_accuracy_lost_points']) <= 2

def test_a_variant_is_not_quantized_again(variant, monkeypatch):
    "The CLI refuses to quantize an int8 variant, with a message and no traceback"
    for k, v in dict(PARKML_MODEL_NAME=variant['cfg'].model_name, PARKML_CACHE=str(variant['cfg'].cache)).items():
        monkeypatch.setenv(k, v)
    out = run_cli('quantize', 'int8', timeout=300)
    assert out.returncode == 2 and 'already an int8 variant (of 1)' in out.stderr and 'Traceback' not in out.stderr

def perturbed(path, dest, bias_shift: float):
    "A copy of the graph at `path` whose head bias is shifted by `bias_shift`: a variant that decides otherwise"
    import onnx
    from onnx import numpy_helper
    g = onnx.load(str(path))
    b = next(i for i in g.graph.initializer if i.name == 'head_b')
    b.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(b) + np.float32(bias_shift), 'head_b'))
    onnx.save(g, str(dest))
    return dest

def test_shipping_rule_gates_fail_a_worse_variant_with_the_reason(variant, tmp_path):
    """A deliberately worse variant of v1 (its head bias shifted), registered as an int8 variant is, judged as the
    staging run judges it on the clean staging images: both shipping-rule gates fail and say why; the real int8
    variant is measured by the same gates"""
    from parkml.data import load_images
    from parkml.model import OnnxModel, open_model
    from parkml.quantize import register_variant, variant_tags, calibration_rows, variant_reference
    from parkml.monitor import load_reference
    from parkml.staging_checks import shipping_check, judge, reference_images
    from parkml.staging_inputs import staging_images
    from parkml.tracking import local_onnx
    cfg, client, src = variant['cfg'], variant['client'], variant['src']
    imgs = staging_images(160)
    X, _, _ = load_images(imgs.path)
    bad = perturbed(local_onnx(src, client, cfg), tmp_path/'worse.onnx', 2.0)
    ref = load_reference(src, 'all', cfg, client).iloc[:16]   # a reference is not what this test judges
    worse = register_variant(src, bad, variant_tags(src, 'perturbed head', calibration_rows(CALIBRATION)),
                             variant_reference(OnnxModel(bad), ref, reference_images(ref, size=cfg.image_size)),
                             dict(reference_accuracy=0.5), client, cfg)
    assert worse.tags['parkml.quantized_from'] == '1'
    verdicts = {}
    for mv in (worse, client.get_model_version(cfg.model_name, variant['res']['version'])):
        s = SimpleNamespace(mv=mv, client=client, cfg=cfg, X=X, y=imgs.y.values, texts={},
                            p=open_model(local_onnx(mv, client, cfg), cfg=cfg).predict(X))   # as served
        m = shipping_check(s)
        g = judge(m, cfg).set_index('metric').loc[['quantized_accuracy_lost_points', 'quantized_decisions_flipped_pct']]
        verdicts[str(mv.version)] = (m, g, s.texts['quantized'])
    m, g, text = verdicts[str(worse.version)]
    assert m['quantized_decisions_flipped_pct'] > 0.5 and not g.passed.any(), g
    why = dict(zip(g.index, g.reason))
    lost = why['quantized_accuracy_lost_points']
    assert 'stage_max_quantized_loss' in lost and 'source v1' in lost
    assert 'stage_max_quantized_flipped' in why['quantized_decisions_flipped_pct']
    assert f"of {len(X)} images otherwise" in text
    m, g, _ = verdicts[variant['res']['version']]
    assert np.isfinite(g.measured).all() and m['quantized_max_delta_p_dog'] < 0.3
    assert judge({}, cfg).metric.str.startswith('quantized_').sum() == 0            # other versions: no such gates
