# The profile bucket: uniform access, public access prevented, versioned, with lifecycle per key family.

locals {
  # "" or "team/profiles/": every cloudprof key family lives under it (see DESIGN, storage keys).
  prefix      = var.key_prefix == "" ? "" : "${trimsuffix(var.key_prefix, "/")}/"
  bucket_name = coalesce(var.bucket_name, "${var.project_id}-${var.name}")
  storage_url = var.key_prefix == "" ? "gs://${google_storage_bucket.this.name}" : "gs://${google_storage_bucket.this.name}/${trimsuffix(var.key_prefix, "/")}"

  expiring_families = {
    raw        = var.raw_retention_days
    quarantine = var.raw_retention_days
    merged     = var.merged_retention_days
  }
}

resource "google_storage_bucket" "this" {
  #checkov:skip=CKV_GCP_62:Access logging is optional (access_log_bucket) because the log bucket is project-wide infrastructure this module does not own.
  name                        = local.bucket_name
  project                     = var.project_id
  location                    = coalesce(var.bucket_location, var.region)
  force_destroy               = var.force_destroy
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels

  versioning {
    enabled = true
  }

  dynamic "lifecycle_rule" {
    for_each = local.expiring_families
    content {
      action {
        type = "Delete"
      }
      condition {
        age            = lifecycle_rule.value
        matches_prefix = ["${local.prefix}${lifecycle_rule.key}/"]
        with_state     = "LIVE"
      }
    }
  }

  # Versions replaced or deleted (merged generations, moved inputs), bucket-wide; reports/ have no other rule.
  lifecycle_rule {
    action {
      type = "Delete"
    }
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
  }

  lifecycle_rule {
    action {
      type = "AbortIncompleteMultipartUpload"
    }
    condition {
      age = 1
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  dynamic "logging" {
    for_each = var.access_log_bucket == null ? [] : [var.access_log_bucket]
    content {
      log_bucket        = logging.value
      log_object_prefix = local.bucket_name
    }
  }
}
