# The profile bucket: private, encrypted, versioned, TLS-only, with lifecycle per key family.

data "aws_caller_identity" "current" {}

locals {
  # "" or "team/profiles/": every cloudprof key family lives under it (see DESIGN, storage keys).
  prefix      = var.key_prefix == "" ? "" : "${trimsuffix(var.key_prefix, "/")}/"
  storage_url = var.key_prefix == "" ? "s3://${aws_s3_bucket.this.id}" : "s3://${aws_s3_bucket.this.id}/${trimsuffix(var.key_prefix, "/")}"

  expiring_families = {
    raw        = var.raw_retention_days
    quarantine = var.raw_retention_days
    merged     = var.merged_retention_days
  }
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is the caller's choice; profiles are telemetry that agents keep producing, not records to preserve.
  #checkov:skip=CKV_AWS_145:SSE-S3 is the default so the module works without a key; pass kms_key_arn for SSE-KMS.
  #checkov:skip=CKV_AWS_18:Access logging is optional (access_log_bucket) because the log bucket is account-wide infrastructure this module does not own.
  bucket        = var.bucket_name
  bucket_prefix = var.bucket_name == null ? "${var.name}-" : null
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = [aws_s3_bucket.this.arn, "${aws_s3_bucket.this.arn}/*"]
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
      {
        Sid       = "DenyOutdatedTLS"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = [aws_s3_bucket.this.arn, "${aws_s3_bucket.this.arn}/*"]
        Condition = { NumericLessThan = { "s3:TlsVersion" = "1.2" } }
      },
    ]
  })

  # A bucket policy is rejected while the public access block is being applied.
  depends_on = [aws_s3_bucket_public_access_block.this]
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  dynamic "rule" {
    for_each = local.expiring_families
    content {
      id     = "expire-${rule.key}"
      status = "Enabled"

      filter {
        prefix = "${local.prefix}${rule.key}/"
      }

      expiration {
        days = rule.value
      }
    }
  }

  # reports/ has no expiry rule: advisor reports are kept. This rule only tidies
  # what versioning and multipart uploads leave behind, bucket-wide.
  rule {
    id     = "housekeeping"
    status = "Enabled"

    # Whole bucket: the bucket belongs to cloudprof whatever key_prefix says.
    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }
  }

  rule {
    id     = "expired-delete-markers"
    status = "Enabled"

    # Whole bucket: the bucket belongs to cloudprof whatever key_prefix says.
    filter {}

    expiration {
      expired_object_delete_marker = true
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

resource "aws_s3_bucket_logging" "this" {
  count = var.access_log_bucket == null ? 0 : 1

  bucket        = aws_s3_bucket.this.id
  target_bucket = var.access_log_bucket
  target_prefix = var.access_log_prefix
}

# Every raw upload is announced to the aggregator's queue; nothing else is.
resource "aws_s3_bucket_notification" "this" {
  bucket = aws_s3_bucket.this.id

  queue {
    id            = "cloudprof-raw-uploads"
    queue_arn     = aws_sqs_queue.events.arn
    events        = ["s3:ObjectCreated:*"]
    filter_prefix = "${local.prefix}raw/"
    filter_suffix = ".pb.gz"
  }

  depends_on = [aws_sqs_queue_policy.events]
}
