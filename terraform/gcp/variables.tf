variable "project_id" {
  description = "Google Cloud project that holds the bucket, functions and service accounts."
  type        = string
}

variable "region" {
  description = "Region of the functions, the scheduler job and (by default) the bucket. The Eventarc trigger must share the bucket's region."
  type        = string
  default     = "us-central1"
}

variable "name" {
  description = "Prefix of every resource name; short, because service account ids are at most 30 characters."
  type        = string
  default     = "cloudprof"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,18}$", var.name))
    error_message = "name must be 3-19 lower-case letters, digits or dashes, starting with a letter."
  }
}

variable "bucket_name" {
  description = "Name of the profile bucket. Null uses \"<project_id>-<name>\"."
  type        = string
  default     = null
}

variable "bucket_location" {
  description = "Location of the profile bucket. Null uses region (a single region, as the object-finalize trigger requires)."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Let terraform destroy delete buckets that still hold objects."
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

variable "kms_key_name" {
  description = "Cloud KMS key for default CMEK encryption of the bucket (the project's Cloud Storage service agent needs encrypter/decrypter on it). Null uses Google-managed keys."
  type        = string
  default     = null
}

variable "raw_retention_days" {
  description = "Days after which raw/ uploads and quarantine/ objects are deleted (N)."
  type        = number
  default     = 14
}

variable "merged_retention_days" {
  description = "Days after which merged/ hourly profiles and manifests are deleted (M). reports/ are kept."
  type        = number
  default     = 400
}

variable "noncurrent_version_retention_days" {
  description = "Days a replaced or deleted object version is kept before it is deleted."
  type        = number
  default     = 7
}

variable "access_log_bucket" {
  description = "Name of an existing bucket to receive usage and storage logs. Null turns access logging off."
  type        = string
  default     = null
}

variable "services" {
  description = "Service names that get an agent service account each (object creation under raw/service=<name>/ only)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for s in var.services : can(regex("^[a-z0-9][a-z0-9._-]{0,62}$", s))])
    error_message = "Each service name must match [a-z0-9][a-z0-9._-]{0,62}, as cloudprof validates it."
  }
}

variable "reader_members" {
  description = "Extra IAM members (\"user:...\", \"group:...\") that may read profiles and reports, besides the reader service account."
  type        = list(string)
  default     = []
}

variable "function_package" {
  description = "Path of the function source zip built by terraform/gcp/build_function.sh."
  type        = string
}

variable "function_runtime" {
  description = "Cloud Functions Python runtime of the aggregator."
  type        = string
  default     = "python312"
}

variable "function_memory" {
  description = "Memory of each aggregator instance (a 10,000-input hour needs well under 512Mi)."
  type        = string
  default     = "1Gi"
}

variable "function_timeout_seconds" {
  description = "Timeout of one object-finalize invocation (event-driven functions allow at most 540)."
  type        = number
  default     = 300

  validation {
    condition     = var.function_timeout_seconds >= 1 && var.function_timeout_seconds <= 540
    error_message = "function_timeout_seconds must be between 1 and 540."
  }
}

variable "pending_timeout_seconds" {
  description = "Timeout of the scheduled sweep of pending partitions (Cloud Scheduler waits at most 1800)."
  type        = number
  default     = 1800

  validation {
    condition     = var.pending_timeout_seconds >= 15 && var.pending_timeout_seconds <= 1800
    error_message = "pending_timeout_seconds must be between 15 and 1800."
  }
}

variable "max_instances" {
  description = "Most aggregator instances at once; caps parallel merges (concurrent runs are safe, only wasteful)."
  type        = number
  default     = 10
}

variable "schedule" {
  description = "Cron schedule (UTC) of the sweep of pending partitions; default hourly, after the 15-minute grace for late uploads."
  type        = string
  default     = "20 * * * *"
}

variable "lookback_hours" {
  description = "Hours back the scheduled sweep looks for partitions with unmerged inputs."
  type        = number
  default     = 3
}

variable "labels" {
  description = "Labels added to every resource that takes labels."
  type        = map(string)
  default     = {}
}
