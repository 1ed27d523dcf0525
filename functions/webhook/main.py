"""functions/webhook: amoCRM contact webhooks → Beanstalk, answered only once durably queued.

Route: POST /webhook/<account_id>/<secret>. The bare original route (POST /webhook) carries no
secret, so it is refused like any unknown destination (404 JSON) and nothing is queued.
"""

import flask
import functions_framework

from shared import errors
from shared.amocrm.webhooks import parse_id
from shared.db import get_database
from shared.http import endpoint, require_method
from shared.jobqueue import get_queue
from shared.webhook_intake import accept_webhook


def _destination(request: flask.Request) -> tuple[int, str]:
    parts = request.path.strip("/").split("/")
    account_id = parse_id(parts[1]) if len(parts) == 3 and parts[0] == "webhook" else None
    if account_id is None:
        # Not a destination we hand out; it answers like an unknown account (nothing to probe).
        raise errors.NotFound("no such webhook", code="webhook_not_found")
    return account_id, parts[2]


@functions_framework.http
@endpoint("webhook")
def webhook(request: flask.Request) -> flask.Response:
    account_id, secret = _destination(request)
    require_method(request, "POST")
    accepted = accept_webhook(
        get_database(),
        get_queue(),
        account_id=account_id,
        secret=secret,
        body=request.get_data(cache=False),
    )
    return flask.jsonify(
        {
            "status": "queued",
            "events": accepted.events,
            "ignored": accepted.ignored,
            "skipped": accepted.skipped,
        }
    )
