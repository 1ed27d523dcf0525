"""`amosync demo`: the whole flow against a running `make dev`, sandbox mode only."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

import requests
import typer
from rich.console import Console
from rich.markup import escape

from sandbox import flows
from shared.settings import Settings

console = Console(soft_wrap=True, highlight=False)

DEFAULT_KEY = "sandbox-unisender-key"


HELP = (
    "Sandbox mode only: the whole flow against a running `make dev`.\n\n"
    "Creates an amoCRM sandbox account, authorizes it through /auth and the sandbox consent "
    "page, connects a Unisender sandbox key through POST /widget (with a widget token signed "
    "by the client secret as amoCRM signs it; only possible because the sandbox is ours), adds "
    "contacts in amoCRM (which sends real webhooks) and waits until they are in the account's "
    "Unisender list. Exit 0 when they arrived, 1 when a step failed or outside SANDBOX_MODE."
)


def register(app: typer.Typer) -> None:
    app.command("demo", help=HELP)(demo)


def _default_urls(settings: Settings) -> tuple[str, str, str]:
    from cli.devstack import dev_ports, dotenv_environment

    ports = dev_ports(
        dotenv_environment(), gateway=settings.gateway_port, beanstalk=settings.beanstalk_port
    )
    return (
        f"http://127.0.0.1:{ports.gateway}",
        f"http://127.0.0.1:{ports.amocrm}",
        f"http://127.0.0.1:{ports.unisender}",
    )


def _step(number: int, text: str) -> None:
    console.print(f"[bold]{number}.[/bold] {escape(text)}")


def _done(text: str) -> None:
    console.print(f"   [green]ok[/green] {escape(text)}")


def _reachable(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def demo(
    gateway_url: Annotated[
        str | None, typer.Option(help="The gateway (default: GATEWAY_PORT on 127.0.0.1).")
    ] = None,
    amocrm_url: Annotated[
        str | None, typer.Option(help="The amoCRM sandbox (default: SANDBOX_AMOCRM_PORT, 8101).")
    ] = None,
    unisender_url: Annotated[
        str | None,
        typer.Option(help="The Unisender sandbox (default: SANDBOX_UNISENDER_PORT, 8102)."),
    ] = None,
    subdomain: Annotated[
        str | None, typer.Option(help="amoCRM sandbox subdomain (default: demo-<random>).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help="Unisender sandbox key (default: the first SANDBOX_UNISENDER_KEYS)."),
    ] = None,
    contacts: Annotated[int, typer.Option(min=1, max=50, help="Contacts to add.")] = 3,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for Unisender.")] = 60,
) -> None:
    """Sandbox mode only: install a sandbox account, connect Unisender, add contacts, watch."""
    from cli.ops import fail, load_settings

    settings = load_settings()
    if not settings.sandbox_mode:
        fail(
            "amosync demo runs only with SANDBOX_MODE=true: it signs widget tokens with the "
            "client secret, which only amoCRM may do against a real installation"
        )
    defaults = _default_urls(settings)
    gateway = (gateway_url or defaults[0]).rstrip("/")
    amocrm = (amocrm_url or defaults[1]).rstrip("/")
    unisender = (unisender_url or defaults[2]).rstrip("/")
    key = api_key or next((k.strip() for k in sandbox_keys() if k.strip()), DEFAULT_KEY)
    try:
        _run(settings, gateway, amocrm, unisender, subdomain, key, contacts, timeout)
    except (flows.FlowError, requests.RequestException) as exc:
        fail(str(exc))


def sandbox_keys() -> list[str]:
    """SANDBOX_UNISENDER_KEYS as `make dev` hands it to the emulator (.env, then environment)."""
    from cli.devstack import dotenv_environment

    return dotenv_environment().get("SANDBOX_UNISENDER_KEYS", "").split(",")


def _run(
    settings: Settings,
    gateway: str,
    amocrm: str,
    unisender: str,
    subdomain: str | None,
    key: str,
    count: int,
    timeout: float,
) -> None:
    from cli.ops import fail

    _step(0, f"checking that `make dev` runs: {gateway}, {amocrm}, {unisender}")
    down = [
        url
        for url in (
            f"{gateway}/auth/healthz",
            f"{amocrm}/_sandbox/health",
            f"{unisender}/_sandbox/health",
        )
        if not _reachable(url)
    ]
    if down:
        fail(f"not answering: {', '.join(down)} (start `make dev` first, or pass the URLs)")
    _done("gateway and both emulators answer")

    name = subdomain or f"demo-{secrets.token_hex(3)}"
    _step(1, f"creating amoCRM sandbox account {name!r}")
    account = flows.create_sandbox_account(amocrm, name, name=f"Demo {name}")
    account_id = int(account["id"])
    _done(f"account {account_id} at {account['host']}")

    _step(2, f"authorizing it: GET {gateway}/auth?name={name} → consent page → Approve")
    # Where the consent page is, the gateway says (the browser-facing URL may differ from ours).
    consent = flows.start_auth(gateway, name, auth_url=None, client_id=settings.amocrm_client_id)
    _done(f"consent page: {consent.split('?', 1)[0]}; approving account {account_id} there")
    back = flows.approve(amocrm, consent, account_id)
    flows.complete_auth(
        back, redirect_uri=settings.amocrm_redirect_uri, name=name, account_id=account_id
    )
    _done(f"amosync stored account {account_id} as {name!r} (amosync accounts list)")

    _step(3, f"connecting Unisender key {key!r} through POST {gateway}/widget")
    if flows.ensure_unisender_key(unisender, key):
        _done("created the key in the Unisender sandbox")
    token = flows.mint_widget_token(
        client_id=settings.amocrm_client_id,
        client_secret=settings.amocrm_client_secret.get_secret_value(),
        redirect_uri=settings.amocrm_redirect_uri,
        account_id=account_id,
        subdomain=str(account["subdomain"]),
    )
    body = flows.connect_widget(gateway, token, key)
    list_id = int(body["list_id"])
    hook = flows.webhook_destination(amocrm, account_id, settings.public_url)
    _done(f"Unisender list {list_id}; amoCRM webhook → {hook.rsplit('/', 1)[0]}/…")

    _step(4, f"adding {count} contact(s) in amoCRM (the sandbox POSTs the webhook)")
    tag = secrets.token_hex(3)
    emails = [f"demo{i}-{tag}@example.com" for i in range(1, count + 1)]
    people = [
        {"name": f"Demo Person {i}", "emails": [{"value": email, "enum": "WORK"}]}
        for i, email in enumerate(emails, 1)
    ]
    result = flows.add_contacts(amocrm, account_id, people)
    statuses = [d.get("status") or d.get("error") for d in result.get("deliveries", [])]
    _done(f"contacts {result['added']}; webhook answered {statuses}")
    if not statuses or any(s != 200 for s in statuses):
        fail(f"the webhook was not accepted: {result.get('deliveries')}")

    expected = set(emails)
    _step(5, f"waiting up to {timeout:.0f}s for them in Unisender list {list_id}")

    def arrived() -> set[str] | None:
        members = flows.list_members(unisender, key, list_id)
        return expected if expected <= set(members) else None

    flows.wait_for(arrived, timeout=timeout, interval=0.5, what="the contacts in Unisender")
    _done(f"all {count} address(es) are in the list")

    _print_links(settings, gateway, amocrm, unisender, name, account_id, key)


def _print_links(
    settings: Settings,
    gateway: str,
    amocrm: str,
    unisender: str,
    name: str,
    account_id: int,
    key: str,
) -> None:
    lines: list[tuple[str, Any]] = [
        ("status page (user: anything, password: ADMIN_TOKEN)", f"{gateway}/status"),
        ("amoCRM sandbox account", f"{amocrm}/_sandbox/accounts/{account_id}"),
        ("webhooks it sent", f"{amocrm}/_sandbox/deliveries?account_id={account_id}"),
        ("Unisender sandbox key", f"{unisender}/_sandbox/keys/{key}"),
        ("contacts through amosync", f"amosync contacts {name}"),
    ]
    console.print("\nLook at:")
    for label, target in lines:
        console.print(f"  {escape(label)}: {escape(str(target))}")
    console.print(
        f"Add more: curl -XPOST {amocrm}/_sandbox/accounts/{account_id}/contacts "
        '-H \'content-type: application/json\' -d \'{"name": "Ann", "emails": ["ann@x.ru"]}\''
    )
