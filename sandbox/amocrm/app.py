"""Flask app emulating amoCRM's OAuth server, REST v4 subset and webhooks, plus a control API."""

from __future__ import annotations

import copy
import html
import http
import math
import re
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, g, jsonify, redirect, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from sandbox.amocrm.config import SandboxConfig
from sandbox.amocrm.state import (
    KNOWN_EVENTS,
    AccountRec,
    Change,
    ContactQuery,
    EntityRec,
    OAuthFailure,
    SandboxError,
    WebhookRec,
    World,
)
from sandbox.amocrm.webhooks import deliver, send_disable_hook, send_widget_install
from sandbox.amocrm.writes import MAX_WRITE, WriteRefused, contact_spec

MAX_LIMIT = 250
MAX_FIELDS_LIMIT = 50
HAL = "application/hal+json"
PROBLEM = "application/problem+json"
OAUTH_PROBLEM_TYPE = "https://developers.amocrm.ru/v3/errors/OAuthProblemJson"


# An nginx error page, as users report amoCRM's 403 ban can be (reference §5).
_NGINX_PAGE = (
    "<html>\r\n<head><title>{status} Forbidden</title></head>\r\n<body>\r\n"
    "<center><h1>{status} Forbidden</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def problem(status: int, title: str, detail: str, **extra: Any) -> Response:
    """amoCRM's application/problem+json error body."""
    body = {
        "title": title,
        "type": f"https://httpstatus.es/{status}",
        "status": status,
        "detail": detail,
        **extra,
    }
    resp = jsonify(body)
    resp.status_code = status
    resp.content_type = PROBLEM
    return resp


def status_title(status: int) -> str:
    """The status's own reason phrase ("Service Unavailable"), as amoCRM titles its problems."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# The page users report getting instead of problem+json when amoCRM blocks them (reference §5:
# "403 Forbidden nginx"): nginx's stock error page.
NGINX_403 = (
    "<html>\r\n<head><title>403 Forbidden</title></head>\r\n<body>\r\n"
    "<center><h1>403 Forbidden</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def banned_response(html_page: bool) -> Response:
    if html_page:
        return Response(NGINX_403, status=403, content_type="text/html")
    return problem(
        403,
        "Forbidden",
        "Access denied: requests from your IP address are blocked for repeated violations "
        "of the API limits",
    )


def hal(body: Any, status: int = 200) -> Response:
    resp = jsonify(body)
    resp.status_code = status
    resp.content_type = HAL
    return resp


def no_content() -> Response:
    # amoCRM's "nothing here" for lists and unknown ids: 204 with an empty body.
    return Response(status=204)


def create_app(config: SandboxConfig | None = None) -> Flask:
    """Build the emulator; `app.config["WORLD"]` holds its state for in-process tests."""
    cfg = config or SandboxConfig.from_env()
    world = World(cfg)
    app = Flask(__name__)
    app.config["WORLD"] = world
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]

    @app.errorhandler(SandboxError)
    def _sandbox_error(exc: SandboxError) -> Response:
        resp = jsonify({"error": str(exc)})
        resp.status_code = exc.status
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        # Unknown routes and wrong methods: amoCRM answers problem+json, not an HTML page.
        status = exc.code or 500
        resp = problem(status, status_title(status), exc.description or status_title(status))
        # A 405 keeps its Allow header, so a client can still tell which methods exist.
        resp.headers.extend((k, v) for k, v in exc.get_headers() if k.lower() == "allow")
        return resp

    @app.before_request
    def _guard_api() -> Response | None:
        g.arrived = time.time()
        g.account_id = None
        if not request.path.startswith(("/api/v4", "/oauth2")):
            return None
        ip = request.remote_addr or "unknown"
        # A ban cuts off everything from the IP, before authentication, token endpoint included.
        if world.limiter.banned(ip, g.arrived) is not None:
            return banned_response(cfg.ban_body == "html")
        if not request.path.startswith("/api/v4"):
            return None
        if cfg.latency_ms > 0:
            time.sleep(cfg.latency_ms / 1000)
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        account = world.authenticate(token) if token else None
        if account is None:
            # Expired, revoked, spent-sibling or unknown tokens all look the same to clients.
            return problem(401, "Unauthorized", "Invalid user name or password")
        g.account = account
        g.account_id = account.id
        if account.blocked:
            return problem(403, "Forbidden", "Account is blocked")
        retry = world.check_rate(ip, account.id, g.arrived)
        if retry is not None:
            # Repeated 429s are what gets an IP blocked (reference §5: 429 is the warning).
            world.limiter.strike(
                ip,
                g.arrived,
                after=int(cfg.ban_after_429s),
                window=float(cfg.ban_window),
                seconds=float(cfg.ban_seconds),
            )
            return problem(
                429,
                "Too Many Requests",
                "Too many requests per second",
                retry_after=max(1, math.ceil(retry)),
            )
        fault = world.take_fault(request.path)
        if fault is not None:
            status = int(fault["status"])
            if fault.get("html"):
                # What a ban looks like on the real service: nginx's page, not problem+json.
                return Response(_NGINX_PAGE.format(status=status), status, mimetype="text/html")
            extra = {"retry_after": fault["retry_after"]} if "retry_after" in fault else {}
            # amoCRM titles a 500 "ErrInternalServer" (with a trace_id); others by their status.
            title = "ErrInternalServer" if status == 500 else status_title(status)
            if status >= 500:
                extra["trace_id"] = uuid.uuid4().hex
            return problem(status, fault.get("title") or title, "Injected fault", **extra)
        return None

    @app.after_request
    def _log(resp: Response) -> Response:
        resp.headers["X-Request-Id"] = uuid.uuid4().hex
        if request.path.startswith(("/api/v4", "/oauth2")):
            world.log_request(
                {
                    "method": request.method,
                    "path": request.path,
                    "query": request.query_string.decode(),
                    "account_id": g.get("account_id"),
                    "status": resp.status_code,
                    "at": g.get("arrived", time.time()),
                    "user_agent": request.headers.get("User-Agent"),
                }
            )
        return resp

    _register_oauth(app, world)
    _register_api(app, world)
    _register_control(app, world)
    return app


def _register_oauth(app: Flask, world: World) -> None:
    cfg = world.config

    @app.get("/oauth")
    def consent() -> Response | tuple[str, int]:
        client_id = request.args.get("client_id", "")
        if client_id != cfg.client_id:
            return "<h1>400</h1><p>Unknown integration (client_id).</p>", 400
        state = request.args.get("state")
        mode = request.args.get("mode", "")
        with world.lock:
            accounts = list(world.accounts.values())
        rows = "".join(
            f'<li><label><input type="radio" name="account_id" value="{a.id}"'
            f"{' checked' if i == 0 else ''}> {html.escape(a.name)} ({html.escape(a.host)})"
            "</label></li>"
            for i, a in enumerate(accounts)
        )
        hidden = "".join(
            f'<input type="hidden" name="{k}" value="{html.escape(v)}">'
            for k, v in (("client_id", client_id), ("state", state), ("mode", mode))
            if v is not None
        )
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>amoCRM sandbox: "
            "authorize integration</title></head><body><h1>Authorize the integration</h1>"
            f"<p>Integration <code>{html.escape(client_id)}</code> asks for access.</p>"
            f'<form method="post" action="/oauth/decision"><ul>{rows}</ul>{hidden}'
            '<button type="submit" name="decision" value="approve">Approve</button> '
            '<button type="submit" name="decision" value="deny">Deny</button>'
            "</form></body></html>"
        )
        return page, 200

    @app.post("/oauth/decision")
    def decision() -> WerkzeugResponse | tuple[str, int]:
        form = request.form
        if form.get("client_id") != cfg.client_id:
            return "<h1>400</h1><p>Unknown integration (client_id).</p>", 400
        params: dict[str, str] = {}
        if form.get("decision") == "approve":
            account = world.account(int(form.get("account_id") or 0))
            params["code"] = world.issue_code(account)
            params["referer"] = account.host
        else:
            params["error"] = "access_denied"
        params["client_id"] = cfg.client_id
        # state comes back unchanged, and only if it was sent.
        if form.get("state") is not None:
            params["state"] = form["state"]
        sep = "&" if "?" in cfg.redirect_uri else "?"
        return redirect(f"{cfg.redirect_uri}{sep}{urlencode(params)}", code=302)

    @app.post("/oauth2/access_token")
    def access_token() -> Response:
        # The Kommo docs send JSON, the official PHP provider a form body: accept both.
        data = request.get_json(silent=True)
        form = data if isinstance(data, dict) else request.form.to_dict()
        try:
            body = world.grant(form)
        except OAuthFailure as exc:
            error: dict[str, Any] = {}
            if exc.hint is not None:
                error["hint"] = exc.hint
            error |= {
                "title": exc.title or "Некорректный запрос",
                "type": OAUTH_PROBLEM_TYPE,
                "status": exc.status,
                "detail": exc.detail
                or "В запросе отсутствует ряд параметров или параметры невалидны",  # noqa: RUF001
            }
            resp = jsonify(error)
            resp.status_code = exc.status
            return resp
        return jsonify(body)


def _contact_json(account: AccountRec, rec: EntityRec, base: str, legacy: bool) -> dict[str, Any]:
    link = {"self": {"href": f"{base}/api/v4/contacts/{rec.id}"}}
    if rec.deleted:
        # Reported only_deleted shape: most fields null, updated_at = deletion time.
        return {
            "id": rec.id,
            "name": None,
            "first_name": None,
            "last_name": None,
            "responsible_user_id": None,
            "group_id": None,
            "created_by": None,
            "updated_by": None,
            "created_at": None,
            "updated_at": rec.updated_at,
            "is_deleted": True,
            "custom_fields_values": None,
            "account_id": rec.account_id,
            "_links": link,
        }
    values: list[dict[str, Any]] = []
    for fdef in account.fields:
        if fdef.id not in rec.values:
            continue
        items = []
        for value, enum_id in rec.values[fdef.id]:
            item: dict[str, Any] = {"value": value}
            if enum_id is not None:
                item["enum_id"] = enum_id
                item["enum" if legacy else "enum_code"] = fdef.enum_code(enum_id)
            items.append(item)
        values.append(
            {
                "field_id": fdef.id,
                "field_name": fdef.name,
                "field_code": fdef.code,
                "field_type": fdef.type,
                "values": items,
            }
        )
    return {
        "id": rec.id,
        "name": rec.name,
        "first_name": rec.first_name,
        "last_name": rec.last_name,
        "responsible_user_id": rec.responsible_user_id,
        "group_id": 0,
        "created_by": rec.created_by,
        "updated_by": rec.updated_by,
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
        "closest_task_at": None,
        # custom_fields_values is null, not [], when a contact has none.
        "custom_fields_values": values or None,
        "account_id": rec.account_id,
        "_links": link,
        "_embedded": {"tags": [], "companies": []},
    }


def _legacy(world: World, rec: EntityRec) -> bool:
    every = int(world.config.legacy_enum_every)
    return every > 0 and rec.id % every == 0


def _int_arg(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SandboxError(f"{name} must be an integer") from None


def _page_links(page: int, has_next: bool) -> dict[str, Any]:
    base = request.base_url

    def href(p: int) -> dict[str, str]:
        args = [(k, v) for k, v in request.args.items(multi=True) if k != "page"]
        return {"href": f"{base}?{urlencode([*args, ('page', str(p))])}"}

    links = {"self": href(page)}
    if has_next:
        links["next"] = href(page + 1)
    if page > 1:
        links["prev"] = href(page - 1)
    return links


def _ids_filter() -> set[int] | None:
    ids = [
        v for k, v in request.args.items(multi=True) if re.fullmatch(r"filter\[id\](\[\d*\])?", k)
    ]
    return {int(v) for v in ids} if ids else None


def _validation_error(
    path: str, detail: str, *, code: str = "InvalidValue", request_id: str = "0"
) -> Response:
    return problem(
        400,
        "Bad Request",
        "Request validation failed",
        **{
            "validation-errors": [
                {
                    "request_id": request_id,
                    "errors": [{"code": code, "path": path, "detail": detail}],
                }
            ]
        },
    )


def _write_items() -> list[Any] | Response:
    """The JSON array of a contacts write, or the error amoCRM answers instead."""
    data = request.get_json(silent=True)
    if not isinstance(data, list) or not data:
        return _validation_error("", "a non-empty JSON array expected")
    if len(data) > MAX_WRITE:
        return problem(422, "Unprocessable Entity", f"At most {MAX_WRITE} entities per request")
    return data


def _register_api(app: Flask, world: World) -> None:
    @app.get("/api/v4/account")
    def account_info() -> Response:
        account: AccountRec = g.account
        with_ = set(filter(None, request.args.get("with", "").split(",")))
        body: dict[str, Any] = {
            "id": account.id,
            "name": account.name,
            "subdomain": account.subdomain,
            "created_at": account.created_at,
            "created_by": 0,
            "updated_at": account.created_at,
            "updated_by": 0,
            "current_user_id": account.user_id,
            "country": "RU",
            "currency": "RUB",
            "customers_mode": "disabled",
            "is_unsorted_on": True,
            "mobile_feature_version": 0,
            "is_loss_reason_enabled": True,
            "is_helpbot_enabled": False,
            "is_technical_account": False,
            "contact_name_display_order": 1,
            "_links": {"self": {"href": f"{request.host_url.rstrip('/')}/api/v4/account"}},
        }
        # Other with= values are accepted and ignored: amosync never reads them.
        if "is_api_filter_enabled" in with_:
            body["is_api_filter_enabled"] = account.api_filter_enabled
        return hal(body)

    @app.get("/api/v4/contacts")
    def list_contacts() -> Response:
        account: AccountRec = g.account
        limit = _int_arg("limit", 50)
        if limit > MAX_LIMIT or limit < 1:
            # What amoCRM does with limit > 250 is unverified (clamp or error). Refusing is the
            # safe emulation: a client that relies on a bigger page fails here, not in production.
            return _validation_error("limit", f"limit must be between 1 and {MAX_LIMIT}")
        page = max(1, _int_arg("page", 1))
        with_ = set(filter(None, request.args.get("with", "").split(",")))
        query = _contact_query(
            only_deleted="only_deleted" in with_,
            # The list filter is "alpha"; with the account flag off it is silently ignored.
            filters=account.api_filter_enabled,
        )
        base = request.host_url.rstrip("/")
        with world.lock:
            # The matching, ordered list is built once per change batch (AccountRec.version)
            # and reused by every page: a page costs its own 250 contacts, not the account's N.
            # Rendered under the lock, so a page is a consistent snapshot without copying.
            chunk = account.contact_view(query)[(page - 1) * limit : page * limit]
            if not chunk:
                return no_content()
            contacts = [_contact_json(account, e, base, _legacy(world, e)) for e in chunk]
        return hal(
            {
                "_page": page,
                # A full page always advertises `next`, even when nothing follows: amoCRM has
                # no total count, so clients must also stop on the 204 of the page after.
                "_links": _page_links(page, has_next=len(chunk) == limit),
                "_embedded": {"contacts": contacts},
            }
        )

    @app.get("/api/v4/contacts/<int:contact_id>")
    def get_contact(contact_id: int) -> Response:
        account: AccountRec = g.account
        with world.lock:
            rec = account.entities.get(contact_id)
            rec = copy.deepcopy(rec) if rec is not None else None
        # Unknown id → 204 [doc]. For a trashed contact the reference cannot tell 204 from 200 with
        # is_deleted [unverified]; we answer 204, which a client must handle anyway.
        if rec is None or rec.type != "contact" or rec.deleted:
            return no_content()
        return hal(_contact_json(account, rec, request.host_url.rstrip("/"), _legacy(world, rec)))

    def write_contacts(items: list[Any], *, update: bool) -> list[Change] | Response:
        """Apply a contacts write all-or-nothing; the changes for the webhook, or the error."""
        account: AccountRec = g.account
        with world.lock:
            try:
                specs = [contact_spec(account, item, n) for n, item in enumerate(items)]
            except WriteRefused as exc:
                return _validation_error(
                    exc.path, exc.detail, code=exc.code, request_id=str(exc.index)
                )
            if update:
                for n, item in enumerate(items):
                    entity_id = item.get("id") if isinstance(item, dict) else None
                    rec = account.entities.get(entity_id) if isinstance(entity_id, int) else None
                    if rec is None or rec.type != "contact" or rec.deleted:
                        return _validation_error(
                            "id", "contact not found", code="NotFound", request_id=str(n)
                        )
            changes = []
            for item, spec in zip(items, specs, strict=True):
                if update:
                    rec = world.update_entity(account, int(item["id"]), spec)
                    changes.append(Change("update", copy.deepcopy(rec)))
                else:
                    rec = world.apply_entity(account, spec)
                    changes.append(Change("add", copy.deepcopy(rec)))
        # amoCRM reports API changes by webhook too, without holding up the API answer.
        deliver(world, account, changes, wait=False)
        return changes

    def write_result(changes: list[Change], *, update: bool) -> Response:
        base = request.host_url.rstrip("/")
        rows = []
        for n, change in enumerate(changes):
            rec = change.entity
            row: dict[str, Any] = {"id": rec.id}
            if update:
                row |= {"name": rec.name, "updated_at": rec.updated_at}
            else:
                row["request_id"] = str(n)
            row["_links"] = {"self": {"href": f"{base}/api/v4/contacts/{rec.id}"}}
            rows.append(row)
        links = {"self": {"href": request.base_url}}
        return hal({"_links": links, "_embedded": {"contacts": rows}})

    @app.post("/api/v4/contacts")
    def api_create_contacts() -> Response:
        items = _write_items()
        if isinstance(items, Response):
            return items
        changes = write_contacts(items, update=False)
        return changes if isinstance(changes, Response) else write_result(changes, update=False)

    @app.patch("/api/v4/contacts")
    def api_update_contacts() -> Response:
        items = _write_items()
        if isinstance(items, Response):
            return items
        changes = write_contacts(items, update=True)
        return changes if isinstance(changes, Response) else write_result(changes, update=True)

    @app.patch("/api/v4/contacts/<int:contact_id>")
    def api_update_contact(contact_id: int) -> Response:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return _validation_error("", "a JSON object expected")
        changes = write_contacts([{**data, "id": contact_id}], update=True)
        if isinstance(changes, Response):
            return changes
        rec = changes[0].entity
        base = request.host_url.rstrip("/")
        return hal(
            {
                "id": rec.id,
                "name": rec.name,
                "updated_at": rec.updated_at,
                "_links": {"self": {"href": f"{base}/api/v4/contacts/{rec.id}"}},
            }
        )

    @app.get("/api/v4/contacts/custom_fields")
    def custom_fields() -> Response:
        account: AccountRec = g.account
        limit = _int_arg("limit", MAX_FIELDS_LIMIT)
        if limit < 1:
            return _validation_error("limit", f"limit must be between 1 and {MAX_FIELDS_LIMIT}")
        # A widely used client sends limit=250 here. Whether amoCRM clamps it to 50 or refuses
        # it is unverified; clamping is the safe reading (the client that sends it keeps
        # working, and `_links.next` still tells every client there is more), so accept and
        # clamp rather than refuse.
        limit = min(limit, MAX_FIELDS_LIMIT)
        page = max(1, _int_arg("page", 1))
        with world.lock:
            fields = sorted(account.fields, key=lambda f: (f.sort, f.id))
        chunk = fields[(page - 1) * limit : page * limit]
        if not chunk:
            return no_content()
        base = request.host_url.rstrip("/")
        return hal(
            {
                "_total_items": len(chunk),
                "_page": page,
                "_page_count": math.ceil(len(fields) / limit),
                "_links": _page_links(page, has_next=page * limit < len(fields)),
                "_embedded": {
                    "custom_fields": [
                        {
                            "id": f.id,
                            "name": f.name,
                            "type": f.type,
                            "account_id": account.id,
                            "code": f.code,
                            "sort": f.sort,
                            "is_api_only": False,
                            "is_predefined": f.code in ("PHONE", "EMAIL"),
                            "is_deletable": f.code not in ("PHONE", "EMAIL"),
                            "entity_type": "contacts",
                            "group_id": None,
                            "enums": [{"id": i, "value": v, "sort": s} for i, v, s in f.enums]
                            or None,
                            "_links": {
                                "self": {"href": f"{base}/api/v4/contacts/custom_fields/{f.id}"}
                            },
                        }
                        for f in chunk
                    ]
                },
            }
        )

    @app.post("/api/v4/webhooks")
    def subscribe() -> Response:
        account: AccountRec = g.account
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return _validation_error("", "JSON object expected")
        destination = data.get("destination")
        settings = data.get("settings")
        if not isinstance(destination, str) or not re.match(r"https?://", destination):
            return _validation_error("destination", "must be an http(s) URL")
        if (
            not isinstance(settings, list)
            or not settings
            or any(s not in KNOWN_EVENTS for s in settings)
        ):
            return _validation_error("settings", "unknown or empty event list")
        now = int(time.time())
        with world.lock:
            # A second POST for the same destination updates it rather than duplicating
            # [unverified]: amosync re-subscribes on every widget save, and a duplicate would
            # deliver every event twice; the upsert is the behaviour clients can rely on least
            # dangerously, and the client never depends on it (it lists first).
            hook = account.webhooks.get(destination)
            if hook is None:
                hook = WebhookRec(
                    id=next(world._hook_ids),
                    destination=destination,
                    settings=list(settings),
                    sort=int(data.get("sort") or 10),
                    created_at=now,
                    updated_at=now,
                    created_by=account.user_id,
                )
                account.webhooks[destination] = hook
            else:
                hook.settings = list(settings)
                hook.sort = int(data.get("sort") or hook.sort)
                hook.updated_at = now
                # Re-subscribing is how a disabled hook comes back (amoCRM: re-enable by hand).
                hook.disabled = False
                hook.failures.clear()
            return hal(_hook_json(account, hook))

    @app.get("/api/v4/webhooks")
    def list_hooks() -> Response:
        account: AccountRec = g.account
        wanted = request.args.get("filter[destination]")
        with world.lock:
            hooks = [h for h in account.webhooks.values() if wanted in (None, h.destination)]
            items = [_hook_json(account, h) for h in hooks]
        if not items:
            return no_content()  # the list-endpoint convention; clients also accept 200 + []
        return hal({"_total_items": len(items), "_embedded": {"webhooks": items}})

    @app.delete("/api/v4/webhooks")
    def unsubscribe() -> Response:
        account: AccountRec = g.account
        data = request.get_json(silent=True)
        destination = data.get("destination") if isinstance(data, dict) else None
        if not isinstance(destination, str):
            return _validation_error("destination", "required")
        with world.lock:
            if account.webhooks.pop(destination, None) is None:
                # Deleting an unknown destination: 404 is our guess [unverified]; clients
                # must treat it as done.
                return problem(404, "Not Found", "Webhook not found")
        return no_content()


def _contact_query(*, only_deleted: bool, filters: bool) -> ContactQuery:
    """The request's filters, search and order as a ContactQuery (the cache key of its list)."""
    args = request.args
    ids = low = high = None
    if filters:
        ids = _ids_filter()
        bare = args.get("filter[updated_at]")
        low_raw = args.get("filter[updated_at][from]") or bare
        high_raw = args.get("filter[updated_at][to]")
        # Bound inclusiveness is undocumented; inclusive here, so clients must dedupe an overlap.
        low = int(low_raw) if low_raw else None
        high = int(high_raw) if high_raw else None
    text = args.get("query")
    order, desc = "id", False
    for key in ("updated_at", "id"):
        direction = args.get(f"order[{key}]")
        if direction:
            order, desc = key, direction.lower() == "desc"
            break
    return ContactQuery(
        only_deleted=only_deleted,
        ids=frozenset(ids) if ids is not None else None,
        updated_from=low,
        updated_to=high,
        text=text.lower() if text else None,
        order=order,
        desc=desc,
    )


def _hook_json(account: AccountRec, hook: WebhookRec) -> dict[str, Any]:
    return {
        "id": hook.id,
        "destination": hook.destination,
        "created_at": hook.created_at,
        "updated_at": hook.updated_at,
        "account_id": account.id,
        "created_by": hook.created_by,
        "sort": hook.sort,
        "disabled": hook.disabled,
        "settings": list(hook.settings),
    }


def _json_body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else {}


def _flag(data: dict[str, Any], name: str, default: bool) -> bool:
    if name in data:
        return bool(data[name])
    raw = request.args.get(name)
    return default if raw is None else raw.lower() in ("1", "true", "yes")


def _register_control(app: Flask, world: World) -> None:
    cfg = world.config
    runtime = (
        "token_ttl",
        "latency_ms",
        "rate_limit",
        "legacy_enum_every",
        "disable_hook_url",
        "webhook_timeout",
        "redirect_uri",
        "account_total_rate_limit",
        "ip_rate_limit",
        "ban_after_429s",
        "ban_window",
        "ban_seconds",
        "ban_body",
        "webhook_disable_after",
        "webhook_disable_window",
        "webhook_retry_delays",
    )

    def account_json(a: AccountRec) -> dict[str, Any]:
        return {
            "id": a.id,
            "subdomain": a.subdomain,
            "host": a.host,
            "name": a.name,
            "api_filter_enabled": a.api_filter_enabled,
            "blocked": a.blocked,
            "contacts": sum(1 for e in a.entities.values() if e.type == "contact"),
            "webhooks": [_hook_json(a, h) for h in a.webhooks.values()],
            "custom_fields": [
                {
                    "id": f.id,
                    "name": f.name,
                    "code": f.code,
                    "type": f.type,
                    "enums": {v: i for i, v, _ in f.enums},
                }
                for f in a.fields
            ],
        }

    def delivered(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keys = ("id", "destination", "attempt", "status", "error")
        return [{k: r.get(k) for k in keys} for r in records]

    def run_changes(account: AccountRec, data: dict[str, Any]) -> dict[str, Any]:
        changes: list[Change] = []
        out: dict[str, list[int]] = {
            "added": [],
            "updated": [],
            "deleted": [],
            "restored": [],
            "companies": [],
        }

        notify = _flag(data, "notify", True)

        def note(action: str, rec: EntityRec, key: str) -> None:
            if notify:
                # A snapshot for the webhook: later changes must not leak into this one.
                changes.append(Change(action, copy.deepcopy(rec)))
            out[key].append(rec.id)

        with world.lock:
            for n in range(int(data.get("generate") or 0)):
                seq = len(account.entities) + 1
                spec = {
                    "name": f"Contact {seq}",
                    "first_name": "Contact",
                    "last_name": str(seq),
                    "emails": [f"contact{seq}.{n}@example.com"],
                }
                note("add", world.apply_entity(account, spec), "added")
            for spec in data.get("add") or []:
                note("add", world.apply_entity(account, spec), "added")
            for spec in data.get("add_companies") or []:
                note("add", world.apply_entity(account, spec, kind="company"), "companies")
            for spec in data.get("update") or []:
                note("update", world.update_entity(account, int(spec["id"]), spec), "updated")
            for entity_id in data.get("delete") or []:
                note("delete", world.set_deleted(account, int(entity_id), True), "deleted")
            for entity_id in data.get("restore") or []:
                note("restore", world.set_deleted(account, int(entity_id), False), "restored")
        result: dict[str, Any] = {**out, "deliveries": []}
        if notify and changes:
            # Everything changed in one control call goes out as ONE POST per destination.
            records = deliver(world, account, changes, wait=not _flag(data, "async", False))
            result["deliveries"] = delivered(records)
        return result

    @app.get("/_sandbox/health")
    def health() -> Response:
        return jsonify({"ok": True})

    @app.get("/_sandbox/config")
    def get_config() -> Response:
        return jsonify({k: getattr(cfg, k) for k in ("client_id", *runtime)})

    @app.route("/_sandbox/config", methods=["POST", "PATCH"])
    def set_config() -> Response:
        data = _json_body()
        unknown = set(data) - set(runtime)
        if unknown:
            raise SandboxError(f"not settable: {sorted(unknown)}")
        with world.lock:
            before = {key: getattr(cfg, key) for key in data}
            for key, value in data.items():
                current = getattr(cfg, key)
                setattr(
                    cfg,
                    key,
                    type(current)(value) if current is not None and value is not None else value,
                )
            try:
                cfg.validate()
            except ValueError as exc:
                for key, value in before.items():
                    setattr(cfg, key, value)
                raise SandboxError(str(exc)) from None
        return get_config()

    @app.get("/_sandbox/limits")
    def show_limits() -> Response:
        """Live windows (requests in the last second per IP / account), 429 strikes, bans."""
        return jsonify(world.limiter.snapshot(time.time()))

    @app.delete("/_sandbox/limits")
    def clear_limits() -> Response:
        """Forget every window, strike and ban: a test's clean slate."""
        world.limiter.clear()
        return jsonify({"ok": True})

    @app.get("/_sandbox/bans")
    def list_bans() -> Response:
        return jsonify(world.limiter.snapshot(time.time())["bans"])

    @app.post("/_sandbox/bans")
    def add_ban() -> Response:
        """Ban an IP now (default: the caller's), as if it had been escalated: {ip, seconds}."""
        data = _json_body()
        ip = str(data.get("ip") or request.remote_addr or "")
        seconds = float(data.get("seconds", cfg.ban_seconds))
        ban = world.limiter.ban(ip, time.time(), seconds, str(data.get("reason") or "control API"))
        resp = jsonify(ban.as_json(time.time()))
        resp.status_code = 201
        return resp

    @app.delete("/_sandbox/bans")
    def lift_bans() -> Response:
        """Lift every ban, or one IP's with ?ip= (what amoCRM support does on request)."""
        return jsonify({"lifted": world.limiter.lift(request.args.get("ip") or None)})

    @app.post("/_sandbox/reset")
    def reset() -> Response:
        world.reset()
        return jsonify({"ok": True, "accounts": [account_json(a) for a in world.accounts.values()]})

    @app.get("/_sandbox/accounts")
    def list_accounts() -> Response:
        with world.lock:
            return jsonify([account_json(a) for a in world.accounts.values()])

    @app.post("/_sandbox/accounts")
    def create_account() -> Response:
        data = _json_body()
        account = world.create_account(
            subdomain=data.get("subdomain"),
            name=data.get("name"),
            api_filter_enabled=bool(data.get("api_filter_enabled", True)),
        )
        resp = jsonify(account_json(account))
        resp.status_code = 201
        return resp

    @app.get("/_sandbox/accounts/<int:account_id>")
    def show_account(account_id: int) -> Response:
        with world.lock:
            return jsonify(account_json(world.account(account_id)))

    @app.patch("/_sandbox/accounts/<int:account_id>")
    def patch_account(account_id: int) -> Response:
        data = _json_body()
        with world.lock:
            account = world.account(account_id)
            for key in ("api_filter_enabled", "blocked"):
                if key in data:
                    setattr(account, key, bool(data[key]))
            if "name" in data:
                account.name = str(data["name"])
            return jsonify(account_json(account))

    @app.patch("/_sandbox/accounts/<int:account_id>/webhooks/<int:hook_id>")
    def patch_hook(account_id: int, hook_id: int) -> Response:
        """Disable or re-enable a subscription by hand: {"disabled": true|false}."""
        data = _json_body()
        with world.lock:
            account = world.account(account_id)
            hook = next((h for h in account.webhooks.values() if h.id == hook_id), None)
            if hook is None:
                raise SandboxError(f"no webhook {hook_id} in account {account_id}", 404)
            if "disabled" in data:
                hook.disabled = bool(data["disabled"])
                hook.failures.clear()
                hook.updated_at = int(time.time())
            return jsonify(_hook_json(account, hook))

    @app.post("/_sandbox/accounts/<int:account_id>/custom_fields")
    def add_custom_field(account_id: int) -> Response:
        account = world.account(account_id)
        fdef = world.add_field(account, _json_body())
        return jsonify(
            {
                "id": fdef.id,
                "name": fdef.name,
                "code": fdef.code,
                "enums": {v: i for i, v, _ in fdef.enums},
            }
        )

    @app.post("/_sandbox/accounts/<int:account_id>/code")
    def issue_code(account_id: int) -> Response:
        account = world.account(account_id)
        data = _json_body()
        code = world.issue_code(account, age_seconds=float(data.get("age_seconds") or 0))
        return jsonify({"code": code, "referer": account.host, "client_id": cfg.client_id})

    @app.post("/_sandbox/accounts/<int:account_id>/tokens")
    def issue_tokens(account_id: int) -> Response:
        account = world.account(account_id)
        code = world.issue_code(account)
        return jsonify(
            world.grant(
                {
                    "client_id": cfg.client_id,
                    "client_secret": cfg.client_secret,
                    "redirect_uri": cfg.redirect_uri,
                    "grant_type": "authorization_code",
                    "code": code,
                }
            )
        )

    @app.post("/_sandbox/accounts/<int:account_id>/revoke_tokens")
    def revoke(account_id: int) -> Response:
        return jsonify({"revoked": world.revoke_tokens(world.account(account_id))})

    @app.post("/_sandbox/accounts/<int:account_id>/disable")
    def disable(account_id: int) -> Response:
        return jsonify(send_disable_hook(world, world.account(account_id)))

    @app.post("/_sandbox/accounts/<int:account_id>/install_widget")
    def install_widget(account_id: int) -> Response:
        account = world.account(account_id)
        return jsonify(send_widget_install(world, account, world.issue_code(account)))

    @app.get("/_sandbox/accounts/<int:account_id>/contacts")
    def dump_contacts(account_id: int) -> Response:
        base = request.host_url.rstrip("/")
        with world.lock:
            account = world.account(account_id)
            items = [
                {**_contact_json(account, e, base, False), "type": e.type, "deleted": e.deleted}
                for e in account.entities.values()
            ]
        return jsonify(items)

    @app.post("/_sandbox/accounts/<int:account_id>/contacts")
    def add_contact(account_id: int) -> Response:
        data = _json_body()
        result = run_changes(world.account(account_id), {**data, "add": [data]})
        resp = jsonify(_single(world, account_id, result["added"][0], result))
        resp.status_code = 201
        return resp

    @app.post("/_sandbox/accounts/<int:account_id>/companies")
    def add_company(account_id: int) -> Response:
        data = _json_body()
        result = run_changes(world.account(account_id), {**data, "add_companies": [data]})
        return jsonify(result)

    @app.patch("/_sandbox/accounts/<int:account_id>/contacts/<int:contact_id>")
    def update_contact(account_id: int, contact_id: int) -> Response:
        data = _json_body()
        result = run_changes(
            world.account(account_id), {**data, "update": [{**data, "id": contact_id}]}
        )
        return jsonify(_single(world, account_id, contact_id, result))

    @app.delete("/_sandbox/accounts/<int:account_id>/contacts/<int:contact_id>")
    def delete_contact(account_id: int, contact_id: int) -> Response:
        data = _json_body()
        return jsonify(run_changes(world.account(account_id), {**data, "delete": [contact_id]}))

    @app.post("/_sandbox/accounts/<int:account_id>/contacts/<int:contact_id>/restore")
    def restore_contact(account_id: int, contact_id: int) -> Response:
        data = _json_body()
        return jsonify(run_changes(world.account(account_id), {**data, "restore": [contact_id]}))

    @app.post("/_sandbox/accounts/<int:account_id>/changes")
    def bulk_changes(account_id: int) -> Response:
        return jsonify(run_changes(world.account(account_id), _json_body()))

    @app.get("/_sandbox/deliveries")
    def list_deliveries() -> Response:
        account_id = request.args.get("account_id", type=int)
        with world.lock:
            return jsonify(
                [d for d in world.deliveries if account_id is None or d["account_id"] == account_id]
            )

    @app.delete("/_sandbox/deliveries")
    def clear_deliveries() -> Response:
        with world.lock:
            world.deliveries.clear()
        return jsonify({"ok": True})

    @app.get("/_sandbox/requests")
    def list_requests() -> Response:
        account_id = request.args.get("account_id", type=int)
        prefix = request.args.get("path_prefix", "")
        with world.lock:
            return jsonify(
                [
                    e
                    for e in world.request_log
                    if e["path"].startswith(prefix)
                    and (account_id is None or e["account_id"] == account_id)
                ]
            )

    @app.delete("/_sandbox/requests")
    def clear_requests() -> Response:
        with world.lock:
            world.request_log.clear()
        return jsonify({"ok": True})

    @app.get("/_sandbox/stats")
    def stats() -> Response:
        return jsonify(
            world.stats(
                account_id=request.args.get("account_id", type=int),
                path_prefix=request.args.get("path_prefix", "/api/v4"),
            )
        )

    @app.post("/_sandbox/faults")
    def add_fault() -> Response:
        data = _json_body()
        fault = {
            "status": int(data.get("status") or 500),
            "remaining": int(data.get("count") or 1),
            "path_prefix": str(data.get("path_prefix") or "/api/v4"),
        }
        if "retry_after" in data:
            fault["retry_after"] = data["retry_after"]
        if data.get("html"):
            fault["html"] = True
        with world.lock:
            world.faults.append(fault)
        return jsonify(fault)

    @app.delete("/_sandbox/faults")
    def clear_faults() -> Response:
        with world.lock:
            world.faults.clear()
        return jsonify({"ok": True})


def _single(
    world: World, account_id: int, entity_id: int, result: dict[str, Any]
) -> dict[str, Any]:
    with world.lock:
        account = world.account(account_id)
        rec = world.entity(account, entity_id)
        body = _contact_json(account, rec, request.host_url.rstrip("/"), False)
    return {"contact": body, "deliveries": result["deliveries"]}
