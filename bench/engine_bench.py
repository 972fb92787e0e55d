"""Engine benchmark: the served graph (uint8 image -> p_dog, proj, emb) run by ONNX Runtime and by OpenVINO, in fp32,
OpenVINO's bf16, and a static int8 variant, on petpark's test photos: speed, accuracy and agreement with ONNX Runtime.

    .venv/bin/python bench/engine_bench.py [--rounds 2] [--photos 1000] [--calibration 200]

The model is the full training run's head on the frozen backbone (all train images, cached embeddings), exported once
to <runs>/bench_engine/parknet.onnx. The int8 variant is ONNX Runtime's static quantizer (QDQ, per-channel weights,
`--calibration` train photos), run by both engines. For each variant: images/s at batch 32 and batch 1 (one model,
onnx_threads threads; rounds interleaved, best of rounds), accuracy on the photos, decisions equal to ONNX Runtime
fp32, largest |delta P(dog)|; and the verdict of the int8 rule: ship only if it loses <= 0.3 points of accuracy and
flips <= 0.5% of decisions.
"""
import argparse, json, time
from pathlib import Path
import numpy as np

def parknet(out: Path) -> Path:
    "The ONNX graph of a head fitted on every train image's cached embedding (exported once)"
    if out.is_file(): return out
    from parkml.train import training_set, fit
    from parkml.network import compute_embeddings
    from parkml.network import build_parknet, export_onnx
    ds = training_set()
    emb = compute_embeddings(ds, False)
    head, (mu, basis) = fit(ds, emb, None, False)
    return export_onnx(build_parknet(*head, mu, basis), out)

def quantize(src: Path, out: Path, photos: np.ndarray) -> Path:
    "ONNX Runtime's static int8 quantization (QDQ, per-channel) calibrated on `photos`"
    if out.is_file(): return out
    from onnxruntime.quantization import quantize_static, CalibrationDataReader, QuantFormat, QuantType
    class Feed(CalibrationDataReader):
        def __init__(self): self.it = iter(np.array_split(photos, max(1, len(photos) // 8)))
        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {'image': x}
    quantize_static(str(src), str(out), Feed(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out

def speed(om, X: np.ndarray, batch: int, seconds: float) -> float:
    "Images/s of `om` on batches of `batch` photos"
    om.run(X[:batch], ['p_dog', 'proj'])
    n, i, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        om.run(X[i:i + batch], ['p_dog', 'proj'])
        n, i = n + batch, (i + batch) % (len(X) - batch)
    return n / (time.perf_counter() - t0)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--photos', type=int, default=1000, help='test photos (class-stratified sample of the test split)')
    ap.add_argument('--calibration', type=int, default=200, help='train photos calibrating the int8 variant')
    ap.add_argument('--seconds', type=float, default=4.0, help='timed seconds per speed measurement')
    a = ap.parse_args()
    from parkml.config import get_settings, ensure_dir
    from parkml.data import read_imageset, assign_splits, load_images
    from parkml.model import OnnxModel, OpenVinoModel, engine_box
    from parkml.staging_inputs import stratified_sample
    cfg = get_settings()
    home = ensure_dir(cfg.runs/'bench_engine')
    ds = assign_splits(read_imageset()).df
    test = stratified_sample(ds[ds.split == 'test'], a.photos, 0)
    calib = stratified_sample(ds[ds.subset == 'train'], a.calibration, 1)
    X, _, _ = load_images(test.path, cfg.image_size)
    C, _, _ = load_images(calib.path, cfg.image_size, progress=False)
    y = test.y.values
    fp32 = parknet(home/'parknet.onnx')
    int8 = quantize(fp32, home/'parknet-int8.onnx', C)
    t = cfg.onnx_threads
    variants = {'onnxruntime fp32': lambda: OnnxModel(fp32, t), 'openvino f32': lambda: OpenVinoModel(fp32, t, 'f32'),
                'openvino bf16': lambda: OpenVinoModel(fp32, t, 'bf16'),
                'onnxruntime int8 (QDQ)': lambda: OnnxModel(int8, t),
                'openvino on the int8 graph': lambda: OpenVinoModel(int8, t, 'f32')}
    models = {k: f() for k, f in variants.items()}
    p = {k: m.predict(X) for k, m in models.items()}
    ref = p['onnxruntime fp32']
    fast = {k: {32: 0.0, 1: 0.0} for k in models}
    for r in range(a.rounds):
        for k, m in models.items():
            for b in (32, 1):
                fast[k][b] = max(fast[k][b], speed(m, X, b, a.seconds if b == 32 else a.seconds / 2))
            print(f"round {r + 1} {k:28} batch 32 {fast[k][32]:6.1f}/s  batch 1 {fast[k][1]:6.1f}/s (best so far)",
                  flush=True)
    acc0 = float(((ref >= .5) == y).mean())
    rows = {}
    print(f"\n{len(X)} petpark test photos, {t} threads; box: {json.dumps(engine_box(cfg))}")
    print(f"{'variant':28} {'batch 32':>9} {'batch 1':>8} {'x ORT b32':>9} {'accuracy':>8} {'same decision':>13} "
          f"{'max |dp|':>9}")
    for k in models:
        acc = float(((p[k] >= .5) == y).mean())
        same = float(((p[k] >= .5) == (ref >= .5)).mean())
        dp = float(np.abs(p[k] - ref).max())
        rows[k] = dict(batch32=fast[k][32], batch1=fast[k][1], accuracy=acc, same_decision=same, max_delta_p=dp)
        ratio = fast[k][32] / fast['onnxruntime fp32'][32]
        print(f"{k:28} {fast[k][32]:9.1f} {fast[k][1]:8.1f} {ratio:9.2f} {acc:8.4f} "
              f"{same:13.4f} {dp:9.2g}")
    q = rows['onnxruntime int8 (QDQ)']
    lost, flipped = 100 * (acc0 - q['accuracy']), 100 * (1 - q['same_decision'])
    ok = lost <= 0.3 and flipped <= 0.5
    print(f"\nint8 rule (ship only if it loses <= 0.3 points and flips <= 0.5% of decisions): loses {lost:.2f} points, "
          f"flips {flipped:.2f}% -> {'ship it as its own version' if ok else 'not shipped'}")
    out = dict(rows=rows, photos=len(X), box=engine_box(cfg), int8_ok=ok)
    (home/'engine_bench.json').write_text(json.dumps(out, indent=1))
    print(f"raw results: {home/'engine_bench.json'}")

if __name__ == '__main__': main()
