"""Image references are normalised exactly as Docker normalises them."""

from __future__ import annotations

import pytest

from pyengine.errors import UsageError
from pyengine.images.reference import looks_like_id, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, full, familiar", [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/user/app:v2", "docker.io/user/app:v2", "user/app:v2"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
    ("localhost:5000/a/b/c:t-1.0", "localhost:5000/a/b/c:t-1.0", "localhost:5000/a/b/c:t-1.0"),
    ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest", "127.0.0.1:5000/app:latest"),
    ("quay.io/org/app.name_x", "quay.io/org/app.name_x:latest", "quay.io/org/app.name_x:latest"),
    (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}", f"busybox@{DIGEST}"),
    (f"host:5000/app:v1@{DIGEST}", f"host:5000/app:v1@{DIGEST}", f"host:5000/app:v1@{DIGEST}"),
])
def test_reference_normalised_like_docker(text: str, full: str, familiar: str) -> None:
    ref = parse_reference(text)
    assert str(ref) == full
    assert ref.familiar() == familiar


@pytest.mark.parametrize("text", ["", "Busybox", "busybox:", "busy box", "busybox@sha256:12", "a//b",
                                  "-app", "app:" + "t" * 129, ":tag", "host:port/app", "busybox@md5:" + "0" * 32])
def test_invalid_reference_is_refused_with_one_line(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_reference(text)
    assert "\n" not in str(info.value)


def test_ids_are_told_from_names() -> None:
    assert looks_like_id(DIGEST)
    assert looks_like_id("abcdef12")
    assert not looks_like_id("busybox")
    assert not looks_like_id("abc")
