"""Draws the phone app's icons (nabu_pipeline/web/icons/*.png, committed) with Pillow.

    python tests/webclient/make_icons.py

A white speech bubble with sound bars on Nabu's deep blue: readable at the size of a home-screen
icon, with the maskable variant's drawing inside the central 80 % safe zone.
"""

from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parents[2] / "nabu_pipeline" / "web" / "icons"
BLUE = (18, 53, 91)
WHITE = (255, 255, 255)
SCALE = 4  # draw large, shrink: smooth edges


def icon(size: int, *, maskable: bool) -> Image.Image:
    big = size * SCALE
    img = Image.new("RGB", (big, big), BLUE)
    d = ImageDraw.Draw(img)
    if not maskable:  # a rounded square on transparent corners
        img = Image.new("RGBA", (big, big), (0, 0, 0, 0))
        d = ImageDraw.Draw(img)
        d.rounded_rectangle((0, 0, big - 1, big - 1), radius=big * 0.22, fill=BLUE)
    art = 0.62 if maskable else 0.74  # share of the icon the bubble spans
    w = big * art
    x0 = (big - w) / 2
    y0 = big * (0.5 - art * 0.42)
    h = w * 0.68
    d.rounded_rectangle((x0, y0, x0 + w, y0 + h), radius=h * 0.3, fill=WHITE)
    bottom = y0 + h - 2
    tail = [(x0 + w * 0.22, bottom), (x0 + w * 0.44, bottom), (x0 + w * 0.16, y0 + h + w * 0.2)]
    d.polygon(tail, fill=WHITE)
    bars = (0.35, 0.7, 1.0, 0.7, 0.35)
    bw = w * 0.085
    gap = w * 0.06
    total = len(bars) * bw + (len(bars) - 1) * gap
    bx = x0 + (w - total) / 2
    cy = y0 + h / 2
    for i, level in enumerate(bars):
        bh = h * 0.62 * level
        left = bx + i * (bw + gap)
        d.rounded_rectangle((left, cy - bh / 2, left + bw, cy + bh / 2), radius=bw / 2, fill=BLUE)
    return img.resize((size, size), Image.LANCZOS)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    icon(192, maskable=False).save(OUT / "icon-192.png", optimize=True)
    icon(512, maskable=False).save(OUT / "icon-512.png", optimize=True)
    icon(512, maskable=True).save(OUT / "icon-maskable-512.png", optimize=True)
    icon(180, maskable=True).save(OUT / "apple-touch-icon.png", optimize=True)  # iOS rounds it


if __name__ == "__main__":
    main()
