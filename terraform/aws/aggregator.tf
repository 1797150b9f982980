# The aggregator: S3 notifications -> SQS -> Lambda, plus an hourly sweep of pending partitions.

locals {
  function_name = "${var.name}-aggregator"
  handler       = "cloudprof.aggregator.handlers.aws_lambda.handler"

  # Names are cloudprof Settings fields (CLOUDPROF_<FIELD>); tests/terraform checks them.
  function_environment = {
    CLOUDPROF_STORAGE = local.storage_url
  }

  # Lambda's guidance for SQS sources: visibility at least six times the function timeout.
  queue_visibility_timeout = 6 * var.lambda_timeout
}

resource "aws_sqs_queue" "dead_letter" {
  name                      = "${var.name}-aggregator-dlq"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
  tags                      = var.tags
}

resource "aws_sqs_queue" "events" {
  name                       = "${var.name}-raw-uploads"
  visibility_timeout_seconds = local.queue_visibility_timeout
  message_retention_seconds  = 345600
  sqs_managed_sse_enabled    = true
  tags                       = var.tags

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter.arn
    maxReceiveCount     = var.max_receive_count
  })
}

resource "aws_sqs_queue_policy" "events" {
  queue_url = aws_sqs_queue.events.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "S3RawUploadNotifications"
      Effect    = "Allow"
      Principal = { Service = "s3.amazonaws.com" }
      Action    = "sqs:SendMessage"
      Resource  = aws_sqs_queue.events.arn
      Condition = {
        ArnEquals    = { "aws:SourceArn" = aws_s3_bucket.this.arn }
        StringEquals = { "aws:SourceAccount" = data.aws_caller_identity.current.account_id }
      }
    }]
  })
}

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_338:Aggregator logs are operational (partition names, counts), not audit records; retention is log_retention_days.
  #checkov:skip=CKV_AWS_158:The logs hold no profile data or secrets; CloudWatch's default encryption at rest is enough.
  name              = "/aws/lambda/${local.function_name}"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_117:The aggregator talks only to S3 and SQS over TLS; it needs no private network, and a VPC would need NAT or endpoints.
  #checkov:skip=CKV_AWS_173:The only environment variable is the bucket URL, which is not a secret.
  #checkov:skip=CKV_AWS_272:The package is built from source by build_lambda.sh; signing it is left to callers with a signing profile.
  function_name                  = local.function_name
  description                    = "cloudprof aggregator: merges raw profiles into one per service, hour and kind"
  role                           = aws_iam_role.aggregator.arn
  handler                        = local.handler
  runtime                        = var.lambda_runtime
  architectures                  = [var.lambda_architecture]
  filename                       = var.lambda_package
  source_code_hash               = filebase64sha256(var.lambda_package)
  memory_size                    = var.lambda_memory_size
  timeout                        = var.lambda_timeout
  reserved_concurrent_executions = var.lambda_reserved_concurrency
  tags                           = var.tags

  environment {
    variables = local.function_environment
  }

  # Scheduled (asynchronous) invocations that keep failing land here; SQS-driven ones use the queue's redrive.
  dead_letter_config {
    target_arn = aws_sqs_queue.dead_letter.arn
  }

  tracing_config {
    mode = var.tracing_mode
  }

  depends_on = [aws_cloudwatch_log_group.this, aws_iam_role_policy.aggregator]
}

resource "aws_lambda_event_source_mapping" "events" {
  event_source_arn                   = aws_sqs_queue.events.arn
  function_name                      = aws_lambda_function.this.arn
  batch_size                         = var.batch_size
  maximum_batching_window_in_seconds = var.batching_window_seconds
  # The handler reports only the notifications whose partition failed (batchItemFailures).
  function_response_types = ["ReportBatchItemFailures"]
}

resource "aws_cloudwatch_event_rule" "pending" {
  name                = "${var.name}-aggregate-pending"
  description         = "Aggregate cloudprof partitions whose raw inputs are not all merged yet"
  schedule_expression = var.schedule_expression
  tags                = var.tags
}

resource "aws_cloudwatch_event_target" "pending" {
  rule = aws_cloudwatch_event_rule.pending.name
  arn  = aws_lambda_function.this.arn

  # The scheduled event as EventBridge sends it, plus detail.lookback_hours for the handler.
  input_transformer {
    input_paths = {
      id      = "$.id"
      time    = "$.time"
      account = "$.account"
      region  = "$.region"
    }
    input_template = <<-EOT
      {"version": "0", "id": <id>, "detail-type": "Scheduled Event", "source": "aws.events", "account": <account>, "time": <time>, "region": <region>, "resources": [], "detail": {"lookback_hours": ${var.lookback_hours}}}
    EOT
  }
}

resource "aws_lambda_permission" "pending" {
  statement_id  = "AllowEventBridgeSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.pending.arn
}
