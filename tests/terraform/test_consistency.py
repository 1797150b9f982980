"""Terraform and Python agree: handler strings, environment variables, scheduled payloads."""

from __future__ import annotations

import base64
import importlib
import json
import re

import pytest

from tests.terraform import tf

AWS_HANDLER = "cloudprof.aggregator.handlers.aws_lambda.handler"
GCP_HANDLER = "cloudprof.aggregator.handlers.gcp.handler"


def _resolve(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_aws_lambda_handler_is_the_aggregators_callable():
    assert tf.unquote(tf.locals_of(tf.AWS)["handler"]) == AWS_HANDLER
    assert tf.resource(tf.AWS, "aws_lambda_function", "this")["handler"] == "${local.handler}"
    handler = _resolve(AWS_HANDLER)
    assert callable(handler)
    assert list(__import__("inspect").signature(handler).parameters)[:2] == ["event", "context"]


def test_gcp_functions_run_the_aggregators_callable():
    found = tf.locals_of(tf.GCP)
    assert tf.unquote(found["handler"]) == GCP_HANDLER
    assert callable(_resolve(GCP_HANDLER))
    # Both functions use the entry point that build_function.sh's main.py binds to the handler
    # (tests/terraform/test_packaging.py runs that main.py under the Functions Framework).
    for name in ("this", "pending"):
        build = tf.clean(tf.resource(tf.GCP, "google_cloudfunctions2_function", name))["build_config"][0]
        assert build["entry_point"] == "${local.entry_point}"
    assert tf.unquote(found["entry_point"]) == GCP_HANDLER.rpartition(".")[2]


def _function_environments():
    aws = tf.clean(tf.resource(tf.AWS, "aws_lambda_function", "this"))
    assert aws["environment"][0]["variables"] == "${local.function_environment}"
    yield "aws", tf.locals_of(tf.AWS)["function_environment"]
    for name in ("this", "pending"):
        gcp = tf.clean(tf.resource(tf.GCP, "google_cloudfunctions2_function", name))
        assert gcp["service_config"][0]["environment_variables"] == "${local.function_environment}"
    yield "gcp", tf.locals_of(tf.GCP)["function_environment"]


@pytest.mark.parametrize("cloud,environment", list(_function_environments()), ids=["aws", "gcp"])
def test_function_environment_variables_are_settings_fields(cloud, environment, monkeypatch):
    from cloudprof.config import ENV_PREFIX, Settings

    assert ENV_PREFIX == "CLOUDPROF_"
    assert environment, f"{cloud}: the function sets no environment"
    fields = set(Settings.model_fields)
    for name in environment:
        assert name.startswith(ENV_PREFIX), f"{cloud}: {name} is not a cloudprof setting"
        field = name[len(ENV_PREFIX):].lower()
        assert field in fields, f"{cloud}: {name} names no Settings field (fields: {sorted(fields)})"
    # And the variable really reaches the field, the way the aggregator reads it.
    url = f"{'s3' if cloud == 'aws' else 'gs'}://cloudprof-profiles/team"
    monkeypatch.setenv("CLOUDPROF_STORAGE", url)
    assert Settings().storage == url


def test_storage_url_outputs_build_the_cloudprof_storage_value():
    assert tf.unquote(tf.locals_of(tf.AWS)["storage_url"]).startswith('${var.key_prefix == "" ? "s3://${aws_s3_bucket.this.id}"')
    assert tf.unquote(tf.locals_of(tf.GCP)["storage_url"]).startswith('${var.key_prefix == "" ? "gs://${google_storage_bucket.this.name}"')


def render_schedule_input(*, time: str, lookback_hours: int) -> dict:
    """The event the EventBridge input transformer builds from a scheduled event (as EventBridge fills it in)."""
    target = tf.clean(tf.resource(tf.AWS, "aws_cloudwatch_event_target", "pending"))
    transformer = target["input_transformer"][0]
    source = {"id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "time": time, "account": "123456789012", "region": "us-east-1"}
    paths = transformer["input_paths"]
    assert all(paths[name] == f"$.{name}" for name in paths)
    text = transformer["input_template"].replace("${var.lookback_hours}", str(lookback_hours))
    # A placeholder takes the JSON value at its path (strings arrive quoted).
    text = re.sub(r"<(\w+)>", lambda m: json.dumps(source[paths[m.group(1)][2:]]), text)
    return json.loads(text)


def test_the_aws_schedule_sends_a_scheduled_event_with_lookback_hours():
    from cloudprof.aggregator.events import is_scheduled_event, scheduled_event

    event = render_schedule_input(time="2026-11-25T16:20:00Z", lookback_hours=5)
    assert is_scheduled_event(event)
    parsed = scheduled_event(event)
    assert parsed.lookback_hours == 5
    assert str(parsed.time).startswith("2026-11-25")


def gcp_scheduler_body(lookback_hours: int) -> bytes:
    """The body the Cloud Scheduler job posts: base64encode(jsonencode({...})) in the module."""
    job = tf.clean(tf.resource(tf.GCP, "google_cloud_scheduler_job", "pending"))
    expression = job["http_target"][0]["body"]
    match = re.fullmatch(r"\$\{base64encode\(jsonencode\(\{\s*(\w+)\s*=\s*var\.(\w+)\s*\}\)\)\}", expression)
    assert match, expression
    key, variable = match.groups()
    assert variable == "lookback_hours"
    return base64.b64decode(base64.b64encode(json.dumps({key: lookback_hours}).encode()))


def test_the_gcp_scheduler_body_names_what_the_handler_reads():
    assert json.loads(gcp_scheduler_body(4)) == {"lookback_hours": 4}
    job = tf.clean(tf.resource(tf.GCP, "google_cloud_scheduler_job", "pending"))
    assert job["http_target"][0]["headers"] == {"Content-Type": "application/json"}
