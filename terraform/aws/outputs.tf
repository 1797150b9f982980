output "storage_url" {
  description = "The CLOUDPROF_STORAGE value for agents, query and advisor (s3://bucket[/prefix])."
  value       = local.storage_url
}

output "bucket_name" {
  description = "Name of the profile bucket."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of the profile bucket."
  value       = aws_s3_bucket.this.arn
}

output "agent_policy_arns" {
  description = "ARN of each service's agent policy, by service name; attach it to that service's role."
  value       = { for service, policy in aws_iam_policy.agent : service => policy.arn }
}

output "reader_policy_arn" {
  description = "ARN of the policy for query, flamegraph, diff and advise users."
  value       = aws_iam_policy.reader.arn
}

output "aggregator_role_arn" {
  description = "ARN of the aggregator Lambda's execution role."
  value       = aws_iam_role.aggregator.arn
}

output "aggregator_function_name" {
  description = "Name of the aggregator Lambda."
  value       = aws_lambda_function.this.function_name
}

output "aggregator_function_arn" {
  description = "ARN of the aggregator Lambda."
  value       = aws_lambda_function.this.arn
}

output "queue_arn" {
  description = "ARN of the queue that carries raw-upload notifications to the aggregator."
  value       = aws_sqs_queue.events.arn
}

output "dead_letter_queue_arn" {
  description = "ARN of the dead-letter queue for notifications and scheduled runs that kept failing."
  value       = aws_sqs_queue.dead_letter.arn
}

output "dead_letter_queue_url" {
  description = "URL of the dead-letter queue, for redriving or inspecting failures."
  value       = aws_sqs_queue.dead_letter.id
}

output "log_group_name" {
  description = "CloudWatch log group of the aggregator."
  value       = aws_cloudwatch_log_group.this.name
}

output "schedule_rule_arn" {
  description = "ARN of the EventBridge rule that aggregates pending partitions."
  value       = aws_cloudwatch_event_rule.pending.arn
}
