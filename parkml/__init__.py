"""Notebook-driven MLOps for a pet park's CCTV cat/dog classifier: staging, release, monitoring and governance

Modules:

- `parkml.appviews`: The facts and actions behind the governance app's pages, as library functions: the versions table, today's metrics, the aliases with their history, and the rollback an alert asks for.
- `parkml.backup`: `parkml central backup DIR` and `parkml central restore DIR`: every database with `pg_dump`, the bucket, MLflow's secrets; restored into fresh servers
- `parkml.classify`: Image files and folders through a registered version's graph, in batches, with the unreadable files reported beside the answers: what `parkml predict` prints.
- `parkml.planedb`: One PostgreSQL database and one login role per user of the central plane: MLflow's role reaches only MLflow's databases, the stores' role only parkml's, and neither is a superuser
- `parkml.reference`: The configuration reference made from `settings.ini`'s comments and the command reference made from the `parkml` parser, so neither can say something the code does not do."""

__version__ = "0.1.0"
