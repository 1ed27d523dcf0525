"""functions/webhook: amoCRM contact webhooks → Beanstalk, answered only once durably queued.

Route: POST /webhook/<account_id>/<secret>. The bare original route (POST /webhook) carries no
secret, so it is refused like any unknown destination (404 JSON) and nothing is queued.
"""

import flask
import functions_framework

from shared.db import get_database
from shared.jobqueue import get_queue
from shared.web.auth import Auth
from shared.web.routes import Call, Route, RouteTable
from shared.webhook_intake import accept_webhook

# amoCRM documents no byte limit for a webhook POST; its batches hold at most 500 entities
# (reference §3.1), a contact a few KiB in the form encoding: 2 MiB, the gateway's own cap.
MAX_WEBHOOK_BYTES = 2 * 1024 * 1024


def receive(call: Call) -> flask.Response:
    accepted = accept_webhook(
        get_database(),
        get_queue(),
        account_id=int(call.params["account_id"]),
        secret=call.params["secret"],
        body=call.request.get_data(cache=False),
    )
    return flask.jsonify(
        {
            "status": "queued",
            "events": accepted.events,
            "ignored": accepted.ignored,
            "skipped": accepted.skipped,
        }
    )


ROUTES = RouteTable(
    "webhook",
    [
        Route(
            "/webhook/{account_id:id}/{secret:secret}",
            receive,
            methods=("POST",),
            auth=Auth.WEBHOOK_SECRET,
            max_body=MAX_WEBHOOK_BYTES,
        )
    ],
    # Not a destination we hand out: it answers like an unknown account (nothing to probe).
    not_found=("webhook_not_found", "no such webhook"),
)


@functions_framework.http
def webhook(request: flask.Request) -> flask.Response:
    return ROUTES.dispatch(request)
