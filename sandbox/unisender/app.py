"""Flask app emulating the Unisender API, plus a JSON control API under /_sandbox."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, abort, jsonify, request
from werkzeug.exceptions import HTTPException

from sandbox.unisender.forms import parse_php_form
from sandbox.unisender.messages import LANGUAGES
from sandbox.unisender.state import (
    FAULT_KINDS,
    RUNTIME_SETTINGS,
    SIMULATED_EVENTS,
    ApiError,
    Fault,
    Sandbox,
    SandboxConfig,
    now_text,
)


def create_app(config: SandboxConfig | Mapping[str, Any] | None = None) -> Flask:
    """Build the emulator; `config` defaults to the SANDBOX_UNISENDER_* environment."""
    if config is None:
        config = SandboxConfig.from_env(os.environ)
    elif isinstance(config, Mapping):
        config = SandboxConfig(**config)
    sandbox = Sandbox(config)
    app = Flask(__name__)
    app.extensions["unisender_sandbox"] = sandbox

    @app.route("/<lang>/api/<path:method>", methods=["GET", "POST"])
    def api(lang: str, method: str) -> Response:
        if lang not in LANGUAGES:
            # What the real service does with another segment is [unverified]; refusing it (and
            # saying which ones work) beats a silent fallback a misconfigured client never sees.
            body = {
                "error": f'Unknown language "{lang}" in the URL: use one of {", ".join(LANGUAGES)}',
                "code": "unspecified",
            }
            return _envelope(body, status=404)
        return _handle_api(sandbox, method, lang)

    @app.get("/files/export/<task_uuid>.csv")
    def export_file(task_uuid: str) -> Response:
        # `file_to_download` of a completed async export ([unverified] format: CSV, header row).
        text = sandbox.export_file(task_uuid)
        if text is None:
            abort(404, description="no such export file")
        return Response(text, mimetype="text/csv")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        body = {"error": exc.description or exc.name}
        return Response(json.dumps(body), status=exc.code or 500, mimetype="application/json")

    _register_control(app, sandbox)
    return app


def _envelope(body: Mapping[str, Any], status: int = 200) -> Response:
    # Unisender answers API errors with HTTP 200 too; only the body tells success from failure.
    text = json.dumps(body, ensure_ascii=False)
    return Response(text, status=status, mimetype="application/json")


def _handle_api(sandbox: Sandbox, method: str, lang: str) -> Response:
    started = time.monotonic()
    query = list(request.args.items(multi=True))
    form = list(request.form.items(multi=True))
    args = parse_php_form([*query, *form])
    api_key = str(args.get("api_key") or "") or None
    entry: dict[str, Any] = {
        "time": now_text(),
        "method": method,
        "http_method": request.method,
        "query_args": sorted({k.split("[", 1)[0] for k, _ in query}),
        "form_args": sorted({k.split("[", 1)[0] for k, _ in form}),
        "api_key_in": "query" if request.args.get("api_key") else "body" if api_key else None,
        "platform": args.get("platform"),
        "rows": len(args["data"]) if isinstance(args.get("data"), dict) else None,
    }

    def finish(response: Response, outcome: str) -> Response:
        entry["outcome"] = outcome
        entry["status"] = response.status_code
        entry["duration_ms"] = round((time.monotonic() - started) * 1000)
        with sandbox.lock:
            account = sandbox.accounts.get(api_key or "")
            if account is not None:
                account.call_counts[method] += 1
                account.call_log.append(entry)
        return response

    fault_response = _apply_faults(sandbox, method, api_key)
    if fault_response is not None:
        response, outcome = fault_response
        return finish(response, outcome)
    if sandbox.config.latency_ms:
        time.sleep(sandbox.config.latency_ms / 1000)

    try:
        # The docs list this message for requests that mix GET and POST arguments. `format` alone
        # in the query is tolerated because the official PHP wrapper sends it that way.
        if request.method == "POST" and form and any(k != "format" for k, _ in query):
            raise ApiError("mixed_get_post", "unspecified")
        if args.get("format") != "json":
            # Without format=json the real API answers in another format; a JSON client then
            # sees a body it cannot parse, as it does here.
            return finish(Response("format=json is required", mimetype="text/plain"), "not_json")
        with sandbox.lock:
            account = sandbox.accounts.get(api_key or "")
            # Both counters before anything else: the IP one counts even a wrong key.
            sandbox.admit(account.api_key if account else None, _client_ip(), method)
            if account is None:
                raise ApiError("invalid_api_key", "invalid_api_key")
            handler = sandbox.methods.get(method)
            if handler is None:
                raise ApiError("unknown_method", "unknown_method", method=method)
            sandbox.lang = lang
            sandbox.current_method = method
            result = handler(account, {**args, "_base_url": request.host_url})
    except ApiError as exc:
        return finish(_envelope(exc.envelope(lang)), exc.code)
    return finish(_envelope({"result": result}), "ok")


def _client_ip() -> str:
    # The TCP peer: the emulator is reached directly, never through a proxy of its own.
    return request.remote_addr or "unknown"


def _apply_faults(
    sandbox: Sandbox, method: str, api_key: str | None
) -> tuple[Response, str] | None:
    with sandbox.lock:
        matching = [
            f
            for f in sandbox.faults
            if f.matches(method, api_key) and (f.remaining is None or f.remaining > 0)
        ]
        latency = sum(f.seconds for f in matching if f.kind == "latency")
        fault = next((f for f in matching if f.kind != "latency"), None)
        for f in [*(m for m in matching if m.kind == "latency"), *([fault] if fault else [])]:
            if f.remaining is not None:
                f.remaining -= 1
    if latency:
        time.sleep(latency)
    if fault is None:
        return None
    if fault.kind == "outage":
        html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
        return Response(html, status=fault.status, mimetype="text/html"), "fault:outage"
    if fault.kind == "hang":
        # Sleep past the client's read timeout; the request is dropped without being processed.
        time.sleep(fault.seconds)
        return Response("", status=504), "fault:hang"
    if fault.kind == "non_json":
        html = "<html><body>Service temporarily unavailable</body></html>"
        return Response(html, status=200, mimetype="text/html"), "fault:non_json"
    if fault.kind == "retry_later":
        body = {"error": fault.message or "Temporary error, retry later", "code": "retry_later"}
        return _envelope(body), "fault:retry_later"
    body = {"error": fault.message or f"Injected {fault.code}", "code": fault.code}
    return _envelope(body), f"fault:{fault.code}"


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def _register_control(app: Flask, sandbox: Sandbox) -> None:
    # Sandbox-only and unauthenticated: bind it to loopback or a private network.

    def account_or_404(key: str) -> Any:
        account = sandbox.accounts.get(key)
        if account is None:
            abort(404, description=f"no such key {key!r}")
        return account

    @app.get("/_sandbox/health")
    def health() -> Any:
        return {"ok": True}

    @app.post("/_sandbox/reset")
    def reset() -> Any:
        sandbox.reset()
        return {"ok": True, "keys": list(sandbox.accounts)}

    @app.route("/_sandbox/config", methods=["GET", "PATCH"])
    def config() -> Any:
        if request.method == "PATCH":
            with sandbox.lock:
                for key, value in _json_body().items():
                    if key not in RUNTIME_SETTINGS:
                        abort(400, description=f"unknown setting {key!r}")
                    setattr(sandbox.config, key, value)
        return dict(sandbox.config.__dict__)

    @app.post("/_sandbox/keys")
    def create_key() -> Any:
        body = _json_body()
        try:
            account = sandbox.create_account(body.get("api_key"), body)
        except (ValueError, KeyError, ApiError) as exc:
            abort(400, description=str(exc))
        return jsonify(account.to_json()), 201

    @app.get("/_sandbox/keys")
    def list_keys() -> Any:
        return {"keys": list(sandbox.accounts)}

    @app.get("/_sandbox/keys/<key>")
    def show_key(key: str) -> Any:
        with sandbox.lock:
            return account_or_404(key).to_json()

    @app.delete("/_sandbox/keys/<key>")
    def delete_key(key: str) -> Any:
        with sandbox.lock:
            account_or_404(key)
            del sandbox.accounts[key]
        return {"ok": True}

    @app.get("/_sandbox/keys/<key>/contacts/<path:email>")
    def show_contact(key: str, email: str) -> Any:
        with sandbox.lock:
            contact = account_or_404(key).contacts.get(email.strip().lower())
            if contact is None:
                abort(404, description="no such contact")
            return contact.to_json()

    @app.post("/_sandbox/keys/<key>/unsubscribe")
    def opt_out(key: str) -> Any:
        body = _json_body()
        return simulated(key, {**body, "event": "unsubscribe"})[0]

    @app.post("/_sandbox/keys/<key>/simulate")
    def simulate(key: str) -> Any:
        # A person acting in Unisender: unsubscribe | subscribe | hard_bounce | soft_bounce |
        # complaint | delivered, for one `email` or many `emails`; hooks are told.
        return {"contacts": simulated(key, _json_body())}

    def simulated(key: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        event = body.get("event")
        if event not in SIMULATED_EVENTS:
            abort(400, description=f"event must be one of {sorted(SIMULATED_EVENTS)}")
        emails = body.get("emails") or ([body["email"]] if body.get("email") else [])
        if not isinstance(emails, list) or not emails:
            abort(400, description="email or emails is required")
        list_ids = body.get("list_ids")
        if list_ids is not None and not (
            isinstance(list_ids, list) and all(isinstance(i, int) for i in list_ids)
        ):
            abort(400, description="list_ids must be a list of integers")
        campaign_id = body.get("campaign_id")
        with sandbox.lock:
            account = account_or_404(key)
            try:
                contacts = sandbox.simulate(account, event, emails, list_ids, campaign_id)
            except KeyError as exc:
                abort(404, description=f"no such contact {exc.args[0]!r}")
            except ApiError as exc:
                abort(400, description=exc.message)
            return [c.to_json() for c in contacts]

    @app.route("/_sandbox/rate_limits", methods=["GET", "DELETE"])
    def rate_limits() -> Any:
        # Calls counted in the current windows, per key and per IP; DELETE starts them afresh.
        with sandbox.lock:
            if request.method == "DELETE":
                sandbox.windows.clear()
            return sandbox.windows.snapshot(sandbox.config.rate_window_seconds)

    @app.route("/_sandbox/deliveries", methods=["GET", "DELETE"])
    def deliveries() -> Any:
        # Hook and notify_url deliveries: events, state, every attempt with its retry_count.
        with sandbox.lock:
            if request.method == "DELETE":
                sandbox.deliveries.clear()
            key = request.args.get("api_key")
            found = [d for d in sandbox.deliveries if key in (None, d.api_key)]
            return {"deliveries": [d.to_json() for d in found]}

    @app.route("/_sandbox/keys/<key>/calls", methods=["GET", "DELETE"])
    def calls(key: str) -> Any:
        with sandbox.lock:
            account = account_or_404(key)
            if request.method == "DELETE":
                account.call_counts.clear()
                account.call_log.clear()
            method = request.args.get("method")
            entries = [e for e in account.call_log if method in (None, e["method"])]
            return {"counts": dict(account.call_counts), "log": entries}

    @app.route("/_sandbox/faults", methods=["GET", "POST", "DELETE"])
    def faults() -> Any:
        with sandbox.lock:
            if request.method == "DELETE":
                sandbox.faults.clear()
            elif request.method == "POST":
                body = _json_body()
                kind = body.get("kind")
                if kind not in FAULT_KINDS:
                    abort(400, description=f"kind must be one of {sorted(FAULT_KINDS)}")
                fault = Fault(
                    id=sandbox.next_id(),
                    kind=kind,
                    method=body.get("method"),
                    api_key=body.get("api_key"),
                    remaining=body.get("count"),
                    status=int(body.get("status", 503)),
                    seconds=float(body.get("seconds", body.get("ms", 5000) / 1000)),
                    code=str(body.get("code", "unspecified")),
                    message=str(body.get("message", "")),
                )
                sandbox.faults.append(fault)
                return jsonify(fault.to_json()), 201
            return {"faults": [f.to_json() for f in sandbox.faults]}

    @app.delete("/_sandbox/faults/<int:fault_id>")
    def clear_fault(fault_id: int) -> Any:
        with sandbox.lock:
            sandbox.faults[:] = [f for f in sandbox.faults if f.id != fault_id]
        return {"ok": True}
