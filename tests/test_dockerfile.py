"""Reading the base image an app's Dockerfile starts from: what PCR2 names."""

from __future__ import annotations

from pathlib import Path

import pytest

from nitronb.enclave.dockerfile import base_image, declared_args, instructions
from nitronb.errors import ImageBuildError
from nitronb.enclave.image import app_base_image

ROOT = Path(__file__).resolve().parents[1]


def test_a_fixed_from_is_the_base_whatever_build_argument_is_given():
    text = "FROM python:3.6\nRUN true\n"
    assert base_image(text) == "python:3.6"
    assert base_image(text, {"BASE_IMAGE": "localhost/nitronb-python-base"}) == "python:3.6"


def test_the_base_image_argument_counts_only_when_declared():
    text = "# comment\nARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}\n"
    assert base_image(text) == "python:3.11-slim"
    assert base_image(text, {"BASE_IMAGE": "localhost/b"}) == "localhost/b"
    assert declared_args(text) == {"BASE_IMAGE": "python:3.11-slim"}


def test_variables_stages_and_continuations():
    text = ("ARG V=3.6\nARG REPO\nFROM --platform=linux/amd64 \\\n  python:$V AS build\n"
            "RUN make\nFROM ${REPO:-docker.io/library}/debian:bookworm AS other\nFROM build\n")
    assert base_image(text) == "python:3.6"
    assert base_image(text.rsplit("FROM build", 1)[0]) == "docker.io/library/debian:bookworm"
    assert instructions(text)[2] == ("FROM", "--platform=linux/amd64  python:$V AS build")


def test_a_from_without_value_or_without_from_is_refused():
    with pytest.raises(ImageBuildError, match=r"uses \$\{BASE\}, which has no value"):
        base_image("ARG BASE\nFROM ${BASE}\n")
    with pytest.raises(ImageBuildError, match="has no FROM line"):
        base_image("RUN true\n")


def test_the_bring_your_own_app_fixture_names_its_own_base():
    app = ROOT / "tests" / "data" / "byo_app"
    assert app_base_image(app, "localhost/nitronb-python-base") == "python:3.11"
    assert app_base_image(ROOT / "enclave_image", "localhost/b") == "localhost/b"
