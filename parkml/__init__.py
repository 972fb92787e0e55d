"""Notebook-driven MLOps for a pet park's CCTV cat/dog classifier: staging, release, monitoring and governance

Modules:

- `parkml.appviews`: The facts and actions behind the governance app's pages, as library functions: the versions table, today's metrics, the aliases with their history, and the rollback an alert asks for.
- `parkml.backup`: `parkml central backup DIR` and `parkml central restore DIR`: every database with `pg_dump`, the bucket, MLflow's secrets; restored into fresh servers
- `parkml.classify`: Image files and folders through a registered version's graph, in batches, with the unreadable files reported beside the answers: what `parkml predict` prints.
- `parkml.cli_fleet`: `parkml fleet` and `parkml fleet check`: the chain's boxes as the centre last heard from them, and the check that raises an alert for a box gone silent or with its clock off, and resolves a silence once the box is heard from again (run it from a timer, every minute or so).
- `parkml.day_groups`: The daily analysis over a fleet: cameras named with their box, the day's numbers per box and for the chain, and the figures that compare them.
- `parkml.fleet`: The chain's boxes seen from the centre: one line per box from the reports its shipper sends (last contact, backlog, version served, host), its open alerts, and the alerts for a box gone silent (resolved by the system when it is heard from again) or with a clock off.
- `parkml.planedb`: One PostgreSQL database and one login role per user of the central plane: MLflow's role reaches only MLflow's databases, the stores' role only parkml's, and neither is a superuser
- `parkml.quantize`: An int8 variant of a registered version: its ONNX graph quantized after training (OpenVINO's NNCF or ONNX Runtime's static quantizer), calibrated on train photos only, and registered as a new version with its own reference.
- `parkml.reference`: The configuration reference made from `settings.ini`'s comments and the command reference made from the `parkml` parser, so neither can say something the code does not do."""

__version__ = "0.1.0"
