# The aggregator: one function per object-finalize event (Eventarc) and one the
# scheduler calls over HTTP for pending partitions, both from the same source.

locals {
  handler = "cloudprof.aggregator.handlers.gcp.handler"
  # build_function.sh writes main.py, which re-exports local.handler under this name.
  entry_point = "handler"

  # Names are cloudprof Settings fields (CLOUDPROF_<FIELD>); tests/terraform checks them.
  function_environment = {
    CLOUDPROF_STORAGE = local.storage_url
  }
}

data "google_storage_project_service_account" "this" {
  project = var.project_id
}

# The function source lives apart from the profiles so that uploading it fires no
# object-finalize event and lifecycle rules never touch it.
resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_62:Holds only the function zip that terraform uploads; access is by Cloud Build alone.
  #checkov:skip=CKV_GCP_78:Each source zip is named by its checksum and never overwritten, so versions add nothing.
  name                        = "${local.bucket_name}-source"
  project                     = var.project_id
  location                    = var.region
  force_destroy               = true
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels
}

resource "google_storage_bucket_object" "source" {
  name   = "cloudprof-aggregator-${filemd5(var.function_package)}.zip"
  bucket = google_storage_bucket.source.name
  source = var.function_package
}

# Cloud Storage publishes object events to Pub/Sub under its own service agent.
resource "google_project_iam_member" "gcs_publishes_events" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.this.email_address}"
}

resource "google_project_iam_member" "aggregator_receives_events" {
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = "serviceAccount:${google_service_account.aggregator.email}"
}

resource "google_cloudfunctions2_function" "this" {
  name        = "${var.name}-aggregator"
  project     = var.project_id
  location    = var.region
  description = "cloudprof aggregator: merges the partition of each raw upload"
  labels      = var.labels

  build_config {
    runtime     = var.function_runtime
    entry_point = local.entry_point
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory               = var.function_memory
    timeout_seconds                = var.function_timeout_seconds
    max_instance_count             = var.max_instances
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.aggregator.email
    environment_variables          = local.function_environment
  }

  event_trigger {
    trigger_region        = lower(coalesce(var.bucket_location, var.region))
    event_type            = "google.cloud.storage.object.v1.finalized"
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.aggregator.email
    event_filters {
      attribute = "bucket"
      value     = google_storage_bucket.this.name
    }
  }

  depends_on = [
    google_project_iam_member.gcs_publishes_events,
    google_project_iam_member.aggregator_receives_events,
  ]
}

resource "google_cloudfunctions2_function" "pending" {
  name        = "${var.name}-aggregate-pending"
  project     = var.project_id
  location    = var.region
  description = "cloudprof aggregator: sweeps partitions whose raw inputs are not all merged"
  labels      = var.labels

  build_config {
    runtime     = var.function_runtime
    entry_point = local.entry_point
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory               = var.function_memory
    timeout_seconds                = var.pending_timeout_seconds
    max_instance_count             = 1
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.aggregator.email
    environment_variables          = local.function_environment
  }
}

# Eventarc delivers to the event function as the aggregator account.
resource "google_cloud_run_service_iam_member" "events_invoker" {
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.this.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.aggregator.email}"
}

resource "google_cloud_run_service_iam_member" "scheduler_invoker" {
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.pending.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_cloud_scheduler_job" "pending" {
  name             = "${var.name}-aggregate-pending"
  project          = var.project_id
  region           = var.region
  description      = "Aggregate cloudprof partitions whose raw inputs are not all merged yet"
  schedule         = var.schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "${var.pending_timeout_seconds}s"

  retry_config {
    retry_count = 1
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.pending.service_config[0].uri
    # The handler reads lookback_hours from the JSON body (cloudprof.aggregator.handlers.gcp).
    body    = base64encode(jsonencode({ lookback_hours = var.lookback_hours }))
    headers = { "Content-Type" = "application/json" }

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloudfunctions2_function.pending.service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_service_iam_member.scheduler_invoker]
}
