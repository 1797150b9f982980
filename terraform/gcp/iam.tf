# Least-privilege identities: the aggregator, the scheduler's invoker, one agent
# account per service (create objects under its own raw/ prefix only) and readers.
#
# Object prefixes are enforced with IAM conditions on resource.name, which Cloud
# Storage evaluates for object-level permissions on buckets with uniform access.

locals {
  object_name_prefix = "projects/_/buckets/${google_storage_bucket.this.name}/objects/${local.prefix}"

  # Readable account ids where "<name>-<service>" is a valid id, a stable hash otherwise.
  agent_account_ids = {
    for s in var.services : s => (
      can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", "${var.name}-${s}"))
      ? "${var.name}-${s}"
      : "${var.name}-a-${substr(sha256(s), 0, 8)}"
    )
  }
}

resource "google_service_account" "aggregator" {
  project      = var.project_id
  account_id   = "${var.name}-aggregator"
  display_name = "cloudprof aggregator"
  description  = "Runs the cloudprof aggregator functions"
}

resource "google_service_account" "scheduler" {
  project      = var.project_id
  account_id   = "${var.name}-scheduler"
  display_name = "cloudprof scheduler"
  description  = "Cloud Scheduler identity that invokes the pending-partition sweep"
}

resource "google_service_account" "reader" {
  project      = var.project_id
  account_id   = "${var.name}-reader"
  display_name = "cloudprof reader"
  description  = "Query, flame graphs, diffs and advisor reports"
}

resource "google_service_account" "agent" {
  for_each = local.agent_account_ids

  project      = var.project_id
  account_id   = each.value
  display_name = "cloudprof agent: ${each.key}"
  description  = "Uploads raw profiles of service ${each.key} and nothing else"
}

# Listing is a bucket-level permission, so the aggregator may list and read the whole bucket...
resource "google_storage_bucket_iam_member" "aggregator_read" {
  bucket = google_storage_bucket.this.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.aggregator.email}"
}

# ...but creates, replaces and deletes objects only in the families it owns.
resource "google_storage_bucket_iam_member" "aggregator_write" {
  bucket = google_storage_bucket.this.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.aggregator.email}"

  condition {
    title       = "cloudprof-aggregator-families"
    description = "raw/ (quarantine moves), merged/ and quarantine/ only"
    expression = join(" || ", [
      for family in ["raw/", "merged/", "quarantine/"] : "resource.name.startsWith(\"${local.object_name_prefix}${family}\")"
    ])
  }
}

resource "google_storage_bucket_iam_member" "agent" {
  for_each = google_service_account.agent

  bucket = google_storage_bucket.this.name
  role   = "roles/storage.objectCreator"
  member = "serviceAccount:${each.value.email}"

  condition {
    title       = "cloudprof-agent-${substr(sha256(each.key), 0, 8)}"
    description = "Raw profiles of service ${each.key} only"
    expression  = "resource.name.startsWith(\"${local.object_name_prefix}raw/service=${each.key}/\")"
  }
}

resource "google_storage_bucket_iam_member" "reader" {
  for_each = toset(concat(["serviceAccount:${google_service_account.reader.email}"], var.reader_members))

  bucket = google_storage_bucket.this.name
  role   = "roles/storage.objectViewer"
  member = each.value
}
