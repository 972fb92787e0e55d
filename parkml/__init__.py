"""Notebook-driven MLOps for a pet park's CCTV cat/dog classifier: staging, release, monitoring and governance"""

__version__ = "0.1.0"
