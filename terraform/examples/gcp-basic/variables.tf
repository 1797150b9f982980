variable "project_id" {
  description = "Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Region of the bucket, functions and scheduler job."
  type        = string
  default     = "us-central1"
}

variable "service" {
  description = "Name of the service to profile (as in CLOUDPROF_SERVICE)."
  type        = string
  default     = "checkout"
}

variable "reader_members" {
  description = "IAM members (\"user:you@example.com\") who may run query, flamegraph, diff and advise."
  type        = list(string)
  default     = []
}

variable "function_package" {
  description = "Path of the zip from terraform/gcp/build_function.sh. Null uses dist/cloudprof-aggregator-gcf.zip at the repository root."
  type        = string
  default     = null
}
