variable "name" {
  description = "Prefix of every resource name (function, queues, roles, policies)."
  type        = string
  default     = "cloudprof"

  validation {
    condition     = can(regex("^[a-zA-Z0-9-]{1,32}$", var.name))
    error_message = "name must be 1-32 letters, digits or dashes."
  }
}

variable "bucket_name" {
  description = "Name of the profile bucket. Null lets AWS pick a unique name starting with \"<name>-\"."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Let terraform destroy delete a bucket that still holds profiles."
  type        = bool
  default     = false
}

variable "key_prefix" {
  description = "Folder inside the bucket under which cloudprof keeps raw/, merged/, quarantine/ and reports/ (empty: the bucket root)."
  type        = string
  default     = ""

  validation {
    condition     = var.key_prefix == "" || can(regex("^[A-Za-z0-9][A-Za-z0-9._=-]*(/[A-Za-z0-9][A-Za-z0-9._=-]*)*/?$", var.key_prefix))
    error_message = "key_prefix must be empty or a relative path like \"profiles\" or \"team/profiles\"."
  }
}

variable "kms_key_arn" {
  description = "ARN of a KMS key for SSE-KMS default encryption. Null uses SSE-S3 (AES256)."
  type        = string
  default     = null
}

variable "raw_retention_days" {
  description = "Days after which raw/ uploads and quarantine/ objects expire (N)."
  type        = number
  default     = 14

  validation {
    condition     = var.raw_retention_days >= 1
    error_message = "raw_retention_days must be at least 1."
  }
}

variable "merged_retention_days" {
  description = "Days after which merged/ hourly profiles and manifests expire (M). reports/ never expire."
  type        = number
  default     = 400

  validation {
    condition     = var.merged_retention_days >= 1
    error_message = "merged_retention_days must be at least 1."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days a replaced or deleted object version is kept before it expires (versioning keeps them otherwise)."
  type        = number
  default     = 7
}

variable "access_log_bucket" {
  description = "Name of an existing bucket to receive S3 server access logs. Null turns access logging off."
  type        = string
  default     = null
}

variable "access_log_prefix" {
  description = "Key prefix for S3 server access logs in access_log_bucket."
  type        = string
  default     = "cloudprof/"
}

variable "services" {
  description = "Service names that get an agent policy each (s3:PutObject under raw/service=<name>/ only)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for s in var.services : can(regex("^[a-z0-9][a-z0-9._-]{0,62}$", s))])
    error_message = "Each service name must match [a-z0-9][a-z0-9._-]{0,62}, as cloudprof validates it."
  }
}

variable "lambda_package" {
  description = "Path of the aggregator deployment zip built by terraform/aws/build_lambda.sh."
  type        = string
}

variable "lambda_runtime" {
  description = "Python runtime of the aggregator Lambda; must match the --python the package was built for."
  type        = string
  default     = "python3.12"
}

variable "lambda_architecture" {
  description = "Instruction set of the aggregator Lambda (arm64 or x86_64); must match the --arch the package was built for."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.lambda_architecture)
    error_message = "lambda_architecture must be arm64 or x86_64."
  }
}

variable "lambda_memory_size" {
  description = "Memory of the aggregator Lambda in MiB (a 10,000-input hour needs well under 512)."
  type        = number
  default     = 1024
}

variable "lambda_timeout" {
  description = "Timeout of one aggregator invocation in seconds."
  type        = number
  default     = 300

  validation {
    condition     = var.lambda_timeout >= 1 && var.lambda_timeout <= 900
    error_message = "lambda_timeout must be between 1 and 900 seconds."
  }
}

variable "lambda_reserved_concurrency" {
  description = "Reserved concurrent executions of the aggregator; caps parallel merges (concurrent runs are safe, only wasteful). -1 reserves none, which accounts still on the default concurrency quota need."
  type        = number
  default     = 10

  validation {
    condition     = var.lambda_reserved_concurrency == -1 || var.lambda_reserved_concurrency >= 1
    error_message = "lambda_reserved_concurrency must be -1 (no reservation) or at least 1."
  }
}

variable "tracing_mode" {
  description = "X-Ray tracing mode of the aggregator Lambda: Active or PassThrough."
  type        = string
  default     = "Active"

  validation {
    condition     = contains(["Active", "PassThrough"], var.tracing_mode)
    error_message = "tracing_mode must be Active or PassThrough."
  }
}

variable "batch_size" {
  description = "Most S3 notifications one aggregator invocation receives from the queue (above 10 needs batching_window_seconds >= 1)."
  type        = number
  default     = 100

  validation {
    condition     = var.batch_size >= 1 && var.batch_size <= 10000
    error_message = "batch_size must be between 1 and 10000."
  }
}

variable "batching_window_seconds" {
  description = "Seconds the event source mapping gathers notifications before invoking, so one merge folds many uploads."
  type        = number
  default     = 60

  validation {
    condition     = var.batching_window_seconds >= 0 && var.batching_window_seconds <= 300
    error_message = "batching_window_seconds must be between 0 and 300."
  }
}

variable "max_receive_count" {
  description = "Deliveries of one notification before it moves to the dead-letter queue."
  type        = number
  default     = 5
}

variable "schedule_expression" {
  description = "EventBridge schedule that aggregates pending partitions (default: hourly, after the 15-minute grace for late uploads)."
  type        = string
  default     = "cron(20 * * * ? *)"
}

variable "lookback_hours" {
  description = "Hours back the scheduled run looks for partitions with unmerged inputs."
  type        = number
  default     = 3

  validation {
    condition     = var.lookback_hours >= 1
    error_message = "lookback_hours must be at least 1."
  }
}

variable "log_retention_days" {
  description = "Days the aggregator's CloudWatch logs are kept."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource that takes tags."
  type        = map(string)
  default     = {}
}
