"""The HTTP stack's own ceiling: a functions-framework handler that reads the body and answers.

The ingest benchmark puts it behind the same nginx gateway, with the same gunicorn settings and
the same load generator as functions/webhook, so the ratio between the two is the cost of our
own work (parsing, validation, the durable beanstalkd put) and nothing else.
"""

import flask
import functions_framework


@functions_framework.http
def bench_trivial(request: flask.Request) -> flask.Response:
    # Read the body as the webhook must, so both pay for receiving it.
    request.get_data()
    return flask.jsonify({"status": "accepted"})
