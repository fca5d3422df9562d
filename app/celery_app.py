"""The Celery application shared by the gateway (as producer) and every worker."""

from __future__ import annotations

from celery import Celery

celery_app = Celery("openim")
celery_app.config_from_object("celeryconfig")
celery_app.conf.include = [
    "app.tasks.transfer",
    "app.tasks.persist",
    "app.tasks.push",
    "app.tasks.offline",
    "app.tasks.webhooks",
]
