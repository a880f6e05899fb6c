"""Airflow DAGs for Citewell: thin wrappers over ``ingestion.refresh`` and
``evaluation.quality_gates``."""
