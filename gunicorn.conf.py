# gunicorn settings for `gunicorn -c gunicorn.conf.py "gateway:create_app()"` (gunicorn
# also reads this file by itself when started from this folder) and for the container.
# `gateway serve` applies the same hardened settings; the environment sizes the rest.
import os

from gateway.serving import HARDENED_SETTINGS

globals().update(HARDENED_SETTINGS)

bind = os.environ.get("GATEWAY_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("GATEWAY_WORKERS", "2"))
threads = int(os.environ.get("GATEWAY_THREADS", "8"))
worker_class = os.environ.get("GATEWAY_WORKER_CLASS", HARDENED_SETTINGS["worker_class"])
# On SIGTERM: stop accepting, let in-flight requests finish for up to this long.
graceful_timeout = int(os.environ.get("GATEWAY_GRACEFUL_TIMEOUT", "30"))
errorlog = "-"
loglevel = os.environ.get("GATEWAY_LOG_LEVEL", "info")
control_socket_disable = True
