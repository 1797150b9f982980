"""Every Terraform file parses, and the modules have the shape terraform-aws-modules users know."""

from __future__ import annotations

import re

import pytest

from tests.terraform import docs, tf

FILES = tf.tf_files()
DIRS = tf.module_dirs()


def _id(path) -> str:
    return str(path.relative_to(tf.TERRAFORM))


def test_the_modules_and_examples_exist():
    assert set(DIRS) == {*tf.MODULES, *tf.EXAMPLES}


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_every_tf_file_parses(path):
    parsed = tf.parse(path)
    assert parsed, f"{_id(path)} parsed to nothing"


@pytest.mark.parametrize("directory", DIRS, ids=_id)
def test_layout(directory):
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
        assert (directory / name).is_file(), f"{_id(directory)} has no {name}"


@pytest.mark.parametrize("directory", DIRS, ids=_id)
def test_every_variable_is_typed_and_described(directory):
    variables = list(tf.named_blocks(directory, "variable"))
    assert variables
    for path, name, body in variables:
        assert path.name == "variables.tf", f"variable {name} lives in {path.name}"
        assert "type" in body, f"{_id(directory)}: variable {name} has no type"
        description = tf.unquote(body.get("description", ""))
        assert isinstance(description, str) and len(description) > 10, f"{_id(directory)}: variable {name} has no description"


@pytest.mark.parametrize("directory", DIRS, ids=_id)
def test_every_output_is_described(directory):
    outputs = list(tf.named_blocks(directory, "output"))
    assert outputs
    for path, name, body in outputs:
        assert path.name == "outputs.tf", f"output {name} lives in {path.name}"
        description = tf.unquote(body.get("description", ""))
        assert isinstance(description, str) and len(description) > 10, f"{_id(directory)}: output {name} has no description"


@pytest.mark.parametrize("directory", DIRS, ids=_id)
def test_providers_are_pinned_to_modern_majors(directory):
    wanted = {"aws": "hashicorp/aws"} if "aws" in directory.name else {"google": "hashicorp/google"}
    (terraform,) = tf.parse(directory / "versions.tf")["terraform"]
    assert tf.unquote(terraform["required_version"]) == ">= 1.5"
    (providers,) = terraform["required_providers"]
    providers = tf.clean(providers)
    assert set(providers) == set(wanted)
    for name, source in wanted.items():
        assert providers[name]["source"] == source
        assert providers[name]["version"] == ">= 5.0"


@pytest.mark.parametrize("directory", tf.MODULES, ids=_id)
def test_modules_leave_provider_configuration_to_the_caller(directory):
    for path in directory.glob("*.tf"):
        assert "provider" not in tf.parse(path), f"{_id(path)} configures a provider; a reusable module must not"


@pytest.mark.parametrize("directory", tf.EXAMPLES, ids=_id)
def test_examples_call_their_module(directory):
    (entry,) = [body for _, name, body in tf.named_blocks(directory, "module") if name == "cloudprof"]
    source = tf.unquote(entry["source"])
    assert (directory / source).resolve() in {m.resolve() for m in tf.MODULES}


def test_main_resources_are_named_this():
    aws = {(t, n) for _, t, n, _ in tf.typed_blocks(tf.AWS)}
    gcp = {(t, n) for _, t, n, _ in tf.typed_blocks(tf.GCP)}
    assert {("aws_s3_bucket", "this"), ("aws_lambda_function", "this")} <= aws
    assert {("google_storage_bucket", "this"), ("google_cloudfunctions2_function", "this")} <= gcp


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_checkov_skips_carry_a_reason(path):
    text = path.read_text(encoding="utf-8")
    for line in text.splitlines():
        if "checkov:skip" in line:
            assert re.fullmatch(r"\s*#checkov:skip=CKV2?_[A-Z]+_\d+:\S.{20,}", line), f"{_id(path)}: skip without a reason: {line.strip()}"


@pytest.mark.parametrize("directory", DIRS, ids=_id)
def test_readme_tables_are_current(directory):
    readme = directory / "README.md"
    assert docs.current_section(readme) == docs.section(directory), (
        f"{_id(readme)}: inputs/outputs tables are stale; run .venv/bin/python -m tests.terraform.docs"
    )


# -- the bucket is what the issue promises ---------------------------------------------------------


