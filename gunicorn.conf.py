# gunicorn settings for `gunicorn -c gunicorn.conf.py "gateway:create_app()"`
# (gunicorn also reads this file by itself when started from this folder).
# `gateway serve` applies the same hardened settings.
import os

from gateway.serving import HARDENED_SETTINGS

globals().update(HARDENED_SETTINGS)

bind = os.environ.get("GATEWAY_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("GATEWAY_WORKERS", "2"))
threads = int(os.environ.get("GATEWAY_THREADS", "8"))
errorlog = "-"
loglevel = os.environ.get("GATEWAY_LOG_LEVEL", "info")
control_socket_disable = True
