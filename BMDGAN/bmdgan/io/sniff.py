"""What a file holds, from its first bytes, not its name: DICOM ('DICM' after the 128-byte preamble), PNG, JPEG or
TIFF. Folders of DICOM files often have no suffix (``IM0001``); a ``.png`` may be a JPEG."""

from __future__ import annotations

from pathlib import Path

SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
)


def sniff_format(path: str | Path) -> str | None:
    """ "dicom", "png", "jpeg", "tiff", or None when the first bytes are none of these (or the file is unreadable)."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(132)
    except OSError:
        return None
    if len(head) == 132 and head[128:132] == b"DICM":
        return "dicom"
    for signature, kind in SIGNATURES:
        if head.startswith(signature):
            return kind
    return None
