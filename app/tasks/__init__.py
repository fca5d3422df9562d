"""Celery tasks, one module per pipeline stage: transfer -> persist and push -> offline."""
