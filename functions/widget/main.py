"""functions/widget: placeholder until its issue lands; answers its health check."""

import flask
import functions_framework

from shared.errors import NotFound
from shared.http import endpoint


@functions_framework.http
@endpoint("widget")
def widget(request: flask.Request) -> flask.Response:
    raise NotFound("not implemented yet")
