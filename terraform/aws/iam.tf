# Least-privilege IAM: the aggregator's role, one agent policy per service, one reader policy.
#
# The S3 parts live in policies/*.json.tftpl so that tests/terraform renders and
# enforces the very documents the module deploys. The templates use plain
# ${name} interpolation only. ListBucket carries no prefix condition: S3 answers
# HEAD/GET of a missing key with 404 only to callers allowed to list the bucket
# (403 otherwise), and the aggregator and query rely on telling "absent" apart.

locals {
  policy_vars = {
    bucket_arn = aws_s3_bucket.this.arn
    prefix     = local.prefix
  }

  kms_write_statements = var.kms_key_arn == null ? [] : [{
    Sid      = "EncryptWithBucketKey"
    Effect   = "Allow"
    Action   = ["kms:GenerateDataKey"]
    Resource = var.kms_key_arn
  }]
  kms_read_statements = var.kms_key_arn == null ? [] : [{
    Sid      = "DecryptWithBucketKey"
    Effect   = "Allow"
    Action   = ["kms:Decrypt"]
    Resource = var.kms_key_arn
  }]
  kms_read_write_statements = var.kms_key_arn == null ? [] : [{
    Sid      = "UseBucketKey"
    Effect   = "Allow"
    Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
    Resource = var.kms_key_arn
  }]
  # X-Ray has no resource-level permissions; this is telemetry, not data.
  xray_statements = var.tracing_mode != "Active" ? [] : [{
    Sid      = "SendTraces"
    Effect   = "Allow"
    Action   = ["xray:PutTelemetryRecords", "xray:PutTraceSegments"]
    Resource = "*"
  }]

  aggregator_policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      jsondecode(templatefile("${path.module}/policies/aggregator.json.tftpl", merge(local.policy_vars, {
        queue_arn             = aws_sqs_queue.events.arn
        dead_letter_queue_arn = aws_sqs_queue.dead_letter.arn
        log_group_arn         = aws_cloudwatch_log_group.this.arn
      }))).Statement,
      local.kms_read_write_statements,
      local.xray_statements,
    )
  })

  reader_policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      jsondecode(templatefile("${path.module}/policies/reader.json.tftpl", local.policy_vars)).Statement,
      local.kms_read_statements,
    )
  })
}

resource "aws_iam_role" "aggregator" {
  name        = "${var.name}-aggregator"
  description = "cloudprof aggregator Lambda"
  tags        = var.tags

  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "lambda.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = { StringEquals = { "aws:SourceAccount" = data.aws_caller_identity.current.account_id } }
    }]
  })
}

resource "aws_iam_role_policy" "aggregator" {
  name   = "${var.name}-aggregator"
  role   = aws_iam_role.aggregator.id
  policy = local.aggregator_policy
}

resource "aws_iam_policy" "agent" {
  for_each = toset(var.services)

  name        = "${var.name}-agent-${each.key}"
  description = "cloudprof agent of service ${each.key}: upload raw profiles, nothing else"
  tags        = var.tags
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      jsondecode(templatefile("${path.module}/policies/agent.json.tftpl", merge(local.policy_vars, { service = each.key }))).Statement,
      local.kms_write_statements,
    )
  })
}

resource "aws_iam_policy" "reader" {
  name        = "${var.name}-reader"
  description = "cloudprof query and advisor: read raw and merged profiles and reports"
  tags        = var.tags
  policy      = local.reader_policy
}
