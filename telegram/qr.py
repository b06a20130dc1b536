"""The pairing deep link as a QR code (an inline SVG: no image files, no JavaScript), shown
by the admin's onboarding page and returned by the consumer API."""

from __future__ import annotations

import io

import qrcode
import qrcode.image.svg


def qr_svg(text: str) -> str:
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue().decode()
