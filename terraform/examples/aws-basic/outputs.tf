output "storage_url" {
  description = "Set this as CLOUDPROF_STORAGE in the service and for the cloudprof CLI."
  value       = module.cloudprof.storage_url
}

output "agent_policy_arn" {
  description = "ARN of the service's agent policy."
  value       = module.cloudprof.agent_policy_arns[var.service]
}

output "reader_policy_arn" {
  description = "ARN of the policy to attach to people and jobs that run query, flamegraph, diff and advise."
  value       = module.cloudprof.reader_policy_arn
}

output "dead_letter_queue_url" {
  description = "Where notifications the aggregator could not handle end up."
  value       = module.cloudprof.dead_letter_queue_url
}
