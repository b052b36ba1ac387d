"""The Dockerfile corpus: each tests/fixtures/dockerfiles/<case>/ holds a Dockerfile, its build context
(context/), optional args.json (build_args, target, platform, build_platform, labels) and expected.json,
the plan Docker's documented semantics call for, written by hand."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from dockwright.cli.describe import describe_text
from dockwright.frontends.dockerfile import plan_from_dockerfile
from dockwright.model.platform import Platform
from dockwright.plan import BuildPlan, ConfigStep, CopyStep, MkdirStep, Step

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "dockerfiles"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "Dockerfile").is_file())


def _fields(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Fields of a dataclass that differ from their defaults, JSON-shaped (tuples as lists, bytes as text)."""

    def shape(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [shape(v) for v in value]
        if isinstance(value, bytes):
            return value.decode()
        return value

    return {f.name: shape(getattr(obj, f.name)) for f in dataclasses.fields(obj)
            if f.name not in skip and getattr(obj, f.name) != f.default}


def _step_to_json(step: Step) -> dict[str, Any]:
    kind = {ConfigStep: "config", CopyStep: "copy", MkdirStep: "mkdir"}[type(step)]
    body = _fields(step.edit) if isinstance(step, ConfigStep) else _fields(step, skip=("created_by", "line"))
    rendered: dict[str, Any] = {kind: body}
    if step.created_by:
        rendered["history"] = step.created_by
    return rendered


def plan_to_json(plan: BuildPlan) -> dict[str, Any]:
    return {"stages": [
        {**_fields(stage, skip=("steps", "line")), "steps": [_step_to_json(s) for s in stage.steps]}
        for stage in plan.stages
    ]}


def build_case(name: str) -> BuildPlan:
    case = CORPUS / name
    args = json.loads((case / "args.json").read_text()) if (case / "args.json").is_file() else {}
    return plan_from_dockerfile(
        case / "context", (case / "Dockerfile").read_text(), build_args=args.get("build_args", {}),
        target=args.get("target"), platform=Platform.parse(args.get("platform", "linux/amd64")),
        build_platform=Platform.parse(args.get("build_platform", "linux/amd64")), labels=args.get("labels", {}),
    )


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", CASES)
def test_plan_matches_expected(name: str) -> None:
    expected = json.loads((CORPUS / name / "expected.json").read_text())
    assert plan_to_json(build_case(name)) == expected


@pytest.mark.parametrize("name", CASES)
def test_plan_metadata(name: str) -> None:
    plan = build_case(name)
    assert plan.source == "Dockerfile"
    assert plan.context == CORPUS / name / "context"
    assert all(stage.line and stage.line >= 1 for stage in plan.stages)
    assert describe_text([plan], [], []).startswith("# plan (Dockerfile) for linux/")
