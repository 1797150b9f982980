variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "us-east-1"
}

variable "service" {
  description = "Name of the service to profile (as in CLOUDPROF_SERVICE)."
  type        = string
  default     = "checkout"
}

variable "service_role_name" {
  description = "Name of the IAM role the service runs as, to attach its agent policy to. Null attaches nothing."
  type        = string
  default     = null
}

variable "lambda_package" {
  description = "Path of the zip from terraform/aws/build_lambda.sh. Null uses dist/cloudprof-aggregator-lambda.zip at the repository root."
  type        = string
  default     = null
}