def test_aws_bucket_is_private_versioned_encrypted_and_tls_only():
    block = tf.clean(tf.resource(tf.AWS, "aws_s3_bucket_public_access_block", "this"))
    assert all(block[k] is True for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"))
    ownership = tf.clean(tf.resource(tf.AWS, "aws_s3_bucket_ownership_controls", "this"))
    assert ownership["rule"][0]["object_ownership"] == "BucketOwnerEnforced"
    versioning = tf.clean(tf.resource(tf.AWS, "aws_s3_bucket_versioning", "this"))
    assert versioning["versioning_configuration"][0]["status"] == "Enabled"
    sse = tf.clean(tf.resource(tf.AWS, "aws_s3_bucket_server_side_encryption_configuration", "this"))
    default = sse["rule"][0]["apply_server_side_encryption_by_default"][0]
    assert "AES256" in default["sse_algorithm"] and "aws:kms" in default["sse_algorithm"]
    policy = tf.resource(tf.AWS, "aws_s3_bucket_policy", "this")["policy"]
    assert '"aws:SecureTransport" = "false"' in policy and 'Effect = "Deny"' in policy


def test_aws_lifecycle_expires_raw_quarantine_and_merged_but_keeps_reports():
    families = tf.locals_of(tf.AWS)["expiring_families"]
    assert families == {"raw": "${var.raw_retention_days}", "quarantine": "${var.raw_retention_days}",
                        "merged": "${var.merged_retention_days}"}
    lifecycle = tf.resource(tf.AWS, "aws_s3_bucket_lifecycle_configuration", "this")
    (dynamic,) = lifecycle["dynamic"]
    content = tf.clean(dynamic)["rule"]["content"][0]
    assert content["filter"][0]["prefix"] == "${local.prefix}${rule.key}/"
    assert content["expiration"][0]["days"] == "${rule.value}"
    assert "reports" not in str(tf.clean(lifecycle))


def test_aws_events_flow_through_a_queue_with_a_dead_letter_queue():
    notification = tf.clean(tf.resource(tf.AWS, "aws_s3_bucket_notification", "this"))
    (queue,) = notification["queue"]
    assert queue["filter_prefix"] == "${local.prefix}raw/" and queue["events"] == ["s3:ObjectCreated:*"]
    assert "aws_sqs_queue.dead_letter.arn" in tf.resource(tf.AWS, "aws_sqs_queue", "events")["redrive_policy"]
    mapping = tf.clean(tf.resource(tf.AWS, "aws_lambda_event_source_mapping", "events"))
    assert mapping["function_response_types"] == ["ReportBatchItemFailures"]
    assert tf.unquote(tf.resource(tf.AWS, "aws_cloudwatch_event_rule", "pending")["schedule_expression"]) == "${var.schedule_expression}"
    assert tf.clean(tf.resource(tf.AWS, "aws_cloudwatch_log_group", "this"))["retention_in_days"] == "${var.log_retention_days}"


def test_gcp_bucket_is_uniform_private_versioned_with_lifecycle():
    bucket = tf.clean(tf.resource(tf.GCP, "google_storage_bucket", "this"))
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["versioning"][0]["enabled"] is True
    assert tf.locals_of(tf.GCP)["expiring_families"] == {
        "raw": "${var.raw_retention_days}", "quarantine": "${var.raw_retention_days}", "merged": "${var.merged_retention_days}"}
    assert "reports" not in str(bucket)


def test_gcp_function_fires_on_object_finalize_and_on_a_schedule():
    function = tf.clean(tf.resource(tf.GCP, "google_cloudfunctions2_function", "this"))
    trigger = function["event_trigger"][0]
    assert trigger["event_type"] == "google.cloud.storage.object.v1.finalized"
    assert trigger["event_filters"][0] == {"attribute": "bucket", "value": "${google_storage_bucket.this.name}"}
    job = tf.clean(tf.resource(tf.GCP, "google_cloud_scheduler_job", "pending"))
    assert job["http_target"][0]["uri"] == "${google_cloudfunctions2_function.pending.service_config[0].uri}"
    assert job["http_target"][0]["oidc_token"][0]["service_account_email"] == "${google_service_account.scheduler.email}"


@pytest.mark.parametrize("directory", tf.EXAMPLES, ids=_id)
def test_examples_pass_real_inputs_and_read_real_outputs(directory):
    (call,) = [body for _, name, body in tf.named_blocks(directory, "module") if name == "cloudprof"]
    module = (directory / tf.unquote(call["source"])).resolve()
    variables = {name: body for _, name, body in tf.named_blocks(module, "variable")}
    outputs = {name for _, name, _ in tf.named_blocks(module, "output")}
    passed = {k for k in call if not k.startswith("__") and k not in ("source", "version", "providers", "depends_on")}
    assert passed <= set(variables), f"unknown module inputs {passed - set(variables)}"
    required = {name for name, body in variables.items() if "default" not in body}
    assert required <= passed, f"required module inputs not passed: {required - passed}"
    text = "\n".join(p.read_text() for p in directory.glob("*.tf"))
    used = set(re.findall(r"module\.cloudprof\.(\w+)", text))
    assert used and used <= outputs, f"outputs that do not exist: {used - outputs}"


# -- GCP identities ---------------------------------------------------------------------------------


def _bindings():
    return {name: tf.clean(body) for _, rtype, name, body in tf.typed_blocks(tf.GCP) if rtype == "google_storage_bucket_iam_member"}


def test_gcp_agents_create_objects_only_under_their_own_raw_prefix():
    agent = _bindings()["agent"]
    assert agent["role"] == "roles/storage.objectCreator"
    assert agent["member"] == "serviceAccount:${each.value.email}"
    assert tf.unquote(tf.locals_of(tf.GCP)["object_name_prefix"]) == (
        "projects/_/buckets/${google_storage_bucket.this.name}/objects/${local.prefix}")
    expression = agent["condition"][0]["expression"]
    assert expression == 'resource.name.startsWith("${local.object_name_prefix}raw/service=${each.key}/")'


def test_gcp_roles_are_object_level_and_never_admin():
    bindings = _bindings()
    assert {name: b["role"] for name, b in bindings.items()} == {
        "aggregator_read": "roles/storage.objectViewer",
        "aggregator_write": "roles/storage.objectUser",
        "agent": "roles/storage.objectCreator",
        "reader": "roles/storage.objectViewer",
    }
    write = bindings["aggregator_write"]["condition"][0]["expression"]
    assert '["raw/", "merged/", "quarantine/"]' in write and "resource.name.startsWith" in write
    project_roles = {tf.clean(b)["role"] for _, t, _, b in tf.typed_blocks(tf.GCP) if t == "google_project_iam_member"}
    assert project_roles == {"roles/pubsub.publisher", "roles/eventarc.eventReceiver"}
    text = "\n".join(p.read_text() for p in tf.GCP.glob("*.tf"))
    assert "storage.admin" not in text and "objectAdmin" not in text and "roles/owner" not in text and "roles/editor" not in text
