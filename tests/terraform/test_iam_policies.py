"""The IAM documents of the AWS module, read statically: least privilege, no wildcards on data."""

from __future__ import annotations

import re

import pytest

from tests.terraform import tf

BUCKET = "arn:aws:s3:::cloudprof-profiles"
QUEUE = "arn:aws:sqs:us-east-1:123456789012:cloudprof-raw-uploads"
DLQ = "arn:aws:sqs:us-east-1:123456789012:cloudprof-aggregator-dlq"
LOG_GROUP = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/cloudprof-aggregator"
AGGREGATOR_ARNS = {"queue_arn": QUEUE, "dead_letter_queue_arn": DLQ, "log_group_arn": LOG_GROUP}

# What Lambda itself calls with the function's role to poll an SQS event source
# (AWS Lambda developer guide, "Execution role permissions" for Amazon SQS), and
# what it calls to deliver a failed asynchronous (scheduled) invocation to the DLQ.
LAMBDA_SQS_EVENT_SOURCE = {"sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"}
LAMBDA_ASYNC_DLQ = {"sqs:SendMessage"}


def rendered(prefix: str = "") -> dict[str, dict]:
    return {
        "agent": tf.aws_policy("agent", bucket_arn=BUCKET, prefix=prefix, service="checkout"),
        "reader": tf.aws_policy("reader", bucket_arn=BUCKET, prefix=prefix),
        "aggregator": tf.aws_policy("aggregator", bucket_arn=BUCKET, prefix=prefix, **AGGREGATOR_ARNS),
    }


def actions(policy: dict) -> set[str]:
    return {a for s in tf.statements(policy) for a in tf.as_list(s["Action"])}


@pytest.mark.parametrize("template", sorted(tf.POLICIES.glob("*.json.tftpl")), ids=lambda p: p.name)
def test_templates_get_every_variable_they_use_from_the_module(template):
    iam = (tf.AWS / "iam.tf").read_text()
    call = re.search(r'templatefile\("\$\{path\.module\}/policies/' + re.escape(template.name) + r'",(.*?)\)\)\.Statement', iam, re.S)
    assert call, f"iam.tf does not load {template.name}"
    passed = set(re.findall(r"(\w+)\s*=", call.group(1))) | set(tf.locals_of(tf.AWS)["policy_vars"])
    assert tf.template_names(template) <= passed, f"{template.name} uses {tf.template_names(template) - passed} the module never passes"


@pytest.mark.parametrize("prefix", ["", "team/profiles/"])
def test_no_policy_allows_a_wildcard_action_or_resource_on_data(prefix):
    for name, policy in rendered(prefix).items():
        for statement in tf.statements(policy):
            assert statement["Effect"] == "Allow"
            for action in tf.as_list(statement["Action"]):
                assert "*" not in action, f"{name}: wildcard action {action}"
            for resource in tf.as_list(statement["Resource"]):
                assert resource != "*", f"{name}: Resource * in {statement['Sid']}"
                if resource.startswith(BUCKET + "/"):
                    assert resource.startswith(f"{BUCKET}/{prefix}"), f"{name}: {resource} escapes key_prefix"
                    assert resource.endswith("/*") and resource.count("*") == 1


def test_only_non_data_services_appear_outside_the_templates():
    """KMS and X-Ray statements are added in HCL; nothing else is, and only X-Ray (no resource-level ARNs) uses "*"."""
    found = tf.locals_of(tf.AWS)
    for name in ("kms_write_statements", "kms_read_statements", "kms_read_write_statements", "xray_statements"):
        named = set(re.findall(r'"(\w+:\w+)"', found[name]))
        service = "xray" if name.startswith("xray") else "kms"
        assert named and all(a.startswith(service + ":") for a in named), (name, named)
        assert ('Resource = "*"' in found[name]) == (service == "xray"), name
    # With SSE-KMS each identity gets the key use its S3 calls need, and only that.
    assert "local.kms_write_statements" in tf.resource(tf.AWS, "aws_iam_policy", "agent")["policy"]
    assert "local.kms_read_statements" in found["reader_policy"]
    assert "local.kms_read_write_statements" in found["aggregator_policy"] and "local.xray_statements" in found["aggregator_policy"]
    text = "\n".join(p.read_text() for p in tf.AWS.glob("*.tf"))
    assert text.count('"s3:*"') == 2, "s3:* may only appear in the bucket policy's two Deny statements"
    policy = tf.resource(tf.AWS, "aws_s3_bucket_policy", "this")["policy"]
    assert policy.count('Action = "s3:*"') == 2 and policy.count('Effect = "Deny"') == 2 and 'Effect = "Allow"' not in policy


