"""A moto DynamoDB server that handles one request at a time.

moto's own `moto_server` is threaded and does not lock its DynamoDB tables, so two concurrent
conditional writes can both pass their condition (two winners of one lease). Real DynamoDB
applies each conditional write atomically; serving requests one by one gives moto the same
behaviour. Usage: python moto_serial.py PORT
"""

import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", port, app, threaded=False, use_reloader=False)
