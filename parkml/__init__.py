"""Notebook-driven MLOps for a pet park's CCTV cat/dog classifier: staging, release, monitoring and governance

Modules:

- `parkml.appviews`: The facts and actions behind the governance app's pages, as library functions: the versions table, today's metrics, the aliases with their history, and the rollback an alert asks for.
- `parkml.classify`: Image files and folders through a registered version's graph, in batches, with the unreadable files reported beside the answers: what `parkml predict` prints.
- `parkml.quantize`: An int8 variant of a registered version: its ONNX graph quantized after training (OpenVINO's NNCF or ONNX Runtime's static quantizer), calibrated on train photos only, and registered as a new version with its own reference.
- `parkml.reference`: The configuration reference made from `settings.ini`'s comments and the command reference made from the `parkml` parser, so neither can say something the code does not do."""

__version__ = "0.1.0"
