"""functions/sync: placeholder until its issue lands; answers its health check."""

import flask
import functions_framework

from shared.errors import NotFound
from shared.http import endpoint


@functions_framework.http
@endpoint("sync")
def sync(request: flask.Request) -> flask.Response:
    raise NotFound("not implemented yet")
