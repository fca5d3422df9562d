"""An OpenIM-style instant-messaging pipeline (gateway -> transfer -> push) on Celery."""
