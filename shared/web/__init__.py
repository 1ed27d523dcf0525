"""The web layer every HTTP function shares.

Where to add a route: in its function's `functions/<name>/main.py`, one `Route(...)` line in that
file's `RouteTable` naming the path, methods, `Auth` and CORS. The pieces behind it:

- `routes.py`: the route table and dispatcher (request id, health check, method, auth, CORS,
  the one JSON error path, the access log);
- `auth.py`: who may call (`Auth`: public, admin bearer, status-page Basic, widget JWT, webhook
  secret, amoCRM's signed hook) and the `Caller` a handler receives;
- `widget_token.py`: amoCRM's one-time widget JWT; `cors.py`: CORS for amoCRM account origins;
- `request.py`: query parameters and request ids; `pages.py`: the HTML pages' headers.

- `error_mapping.py`: the one exception → HTTP mapping (`map_exception`, which asks
  `shared.failures`) and the JSON error shape.
"""
