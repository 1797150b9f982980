output "storage_url" {
  description = "The CLOUDPROF_STORAGE value for agents, query and advisor (gs://bucket[/prefix])."
  value       = local.storage_url
}

output "bucket_name" {
  description = "Name of the profile bucket."
  value       = google_storage_bucket.this.name
}

output "bucket_url" {
  description = "gs:// URL of the profile bucket."
  value       = google_storage_bucket.this.url
}

output "agent_service_account_emails" {
  description = "Email of each service's agent service account, by service name; run that service as it (or impersonate it)."
  value       = { for service, account in google_service_account.agent : service => account.email }
}

output "reader_service_account_email" {
  description = "Email of the service account for query, flamegraph, diff and advise."
  value       = google_service_account.reader.email
}

output "aggregator_service_account_email" {
  description = "Email of the service account the aggregator functions run as."
  value       = google_service_account.aggregator.email
}

output "aggregator_function_name" {
  description = "Name of the object-finalize aggregator function."
  value       = google_cloudfunctions2_function.this.name
}

output "pending_function_uri" {
  description = "HTTPS URI of the pending-partition sweep function that Cloud Scheduler calls."
  value       = google_cloudfunctions2_function.pending.service_config[0].uri
}

output "scheduler_job_name" {
  description = "Name of the Cloud Scheduler job that sweeps pending partitions."
  value       = google_cloud_scheduler_job.pending.name
}

output "source_bucket_name" {
  description = "Name of the bucket that holds the function source zip."
  value       = google_storage_bucket.source.name
}
