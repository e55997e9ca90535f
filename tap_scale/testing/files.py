"""Scale's File objects in their three shapes: basic (inline base64), image and audio.

Hosts are under the reserved `.test` and `example.com` domains, so nothing here points at a
real service.
"""

from __future__ import annotations

import base64
import typing as t

if t.TYPE_CHECKING:
    import random

JsonObject = dict[str, t.Any]

_SCALE_FILES = "https://files.scale-simulator.test"
_CUSTOMER_BUCKET = "https://storage.example.com/customer-uploads"


def _file_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


def basic_file(rng: random.Random, name: str, text: str) -> JsonObject:
    """A small text file whose content travels inline, base64-encoded."""
    file_id = _file_id(rng)
    return {
        "content": base64.b64encode(text.encode()).decode("ascii"),
        "mime_type": "text/plain",
        "scale_url": f"{_SCALE_FILES}/{file_id}/{name}",
        "url": f"{_CUSTOMER_BUCKET}/{file_id}/{name}",
        "name": name,
    }


def image_file(rng: random.Random, name: str) -> JsonObject:
    """An image referenced by URL, with its size."""
    file_id = _file_id(rng)
    mime_type = "image/png" if name.endswith(".png") else "image/jpeg"
    return {
        "mime_type": mime_type,
        "scale_url": f"{_SCALE_FILES}/{file_id}/{name}",
        "url": f"{_CUSTOMER_BUCKET}/{file_id}/{name}",
        "name": name,
        "file_size_in_bytes": rng.randint(20_000, 4_000_000),
    }


def audio_file(rng: random.Random, transcript: str) -> JsonObject:
    """An audio clip with its transcript and where the transcript sits in the clip (seconds)."""
    file_id = _file_id(rng)
    duration = round(rng.uniform(4.0, 90.0), 2)
    start = round(rng.uniform(0.0, duration / 4), 2)
    return {
        "mime_type": "audio/mpeg",
        "scale_url": f"{_SCALE_FILES}/{file_id}/clip.mp3",
        "url": f"{_CUSTOMER_BUCKET}/{file_id}/clip.mp3",
        "duration": duration,
        "transcript": transcript,
        "transcript_url": f"{_SCALE_FILES}/{file_id}/transcript.txt",
        "transcript_start": start,
        "transcript_end": round(rng.uniform(start, duration), 2),
    }