@pytest.mark.parametrize("prefix", ["", "team/profiles/"])
def test_agent_policy_is_put_object_under_its_own_raw_prefix_only(prefix):
    policy = rendered(prefix)["agent"]
    assert [(s["Effect"], s["Action"], s["Resource"]) for s in tf.statements(policy)] == [
        ("Allow", "s3:PutObject", f"{BUCKET}/{prefix}raw/service=checkout/*"),
    ]


def test_reader_policy_reads_and_never_writes():
    assert actions(rendered()["reader"]) == {"s3:GetObject", "s3:ListBucket"}


def test_aggregator_sqs_and_logs_permissions_are_what_lambda_uses():
    policy = rendered()["aggregator"]
    by_resource: dict[str, set[str]] = {}
    for statement in tf.statements(policy):
        for resource in tf.as_list(statement["Resource"]):
            by_resource.setdefault(resource, set()).update(tf.as_list(statement["Action"]))
    assert by_resource[QUEUE] == LAMBDA_SQS_EVENT_SOURCE
    assert by_resource[DLQ] == LAMBDA_ASYNC_DLQ
    assert by_resource[LOG_GROUP + ":*"] == {"logs:CreateLogStream", "logs:PutLogEvents"}
    assert {a for a in actions(policy) if not a.startswith("s3:")} == LAMBDA_SQS_EVENT_SOURCE | LAMBDA_ASYNC_DLQ | {
        "logs:CreateLogStream", "logs:PutLogEvents"}


def test_every_policy_the_module_creates_comes_from_a_template():
    aws = {(t, n): body for _, t, n, body in tf.typed_blocks(tf.AWS)}
    assert "policies/agent.json.tftpl" in aws[("aws_iam_policy", "agent")]["policy"]
    assert aws[("aws_iam_policy", "reader")]["policy"] == "${local.reader_policy}"
    assert aws[("aws_iam_role_policy", "aggregator")]["policy"] == "${local.aggregator_policy}"
    policies = {k for k in aws if k[0] in ("aws_iam_policy", "aws_iam_role_policy", "aws_iam_user_policy", "aws_iam_group_policy")}
    assert policies == {("aws_iam_policy", "agent"), ("aws_iam_policy", "reader"), ("aws_iam_role_policy", "aggregator")}
    assert not [k for k in aws if k[0] == "aws_iam_role_policy_attachment"], "managed policies would bypass the templates"


def test_aggregator_policy_matches_the_aggregators_own_recording():
    """tests/aggregator/s3_calls.py records what the aggregator calls in its moto integration run."""
    from fnmatch import fnmatchcase

    from tests.aggregator.s3_calls import IAM_ACTIONS, SQS_EVENT_SOURCE_ACTIONS, record_aggregator_calls

    record = record_aggregator_calls()
    policy = rendered()["aggregator"]
    granted_s3 = {a for a in actions(policy) if a.startswith("s3:")}
    assert set(record["iam_actions"]) == granted_s3
    assert {a for op in record["s3_operations"] for a in IAM_ACTIONS[op]} == granted_s3
    assert record["sqs_operations_by_aggregator"] == []
    assert set(SQS_EVENT_SOURCE_ACTIONS) == LAMBDA_SQS_EVENT_SOURCE

    def allowed(action: str, arn: str) -> bool:
        return any(action in tf.as_list(s["Action"]) and any(fnmatchcase(arn, r) for r in tf.as_list(s["Resource"]))
                   for s in tf.statements(policy))

    for operation, areas in record["key_areas_by_operation"].items():
        # CopyObject's recorded key is its target; reading the source is checked by test_iam_enforcement.
        needed = ["s3:PutObject"] if operation == "CopyObject" else IAM_ACTIONS[operation]
        for area in areas:
            arn = BUCKET if operation.startswith("List") else f"{BUCKET}/{area}some/key"
            for action in needed:
                assert allowed(action, arn), f"{operation} on {area!r} needs {action} on {arn}"
