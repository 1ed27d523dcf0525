"""`amosync widget build`: the amoCRM widget zip for a given public URL.

The original had users edit `tokenURL` inside script.js by hand; here the bundle sources in
`widget/` carry a `{{PUBLIC_URL}}` placeholder that the build substitutes.
"""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
WIDGET_DIR = ROOT / "widget"
PLACEHOLDER = "{{PUBLIC_URL}}"
# File name → (width, height) as amoCRM's marketplace shows them.
IMAGES = {
    "logo_min.png": (84, 84),
    "logo_medium.png": (240, 84),
    "logo_main.png": (400, 272),
    "logo.png": (130, 100),
    "logo_small.png": (108, 108),
}
TEXT_SUFFIXES = {".json", ".js", ".css", ".html", ".twig"}

console = Console()
widget_app = typer.Typer(help="The amoCRM widget bundle.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(widget_app, name="widget")


def png_bytes(width: int, height: int, rgb: tuple[int, int, int] = (0x2B, 0x8A, 0xE2)) -> bytes:
    """A valid solid-colour RGB PNG with a lighter band (no imaging library needed)."""
    light = tuple(min(255, c + 70) for c in rgb)
    rows = bytearray()
    for y in range(height):
        colour = light if height // 3 <= y < 2 * height // 3 else rgb
        rows += b"\x00" + bytes(colour) * width

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


def write_images(directory: Path) -> list[Path]:
    """(Re)generate the bundle's logos."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (width, height) in IMAGES.items():
        path = directory / name
        path.write_bytes(png_bytes(width, height))
        paths.append(path)
    return paths


def check_public_url(public_url: str) -> str:
    parts = urlsplit(public_url.strip())
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ValueError(
            "--public-url must be an absolute http(s) URL, e.g. https://sync.example.com"
        )
    if parts.query or parts.fragment:
        raise ValueError("--public-url must not carry a query or fragment")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def build_zip(public_url: str, out: Path, *, source: Path = WIDGET_DIR) -> list[str]:
    """Write the widget zip (manifest.json at the root); returns the names it holds."""
    url = check_public_url(public_url)
    if not (source / "manifest.json").is_file():
        raise FileNotFoundError(f"no manifest.json in {source}")
    json.loads((source / "manifest.json").read_text(encoding="utf-8"))  # fail early if broken
    images = source / "images"
    if not all((images / name).is_file() for name in IMAGES):
        write_images(images)
    names = []
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            name = path.relative_to(source).as_posix()
            if path.suffix in TEXT_SUFFIXES:
                archive.writestr(name, path.read_text(encoding="utf-8").replace(PLACEHOLDER, url))
            else:
                archive.write(path, name)
            names.append(name)
    return names


@widget_app.command("build")
def build(
    public_url: Annotated[
        str, typer.Option("--public-url", help="Where amosync is reachable (PUBLIC_URL).")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="The zip to write (its folder is created).")
    ] = Path("build/widget.zip"),
) -> None:
    """Build the amoCRM widget zip that calls PUBLIC_URL/widget (upload it in amoCRM)."""
    # build/ is git-ignored: a build never leaves an artefact to commit by mistake.
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        names = build_zip(public_url, out)
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if public_url.startswith("http://"):
        console.print("[yellow]warning:[/yellow] amoCRM pages are https; browsers block http calls")
    console.print(f"wrote {out} ({len(names)} files) for {check_public_url(public_url)}")


@widget_app.command("images")
def images() -> None:
    """Regenerate the bundle's logo PNGs in widget/images."""
    for path in write_images(WIDGET_DIR / "images"):
        console.print(str(path.relative_to(ROOT)))
