output "storage_url" {
  description = "Set this as CLOUDPROF_STORAGE in the service and for the cloudprof CLI."
  value       = module.cloudprof.storage_url
}

output "agent_service_account_email" {
  description = "Run the service as this account (or grant its workload identity to it)."
  value       = module.cloudprof.agent_service_account_emails[var.service]
}

output "reader_service_account_email" {
  description = "Account for jobs that run query, flamegraph, diff and advise."
  value       = module.cloudprof.reader_service_account_email
}
