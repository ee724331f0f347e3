"""Text normalisation shared by the bench's scoring and the decontamination checks."""

from __future__ import annotations

import re
import unicodedata


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 300,000 → 300000
    text = re.sub(r"[^\w\s.]", " ", text)
    text = re.sub(r"\.(?!\d)", " ", text)  # keep decimal points, drop sentence dots
    return " ".join(text.split())
